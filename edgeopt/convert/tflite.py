"""Keras / SavedModel -> TFLite with the profile's converter settings and a representative dataset.

The TFLite model's ``serving_default`` signature is the stable way to address its tensors (LiteRT's
``get_input_details()``/``get_output_details()`` order follows neither the source nor the names):

- inputs keep the source model's input names, made safe for TensorFlow (``signature_input_names``: characters
  outside ``[A-Za-z0-9_]`` become ``_``, a leading digit gets an ``input_`` prefix, clashes get ``_2``, ``_3``...);
- outputs are named ``output_0``, ``output_1``, ... in the source model's output order (zero-padded to the same
  width when there are more than ten: ``output_00``...), so sorting the names gives the source order.

``convert_tflite`` returns these mappings (signature name, TFLite tensor name and index, source name) with the
other facts for the manifest.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.config import TFLiteOptions
from edgeopt.errors import ConversionError, DataError, QuantizationError
from edgeopt.inputs.model import SourceModel
from edgeopt.inputs.tensors import Feeds, TensorSpec, checked_feeds, one_sample, samples_in
from edgeopt.tf_env import native_stderr_silenced

_OPS = {"builtins": "TFLITE_BUILTINS", "builtins_int8": "TFLITE_BUILTINS_INT8", "select_tf_ops": "SELECT_TF_OPS"}
_NOT_BUILTIN = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_NO_INT8 = re.compile(r"(?:Quantization not yet supported for op|not supported by int8)[^']*'([\w.]+)'")
_EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")
SIGNATURE = "serving_default"


def signature_input_names(names: Sequence[str]) -> list[str]:
    """Source input names made valid (and unique) as TensorFlow signature argument names."""
    out: list[str] = []
    for name in names:
        safe = re.sub(r"\W", "_", name, flags=re.ASCII) or "input"
        if not safe[0].isalpha():
            safe = f"input_{safe}"
        base, k = safe, 2
        while safe in out:
            safe, k = f"{base}_{k}", k + 1
        out.append(safe)
    return out


def signature_output_names(n: int) -> list[str]:
    width = len(str(n - 1)) if n > 10 else 1
    return [f"output_{i:0{width}d}" for i in range(n)]


def _signature_spec(tf: Any, spec: TensorSpec, name: str, static_batch: bool) -> Any:
    """A fixed batch axis of the source (an export at batch 1) stays fixed: its graph may reshape to it."""
    batch = 1 if static_batch else spec.shape[0] if spec.batched else None
    shape = () if not spec.batched else (batch, *spec.sample_shape)
    return tf.TensorSpec(shape, tf.dtypes.as_dtype(spec.dtype), name=name)


def _export_saved_model(src: SourceModel, static_batch: bool, workdir: Path) -> Path:
    """A SavedModel whose ``serving_default`` signature takes every source input (batch axis 1 with
    ``static_batch``, dynamic otherwise; scalars stay scalars) and returns ``output_<i>`` in source order."""
    tf = __import__("tensorflow")
    names = [s.name for s in src.inputs]
    specs = [_signature_spec(tf, s, n, static_batch) for s, n in zip(src.inputs, signature_input_names(names))]
    out_names = signature_output_names(len(src.outputs))
    call = src.tf_outputs()
    out = workdir / "saved_model"

    def serve(*args: Any) -> dict[str, Any]:
        return dict(zip(out_names, call(dict(zip(names, args)))))

    if src.kind == "keras":
        import keras

        archive = keras.export.ExportArchive()
        archive.track(src.keras_model)
        archive.add_endpoint("serve", serve, input_signature=specs)  # also written as serving_default
        archive.write_out(str(out), verbose=False)
        return out
    module = tf.Module()
    module.call = tf.function(serve, input_signature=specs)
    module.source = src.saved_model  # keep the variables tracked
    tf.saved_model.save(module, str(out), signatures={SIGNATURE: module.call})
    return out


def exported(src: SourceModel, static_batch: bool) -> Path:
    """The SavedModel of ``src`` the converter reads, exported once per source (0.4 s each for the example: a
    build of five profiles exported it seven times) and shared by every conversion of it in this process; it lives
    in a temporary directory removed with the source (or at exit)."""
    key = ("tflite-saved-model", static_batch)
    if key not in src.derived:
        tmp = tempfile.TemporaryDirectory(prefix="edgeopt-export-")
        try:
            _export_saved_model(src, static_batch, Path(tmp.name))
        except BaseException:
            tmp.cleanup()
            raise
        src.derived[key] = tmp
    return Path(src.derived[key].name) / "saved_model"


def calibration_feeds(src: SourceModel, calibration: Feeds | np.ndarray) -> Feeds:
    """``Feeds`` for every source input (a bare array is the single-input shorthand), checked against the model."""
    return checked_feeds(calibration, src.inputs, "calibration")


def representative(src: SourceModel, feeds: Feeds, samples: int) -> Iterator[dict[str, np.ndarray]]:
    """One sample at a time, every input, keyed by the signature's input names, in the source dtypes
    (integer inputs are fed as integers: the converter leaves them unquantised)."""
    ins = src.inputs
    sig = signature_input_names([s.name for s in ins])
    for i in range(min(samples, samples_in(feeds))):
        one = one_sample(ins, feeds, i)
        yield {n: np.asarray(one[s.name], dtype=s.dtype) for s, n in zip(ins, sig)}


def make_converter(src: SourceModel, opts: TFLiteOptions, *, calibration: Feeds | np.ndarray | None,
                   calibration_samples: int, static_batch: bool, io_types: bool = True) -> Any:
    """A ``tf.lite.TFLiteConverter`` set up from the profile (``io_types=False``: leave float32 model I/O)."""
    from edgeopt.tf_env import quiet_tensorflow

    tf = quiet_tensorflow()
    src.load()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(exported(src, static_batch)))
    if "default" in opts.optimizations:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, _OPS[o]) for o in opts.supported_ops]
    if opts.supported_types:
        converter.target_spec.supported_types = [tf.dtypes.as_dtype(t) for t in opts.supported_types]
    if opts.representative_dataset:
        if calibration is None:
            raise ConversionError("this profile needs calibration data", "pass --data calib.npz")
        feeds = calibration_feeds(src, calibration)
        converter.representative_dataset = lambda: representative(src, feeds, calibration_samples)
    if io_types and opts.inference_input_type != "float32":
        converter.inference_input_type = tf.dtypes.as_dtype(opts.inference_input_type)
    if io_types and opts.inference_output_type != "float32":
        converter.inference_output_type = tf.dtypes.as_dtype(opts.inference_output_type)
    return converter


def convert_tflite(src: SourceModel, opts: TFLiteOptions, out: Path, *, calibration: Feeds | np.ndarray | None,
                   calibration_samples: int, static_batch: bool, denylisted_nodes: Sequence[str] = (),
                   denylisted_ops: Sequence[str] = ()) -> dict[str, Any]:
    """Convert, check, write ``out`` atomically; the facts for the manifest.

    ``denylisted_nodes`` (TFLite tensor names of op outputs, as ``layer_errors`` reports them) and
    ``denylisted_ops`` (TFLite builtin op names, e.g. ``CONCATENATION``) stay float: the model is quantised by
    TensorFlow's ``QuantizationDebugger`` (selective quantisation) instead of the converter's own pass.
    """
    selective = bool(denylisted_nodes or denylisted_ops)
    if selective and not opts.representative_dataset:
        raise ConversionError("keeping layers in float (a denylist) needs an int8 profile with calibration data",
                              "use an int8 profile (representative_dataset: true)")
    converter = make_converter(src, opts, calibration=calibration, calibration_samples=calibration_samples,
                               static_batch=static_batch, io_types=not selective)
    try:
        with native_stderr_silenced():
            if selective:
                flatbuffer = _selective(converter, opts, list(denylisted_nodes), list(denylisted_ops))
            else:
                flatbuffer = converter.convert()
    except (ConversionError, DataError):
        raise
    except Exception as exc:  # noqa: BLE001 - ConverterError and friends
        raise _explain(exc, opts) from exc
    nodes = float_nodes(flatbuffer)
    kept = [n for n in nodes if n["op"] in denylisted_ops
            or any(is_node_name(d, t) for d in denylisted_nodes for t in n["outputs"])]
    if opts.require_full_integer:
        float_ops = sorted({n["op"] for n in nodes if n not in kept})
        if float_ops:
            raise QuantizationError(
                f"op {', '.join(float_ops)} cannot be fully int8-quantised (it runs in float32 in the converted model)",
                "use --profile int8-float-io (float fallback for that op) or --profile dynamic",
            )
    if selective:
        _check_denylist_used(nodes, denylisted_nodes, denylisted_ops)
    atomic_write_bytes(out, flatbuffer)
    return {"path": str(out), "signature": SIGNATURE, **io_map(src, flatbuffer),
            "quantizer": "QuantizationDebugger (selective)" if selective else "TFLiteConverter",
            "denylisted_nodes": list(denylisted_nodes), "denylisted_ops": list(denylisted_ops),
            "float_ops": sorted({n["op"] for n in nodes}),
            "float_nodes": [{"op": n["op"], "tensor": n["outputs"][0] if n["outputs"] else ""} for n in nodes]}


def _selective(converter: Any, opts: TFLiteOptions, nodes: list[str], ops: list[str]) -> bytes:
    """Int8 with the denylisted nodes/ops left in float, through TensorFlow's QuantizationDebugger."""
    tf = __import__("tensorflow")
    from tensorflow.lite.python.util import modify_model_io_type

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes or None,
                                                           denylisted_ops=ops or None)
    try:
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_options=options)
    except ValueError as exc:
        if "debug mode" not in str(exc):
            raise
        raise QuantizationError("the denylist leaves no op to quantise",
                                "denylist fewer nodes, or use --profile fp32") from exc
    model = debugger.get_nondebug_quantized_model()
    in_t, out_t = opts.inference_input_type, opts.inference_output_type
    if in_t == "float32" and out_t == "float32":
        return bytes(model)
    hint = "use a profile with float32 input/output (int8-float-io) for this denylist"
    try:
        model = bytes(modify_model_io_type(model, tf.dtypes.as_dtype(in_t), tf.dtypes.as_dtype(out_t)))
    except (ValueError, RuntimeError) as exc:
        raise QuantizationError(f"cannot give the model {in_t} input / {out_t} output with a float layer at the "
                                f"edge ({str(exc).splitlines()[0][:200]})", hint) from exc
    from edgeopt.analyze.tflite import interpreter

    it = interpreter(model)  # a float op at an edge leaves that tensor float32 without a word: check
    wrong = [d["name"] for d in it.get_input_details() if in_t != "float32" and np.dtype(d["dtype"]) == np.float32]
    wrong += [d["name"] for d in it.get_output_details() if out_t != "float32" and np.dtype(d["dtype"]) == np.float32]
    if wrong:
        raise QuantizationError(f"model I/O {', '.join(wrong)} stays float32 next to a denylisted float op "
                                f"(the profile asks for {in_t} input / {out_t} output)", hint)
    return model


def _check_denylist_used(nodes: list[dict[str, Any]], names: Sequence[str], ops: Sequence[str]) -> None:
    """A denylisted node/op that is not float in the result was misnamed: say so rather than ship int8."""
    outs = [t for n in nodes for t in n["outputs"]]
    unknown = [n for n in names if not any(is_node_name(n, t) for t in outs)]
    unknown += [o for o in ops if o not in {n["op"] for n in nodes}]
    if unknown:
        raise QuantizationError(f"denylisted {', '.join(unknown)} did not stay float (no such TFLite tensor or op)",
                                "name nodes by the tensor names `layer_errors` reports and ops by TFLite names "
                                "such as CONCATENATION")


def is_node_name(node: str, tensor: str) -> bool:
    """Whether ``tensor`` (a name in a quantised model) is the output of node ``node`` (a name in the calibrated
    float model): the quantiser keeps the name and may append a counter to keep names unique (``x:0``, ``x:02``)."""
    return tensor.startswith(node) and (len(tensor) == len(node) or tensor[len(node):].isdigit())


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


def io_map(src: SourceModel, flatbuffer: bytes) -> dict[str, list[dict[str, Any]]]:
    """Each source input/output with its signature name and the TFLite tensor (name, index) behind it."""
    from edgeopt.analyze.tflite import interpreter

    runner = interpreter(flatbuffer).get_signature_runner(SIGNATURE)
    ins, outs = src.inputs, src.outputs
    sig_in, sig_out = runner.get_input_details(), runner.get_output_details()

    def row(spec: TensorSpec, name: str, details: Mapping[str, Any]) -> dict[str, Any]:
        d = details[name]
        return {"source": spec.name, "signature": name, "tensor": d["name"], "index": int(d["index"]),
                "dtype": np.dtype(d["dtype"]).name}

    return {"inputs": [row(s, n, sig_in) for s, n in zip(ins, signature_input_names([s.name for s in ins]))],
            "outputs": [row(s, n, sig_out) for s, n in zip(outs, signature_output_names(len(outs)))]}


def float_nodes(flatbuffer: bytes) -> list[dict[str, Any]]:
    """Ops (other than the QUANTIZE/DEQUANTIZE at the edges) that compute on float tensors, with the names of
    the tensors they produce, in graph order."""
    from edgeopt.analyze.tflite import graph

    _, ops, tensors = graph(flatbuffer)
    rows = []
    for op in ops:
        if op["op_name"] in _EDGE_OPS:
            continue
        ins = [i for i in op["inputs"] if i >= 0 and i in tensors]
        if op["op_name"] == "CAST" and ins and all(np.dtype(tensors[i]["dtype"]).kind in "iub" for i in ins):
            continue  # an integer model input (an int64 sample rate) entering the number domain: an edge too
        ids = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0 and i in tensors]
        if any(np.dtype(tensors[i]["dtype"]).name in ("float32", "float16") for i in ids):
            rows.append({"op": op["op_name"], "outputs": [tensors[i]["name"] for i in op["outputs"] if i in tensors]})
    return rows


def float_ops_in(flatbuffer: bytes) -> list[str]:
    """Op names (other than the QUANTIZE/DEQUANTIZE at the edges) that compute on float tensors."""
    return sorted({n["op"] for n in float_nodes(flatbuffer)})

