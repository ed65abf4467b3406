"""Compression facts of a converted model file: its size after gzip and the zeros in its weight tensors."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1, "CONV_3D": 1}


def tflite_weight_sparsity(path: Any, min_weights: int = 0) -> dict[str, Any]:
    """Zero elements in the constant weight tensors (input 1) of the conv/FC ops of a .tflite file, as stored
    (int8 for quantised models: a zero there is a zero weight, whatever the scale). ``pruned`` counts only the
    tensors with at least ``min_weights`` elements (the ones a profile with that ``min_weights`` prunes)."""
    from edgeopt.analyze.tflite import graph

    it, ops, tensors = graph(str(path))
    it.allocate_tensors()
    produced = {i for op in ops for i in op["outputs"]}
    zeros = total = 0
    rows = []
    seen: set[int] = set()
    for op in ops:
        slot = WEIGHT_OPS.get(op["op_name"])
        if slot is None or len(op["inputs"]) <= slot:
            continue
        idx = op["inputs"][slot]
        if idx < 0 or idx in produced or idx in seen or idx not in tensors:
            continue
        seen.add(idx)
        w = it.get_tensor(idx)
        z = int(np.sum(w == 0))
        zeros, total = zeros + z, total + w.size
        rows.append({"op": op["op_name"], "tensor": tensors[idx]["name"], "dtype": np.dtype(w.dtype).name,
                     "weights": int(w.size), "zeros": z})
    big = [r for r in rows if r["weights"] >= max(min_weights, 2)]
    pz, pt = sum(r["zeros"] for r in big), sum(r["weights"] for r in big)
    int8 = sum(r["weights"] for r in rows if r["dtype"] in ("int8", "uint8"))
    return {"zeros": zeros, "weights": total, "sparsity": round(zeros / total, 6) if total else 0.0,
            "int8_share": round(int8 / total, 6) if total else 0.0,
            "pruned": {"min_weights": min_weights, "zeros": pz, "weights": pt,
                       "sparsity": round(pz / pt, 6) if pt else 0.0},
            "tensors": rows}


def onnx_weight_sparsity(path: Any) -> dict[str, Any]:
    """Zero elements in the weight initializers (2-D and up) feeding Conv/MatMul/Gemm (directly or through a
    DequantizeLinear) of an ONNX model."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    deq = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    names = []
    for n in proto.graph.node:
        if n.op_type in ("Conv", "MatMul", "Gemm", "ConvTranspose", "QLinearConv", "QLinearMatMul", "ConvInteger",
                         "MatMulInteger"):
            for name in n.input:
                names.append(deq.get(name, name))
    zeros = total = int8 = 0
    for name in dict.fromkeys(names):
        init = inits.get(name)
        if init is None or len(init.dims) < 2:
            continue
        w = numpy_helper.to_array(init)
        zeros, total = zeros + int(np.sum(w == 0)), total + int(w.size)
        int8 += int(w.size) if w.dtype in (np.int8, np.uint8) else 0
    return {"zeros": zeros, "weights": total, "sparsity": round(zeros / total, 6) if total else 0.0,
            "int8_share": round(int8 / total, 6) if total else 0.0}


def compression_facts(path: Path, fmt: str, min_weights: int = 0) -> dict[str, Any]:
    """Size after gzip -9 (what a download or an OTA update costs) and the zeros in the weight tensors."""
    data = Path(path).read_bytes()
    facts: dict[str, Any] = {"bytes_gzip": len(gzip.compress(data, compresslevel=9, mtime=0))}
    try:
        if fmt == "tflite":
            s = tflite_weight_sparsity(path, min_weights)
            facts["weight_sparsity"] = {"zeros": s["zeros"], "weights": s["weights"], "sparsity": s["sparsity"],
                                        "int8_share": s["int8_share"], "pruned_tensors": s["pruned"]}
        else:
            facts["weight_sparsity"] = onnx_weight_sparsity(path)
    except Exception as exc:  # noqa: BLE001 - a fact we cannot read is reported, never fatal
        facts["weight_sparsity"] = {"error": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}
    return facts
