"""Read an .onnx file: I/O (with QDQ scales where the graph quantises its input/output), op counts, parameters."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def _dims(value_info: Any) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]


def _qdq_params(graph: Any, tensor: str, consumer: bool) -> dict[str, Any] | None:
    """Scale/zero-point of the QuantizeLinear that reads an input (or DequantizeLinear that writes an output)."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if consumer and node.op_type == "QuantizeLinear" and node.input[0] == tensor:
            break
        if not consumer and node.op_type == "DequantizeLinear" and tensor in node.output:
            break
    else:
        return None
    scale = inits.get(node.input[1])
    zp = inits.get(node.input[2]) if len(node.input) > 2 else None
    if scale is None:
        return None
    return {"scale": np.atleast_1d(scale).astype(float).tolist(),
            "zero_point": np.atleast_1d(zp if zp is not None else 0).astype(int).tolist(),
            "dtype": str(zp.dtype) if zp is not None else "uint8", "axis": 0}


def inspect(path: Path) -> dict[str, Any]:
    import onnx

    proto = onnx.load(str(path))
    graph = proto.graph
    inits = {i.name for i in graph.initializer}

    def io(v: Any, consumer: bool) -> dict[str, Any]:
        dims = _dims(v)
        return {
            "name": v.name,
            "shape": [d if d > 0 else 1 for d in dims],
            "shape_signature": dims,
            "dtype": np.dtype(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name,
            "quantization": _qdq_params(graph, v.name, consumer),
        }

    return {
        "inputs": [io(v, True) for v in graph.input if v.name not in inits],
        "outputs": [io(v, False) for v in graph.output],
        "ops": dict(sorted(Counter(n.op_type for n in graph.node).items())),
        "params": int(sum(int(np.prod(i.dims)) for i in graph.initializer)),
        "opset": int(max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)),
    }
