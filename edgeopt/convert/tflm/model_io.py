"""The model as the firmware harness sees it: its flatbuffer graph, its one input and one output, and samples
quantised the way that input takes them."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.analyze import memory_plan
from edgeopt.errors import ConversionError


def read_graph(model: bytes) -> memory_plan.Graph:
    """The flatbuffer's graph; a broken flatbuffer is a ``ConversionError``."""
    try:
        return memory_plan.read_graph(model)
    except Exception as exc:  # noqa: BLE001 - a broken flatbuffer
        raise ConversionError(f"cannot read the TFLite flatbuffer: {exc}") from exc


def io_details(model: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """LiteRT's description of the model's single input and single output (anything else: ``ConversionError``)."""
    from edgeopt.analyze.tflite import interpreter, tensor_io

    it = interpreter(model)
    ins, outs = it.get_input_details(), it.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise ConversionError(f"the TFLM harness handles models with one input and one output; this one has "
                              f"{len(ins)} inputs and {len(outs)} outputs",
                              "export a single-input, single-output model for the microcontroller build")
    return tensor_io(ins[0]), tensor_io(outs[0])


def quantize_input(x: np.ndarray, io: dict[str, Any]) -> np.ndarray:
    """One float sample reshaped to the model input ``io`` and quantised as it takes it."""
    from edgeopt.analyze.evaluate import quantize

    shape = io["shape"]
    arr = np.asarray(x)
    if arr.size != int(np.prod(shape)):
        raise ConversionError(f"sample input has {arr.size} values, the model input {shape} takes "
                              f"{int(np.prod(shape))}", "pass one sample shaped like the model input")
    return quantize(arr.reshape(shape).astype(np.float32) if arr.dtype.kind == "f" else arr.reshape(shape),
                    io["dtype"], io["quantization"])
