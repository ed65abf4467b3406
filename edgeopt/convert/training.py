"""Shared by the training transforms (``convert/prune.py``, ``convert/distill.py``, ``convert/qat.py``).

A transform takes the source Keras model (never modified: it works on a clone), training data and its options,
and returns a new Keras model plus a JSON-able record of what it did (settings, per-epoch history, timings).
Everything runs on Keras 3 (the same Keras the rest of the pipeline converts from): no legacy-Keras round trip.

Determinism: ``keras.utils.set_random_seed(seed)`` seeds Python, NumPy and TensorFlow before the clone and the
fit; fit shuffles with that seeded generator. On one machine and one TensorFlow build two runs give the same
weights (asserted in tests/test_compress.py); across CPUs, thread counts or oneDNN settings float sums may differ
in the last bits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgeopt.config import Training
from edgeopt.errors import DataError, ModelError
from edgeopt.inputs.data import Dataset

Note = Callable[[str], None]


@dataclass
class TrainSet:
    x: np.ndarray
    y: np.ndarray
    labels_from: str  # "data" | "teacher top-1"
    spec: str


def clone_with_weights(model: Any) -> Any:
    """An independent copy of a Keras model (same architecture, same weights)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def output_kind(model: Any, x: np.ndarray, declared: str = "auto") -> str:
    """``logits`` or ``probabilities``: the last layer's activation if it says, else the outputs on a batch."""
    if declared != "auto":
        return declared
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    name = getattr(act, "__name__", "") if act is not None else ""
    if name == "softmax" or type(last).__name__ == "Softmax":
        return "probabilities"
    out = np.asarray(model(x[:64], training=False), dtype=np.float64)
    if out.min() >= 0 and out.max() <= 1 and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3):
        return "probabilities"
    return "logits"


def check_classifier(model: Any, what: str) -> int:
    """Training transforms handle single-output classifiers; returns the number of classes."""
    shape = tuple(model.outputs[0].shape[1:])
    if len(shape) != 1 or not shape[0] or shape[0] < 2:
        raise ModelError(f"{what}: model output shape {shape} is not a class vector",
                         "training transforms (prune/distill/qat) need a classifier with outputs (batch, classes)")
    return int(shape[0])


def training_set(data: Dataset, teacher: Any, opts: Training, note: Note) -> TrainSet:
    """The samples to fine-tune on; without labels the source model's own top-1 answers stand in for them."""
    x, y = data.x, data.y
    if opts.max_samples is not None:
        x = x[:opts.max_samples]
        y = None if y is None else y[:opts.max_samples]
    if len(x) < 2:
        raise DataError(f"training data {data.spec}: {len(x)} sample(s); fine-tuning needs more",
                        "give a training set (a few thousand samples is typical)")
    if y is not None:
        return TrainSet(x, y.astype(np.int64), "data", data.spec)
    note(f"training data {data.spec} has no labels: using the source model's top-1 answers as labels")
    y = predict(teacher, x).argmax(axis=1).astype(np.int64)
    return TrainSet(x, y, "teacher top-1", data.spec)


def predict(model: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([np.asarray(model(x[i:i + batch], training=False)) for i in range(0, len(x), batch)])


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict(model, x).argmax(axis=1) == y))


class EpochLog:
    """A Keras callback: one progress line per epoch (epoch, loss, accuracy, extras) and a JSON-able history."""

    def __init__(self, label: str, epochs: int, note: Note, extra: Callable[[], dict[str, float]] | None = None
                 ) -> None:
        import keras

        outer = self

        class _CB(keras.callbacks.Callback):
            def on_train_begin(self, logs: Any = None) -> None:
                outer.t0 = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                outer.epoch_end(epoch, dict(logs or {}))

        self.callback = _CB()
        self.label, self.epochs, self.note, self.extra = label, epochs, note, extra
        self.history: list[dict[str, float]] = []
        self.t0 = time.perf_counter()

    def epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        row: dict[str, float] = {"epoch": epoch + 1}
        for k, v in logs.items():
            try:
                row[k] = round(float(v), 6)
            except (TypeError, ValueError):
                continue
        if self.extra:
            row.update({k: round(float(v), 6) for k, v in self.extra().items()})
        row["seconds"] = round(time.perf_counter() - self.t0, 2)
        self.history.append(row)
        shown = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds"))
        self.note(f"{self.label} epoch {epoch + 1}/{self.epochs}: {shown} ({row['seconds']:.0f} s)")


def fit(model: Any, x: np.ndarray, y: np.ndarray, opts: Training, *, loss: Any, metrics: list[Any],
        callbacks: list[Any], log: EpochLog, decay: bool = True) -> None:
    """Adam (cosine decay over the run unless ``decay`` is off); shuffled each epoch by the seeded generator."""
    import keras

    steps = opts.epochs * steps_per_epoch(len(x), opts)
    lr: Any = keras.optimizers.schedules.CosineDecay(opts.learning_rate, max(steps, 1)) if decay \
        else opts.learning_rate
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=metrics)
    model.fit(x, y, epochs=opts.epochs, batch_size=opts.batch_size, shuffle=True, verbose=0,
              validation_split=opts.validation_split, callbacks=[*callbacks, log.callback])


def steps_per_epoch(n: int, opts: Training) -> int:
    return int(np.ceil(n * (1 - opts.validation_split) / opts.batch_size))


def start_fine_tuning(teacher: Any, data: Dataset, opts: Training, note: Note, *, seed: int, what: str
                      ) -> tuple[Any, TrainSet]:
    """What prune and QAT begin with: the teacher must be a single-output classifier; everything seeded; a clone of
    the teacher to train (the teacher itself is never modified); the samples to train on."""
    check_classifier(teacher, what)
    seed_everything(seed)
    model = clone_with_weights(teacher)
    return model, training_set(data, teacher, opts, note)


def seed_everything(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)


def params(model: Any) -> int:
    return int(model.count_params())


def batch_norm_layers(model: Any) -> list[Any]:
    layers = model._flatten_layers(include_self=False, recursive=True) if hasattr(model, "_flatten_layers") \
        else model.layers  # noqa: SLF001
    return [layer for layer in layers if type(layer).__name__ in ("BatchNormalization", "SyncBatchNormalization")]


def recalibrate_batch_norm(model: Any, x: np.ndarray, batch: int = 250, max_samples: int = 4000) -> int:
    """Re-estimate BatchNorm moving statistics as exact averages over ``x`` at the final weights.

    Fine-tuning for a few hundred steps leaves the exponential moving averages (momentum 0.99) behind weights
    that changed (pruning) or were born during the run (a student): the model is right in training mode and wrong
    in inference mode. One forward pass in training mode with momentum i/(i+1) on batch i gives the running mean
    of the batch statistics instead. Returns the number of BatchNorm layers recalibrated.
    """
    layers = [layer for layer in batch_norm_layers(model) if layer.trainable]
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    try:
        for i, start in enumerate(range(0, min(len(x), max_samples), batch)):
            for layer in layers:
                layer.momentum = i / (i + 1.0)
            model(x[start:start + batch], training=True)
    finally:
        for layer, m in zip(layers, saved):
            layer.momentum = m
    return len(layers)
