"""ONNX -> quantised ONNX with ONNX Runtime: static (QDQ/QOperator, calibrated), dynamic, or float16."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.config import ONNXOptions
from edgeopt.errors import ConversionError


class _Reader:
    """CalibrationDataReader over an array, one sample per call (batch 1: works for static and dynamic batch)."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.name, self.x, self.i = name, x, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {self.name: self.x[self.i - 1:self.i]}

    def rewind(self) -> None:
        self.i = 0


def quantize_onnx(src: Path, opts: ONNXOptions, out: Path, *, calibration: np.ndarray | None,
                  calibration_samples: int) -> Path:
    from onnxruntime import quantization as q

    qtype = {"int8": q.QuantType.QInt8, "uint8": q.QuantType.QUInt8}
    with tempfile.TemporaryDirectory(prefix="edgeopt-onnxq-") as tmp:
        dst = Path(tmp) / "model.onnx"
        try:
            if opts.quantization == "float16":
                _float16(src, dst)
            elif opts.quantization == "dynamic":
                pre = Path(tmp) / "pre.onnx"
                q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                q.quantize_dynamic(str(pre), str(dst), weight_type=qtype[opts.weight_type],
                                   per_channel=opts.per_channel, reduce_range=opts.reduce_range)
            elif opts.quantization == "static":
                if calibration is None:
                    raise ConversionError("static ONNX quantisation needs calibration data", "pass --data calib.npz")
                pre = Path(tmp) / "pre.onnx"
                q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                import onnx

                name = [i.name for i in onnx.load(str(pre)).graph.input][0]
                q.quantize_static(
                    str(pre), str(dst), _Reader(name, calibration[:calibration_samples]),
                    quant_format=getattr(q.QuantFormat, opts.quant_format),
                    per_channel=opts.per_channel, reduce_range=opts.reduce_range,
                    activation_type=qtype[opts.activation_type], weight_type=qtype[opts.weight_type],
                    calibrate_method=getattr(q.CalibrationMethod, opts.calibrate_method),
                )
            else:
                raise ValueError(opts.quantization)
        except ConversionError:
            raise
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ConversionError(f"ONNX Runtime {opts.quantization} quantisation failed: {first}") from exc
        atomic_write_bytes(out, dst.read_bytes())
    return out


def _float16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model: Any = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
