"""Run an artifact on the host (LiteRT / ONNX Runtime) and compare it with the float model."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.errors import DataError


def quantize(x: np.ndarray, dtype: str, quant: dict[str, Any] | None) -> np.ndarray:
    """Float inputs -> what the model input takes (``q = round(x / scale) + zero_point``, clipped)."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return x.astype(dt)
    if not quant:
        return x.astype(dt)
    scale = np.asarray(quant["scale"], dtype=np.float32)
    zp = np.asarray(quant["zero_point"], dtype=np.float32)
    info = np.iinfo(dt)
    return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dt)


def dequantize(y: np.ndarray, quant: dict[str, Any] | None) -> np.ndarray:
    if not quant or y.dtype.kind == "f":
        return y.astype(np.float32)
    scale = np.asarray(quant["scale"], dtype=np.float32)
    zp = np.asarray(quant["zero_point"], dtype=np.float32)
    return ((y.astype(np.float32) - zp) * scale).astype(np.float32)


def compare(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Accuracy (with labels), top-1 agreement with the float model, max abs difference of outputs."""
    flat_o = outputs.reshape(len(outputs), -1)
    flat_r = reference.reshape(len(reference), -1)
    metrics: dict[str, Any] = {
        "samples": int(len(outputs)),
        "top1_agreement": float(np.mean(flat_o.argmax(1) == flat_r.argmax(1))),
        "max_abs_diff": float(np.max(np.abs(flat_o - flat_r))),
        "mean_abs_diff": float(np.mean(np.abs(flat_o - flat_r))),
    }
    if labels is not None:
        check_labels_fit(labels, len(outputs), flat_r.shape[1])
        metrics["accuracy"] = float(np.mean(flat_o.argmax(1) == labels))
        metrics["float_accuracy"] = float(np.mean(flat_r.argmax(1) == labels))
        metrics["accuracy_drop_pp"] = round(100 * (metrics["float_accuracy"] - metrics["accuracy"]), 3)
    return metrics


def check_labels_fit(labels: np.ndarray, samples: int, classes: int) -> None:
    """An accuracy from labels the model cannot predict (42 of 10 classes, -1) would be a number that lies."""
    if len(labels) != samples:
        raise DataError(f"{len(labels)} labels for {samples} outputs", "give one label per eval sample")
    outside = (labels < 0) | (labels >= classes)
    if outside.any():
        raise DataError(f"{int(outside.sum())} of {len(labels)} eval labels are outside 0..{classes - 1} "
                        f"(e.g. {int(labels[outside][0])}) but the model has {classes} output classes",
                        "labels must be class indices of the model's output")
