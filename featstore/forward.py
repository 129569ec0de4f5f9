"""The one backend-specific piece of the embedder: a forward pass that takes any batch size.

:mod:`featstore.embed` is Keras 3 API only and runs every forward pass on batches of one shape
(``predict_on_batch``; the last batch padded): a jitted backend compiles once per shape. On
TensorFlow without XLA (its default on CPU) the model can instead run as one ``tf.function``
with a free batch dimension: traced once, by a warm-up on a single image, for every batch after
it. Measured on resnet50 at 112x96 with 2 threads, the warm-up's pass took 1.3 s of CPU against
2.9-3.4 s for ``predict_on_batch`` on a whole batch of 64 (the trace plus that batch's compute,
in every worker before its first task), the first real batch was as fast, and the embeddings were
bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def any_batch_forward(model: Any, input_hw: tuple[int, int]) -> Callable[[Any], Any] | None:
    """``model(x, training=False)`` as a ``tf.function`` over ``uint8 (None, h, w, 3)``, or
    ``None`` where the backend is not TensorFlow or the model is XLA-compiled (``jit_compile``,
    Keras' default on TensorFlow with a GPU): those compile per shape, so the embedder keeps
    ``predict_on_batch`` on batches of one shape there."""
    import keras

    if keras.backend.backend() != "tensorflow" or getattr(model, "jit_compile", True):
        return None
    import tensorflow as tf

    h, w = input_hw
    return tf.function(lambda x: model(x, training=False), autograph=False,
                       input_signature=[tf.TensorSpec((None, h, w, 3), tf.uint8)])
