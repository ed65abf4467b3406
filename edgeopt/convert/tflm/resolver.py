"""Which TFLite Micro kernels the model needs: its ops -> ``MicroMutableOpResolver::Add…()`` calls.

``resolver_ops()`` lists the model's distinct ops with their resolver method (an op TFLM lacks is a
``ConversionError`` naming it); ``check_quantization()`` refuses the types TFLM has no kernels for (float16
weights, hybrid dynamic-range ops) with a ``QuantizationError``.
"""

from __future__ import annotations

from typing import Any

from edgeopt.analyze import memory_plan
from edgeopt.errors import ConversionError, QuantizationError

# TFLite builtin operator name -> tflite::MicroMutableOpResolver method (upstream micro_mutable_op_resolver.h).
RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce", "CAST": "AddCast", "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D", "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "ELU": "AddElu", "EQUAL": "AddEqual", "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D", "MIRROR_PAD": "AddMirrorPad", "MEAN": "AddMean", "MINIMUM": "AddMinimum",
    "MUL": "AddMul", "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad",
    "PADV2": "AddPadV2", "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable",
    "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu", "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound",
    "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub",
    "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE_CONV": "AddTransposeConv",
    "TRANSPOSE": "AddTranspose", "UNPACK": "AddUnpack",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
    # custom ops TFLM registers under a name
    "CUSTOM:TFLite_Detection_PostProcess": "AddDetectionPostprocess", "CUSTOM:CIRCULAR_BUFFER": "AddCircularBuffer",
    "CUSTOM:ethos-u": "AddEthosU",
}


def resolver_ops(graph: memory_plan.Graph) -> list[dict[str, Any]]:
    """The model's distinct ops in first-use order with their resolver method; unsupported -> ConversionError."""
    counts: dict[str, int] = {}
    for op in graph.ops:
        counts[op.name] = counts.get(op.name, 0) + 1
    missing = [name for name in counts if name not in RESOLVER_METHODS]
    if missing:
        names = ", ".join(m.removeprefix("CUSTOM:") + (" (custom op)" if m.startswith("CUSTOM:") else "")
                          for m in missing)
        raise ConversionError(
            f"TensorFlow Lite Micro has no kernel for {names}: MicroMutableOpResolver cannot register "
            f"{'it' if len(missing) == 1 else 'them'}",
            "replace the layer with one TFLM supports (see docs/tflm.md for the op list) or target a Linux device")
    return [{"op": name, "method": RESOLVER_METHODS[name], "count": n} for name, n in counts.items()]


def check_quantization(graph: memory_plan.Graph) -> None:
    """TFLM runs int8/int16 and float32 models; not float16 weights, not hybrid (dynamic-range) ops."""
    for t in graph.tensors:
        if t.dtype == "float16":
            raise QuantizationError(f"tensor '{t.name}' is float16: TensorFlow Lite Micro has no float16 kernels",
                                    "use --profile int8 (or fp32) for a microcontroller target")
    weighted = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL",
                "UNIDIRECTIONAL_SEQUENCE_LSTM", "SVDF", "EMBEDDING_LOOKUP"}
    for op in graph.ops:
        ins = [graph.tensors[i] for i in op.inputs if i >= 0]
        if op.name in weighted and ins and ins[0].dtype == "float32" and any(
                t.constant and t.dtype in ("int8", "uint8", "int4") for t in ins[1:]):
            raise QuantizationError(
                f"op {op.index} ({op.name}) is hybrid (float activations, int8 weights): TensorFlow Lite Micro "
                "does not run dynamic-range models", "use --profile int8 (full integer) for a microcontroller target")
