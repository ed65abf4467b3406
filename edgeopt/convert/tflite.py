"""Keras / SavedModel -> TFLite with the profile's converter settings and a representative dataset."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.config import TFLiteOptions
from edgeopt.errors import ConversionError, QuantizationError
from edgeopt.inputs.model import SourceModel
from edgeopt.tf_env import native_stderr_silenced

_OPS = {"builtins": "TFLITE_BUILTINS", "builtins_int8": "TFLITE_BUILTINS_INT8", "select_tf_ops": "SELECT_TF_OPS"}
_NOT_BUILTIN = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_NO_INT8 = re.compile(r"(?:Quantization not yet supported for op|not supported by int8)[^']*'([\w.]+)'")


def _export_saved_model(src: SourceModel, batch: int | None, workdir: Path) -> Path:
    """A SavedModel whose serving signature has the wanted batch dimension."""
    tf = __import__("tensorflow")
    out = workdir / "saved_model"
    spec = tf.TensorSpec((batch, *src.input_shape), tf.dtypes.as_dtype(src.input_dtype), name=src.input_name or "input")
    if src.kind == "keras":
        src.keras_model.export(str(out), input_signature=[spec], verbose=False)
        return out
    if batch is None:
        return src.path
    fn = src.tf_function()
    module = tf.Module()
    module.call = tf.function(lambda x: {"output": fn(x)}, input_signature=[spec])
    module.source = src.saved_model  # keep the variables tracked
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.call})
    return out


def representative(x: np.ndarray, samples: int) -> Iterator[list[np.ndarray]]:
    for i in range(min(samples, len(x))):
        yield [x[i:i + 1]]


def convert_tflite(src: SourceModel, opts: TFLiteOptions, out: Path, *, calibration: np.ndarray | None,
                   calibration_samples: int, static_batch: bool) -> Path:
    from edgeopt.tf_env import quiet_tensorflow

    tf = quiet_tensorflow()
    src.load()
    with tempfile.TemporaryDirectory(prefix="edgeopt-tflite-") as tmp:
        saved = _export_saved_model(src, 1 if static_batch else None, Path(tmp))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        _configure(converter, tf, opts, calibration, calibration_samples)
        try:
            with native_stderr_silenced():
                flatbuffer = converter.convert()
        except Exception as exc:  # noqa: BLE001 - ConverterError and friends
            raise _explain(exc, opts) from exc
    if opts.require_full_integer:
        float_ops = float_ops_in(flatbuffer)
        if float_ops:
            raise QuantizationError(
                f"op {', '.join(float_ops)} cannot be fully int8-quantised (it runs in float32 in the converted model)",
                "use --profile int8-float-io (float fallback for that op) or --profile dynamic",
            )
    atomic_write_bytes(out, flatbuffer)
    return out


def _configure(converter: Any, tf: Any, opts: TFLiteOptions, calibration: np.ndarray | None, samples: int) -> None:
    if "default" in opts.optimizations:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, _OPS[o]) for o in opts.supported_ops]
    if opts.supported_types:
        converter.target_spec.supported_types = [tf.dtypes.as_dtype(t) for t in opts.supported_types]
    if opts.representative_dataset:
        if calibration is None:
            raise ConversionError("this profile needs calibration data", "pass --data calib.npz")
        converter.representative_dataset = lambda: representative(calibration, samples)
    if opts.inference_input_type != "float32":
        converter.inference_input_type = tf.dtypes.as_dtype(opts.inference_input_type)
    if opts.inference_output_type != "float32":
        converter.inference_output_type = tf.dtypes.as_dtype(opts.inference_output_type)


def _explain(exc: Exception, opts: TFLiteOptions) -> ConversionError:
    text = str(exc)
    missing = sorted(set(_NOT_BUILTIN.findall(text)))
    if missing:
        return ConversionError(f"TFLite has no builtin kernel for op {', '.join(missing)}",
                               "replace the op in the model (Select TF ops are not available on edge runtimes)")
    no_int8 = sorted(set(_NO_INT8.findall(text)))
    if no_int8:
        return QuantizationError(f"op {', '.join(no_int8)} cannot be fully int8-quantised",
                                 "use --profile int8-float-io or --profile dynamic")
    first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()), text.strip()[:300])
    return ConversionError(f"TFLite conversion failed: {first[:400]}")


def float_ops_in(flatbuffer: bytes) -> list[str]:
    """Ops (other than the QUANTIZE/DEQUANTIZE at the edges) that compute on float tensors."""
    from edgeopt.analyze.tflite import op_tensor_dtypes

    names = set()
    for op_name, in_types, out_types in op_tensor_dtypes(flatbuffer):
        if op_name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        if any(t in ("float32", "float16") for t in (*in_types, *out_types)):
            names.add(op_name)
    return sorted(names)
