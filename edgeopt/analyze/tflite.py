"""Read a .tflite flatbuffer through LiteRT: I/O details with quantisation, op counts, parameter count."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from edgeopt.tf_env import native_stderr_silenced

_delegate_announced = False


def interpreter(model: bytes | str, threads: int = 1) -> Any:
    """A LiteRT interpreter, not yet allocated (allocating applies the default delegate, which changes the op
    list). LiteRT prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` to fd 2 the first time a
    process applies that delegate, a line with nothing for the user: so the first time, a throw-away copy is
    allocated with native stderr silenced. A model that fails to allocate raises, with its reason, when the
    caller allocates it."""
    global _delegate_announced
    from ai_edge_litert.interpreter import Interpreter

    def make() -> Any:
        if isinstance(model, bytes):
            return Interpreter(model_content=model, num_threads=threads)
        return Interpreter(model_path=model, num_threads=threads)

    it = make()
    if not _delegate_announced:
        with native_stderr_silenced():
            try:
                make().allocate_tensors()
                _delegate_announced = True
            except (RuntimeError, ValueError):
                pass
    return it


def tensor_io(detail: dict[str, Any]) -> dict[str, Any]:
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), dtype=np.float64)
    quant = None
    if scales.size:
        quant = {"scale": scales.tolist(), "zero_point": np.asarray(q.get("zero_points", [])).astype(int).tolist(),
                 "axis": int(q.get("quantized_dimension", 0))}
    return {
        "name": detail["name"],
        "shape": [int(d) for d in detail["shape"]],
        "shape_signature": [int(d) for d in detail.get("shape_signature", detail["shape"])],
        "dtype": np.dtype(detail["dtype"]).name,
        "quantization": quant,
    }


def graph(model: bytes | str) -> tuple[Any, list[dict[str, Any]], dict[int, dict[str, Any]]]:
    """(interpreter, its ops as LiteRT lists them, tensor details by index)."""
    it = interpreter(model)
    ops = it._get_ops_details()  # noqa: SLF001 - the only public-ish op listing LiteRT has
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    return it, ops, tensors


def op_tensor_dtypes(model: bytes | str) -> list[tuple[str, list[str], list[str]]]:
    _, ops, tensors = graph(model)
    rows = []
    for op in ops:
        ins = [np.dtype(tensors[i]["dtype"]).name for i in op["inputs"] if i >= 0 and i in tensors]
        outs = [np.dtype(tensors[i]["dtype"]).name for i in op["outputs"] if i in tensors]
        rows.append((op["op_name"], ins, outs))
    return rows


def inspect(model: bytes | str) -> dict[str, Any]:
    it, ops, tensors = graph(model)
    produced = {i for op in ops for i in op["outputs"]}
    graph_inputs = {d["index"] for d in it.get_input_details()}
    params = 0
    for op in ops:
        for i in op["inputs"]:
            if i >= 0 and i not in produced and i not in graph_inputs and i in tensors:
                params += int(np.prod(tensors[i]["shape"])) if len(tensors[i]["shape"]) else 1
    return {
        "inputs": [tensor_io(d) for d in it.get_input_details()],
        "outputs": [tensor_io(d) for d in it.get_output_details()],
        "ops": dict(sorted(Counter(op["op_name"] for op in ops).items())),
        "params": params,
    }


def empty_range_tensors(model: bytes | str, below: float = 1e-5) -> list[dict[str, Any]]:
    """Op outputs quantised to a float range narrower than ``below`` (scale x the integer span): their calibration
    saw one value (a ReLU that never fired); the converter nudges such a range to about 2e-6, and XNNPACK refuses
    the ops that read it. Graph order; ``name`` is the tensor's first name (LiteRT joins fused ones with ';')."""
    _, ops, tensors = graph(model)
    out = []
    for op in ops:
        for i in op["outputs"]:
            t = tensors.get(i)
            if t is None or np.dtype(t["dtype"]).kind not in "iu" or np.dtype(t["dtype"]).itemsize > 2:
                continue
            scales = np.asarray((t.get("quantization_parameters") or {}).get("scales", []), dtype=np.float64)
            if not scales.size:
                continue
            span = float(scales.max()) * (2 ** (8 * np.dtype(t["dtype"]).itemsize) - 1)
            if span < below:
                out.append({"name": str(t["name"]).split(";")[0], "op": op["op_name"], "range": span})
    return out
