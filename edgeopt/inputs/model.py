"""Load a user model (Keras / SavedModel / ONNX): its inputs and outputs, and its float outputs on data."""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeopt.artifacts.files import sha256_tree
from edgeopt.errors import ModelError
from edgeopt.inputs.tensors import Feeds, TensorSpec, is_classifier, one_sample, samples_in

BUILD_TAKES = "edgeopt build takes .keras, .h5, .onnx files and SavedModel directories"
READY_FORMATS = (".tflite",)  # converted already: `edgeopt bench` takes these
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ONNX_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")  # what ONNX Runtime's CPU provider implements


@dataclass
class SourceModel:
    """A model as the user gave it. Heavy objects (Keras model, ONNX proto) load on first use.

    ``inputs``/``outputs`` list every tensor in the model's own order (for a SavedModel: the signature's keys,
    sorted); the ``input_*``/``output_shape`` shorthands describe the first of each (shapes without batch axis).
    """

    path: Path
    kind: str  # keras | savedmodel | onnx
    sha256: str
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    params: int | None = None
    _handle: Any = field(default=None, repr=False)
    _session: Any = field(default=None, repr=False)  # ONNX Runtime session of an ONNX source
    # files derived from this source once per process and shared by its profiles (the SavedModel the TFLite
    # converter reads: convert/tflite.py), removed with it
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def input_name(self) -> str:
        return self.inputs[0].name if self.inputs else ""

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        return self.inputs[0].sample_shape if self.inputs else ()

    @property
    def input_dtype(self) -> str:
        return self.inputs[0].dtype if self.inputs else "float32"

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        return self.outputs[0].sample_shape if self.outputs else ()

    @property
    def classifier_output(self) -> int | None:
        """The index of the first classifier output (:func:`is_classifier`): where the build's accuracy and the
        device's are taken."""
        return next((k for k, o in enumerate(self.outputs) if is_classifier(o.shape)), None)

    @property
    def label_shape(self) -> tuple[int | None, ...]:
        """The sample shape eval labels are checked against: the only output's, else the first classifier
        output's, else the first output's."""
        if not self.outputs:
            return ()
        k = self.classifier_output if len(self.outputs) > 1 else None
        return self.outputs[k or 0].sample_shape

    @property
    def single_io(self) -> bool:
        """One batched input and one output: what training transforms, TFLM firmware and top-1 figures take."""
        return len(self.inputs) == 1 and len(self.outputs) == 1 and self.inputs[0].batched

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path), "format": self.kind, "sha256": self.sha256,
                               "params": self.params,
                               "input": {"name": self.input_name, "shape": list(self.input_shape),
                                         "dtype": self.input_dtype}}
        out["inputs"] = [t.describe() for t in self.inputs]
        out["outputs"] = [t.describe() for t in self.outputs]
        return out

    # -- loading -------------------------------------------------------------------------------------------
    def load(self) -> SourceModel:
        if self._handle is not None:
            return self
        {"keras": self._load_keras, "savedmodel": self._load_savedmodel, "onnx": self._load_onnx}[self.kind]()
        if not self.inputs or not self.outputs:
            raise ModelError(f"{self.path}: the model has {len(self.inputs)} inputs and {len(self.outputs)} outputs",
                             "export a model with at least one input and one output")
        return self

    def _load_keras(self) -> None:
        check_keras_file(self.path)  # before TensorFlow is imported: a broken file fails in milliseconds
        from edgeopt.tf_env import quiet_tensorflow

        quiet_tensorflow()
        import keras

        try:
            model = keras.models.load_model(self.path, compile=False)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
            raise ModelError(f"{self.path}: cannot load Keras model ({_first_line(exc)})",
                             "re-save the model with model.save('model.keras')") from exc
        self.inputs = [TensorSpec(_keras_name(t), tuple(t.shape), str(t.dtype)) for t in model.inputs]
        self.outputs = [TensorSpec(n, tuple(t.shape), str(t.dtype)) for n, t in zip(model.output_names, model.outputs)]
        self.params = int(model.count_params())
        self._handle = model

    def _load_savedmodel(self) -> None:
        tf = _tf()
        try:
            loaded = tf.saved_model.load(str(self.path))
            fn = loaded.signatures["serving_default"]
        except KeyError as exc:
            raise ModelError(f"{self.path}: SavedModel has no 'serving_default' signature",
                             "export it with model.export(dir) or tf.saved_model.save(..., signatures=...)") from exc
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{self.path}: cannot load SavedModel ({_first_line(exc)})",
                             "check the directory holds saved_model.pb and variables/") from exc
        specs = fn.structured_input_signature[1]
        outs = fn.structured_outputs
        self.inputs = [TensorSpec(n, tuple(specs[n].shape), specs[n].dtype.name) for n in sorted(specs)]
        self.outputs = [TensorSpec(n, tuple(outs[n].shape), outs[n].dtype.name) for n in sorted(outs)]
        self.params = int(sum(np.prod(v.shape) for v in loaded.variables)) if hasattr(loaded, "variables") else None
        self._handle = (loaded, fn)

    def _load_onnx(self) -> None:
        import onnx

        try:
            proto = onnx.load(str(self.path))
            onnx.checker.check_model(proto)
        except Exception as exc:  # noqa: BLE001 - protobuf DecodeError, ValidationError, ...
            raise ModelError(f"{self.path}: not a valid ONNX model ({_first_line(exc)})",
                             "re-export the model to ONNX") from exc
        check_onnx_domains(self.path, proto)
        inits = {i.name for i in proto.graph.initializer}
        self.inputs = [_onnx_spec(self.path, v, "input") for v in proto.graph.input if v.name not in inits]
        self.outputs = [_onnx_spec(self.path, v, "output") for v in proto.graph.output]
        check_onnx_float32(self.path, proto, self.inputs + self.outputs)
        constant = {n for node in proto.graph.node if node.op_type == "Constant" for n in node.output} | inits
        fixed = [o.name for o in proto.graph.output if o.name in constant]
        if fixed:
            raise ModelError(f"{self.path}: output {fixed[0]!r} is a constant of the model (no batch axis, the same "
                             "for every input); edgeopt compares outputs sample by sample",
                             "export the model without it (ship the constant, e.g. an anchor grid, beside the model)")
        self.params = int(sum(int(np.prod(i.dims)) for i in proto.graph.initializer))
        self._session = onnx_session(self.path, proto)
        self._handle = proto

    # -- use -----------------------------------------------------------------------------------------------
    @property
    def keras_model(self) -> Any:
        self.load()
        return self._handle if self.kind == "keras" else None

    @property
    def saved_model(self) -> Any:
        """The loaded SavedModel object (``tf.saved_model.load``), for a SavedModel source; else ``None``."""
        self.load()
        return self._handle[0] if self.kind == "savedmodel" else None

    @property
    def onnx_proto(self) -> Any:
        self.load()
        return self._handle if self.kind == "onnx" else None

    def tf_function(self) -> Callable[[Any], Any]:
        """A callable x -> first output tensor (TF formats, single input)."""
        call = self.tf_outputs()
        name = self.input_name
        return lambda x: call({name: x})[0]

    def tf_outputs(self) -> Callable[[Feeds], list[Any]]:
        """A callable {input name: tensor} -> [output tensors] in ``outputs`` order (TF formats only)."""
        self.load()
        names = [t.name for t in self.inputs]
        if self.kind == "keras":
            model = self._handle

            def keras_call(feeds: Feeds) -> list[Any]:
                args = [feeds[n] for n in names]
                out = model(args if len(args) > 1 else args[0], training=False)
                return list(out) if isinstance(out, (list, tuple)) else [out]

            return keras_call
        if self.kind == "savedmodel":
            fn = self._handle[1]
            out_names = [t.name for t in self.outputs]
            return lambda feeds: [v for k, v in sorted(fn(**feeds).items()) if k in out_names]
        raise ModelError(f"{self.path}: an ONNX model has no TensorFlow function")

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """Float reference outputs (the first output) of a single-input model."""
        return self.predict_all({self.input_name: x}, batch)[0]

    def predict_all(self, feeds: Feeds, batch: int = 256) -> list[np.ndarray]:
        """Float reference outputs of the source model, one array per output, for ``(N, ...)`` inputs per name.

        Batched when every input has a batch axis; one sample at a time otherwise (a scalar input)."""
        self.load()
        n = samples_in(feeds)
        step = batch if all(t.dynamic_batch for t in self.inputs) else 1
        chunks: list[list[np.ndarray]] = []
        run = self._onnx_run() if self.kind == "onnx" else self._tf_run()
        for i in range(0, n, step):
            part = one_sample(self.inputs, feeds, i) if step == 1 else {k: v[i:i + step] for k, v in feeds.items()}
            try:
                chunks.append(run(part))
            except Exception as exc:  # noqa: BLE001 - the runtime refusing the data: shapes, dtypes, values
                shapes = ", ".join(f"{k} {list(np.shape(v))}" for k, v in part.items())
                raise ModelError(f"{self.path}: the float model fails on sample {i} ({shapes}): {_first_line(exc)}",
                                 "give data shaped as the model's inputs (one array per input name)") from exc
        if not chunks:
            raise ModelError(f"{self.path}: no samples to run", "give data with at least one sample")
        return [_stack([c[k] for c in chunks], spec.batched).astype(np.float32) for k, spec in enumerate(self.outputs)]

    def _onnx_run(self) -> Callable[[Feeds], list[np.ndarray]]:
        sess = self._session or onnx_session(self.path, self._handle)
        return lambda feeds: list(sess.run(None, feeds))

    def _tf_run(self) -> Callable[[Feeds], list[np.ndarray]]:
        call = self.tf_outputs()
        return lambda feeds: [np.asarray(t) for t in call(feeds)]


def _stack(parts: list[Any], batched: bool) -> np.ndarray:
    """Chunks of one output joined along the sample axis (an output without batch axis: one row per chunk)."""
    arrays = [np.asarray(p) for p in parts]
    return np.concatenate(arrays) if batched and all(a.ndim >= 1 for a in arrays) else np.stack(arrays)


def _keras_name(tensor: Any) -> str:
    """A Keras input's name (``image``), without the ``:0`` some versions add."""
    return str(getattr(tensor, "name", "input")).split(":")[0]


def _onnx_spec(path: Path, value: Any, role: str) -> TensorSpec:
    import onnx

    try:
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).name
    except Exception as exc:  # noqa: BLE001 - an input that is not a tensor, an unknown element type
        raise ModelError(f"{path}: {role} '{value.name}' is not a plain tensor ({_first_line(exc)})",
                         f"edgeopt handles models whose {role}s are numeric tensors") from exc
    return TensorSpec(value.name, dims, dtype)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _tf() -> Any:
    from edgeopt.tf_env import quiet_tensorflow

    return quiet_tensorflow()


def open_model(path: str | os.PathLike[str]) -> SourceModel:
    """Identify a model by its path (cheap: hashes bytes, loads nothing heavy)."""
    p = Path(path)
    try:
        exists, is_dir, is_file = p.exists(), p.is_dir(), p.is_file()
    except OSError as exc:  # a symlink loop, a name too long
        raise ModelError(f"{p}: cannot read ({exc.strerror or exc})", BUILD_TAKES) from exc
    if not exists:
        raise ModelError(f"{p}: no such file or directory", BUILD_TAKES)
    if is_dir:
        pb = p / "saved_model.pb"
        if not pb.is_file():
            raise ModelError(f"{p}: a directory but not a SavedModel (no saved_model.pb)",
                             "give a SavedModel directory or a .keras/.h5/.onnx file")
        if pb.stat().st_size == 0:
            raise ModelError(f"{pb}: file is empty", "re-export the SavedModel (model.export(dir))")
        kind = "savedmodel"
    elif p.suffix in READY_FORMATS:
        raise ModelError(f"{p}: a ready {p.suffix} file; edgeopt build converts Keras (.keras, .h5), SavedModel "
                         "and ONNX (.onnx) models",
                         f"to benchmark a ready .tflite/.onnx file use `edgeopt bench {p} --target ...`")
    elif p.suffix in (".keras", ".h5", ".hdf5"):
        kind = "keras"
    elif p.suffix == ".onnx":
        kind = "onnx"
    else:
        raise ModelError(f"{p}: unknown model format '{p.suffix}'", BUILD_TAKES)
    if kind != "savedmodel" and not is_file:
        raise ModelError(f"{p}: not a regular file", BUILD_TAKES)
    if kind != "savedmodel" and p.stat().st_size == 0:
        raise ModelError(f"{p}: file is empty", "re-export the model")
    try:
        digest = sha256_tree(p)
        if kind == "onnx":  # the weights saved beside the graph are part of the model's content
            from edgeopt.inputs.onnx_external import external_data_files

            extra = [f"{loc}={sha256_tree(p.parent / loc)}" for loc in external_data_files(p)]
            if extra:
                digest = hashlib.sha256("\n".join([digest, *extra]).encode()).hexdigest()
    except OSError as exc:
        raise ModelError(f"{p}: cannot read ({exc.strerror or exc})", BUILD_TAKES) from exc
    return SourceModel(path=p, kind=kind, sha256=digest)


def check_keras_file(path: Path) -> None:
    """A .keras file is a zip archive holding config.json; a .h5 starts with the HDF5 signature."""
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ModelError(f"{path}: not a valid .keras file (corrupt or truncated zip archive)",
                             "re-save the model with model.save('model.keras')") from exc
        if "config.json" not in names:
            raise ModelError(f"{path}: not a Keras model archive (no config.json inside)",
                             "re-save the model with model.save('model.keras')")
        return
    try:
        with open(path, "rb") as f:
            head = f.read(2048 + 8)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not any(head[o:o + 8] == HDF5_MAGIC for o in (0, 512, 1024, 2048)):
        raise ModelError(f"{path}: not a valid HDF5 (.h5) file (no HDF5 signature)",
                         "re-save the model with model.save('model.keras') or model.save('model.h5')")


def check_onnx_domains(path: Path, proto: Any) -> None:
    """Operators outside the standard ONNX sets (a custom op domain) cannot be converted or run by the host."""
    custom: dict[str, set[str]] = {}
    for node in proto.graph.node:
        if node.domain not in ONNX_DOMAINS:
            custom.setdefault(node.domain, set()).add(node.op_type)
    if custom:
        ops = "; ".join(f"domain '{d}': {', '.join(sorted(o))}" for d, o in sorted(custom.items()))
        raise ModelError(f"{path}: uses custom operators ({ops[:200]})",
                         "edgeopt builds models of the standard ONNX operator set; export without custom ops")


def check_onnx_float32(path: Path, proto: Any, specs: list[TensorSpec]) -> None:
    """A float16 ONNX model (float16 inputs/outputs, or every float weight float16) is refused: the converters and
    the quality check start from the float32 model (onnx2tf's check failed on fp16 rounding; the fp32 profile
    gave a float16 model; ONNX Runtime's int8 quantiser cannot take float16)."""
    import onnx

    half = [t.name for t in specs if t.dtype == "float16"]
    floats = [i.data_type for i in proto.graph.initializer
              if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    if half or (floats and all(d == onnx.TensorProto.FLOAT16 for d in floats)):
        what = f"float16 inputs/outputs ({', '.join(half[:4])})" if half else "float16 weights"
        raise ModelError(f"{path}: a float16 model ({what}); edgeopt builds from the float32 model",
                         "export the model in float32 (the fp16 profile makes the float16 artifact from it)")


def onnx_session(path: Path, proto: Any) -> Any:
    """An ONNX Runtime session of the model; a model the runtime refuses is a ModelError naming the file."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises Fail/InvalidGraph/NotImplemented for what it cannot run
        raise ModelError(f"{path}: ONNX Runtime cannot load the model ({_first_line(exc)})",
                         "re-export the model with operators ONNX Runtime implements") from exc
