"""Run an artifact on the host (LiteRT / ONNX Runtime) and compare it with the float model."""

from __future__ import annotations

from pathlib import Path
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


def run_tflite(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    from edgeopt.analyze.tflite import interpreter, tensor_io

    it = interpreter(str(path), threads=threads)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    in_io, out_io = tensor_io(inp), tensor_io(out)
    batch = len(x)
    if in_io["shape_signature"][0] == -1:
        it.resize_tensor_input(inp["index"], [batch, *in_io["shape"][1:]])
        it.allocate_tensors()
        it.set_tensor(inp["index"], quantize(x, in_io["dtype"], in_io["quantization"]))
        it.invoke()
        return dequantize(it.get_tensor(out["index"]), out_io["quantization"])
    it.allocate_tensors()
    outs = []
    for i in range(batch):
        it.set_tensor(inp["index"], quantize(x[i:i + 1], in_io["dtype"], in_io["quantization"]))
        it.invoke()
        outs.append(dequantize(it.get_tensor(out["index"]), out_io["quantization"]))
    return np.concatenate(outs)


def run_onnx(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(inp.type, np.float32)
    if isinstance(inp.shape[0], int) and inp.shape[0] == 1 and len(x) > 1:
        return np.concatenate([sess.run(None, {inp.name: x[i:i + 1].astype(dtype)})[0] for i in range(len(x))]
                              ).astype(np.float32)
    return np.asarray(sess.run(None, {inp.name: x.astype(dtype)})[0], dtype=np.float32)


def run_artifact(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    return run_tflite(path, x) if fmt == "tflite" else run_onnx(path, x)


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
