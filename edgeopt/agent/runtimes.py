"""Runtimes: find one that is importable on this device, load a model with it, run it.

Detection order for ``.tflite``: ai-edge-litert, tflite-runtime, tensorflow (tf.lite); for ``.onnx``: onnxruntime.
A model is wrapped so the caller sees one shape: ``inputs``/``outputs`` (TensorInfo), ``set_inputs(arrays)``,
``invoke()`` (the call that is timed, nothing else) and ``get_outputs()``.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import AgentFailure


class RuntimeSpec:
    def __init__(self, name: str, fmt: str, module: str, dist: str, install: str) -> None:
        self.name = name          # what --runtime and the result call it
        self.format = fmt         # "tflite" | "onnx"
        self.module = module      # what is imported
        self.dist = dist          # the package (distribution) whose version is reported
        self.install = install    # what to pip install


RUNTIMES: Tuple[RuntimeSpec, ...] = (
    RuntimeSpec("litert", "tflite", "ai_edge_litert.interpreter", "ai-edge-litert", "pip install ai-edge-litert"),
    RuntimeSpec("tflite-runtime", "tflite", "tflite_runtime.interpreter", "tflite-runtime",
                "pip install tflite-runtime"),
    RuntimeSpec("tensorflow", "tflite", "tensorflow", "tensorflow", "pip install tensorflow"),
    RuntimeSpec("onnxruntime", "onnx", "onnxruntime", "onnxruntime", "pip install onnxruntime"),
)
BY_NAME: Dict[str, RuntimeSpec] = {spec.name: spec for spec in RUNTIMES}
FORMATS = ("tflite", "onnx")


def candidates(fmt: str) -> List[RuntimeSpec]:
    return [spec for spec in RUNTIMES if spec.format == fmt]


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def _dist_version(dist: str) -> Optional[str]:
    try:
        from importlib import metadata
        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - no metadata (e.g. a vendored build): report what the module says
        return None


class LoadedRuntime:
    """An imported runtime: the module, its version, and how to open a model with it."""

    def __init__(self, spec: RuntimeSpec, module: Any, version: Optional[str]) -> None:
        self.spec = spec
        self.module = module
        self.version = version

    @property
    def name(self) -> str:
        return self.spec.name

    def load(self, path: str, threads: Optional[int], content: Optional[bytes] = None) -> "Model":
        """The model from ``content`` (the bytes the agent hashed) when given, else from ``path``."""
        if self.spec.format == "onnx":
            return OnnxModel(self.module, path, threads, content)
        interpreter_cls = self.module.lite.Interpreter if self.spec.name == "tensorflow" else self.module.Interpreter
        return TFLiteModel(interpreter_cls, path, threads, content)


def _version_tuple(text: Optional[str]) -> Tuple[int, ...]:
    """Leading numeric release parts: "2.14.0" -> (2, 14, 0), "2.0.0rc1" -> (2, 0, 0), None -> ()."""
    match = re.match(r"\d+(?:\.\d+)*", text or "")
    return tuple(int(p) for p in match.group(0).split(".")) if match else ()


# The last tflite-runtime (2.14.0) was built against numpy 1.x: with numpy 2 it imports (printing a warning)
# but every Interpreter fails with "SystemError: ... returned a result with an exception set".
TFLITE_RUNTIME_LAST_NUMPY1 = (2, 14)


def import_runtime(spec: RuntimeSpec) -> LoadedRuntime:
    """Import one runtime; any exception (ImportError, a numpy ABI error …) propagates to the caller."""
    module = importlib.import_module(spec.module)
    top = importlib.import_module(spec.module.split(".")[0])
    version = getattr(top, "__version__", None) or _dist_version(spec.dist)
    version = str(version) if version is not None else None
    if spec.name == "tensorflow" and not hasattr(module, "lite"):
        raise ImportError("tensorflow %s has no tf.lite" % version)
    if spec.name == "tflite-runtime":
        import numpy

        if _version_tuple(numpy.__version__)[:1] >= (2,) and _version_tuple(version)[:2] <= TFLITE_RUNTIME_LAST_NUMPY1:
            raise ImportError("tflite-runtime %s was built for numpy 1.x and cannot run with numpy %s "
                              "(install numpy<2, or use ai-edge-litert)" % (version, numpy.__version__))
    return LoadedRuntime(spec, module, version)


def select(fmt: str, forced: Optional[str] = None) -> LoadedRuntime:
    """The first importable runtime for ``fmt`` (or exactly ``forced``); AgentFailure naming what to install."""
    if forced is not None and forced != "auto":
        spec = BY_NAME[forced]
        if spec.format != fmt:
            raise AgentFailure("bad_usage", "runtime %r cannot run a %s model" % (forced, fmt),
                               "use --runtime auto or one of: %s" % ", ".join(s.name for s in candidates(fmt)),
                               exit_code=2)
        specs = [spec]
    else:
        specs = candidates(fmt)
    seen: Dict[str, str] = {}
    for spec in specs:
        try:
            return import_runtime(spec)
        except Exception as exc:  # noqa: BLE001 - every import failure is reported, none is fatal alone
            seen[spec.name] = _describe(exc)
    tried = "; ".join("%s (%s): %s" % (name, BY_NAME[name].module, err) for name, err in seen.items())
    install = " or ".join("`%s`" % BY_NAME[name].install for name in seen)
    raise AgentFailure(
        "runtime_missing",
        "no usable %s runtime on this device: %s" % (fmt, tried),
        "install one: %s (tflite-runtime needs numpy<2)" % install if fmt == "tflite" else "install one: %s" % install,
        tried=seen,
    )


def probe() -> List[Dict[str, object]]:
    """Every known runtime and whether it imports here (imports them all: tensorflow takes seconds)."""
    rows: List[Dict[str, object]] = []
    for spec in RUNTIMES:
        row: Dict[str, object] = {"name": spec.name, "format": spec.format, "module": spec.module}
        try:
            loaded = import_runtime(spec)
        except Exception as exc:  # noqa: BLE001
            row.update(available=False, version=None, error=_describe(exc), install=spec.install)
        else:
            row.update(available=True, version=loaded.version, error=None)
        rows.append(row)
    return rows


class TensorInfo:
    """One model input or output: the shape it runs with, its dtype and its quantisation (or None)."""

    def __init__(self, name: str, shape: Sequence[int], dtype: Any, index: Any = None,
                 scale: Optional[float] = None, zero_point: Optional[int] = None,
                 shape_signature: Optional[Sequence[int]] = None) -> None:
        self.name = name
        self.shape = [int(d) for d in shape]
        import numpy as np  # here, not at the top: `probe` must work on a device without numpy

        self.shape_signature = [int(d) for d in shape_signature] if shape_signature is not None else None
        self.dtype = np.dtype(dtype)
        self.index = index
        self.scale = scale
        self.zero_point = zero_point

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale != 0.0

    def to_json(self) -> Dict[str, object]:
        quant = {"scale": self.scale, "zero_point": self.zero_point} if self.quantized else None
        doc: Dict[str, object] = {"name": self.name, "shape": self.shape, "dtype": self.dtype.name,
                                  "quantization": quant}
        if self.shape_signature is not None and self.shape_signature != self.shape:
            doc["shape_signature"] = self.shape_signature
        return doc


class Model:
    inputs: List[TensorInfo]
    outputs: List[TensorInfo]
    threads: Optional[int]

    def set_inputs(self, arrays: Sequence[Any]) -> None:
        raise NotImplementedError

    def invoke(self) -> None:
        raise NotImplementedError

    def get_outputs(self) -> List[Any]:
        raise NotImplementedError


def _tflite_info(detail: Dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = bool(scale)
    signature = detail.get("shape_signature")
    return TensorInfo(detail["name"], list(detail["shape"]), detail["dtype"], index=detail["index"],
                      scale=float(scale) if quantized else None, zero_point=int(zero_point) if quantized else None,
                      shape_signature=list(signature) if signature is not None else None)


class TFLiteModel(Model):
    def __init__(self, interpreter_cls: Any, path: str, threads: Optional[int],
                 content: Optional[bytes] = None) -> None:
        self.content = content  # the interpreter reads the model from this buffer for as long as it lives
        if content is not None:
            self.interpreter = interpreter_cls(model_content=content, num_threads=threads)
        else:
            self.interpreter = interpreter_cls(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.threads = threads
        self.inputs = [_tflite_info(d) for d in self.interpreter.get_input_details()]
        self.outputs = [_tflite_info(d) for d in self.interpreter.get_output_details()]
        # Bound once, so the timed call is the runtime's invoke() and nothing around it.
        self.invoke = self.interpreter.invoke  # type: ignore[method-assign]

    def set_inputs(self, arrays: Sequence[Any]) -> None:
        for info, array in zip(self.inputs, arrays):
            self.interpreter.set_tensor(info.index, array)

    def get_outputs(self) -> List[Any]:
        return [self.interpreter.get_tensor(info.index) for info in self.outputs]


_ONNX_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(uint16)": "uint16",
    "tensor(int32)": "int32", "tensor(uint32)": "uint32", "tensor(int64)": "int64", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def _onnx_info(arg: Any) -> TensorInfo:
    if arg.type not in _ONNX_DTYPES:
        raise AgentFailure("unsupported_model", "ONNX tensor %r has type %s, which the agent cannot feed"
                           % (arg.name, arg.type), "use a model whose inputs and outputs are numeric tensors")
    signature = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
    shape = [d if d >= 0 else 1 for d in signature]  # a dynamic dimension (batch …) runs with 1
    return TensorInfo(arg.name, shape, _ONNX_DTYPES[arg.type], shape_signature=signature)


class OnnxModel(Model):
    def __init__(self, ort: Any, path: str, threads: Optional[int], content: Optional[bytes] = None) -> None:
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(content if content is not None else path, sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.threads = threads
        self.providers = list(self.session.get_providers())
        self.inputs = [_onnx_info(a) for a in self.session.get_inputs()]
        self.outputs = [_onnx_info(a) for a in self.session.get_outputs()]
        self._names = [info.name for info in self.outputs]
        self._feed: Dict[str, Any] = {}
        self._last: List[Any] = []
        run = self.session.run
        names = self._names
        feed = self._feed

        def invoke() -> None:
            self._last = run(names, feed)

        self.invoke = invoke  # type: ignore[method-assign]

    def set_inputs(self, arrays: Sequence[Any]) -> None:
        for info, array in zip(self.inputs, arrays):
            self._feed[info.name] = array

    def get_outputs(self) -> List[Any]:
        return list(self._last)
