"""Dense (neural) heads on the embeddings, written against the Keras 3 API only (``import keras``):
the same code runs with ``KERAS_BACKEND=tensorflow`` (default), ``jax`` or ``torch``.

- :func:`fit_dense`: the original study's head, ``Dense(20, relu) -> Dense(1, sigmoid)``, binary
  cross-entropy, RMSprop, early stopping on the validation loss (best weights restored). Deeper
  heads via ``hidden=(500, 100, 20, 10)``.
- :func:`fit_bottleneck`: the original study's method: train that head with a k-unit last hidden
  layer, use the k activations as features for :func:`~featstore.train.lasso.fit_lasso` or
  :func:`~featstore.train.forest.fit_forest`.
- :func:`fit_multilabel`: one head with a sigmoid output per attribute, all trained at once; an
  attribute with one class only in its training labels gets a :class:`FitError` and no output.
- :func:`train_dense_head`: the shared trainer; it returns a :class:`DenseHead` (model, history,
  ``predict_proba``, ``activations`` of any hidden layer).

Standardisation is the model's first layer (:class:`Standardize`: the TRAINING rows' mean and
standard deviation, constant features left unscaled), so a saved model takes raw embeddings. It
divides by the standard deviation however small: Keras' ``Normalization`` divides by
``max(std, 1e-7)``, which turned random-weight MobileNetV2 embeddings (~1e-12, every dimension
spanning <= 1e-7) into near-constants and the head into the prior.

Feeding: numpy arrays, or ``train_data``: a re-iterable ``tf.data.Dataset`` (or Keras
``PyDataset``) of ``(x, y)`` batches such as ``featstore.feed.tf_dataset`` yields. The dataset is
read once up front for the standardisation statistics and the class check (``steps_per_epoch``
batches of it when given, for a dataset that repeats forever), then by ``model.fit``.

Determinism: ``keras.utils.set_random_seed(seed)`` seeds Python, NumPy and the backend (weight
initialisation, shuffling). On the TensorFlow CPU backend the same seed gives the same predictions
bit for bit (checked by the tests). GPU kernels (cuDNN, XLA reductions, atomics) may differ in the
last bits from run to run; TensorFlow's ``tf.config.experimental.enable_op_determinism()`` removes
that at some speed cost, and is left to the caller because it is backend specific.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from featstore.timing import Phases
from featstore.train.base import (
    FitError,
    FitResult,
    SingleClassError,
    as_features,
    as_labels,
    check_binary,
    check_test,
    jsonable,
    one_class_message,
    scores_to_result,
    single_class_reason,
)

logger = logging.getLogger(__name__)

PREDICT_BATCH = 8192
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class DenseHead:
    """A trained dense head. ``hidden`` lists the hidden layer widths; layer ``i`` is named
    ``hidden{i}``; the output layer ``output`` has ``outputs`` sigmoid units (softmax ones for
    a multi-class probe's head, as :mod:`featstore.train.saved` keeps it)."""

    model: keras.Model
    hidden: tuple[int, ...]
    outputs: int
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    _extractors: dict[int, keras.Model] = field(default_factory=dict, init=False, repr=False)

    def predict_proba(self, x: Any, *, batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """``(n, outputs)`` float32 sigmoid outputs (the model called on batches)."""
        return _batched(self.model, as_features(x), batch_size)

    def activations(
        self, x: Any, *, layer: int = -1, batch_size: int = PREDICT_BATCH
    ) -> np.ndarray:
        """``(n, hidden[layer])`` float32 activations of hidden layer ``layer`` (default the last,
        i.e. the k-unit bottleneck)."""
        if not self.hidden:
            raise ValueError("this head has no hidden layer")
        index = range(len(self.hidden))[layer]
        if index not in self._extractors:
            self._extractors[index] = keras.Model(
                self.model.inputs[0], self.model.get_layer(f"hidden{index}").output
            )
        return _batched(self._extractors[index], as_features(x), batch_size)


@keras.saving.register_keras_serializable(package="featstore")
class Standardize(keras.layers.Layer):
    """``(x - mean) * inv_std`` per feature, both fixed (non-trainable weights, set from the
    training rows): any positive spread is scaled to 1, whatever its size."""

    def __init__(self, n_features: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_features = int(n_features)

    def build(self, input_shape: Any) -> None:
        self.mean = self.add_weight(
            shape=(self.n_features,), initializer="zeros", trainable=False, name="mean"
        )
        self.inv_std = self.add_weight(
            shape=(self.n_features,), initializer="ones", trainable=False, name="inv_std"
        )

    def call(self, inputs: Any) -> Any:
        return (inputs - self.mean) * self.inv_std

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_features": self.n_features}


def _batched(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Call the model on successive batches (eager: no per-shape retracing, no ``predict``
    loop; a dense head is cheap per call)."""
    parts = [
        keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False))
        for i in range(0, x.shape[0], batch_size)
    ]
    return np.concatenate(parts, axis=0).astype(np.float32, copy=False)


def _labels_matrix(y: Any, what: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 1-D or 2-D, got shape {arr.shape}")
    return np.stack([as_labels(arr[:, j], what) for j in range(arr.shape[1])], axis=1)


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    return mean, np.where(std > 0, std, 1.0)


def _dataset_summary(
    data: Any, steps: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """One pass over ``(x, y)`` batches: mean, std, positives per output, rows, features."""
    n = 0
    s1 = s2 = pos = None
    for step, (xb, yb) in enumerate(data):
        if steps is not None and step >= steps:
            break
        x = np.asarray(xb, dtype=np.float64)
        y = _labels_matrix(np.asarray(yb), "train_data labels")
        if s1 is None:
            s1, s2, pos = np.zeros(x.shape[1]), np.zeros(x.shape[1]), np.zeros(y.shape[1])
        s1 += x.sum(axis=0)
        s2 += np.square(x).sum(axis=0)
        pos += y.sum(axis=0)
        n += x.shape[0]
    if s1 is None or s2 is None or pos is None or n == 0:
        raise ValueError("train_data yielded no batches")
    mean = s1 / n
    var = np.maximum(s2 / n - np.square(mean), 0.0)
    # a spread below the rounding of the sums is no spread (one-pass moments)
    std = np.sqrt(np.where(var > 1e-12 * (s2 / n), var, 0.0))
    return mean, np.where(std > 0, std, 1.0), pos, n, s1.size


def _build_head(
    n_features: int,
    hidden: Sequence[int],
    outputs: int,
    mean: np.ndarray,
    std: np.ndarray,
    learning_rate: float,
    *,
    activation: str = "sigmoid",
    loss: str = "binary_crossentropy",
    name: str = "dense_head",
) -> keras.Model:
    """Standardize -> hidden ReLU layers -> ``outputs`` units of ``activation`` (the binary heads:
    sigmoid; featstore.train.multiclass: softmax), RMSprop on ``loss``."""
    inputs = keras.Input(shape=(n_features,), name="features")
    scale = Standardize(n_features, name="standardize")
    h = scale(inputs)
    scale.set_weights([mean.astype(np.float32), (1.0 / std).astype(np.float32)])
    for i, units in enumerate(hidden):
        h = keras.layers.Dense(int(units), activation="relu", name=f"hidden{i}")(h)
    out = keras.layers.Dense(outputs, activation=activation, name="output")(h)
    model = keras.Model(inputs, out, name=name)
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate),
        loss=loss,
        metrics=["accuracy"],
    )
    return model


def _check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(int(u) for u in hidden)
    if any(u < 1 for u in widths):
        raise ValueError(f"hidden layer widths must be positive, got {list(widths)}")
    return widths


def _split_validation(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(x.shape[0])
    n_val = max(1, round(fraction * x.shape[0]))
    val, train = order[:n_val], np.sort(order[n_val:])
    logger.info(
        "dense: no validation split given: holding out %d of %d training rows", n_val, x.shape[0]
    )
    return x[train], y[train], x[val], y[val]


def train_dense_head(
    x_train: Any | None,
    y_train: Any | None,
    x_val: Any | None,
    y_val: Any | None,
    *,
    hidden: Sequence[int] = (20,),
    epochs: int = 50,
    batch_size: int = 256,
    patience: int = 5,
    learning_rate: float = 1e-3,
    seed: int = 0,
    train_data: Any = None,
    steps_per_epoch: int | None = None,
    validation_fraction: float = 0.1,
    names: Sequence[str] | None = None,
    class_weight: str | None = None,
) -> DenseHead:
    """Train a dense head; ``y`` is ``(n,)`` or ``(n, outputs)`` of 0/1.

    Early stopping watches ``val_loss`` with ``patience`` and restores the best epoch's weights.
    Without ``x_val`` a seeded ``validation_fraction`` of the training rows is held out.
    ``train_data`` replaces ``x_train``/``y_train`` (see the module doc). ``names`` label the
    outputs in messages. A single-output head whose training labels have one class raises
    :class:`SingleClassError`; with several outputs such a column is only warned about.
    """
    widths = _check_hidden(hidden)
    if epochs < 1 or batch_size < 1 or patience < 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, patience >= 0; got {epochs}, "
            f"{batch_size}, {patience}"
        )
    if train_data is not None:
        mean, std, positives, n_rows, n_features = _dataset_summary(train_data, steps_per_epoch)
        fit_x: Any = train_data
        fit_y: Any = None
        if x_val is None or y_val is None:
            raise ValueError("train_data needs an explicit validation split (x_val, y_val)")
    else:
        if x_train is None or y_train is None:
            raise ValueError("give x_train and y_train, or train_data")
        fit_x = as_features(x_train, "training features")
        fit_y = _labels_matrix(y_train, "training labels").astype(np.float32)
        if fit_x.shape[0] != fit_y.shape[0]:
            raise ValueError(
                f"training sample: {fit_x.shape[0]} feature rows but {fit_y.shape[0]} labels"
            )
        if x_val is None or y_val is None:
            fit_x, fit_y, x_val, y_val = _split_validation(fit_x, fit_y, validation_fraction, seed)
        mean, std = _moments(fit_x)
        positives, n_rows, n_features = fit_y.sum(axis=0), fit_x.shape[0], fit_x.shape[1]
    outputs = int(np.size(positives))
    labels = list(names) if names is not None else [f"output {j}" for j in range(outputs)]
    if len(labels) != outputs:
        raise ValueError(f"{len(labels)} names for {outputs} label columns")
    for j in range(outputs):
        if positives[j] in (0, n_rows):
            what = "training sample" if outputs == 1 else f"training sample of {labels[j]}"
            message = one_class_message(int(n_rows), int(positives[j] > 0), what)
            if outputs == 1:
                raise SingleClassError(message)
            logger.warning("dense: %s (its output will learn a constant)", message)
    xv = check_test(x_val, n_features) if x_val is not None else None
    yv = _labels_matrix(y_val, "validation labels").astype(np.float32)
    if xv is None or xv.shape[0] != yv.shape[0] or yv.shape[1] != outputs:
        raise ValueError(
            f"validation split: {0 if xv is None else xv.shape[0]} rows, labels "
            f"{yv.shape}; expected {outputs} label column(s)"
        )

    keras.utils.set_random_seed(seed)
    model = _build_head(n_features, widths, outputs, mean, std, learning_rate)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", patience=patience, restore_best_weights=True
    )
    # arrays: Keras batches and shuffles them; a dataset comes batched (and shuffled) already
    fit_kw: dict[str, Any] = (
        {"batch_size": batch_size, "shuffle": True} if fit_y is not None else {"shuffle": False}
    )
    if steps_per_epoch is not None:
        fit_kw["steps_per_epoch"] = steps_per_epoch
    if class_weight == "balanced" and outputs == 1:  # n / (2 n_c), as scikit-learn's
        p = float(positives[0]) / n_rows
        fit_kw["class_weight"] = {0: 0.5 / (1.0 - p), 1: 0.5 / p}
    elif class_weight not in (None, "none", "balanced"):
        raise ValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
    hist = model.fit(
        fit_x, fit_y, validation_data=(xv, yv), epochs=epochs, callbacks=[stop], verbose=0, **fit_kw
    )
    history = {key: [float(v) for v in hist.history.get(key, [])] for key in HISTORY_KEYS}
    epochs_run = len(history["loss"])
    best_epoch = int(np.argmin(history["val_loss"])) + 1 if history["val_loss"] else epochs_run
    logger.info(
        "dense %s: %d rows, %d epochs run (best %d, val_loss %.4f)",
        list(widths),
        n_rows,
        epochs_run,
        best_epoch,
        min(history["val_loss"], default=float("nan")),
    )
    return DenseHead(
        model=model,
        hidden=widths,
        outputs=outputs,
        history=history,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
    )


def _head_params(
    head: DenseHead,
    *,
    epochs: int,
    batch_size: int,
    patience: int,
    learning_rate: float,
    n_features: int,
) -> dict[str, Any]:
    val = head.history["val_loss"]
    return {
        "hidden": list(head.hidden),
        "epochs": epochs,
        "epochs_run": head.epochs_run,
        "best_epoch": head.best_epoch,
        "batch_size": batch_size,
        "patience": patience,
        "learning_rate": learning_rate,
        "n_features": n_features,
        "best_val_loss": float(min(val)) if val else None,
    }


def fit_dense(
    x_train: Any | None,
    y_train: Any | None,
    x_val: Any | None,
    y_val: Any | None,
    x_test: Any,
    *,
    hidden: Sequence[int] = (20,),
    epochs: int = 50,
    batch_size: int = 256,
    patience: int = 5,
    learning_rate: float = 1e-3,
    seed: int = 0,
    train_data: Any = None,
    steps_per_epoch: int | None = None,
    validation_fraction: float = 0.1,
    class_weight: str | None = None,
) -> FitResult:
    """Train a dense head (see :func:`train_dense_head`) and predict the test rows.

    ``result.estimator`` is the :class:`DenseHead` (``.activations(x)`` gives the last hidden
    layer's activations). params: hidden, epochs, epochs_run, best_epoch, batch_size, patience,
    learning_rate, n_features, best_val_loss, class_weight. history: loss, accuracy, val_loss,
    val_accuracy. ``class_weight="balanced"`` weighs each class's loss by n / (2 n_class).
    """
    clock = Phases()
    with clock("fit"):
        head = train_dense_head(
            x_train,
            y_train,
            x_val,
            y_val,
            hidden=hidden,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            learning_rate=learning_rate,
            seed=seed,
            train_data=train_data,
            steps_per_epoch=steps_per_epoch,
            validation_fraction=validation_fraction,
            class_weight=class_weight,
        )
        n_features = int(head.model.inputs[0].shape[-1])
        y_score = head.predict_proba(check_test(x_test, n_features))[:, 0]
    params = _head_params(
        head,
        epochs=epochs,
        batch_size=batch_size,
        patience=patience,
        learning_rate=learning_rate,
        n_features=n_features,
    )
    params["class_weight"] = class_weight
    return scores_to_result(
        "dense", y_score, params, clock.total, history=head.history, estimator=head
    )


_HEAD_KEYS = (
    "hidden",
    "epochs",
    "batch_size",
    "patience",
    "learning_rate",
    "train_data",
    "steps_per_epoch",
    "validation_fraction",
    "class_weight",
)


@dataclass
class Bottleneck:
    """The two stages of :func:`fit_bottleneck`: the dense head and the model on its k units."""

    head: DenseHead
    second: Any

    def predict_proba(self, x: Any) -> np.ndarray:
        return np.asarray(
            self.second.predict_proba(self.head.activations(x))[:, 1], dtype=np.float32
        )


def fit_bottleneck(
    x_train: Any,
    y_train: Any,
    x_val: Any | None,
    y_val: Any | None,
    x_test: Any,
    *,
    k: int = 20,
    second: str = "lasso",
    seed: int = 0,
    folds: int = 10,
    **kw: Any,
) -> FitResult:
    """The original study's method: train a dense head whose last hidden layer has ``k`` units
    (``hidden=(k,)`` by default, or any ``hidden`` ending in ``k``), then fit ``second``
    ("lasso" or "forest") on the k activations of the training rows and predict the test rows
    from theirs.

    ``kw`` holds settings of the head (hidden, epochs, batch_size, patience, learning_rate,
    train_data, steps_per_epoch, validation_fraction) and of the second model (e.g. cs,
    n_estimators, max_features, n_jobs, cv_max_rows); anything else is a ``TypeError``.
    ``x_train`` is needed even with ``train_data`` (the second model is fitted on its
    activations). Model name ``bottleneck{k}-{second}``; params: k, hidden, epochs_run,
    best_epoch, second, second_params (the second model's params); history: the head's.
    """
    from featstore.train.forest import fit_forest
    from featstore.train.lasso import fit_lasso

    second_fits = {"lasso": fit_lasso, "forest": fit_forest}
    if second not in second_fits:
        raise ValueError(f"second must be one of {sorted(second_fits)}, got {second!r}")
    fit_second = second_fits[second]
    second_keys = [
        p.name
        for p in inspect.signature(fit_second).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("seed", "folds")
    ]
    unknown = sorted(set(kw) - set(_HEAD_KEYS) - set(second_keys))
    if unknown:
        raise TypeError(f"fit_bottleneck(second={second!r}) got unknown settings {unknown}")
    head_kw = {key: kw[key] for key in _HEAD_KEYS if key in kw}
    second_kw = {key: kw[key] for key in second_keys if key in kw}
    hidden = _check_hidden(head_kw.pop("hidden", (k,)))
    if k < 1 or not hidden or hidden[-1] != k:
        raise ValueError(f"the last hidden layer must have k={k} units, got hidden={list(hidden)}")

    xs = as_features(x_train, "training features")
    ys = as_labels(y_train, "training labels")
    check_binary(ys)
    clock = Phases()
    with clock("fit"):
        head = train_dense_head(
            xs if "train_data" not in head_kw else None,
            ys if "train_data" not in head_kw else None,
            x_val,
            y_val,
            hidden=hidden,
            seed=seed,
            **head_kw,
        )
        a_train = head.activations(xs)
        a_test = head.activations(check_test(x_test, xs.shape[1]))
        dead = int(np.sum(a_train.max(axis=0) <= 0))
        if dead:
            logger.info(
                "bottleneck%d: %d of %d units are never active on the training rows", k, dead, k
            )
        inner = fit_second(a_train, ys, a_test, folds=folds, seed=seed, **second_kw)
    params = {
        "k": k,
        "hidden": list(hidden),
        "epochs_run": head.epochs_run,
        "best_epoch": head.best_epoch,
        "dead_units": dead,
        "second": second,
        "second_params": inner.params,
    }
    return scores_to_result(
        f"bottleneck{k}-{second}",
        inner.y_score,
        params,
        clock.total,
        history=head.history,
        estimator=Bottleneck(head=head, second=inner.estimator),
    )


def fit_multilabel(
    x_train: Any | None,
    Y_train: Any | None,
    x_val: Any | None,
    Y_val: Any | None,
    x_test: Any,
    *,
    attributes: Sequence[str],
    hidden: Sequence[int] = (20,),
    epochs: int = 50,
    batch_size: int = 256,
    patience: int = 5,
    learning_rate: float = 1e-3,
    seed: int = 0,
    train_data: Any = None,
    steps_per_epoch: int | None = None,
    validation_fraction: float = 0.1,
) -> dict[str, FitResult | FitError]:
    """One dense head with a sigmoid output per attribute, trained on all of them at once
    (binary cross-entropy averaged over them; early stopping on that average on the validation
    split). ``Y_*`` are ``(n, len(attributes))`` 0/1 in the order of ``attributes``.

    Returns ``{attribute: FitResult | FitError}`` in the order of ``attributes`` (model
    "multilabel"); the history, the head, the params other than ``attribute`` and
    ``fit_seconds`` (the one shared training) are the same for all the fitted attributes.

    One class only: the same rule as every other model. An attribute whose training labels have
    one class only gets a :class:`FitError` (status "error", reason the message
    :class:`SingleClassError` gives for a single-attribute fit) and is dropped from the head's
    outputs: it cannot be learnt, its constant loss term would only dilute the average that early
    stopping watches, and a saved head's outputs are then exactly the attributes that have a
    result. ``params["outputs"]`` lists the head's outputs, in column order. The other
    attributes get their results. When no attribute has both classes, :class:`SingleClassError`
    (nothing to fit). With ``train_data`` (the caller's batches, read once more for this check)
    the column cannot be cut from the batches: it stays an output of the head (learning a
    constant) and still gets a :class:`FitError`.
    """
    names = list(attributes)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"attributes must be distinct and non-empty, got {names}")
    reasons, y_all = _one_class_reasons(names, x_train, Y_train, train_data, steps_per_epoch)
    failed = {n: r for n, r in reasons.items() if r is not None}
    if len(failed) == len(names):
        _raise_nothing_to_fit(names, failed)
    outputs = names if train_data is not None else [n for n in names if n not in failed]
    if failed:
        logger.warning(
            "multilabel: %d of %d attributes have one class only in the training "
            "sample (%s): error results for them%s",
            len(failed),
            len(names),
            ", ".join(failed),
            "" if train_data is not None else f"; the head has the other {len(outputs)} outputs",
        )
    cols = [names.index(n) for n in outputs]
    y_fit = None if y_all is None else y_all[:, cols]
    y_val = None
    if Y_val is not None:
        y_val = _labels_matrix(Y_val, "validation labels")
        _check_columns(y_val, names, "validation labels")
        y_val = y_val[:, cols]
    clock = Phases()
    with clock("fit"):
        head = train_dense_head(
            x_train if train_data is None else None,
            y_fit,
            x_val,
            y_val,
            hidden=hidden,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            learning_rate=learning_rate,
            seed=seed,
            train_data=train_data,
            steps_per_epoch=steps_per_epoch,
            validation_fraction=validation_fraction,
            names=outputs,
        )
        n_features = int(head.model.inputs[0].shape[-1])
        scores = head.predict_proba(check_test(x_test, n_features))
    shared = _head_params(
        head,
        epochs=epochs,
        batch_size=batch_size,
        patience=patience,
        learning_rate=learning_rate,
        n_features=n_features,
    )
    shared.update(n_attributes=len(names), outputs=outputs)
    results: dict[str, FitResult | FitError] = {}
    for name in names:
        if name in failed:
            results[name] = FitError(model="multilabel", reason=failed[name])
            continue
        results[name] = scores_to_result(
            "multilabel",
            scores[:, outputs.index(name)],
            jsonable({**shared, "attribute": name}),
            clock.total,
            history={key: list(v) for key, v in head.history.items()},
            estimator=head,
        )
    return results


def _one_class_reasons(
    names: list[str],
    x_train: Any | None,
    Y_train: Any | None,
    train_data: Any,
    steps_per_epoch: int | None,
) -> tuple[dict[str, str | None], np.ndarray | None]:
    """Per attribute, why its training labels cannot be learnt (one class only) or None; and
    the training label matrix (None with ``train_data``, whose batches are read for the counts)."""
    if train_data is None:
        if x_train is None or Y_train is None:
            raise ValueError("give x_train and Y_train, or train_data")
        y_all = _labels_matrix(Y_train, "training labels")
        _check_columns(y_all, names, "training labels")
        return {n: single_class_reason(y_all[:, j]) for j, n in enumerate(names)}, y_all
    _, _, positives, n_rows, _ = _dataset_summary(train_data, steps_per_epoch)
    _check_columns(positives[None, :], names, "train_data labels")
    reasons = {
        n: one_class_message(n_rows, int(positives[j] > 0)) if positives[j] in (0, n_rows) else None
        for j, n in enumerate(names)
    }
    return reasons, None


def _raise_nothing_to_fit(names: list[str], failed: dict[str, str]) -> None:
    """:class:`SingleClassError` when no attribute has both classes: the single-attribute
    message for one attribute, else the attributes grouped by reason."""
    if len(names) == 1:
        raise SingleClassError(failed[names[0]])
    by_reason: dict[str, list[str]] = {}
    for n, r in failed.items():
        by_reason.setdefault(r, []).append(n)
    raise SingleClassError(
        "no attribute can be fitted: "
        + "; ".join(f"{', '.join(ns)}: {r}" for r, ns in by_reason.items())
    )


def _check_columns(y: np.ndarray, names: list[str], what: str) -> None:
    if y.shape[1] != len(names):
        raise ValueError(f"{what} have {y.shape[1]} column(s) for {len(names)} attributes")
