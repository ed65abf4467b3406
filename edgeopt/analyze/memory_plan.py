"""Static tensor-arena estimate for TensorFlow Lite Micro, from the flatbuffer alone (no interpreter).

TFLM splits its arena in two:

* the **head**: non-persistent buffers (activations), laid out by ``GreedyMemoryPlanner`` over tensor lifetimes;
* the **tail**: persistent allocations made while the graph is set up (``TfLiteEvalTensor`` per tensor, a node
  struct per op, per-op kernel data such as per-channel multipliers, the allocator's own objects).

``plan()`` reproduces the head the way TFLM does it: every tensor that has no constant data in the flatbuffer and is
not a variable gets a buffer; its size is rounded up to 16 bytes (``MicroArenaBufferAlignment``); it lives from the
op that creates it (graph inputs: op 0) to the last op that reads it (graph outputs: the last op); buffers are placed
largest first (ties in tensor order) at the lowest offset that does not overlap any simultaneously live buffer.

``estimate_tail()`` is a model, not a measurement: struct sizes of the 64-bit host build of TFLM (the one the
``tflite-micro`` Python package runs) plus per-channel quantisation data. Kernel scratch buffers requested at
``Prepare`` time (none for the reference int8 kernels of the common ops; CMSIS-NN on a board asks for some) are not
modelled. ``edgeopt.convert.tflm`` reports this estimate next to the arena size measured by the real interpreter.

The flatbuffer is read with the schema module shipped in the ``tflite-micro`` package (no TensorFlow import).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALIGNMENT = 16  # tflite::MicroArenaBufferAlignment()

# TensorType -> bytes per element (INT4/UINT4/INT2 are packed: handled in _tensor_bytes)
_ELEMENT_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 15: 4, 16: 2, 18: 2,
                  21: 1, 22: 1}
_PACKED_BITS = {17: 4, 19: 2, 20: 4}
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
              8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64", 13: "resource",
              14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16", 19: "int2", 20: "uint4"}

# Tail model, 64-bit host build of TFLM (sizes in bytes, each allocation rounded up to 16 only where TFLM does).
EVAL_TENSOR_BYTES = 24          # sizeof(TfLiteEvalTensor): data ptr, dims ptr, type
NODE_AND_REGISTRATION_BYTES = 64
PERSISTENT_TENSOR_BYTES = 64    # a TfLiteTensor kept for each graph input/output (interpreter.input()/output())
IO_QUANT_BYTES = 32             # TfLiteAffineQuantization + arrays for a quantised graph input/output
OP_DATA_BYTES = {               # per-op kernel data allocated in Prepare (reference kernels, approximate)
    "CONV_2D": 64, "DEPTHWISE_CONV_2D": 64, "FULLY_CONNECTED": 48, "TRANSPOSE_CONV": 64,
    "AVERAGE_POOL_2D": 32, "MAX_POOL_2D": 32, "SOFTMAX": 48, "ADD": 96, "SUB": 96, "MUL": 48,
    "QUANTIZE": 32, "DEQUANTIZE": 32, "LOGISTIC": 32, "TANH": 32, "MEAN": 48, "CONCATENATION": 48,
}
PER_CHANNEL_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED"}
FIXED_TAIL_BYTES = 784          # allocator, memory planner and subgraph bookkeeping objects


def _align(n: int, a: int = ALIGNMENT) -> int:
    return (n + a - 1) // a * a


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype: str
    shape: list[int]
    bytes: int
    constant: bool
    variable: bool


@dataclass
class OpInfo:
    index: int
    name: str          # builtin name, e.g. CONV_2D; custom ops: "CUSTOM:<code>"
    inputs: list[int]
    outputs: list[int]


@dataclass
class Graph:
    """The first subgraph of a .tflite flatbuffer, as far as memory planning needs it."""

    tensors: list[TensorInfo]
    ops: list[OpInfo]
    inputs: list[int]
    outputs: list[int]
    subgraphs: int = 1
    offline_plan: bool = False


def builtin_names() -> dict[int, str]:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    return {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def _tensor_bytes(ttype: int, shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 0)
    if ttype in _PACKED_BITS:
        return (n * _PACKED_BITS[ttype] + 7) // 8
    return n * _ELEMENT_BYTES.get(ttype, 0)


def read_graph(model: bytes) -> Graph:
    """Parse the flatbuffer (first subgraph). Raises ValueError if it is not a TFLite model."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    m = fb.Model.GetRootAsModel(model, 0)
    names = builtin_names()
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if code == fb.BuiltinOperator.CUSTOM:
            cc = oc.CustomCode()
            codes.append("CUSTOM:" + (cc.decode() if isinstance(cc, bytes) else str(cc)))
        else:
            codes.append(names.get(code, f"BUILTIN_{code}"))
    sg = m.Subgraphs(0)
    tensors = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        shape = [int(d) for d in (t.ShapeAsNumpy() if t.ShapeLength() else [])]
        buf = m.Buffers(t.Buffer()) if t.Buffer() < m.BuffersLength() else None
        has_data = buf is not None and (buf.DataLength() > 0 or buf.Offset() > 1)
        name = t.Name()
        tensors.append(TensorInfo(i, name.decode() if isinstance(name, bytes) else str(name),
                                  TYPE_NAMES.get(t.Type(), str(t.Type())), shape,
                                  _tensor_bytes(t.Type(), shape), bool(has_data), bool(t.IsVariable())))
    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        ops.append(OpInfo(i, codes[op.OpcodeIndex()],
                          [int(x) for x in (op.InputsAsNumpy() if op.InputsLength() else [])],
                          [int(x) for x in (op.OutputsAsNumpy() if op.OutputsLength() else [])]))
    offline = False
    for i in range(m.MetadataLength()):
        n = m.Metadata(i).Name()
        if (n.decode() if isinstance(n, bytes) else str(n)) == "OfflineMemoryAllocation":
            offline = True
    return Graph(tensors, ops, [int(x) for x in sg.InputsAsNumpy()], [int(x) for x in sg.OutputsAsNumpy()],
                 m.SubgraphsLength(), offline)


@dataclass
class Buffer:
    tensor: int
    size: int       # aligned
    first: int
    last: int
    offset: int = -1


@dataclass
class Plan:
    head_bytes: int
    buffers: list[Buffer] = field(default_factory=list)
    peak_op: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"head_bytes": self.head_bytes, "planned_buffers": len(self.buffers), "peak_op": self.peak_op}


def lifetimes(graph: Graph) -> list[Buffer]:
    """One buffer per non-constant, non-variable tensor, with its [first, last] op interval (inclusive)."""
    n_ops = len(graph.ops)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in graph.inputs:
        first[t] = 0
        last[t] = 0
    for op in graph.ops:
        for t in op.inputs:
            if t >= 0:
                last[t] = max(last.get(t, op.index), op.index)
        for t in op.outputs:
            if t >= 0:
                first.setdefault(t, op.index)
                last[t] = max(last.get(t, op.index), op.index)
    for t in graph.outputs:
        last[t] = max(n_ops - 1, 0)
    out = []
    for tensor in graph.tensors:
        if tensor.constant or tensor.variable or tensor.index not in first or tensor.bytes == 0:
            continue
        out.append(Buffer(tensor.index, _align(tensor.bytes), first[tensor.index],
                          last.get(tensor.index, first[tensor.index])))
    return out


def greedy_plan(buffers: list[Buffer]) -> int:
    """Place buffers like tflite::GreedyMemoryPlanner; sets ``offset``; returns the arena head size."""
    order = sorted(range(len(buffers)), key=lambda i: -buffers[i].size)  # stable: ties keep tensor order
    placed: list[Buffer] = []  # sorted by offset
    for i in order:
        b = buffers[i]
        candidate = 0
        for p in placed:
            if p.last < b.first or b.last < p.first:
                continue  # not alive at the same time
            if candidate + b.size <= p.offset:
                break
            candidate = max(candidate, p.offset + p.size)
        b.offset = candidate
        placed.append(b)
        placed.sort(key=lambda q: q.offset)
    return max((b.offset + b.size for b in buffers), default=0)


def plan(graph: Graph) -> Plan:
    buffers = lifetimes(graph)
    head = greedy_plan(buffers)
    peak_op, peak = None, -1
    for i in range(len(graph.ops)):
        live = [b for b in buffers if b.first <= i <= b.last]
        top = max((b.offset + b.size for b in live), default=0)
        if top > peak:
            peak_op, peak = i, top
    return Plan(head, buffers, peak_op)


def estimate_tail(graph: Graph) -> dict[str, int]:
    """Persistent (tail) allocations of the 64-bit host TFLM build, by category (a model; see module doc)."""
    eval_tensors = EVAL_TENSOR_BYTES * len(graph.tensors)  # one allocation, not rounded (as recorded)
    nodes = _align(NODE_AND_REGISTRATION_BYTES * len(graph.ops))
    io = graph.inputs + graph.outputs
    persistent_tensors = PERSISTENT_TENSOR_BYTES * len(io)
    quant = IO_QUANT_BYTES * sum(1 for t in io if graph.tensors[t].dtype in ("int8", "uint8", "int16"))
    op_data = 0
    for op in graph.ops:
        op_data += _align(OP_DATA_BYTES.get(op.name, 0))
        if op.name in PER_CHANNEL_OPS and op.outputs and op.outputs[0] >= 0:
            out = graph.tensors[op.outputs[0]]
            if out.dtype in ("int8", "int16", "uint8") and out.shape:
                channels = out.shape[-1]
                op_data += 2 * _align(4 * channels)  # per-channel output multiplier + shift (int32 each)
    return {"eval_tensors": eval_tensors, "node_and_registration": nodes, "persistent_tensors": persistent_tensors,
            "io_quantization": quant, "op_data": op_data, "fixed": FIXED_TAIL_BYTES}


def estimate(model: bytes) -> dict[str, Any]:
    """The static arena estimate for a .tflite flatbuffer: head (greedy plan), tail (model), total."""
    graph = read_graph(model)
    p = plan(graph)
    tail = estimate_tail(graph)
    tail_bytes = sum(tail.values())
    return {
        "method": "greedy-by-size offset plan over non-constant tensor lifetimes (16-byte aligned) "
                  "+ modelled persistent tail (64-bit host TFLM struct sizes)",
        "head_bytes": p.head_bytes,
        "tail_bytes": tail_bytes,
        "total_bytes": p.head_bytes + tail_bytes,
        "tail_breakdown": tail,
        "planned_buffers": len(p.buffers),
        "peak_op": p.peak_op,
        "subgraphs": graph.subgraphs,
        "offline_plan_in_model": graph.offline_plan,
    }
