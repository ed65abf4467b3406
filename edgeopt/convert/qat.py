"""Quantisation-aware fine-tuning on Keras 3: the model trains with its Conv/Dense kernels fake-quantised to the
int8 grid the TFLite converter will use, so the int8 model is the one that was trained.

Why not tfmot ``quantize_model``: it runs on legacy Keras only (see ``prune.py``), and its output is a model of
wrapper layers whose conversion path differs from the plain-Keras path every other profile uses.

How (straight-through estimator, as a Keras callback on an ordinary model; nothing custom ends in the saved model):
- each kernel keeps a float *shadow*; before every step the layer's kernel is set to ``Q(shadow)``, the step's
  gradient (computed at the quantised weights) moves it by ``delta``, and the shadow takes ``+= delta``: the
  gradient passes straight through the rounding;
- ``Q`` is what the converter does: symmetric per-output-channel int8, ``scale = max|w| / 127``, zero point 0 —
  applied to the kernel *as the converter sees it*, i.e. with a following BatchNormalization folded in
  (``w * gamma / sqrt(var + eps)``); the BN statistics are frozen while fine-tuning so that fold is fixed;
- at the end the kernels are left at ``Q(shadow)``: post-training int8 conversion of the result reproduces the
  trained weights exactly (same grid, same scales).
Activations are not fake-quantised here: their int8 ranges come from the converter's calibration, as for
``int8``. That covers the usual dominant error of small CNNs (per-channel weight rounding), not activation
clipping in models with outlier activations (see docs/compression.md).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgeopt.config import QATOptions
from edgeopt.convert.training import (
    EpochLog,
    Note,
    accuracy,
    fit,
    output_kind,
    params,
    start_fine_tuning,
)
from edgeopt.inputs.data import Dataset

QUANTISED = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "Dense")
FOLDABLE = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D")


def _consumers(model: Any) -> dict[str, list[Any]]:
    """layer name -> the layers that take its output."""
    out: dict[str, list[Any]] = {}
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            for t in getattr(node, "input_tensors", []) or []:
                hist = getattr(t, "_keras_history", None)
                if hist is not None:
                    out.setdefault(hist[0].name, []).append(layer)
    return out


class _Quantised:
    """One kernel under fake quantisation."""

    def __init__(self, layer: Any, bn: Any) -> None:
        self.layer = layer
        self.depthwise = type(layer).__name__ == "DepthwiseConv2D"
        self.var = layer.depthwise_kernel if self.depthwise else layer.kernel
        self.bn = bn
        self.shadow = np.asarray(self.var.numpy(), dtype=np.float32).copy()
        self.q = self.shadow

    def fold(self) -> np.ndarray | None:
        """Per-output-channel factor the converter multiplies the kernel by (BN folded), or None."""
        if self.bn is None:
            return None
        bn = self.bn
        gamma = np.asarray(bn.gamma.numpy()) if getattr(bn, "gamma", None) is not None else 1.0
        var = np.asarray(bn.moving_variance.numpy())
        return (gamma / np.sqrt(var + bn.epsilon)).astype(np.float32)

    def project(self, w: np.ndarray) -> np.ndarray:
        shape = w.shape
        wc = w.reshape(*shape[:-2], shape[-2] * shape[-1]) if self.depthwise else w  # TFLite: channels = in*mult
        f = self.fold()
        if f is not None:
            wc = wc * f
        flat = wc.reshape(-1, wc.shape[-1])
        scale = np.max(np.abs(flat), axis=0) / 127.0
        scale = np.where(scale > 0, scale, 1.0)
        q = np.clip(np.round(wc / scale), -127, 127) * scale
        if f is not None:
            q = q / np.where(f != 0, f, 1.0)
        return q.reshape(shape).astype(np.float32)

    def begin_step(self) -> None:
        self.q = self.project(self.shadow)
        self.var.assign(self.q)

    def end_step(self) -> None:
        self.shadow += np.asarray(self.var.numpy()) - self.q

    def finish(self) -> None:
        self.q = self.project(self.shadow)
        self.var.assign(self.q)


def quantised_kernels(model: Any, opts: QATOptions) -> list[_Quantised]:
    consumers = _consumers(model) if opts.fold_batch_norm else {}
    out = []
    for layer in model.layers:
        name = type(layer).__name__
        if name not in QUANTISED:
            continue
        bn = None
        after = consumers.get(layer.name, [])
        act = getattr(layer, "activation", None)
        linear = act is None or getattr(act, "__name__", "") == "linear"
        if name in FOLDABLE and linear and len(after) == 1 and type(after[0]).__name__ == "BatchNormalization" \
                and after[0].axis in (-1, len(layer.output.shape) - 1):
            bn = after[0]
        out.append(_Quantised(layer, bn))
    return out


def qat_model(teacher: Any, data: Dataset, opts: QATOptions, *, seed: int, note: Note,
              evalset: Dataset | None = None) -> tuple[Any, dict[str, Any]]:
    import keras

    t0 = time.perf_counter()
    model, ts = start_fine_tuning(teacher, data, opts, note, seed=seed, what="qat")
    if opts.freeze_batch_norm:
        for layer in model.layers:
            if type(layer).__name__ == "BatchNormalization":
                layer.trainable = False  # Keras 3: a frozen BN also runs in inference mode
    kernels = quantised_kernels(model, opts)
    steps = [0]

    class _FakeQuant(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            for k in kernels:
                k.begin_step()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            steps[0] += 1
            for k in kernels:
                k.end_step()

        def on_train_end(self, logs: Any = None) -> None:
            for k in kernels:
                k.finish()

    kind = output_kind(teacher, ts.x)
    log = EpochLog("qat", opts.epochs, note)
    folded = sum(k.bn is not None for k in kernels)
    note(f"qat: {len(kernels)} kernels fake-quantised to int8 per channel ({folded} with BatchNorm folded), "
         f"{opts.epochs} epoch(s) on {len(ts.x)} samples")
    fit(model, ts.x, ts.y, opts, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=kind == "logits"),
        metrics=["accuracy"], callbacks=[_FakeQuant()], log=log)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.trainable = True
    info: dict[str, Any] = {
        "kind": "qat", "settings": opts.model_dump(), "seed": seed, "labels_from": ts.labels_from,
        "train_samples": int(len(ts.x)), "steps": steps[0], "history": log.history,
        "quantised_kernels": [{"layer": k.layer.name, "batch_norm_folded": k.bn.name if k.bn is not None else None}
                              for k in kernels],
        "params": {"source": params(teacher), "transformed": params(model)},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if evalset is not None and evalset.y is not None:
        info["float_accuracy"] = {"source": accuracy(teacher, evalset.x, evalset.y),
                                  "transformed": accuracy(model, evalset.x, evalset.y)}
    return model, info
