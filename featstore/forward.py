"""The one backend-specific piece of the embedder: how a forward pass is started and finished.

:mod:`featstore.embed` is Keras 3 API only. It runs every forward pass through a
:class:`Forward`: :meth:`Forward.dispatch` starts the pass on one batch and returns a handle,
:meth:`Forward.fetch` turns a handle into a float32 numpy array. The embedder dispatches batch
``k+1`` before it fetches batch ``k`` (results one batch late), so where the backend runs
asynchronously the next batch's host-to-device copy and launch overlap the current pass and the
device never waits for the host between batches.

- JAX: one ``jax.jit`` function of the model's ``stateless_call`` (compiled once: every batch
  has the same shape); a call returns at once (async dispatch) with the on-device result, which
  ``fetch`` copies to the host one batch later. ``predict_on_batch`` instead waits for each
  batch and copies it back before the next can start.
- TensorFlow without XLA (its default on CPU): one ``tf.function`` with a free batch dimension,
  traced once (by a warm-up on a single image) for every batch after it. Measured on resnet50
  at 112x96 with 2 threads, the warm-up's pass took 1.3 s of CPU against 2.9-3.4 s for
  ``predict_on_batch`` on a whole batch of 64, and the embeddings were bit-identical. It runs
  synchronously: dispatch does the work, fetch only converts.
- Anything else (TensorFlow with XLA, torch): ``predict_on_batch``, synchronous.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class Forward:
    """A synchronous forward pass: ``dispatch`` computes, ``fetch`` converts."""

    #: the pass takes any batch size (traced once), so a warm-up on one image suffices
    any_batch = False
    #: the ``tf.function`` where there is one (its tracing count is what tests look at)
    traced: Any = None
    name = "predict_on_batch"

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self._fn = fn

    def dispatch(self, x: np.ndarray) -> Any:
        return self._fn(x)

    def fetch(self, handle: Any) -> np.ndarray:
        return np.asarray(handle, dtype=np.float32)


class TracedForward(Forward):
    any_batch = True
    name = "tf.function"

    def __init__(self, traced: Any) -> None:
        super().__init__(traced)
        self.traced = traced


class JaxForward(Forward):
    """``model.stateless_call`` under ``jax.jit``: dispatch returns the on-device result at
    once; ``fetch`` waits for it and copies it to the host."""

    name = "jax.jit (async dispatch)"

    def __init__(self, model: Any) -> None:
        import jax

        self._state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )

        def call(trainable: Any, non_trainable: Any, x: Any) -> Any:
            y, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return y

        jitted = jax.jit(call)
        super().__init__(lambda x: jitted(*self._state, x))


def any_batch_forward(model: Any, input_hw: tuple[int, int]) -> Callable[[Any], Any] | None:
    """``model(x, training=False)`` as a ``tf.function`` over ``uint8 (None, h, w, 3)``, or
    ``None`` where the backend is not TensorFlow or the model is XLA-compiled (``jit_compile``,
    Keras' default on TensorFlow with a GPU): those compile per shape."""
    import keras

    if keras.backend.backend() != "tensorflow" or getattr(model, "jit_compile", True):
        return None
    import tensorflow as tf

    h, w = input_hw
    return tf.function(
        lambda x: model(x, training=False),
        autograph=False,
        input_signature=[tf.TensorSpec((None, h, w, 3), tf.uint8)],
    )


def make_forward(model: Any, input_hw: tuple[int, int], *, mode: str = "auto") -> Forward:
    """The backend's best forward pass (``mode="auto"``), or ``"sync"``: ``predict_on_batch``
    everywhere (the reference the other paths are tested against)."""
    import keras

    if mode == "sync":
        return Forward(model.predict_on_batch)
    backend = keras.backend.backend()
    if backend == "jax":
        return JaxForward(model)
    traced = any_batch_forward(model, input_hw)
    if traced is not None:
        return TracedForward(traced)
    return Forward(model.predict_on_batch)
