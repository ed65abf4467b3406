"""The trap-model corpus: small models built in code the way the world exports them, with the traps real
third-party models carry (FACTS.md, "Third-party models: traps"). Nothing is downloaded.

    from trap_models import build_corpus
    corpus = build_corpus()            # {name: TrapModel}; built once, then read from the cache
    corpus["yolo_head"].expected       # what the model is documented to do (output layout, value ranges ...)

Models (``TrapModel.kind``; ``TrapModel.expected`` documents each one):
  yolo_head        detector, ONNX opset 13, ``images`` [1,3,64,64] -> ``output0`` [1, 4+C, A]: its last Concat joins
                   boxes in pixels (sigmoid*640) and class probabilities (sigmoid): per-tensor int8 collapses the
                   class scores; ``expected["float_head_nodes"]`` are the nodes to keep in float.
  segmentation     encoder-decoder, ONNX opset 13 (ConvTranspose + Resize), ``image`` [1,3,32,32] -> [1,K,32,32].
  classifier_op11  one Keras CNN trained on scikit-learn's 8x8 digits, exported by tf2onnx at opset 11 and 13:
  classifier_op13  NCHW ``image`` [N,1,8,8] (dynamic batch) -> ``probs`` [N,10].
  multi_io         ``audio`` float [N,T] + ``sr`` int64 scalar (rank 0, a sample rate the graph divides by) ->
                   ``logits`` [N,K] and ``state`` [N,S].
  dynamic_hw       ``images`` ['N',3,'H','W'], global pooling; calib/eval at ``expected["calib_hw"]``.
  fp16_tflite      the digits CNN as TFLite with float16 weights (DEQUANTIZE ops), NHWC [1,8,8,1].
calib/eval: npz, one key per input name, ``(N, *sample_shape)`` (rank 0: ``(N,)``) as ``edgeopt.inputs.tensors.Feeds``;
eval adds the labels ``y`` for the three digits models. Everything is seeded.

Cache: ``<edgeopt cache root>/test-models/<key>/`` (``$EDGEOPT_CACHE_DIR`` moves it), key = sha256 of this file and
the versions of the tools that build the models. The corpus is built in a subprocess of this interpreter (it imports
TensorFlow) into a temporary directory renamed into place; ``corpus.json`` (written last) lists every file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgeopt.artifacts.files import file_lock, staged_directory
from edgeopt.paths import cache_root

Format = Literal["onnx", "tflite"]
Kind = Literal["detector", "segmentation", "classifier", "multi_io", "dynamic", "fp16_tflite"]
TOOLS = ("numpy", "onnx", "onnxruntime", "tensorflow", "keras", "tf2onnx", "scikit-learn", "ai-edge-litert", "protobuf")
KINDS: dict[str, Kind] = {"yolo_head": "detector", "segmentation": "segmentation", "classifier_op11": "classifier",
                          "classifier_op13": "classifier", "multi_io": "multi_io", "dynamic_hw": "dynamic",
                          "fp16_tflite": "fp16_tflite"}
NAMES = tuple(KINDS)
CALIB, EVAL = 64, 32  # samples (the digits models hold out EVAL_DIGITS for eval)
EVAL_DIGITS = 200


@dataclass(frozen=True)
class TrapModel:
    name: str
    path: Path
    fmt: Format
    calib: Path
    eval: Path
    kind: Kind
    expected: dict[str, Any] = field(default_factory=dict)

    def calib_feeds(self) -> dict[str, np.ndarray]:
        return read_npz(self.calib)

    def eval_feeds(self) -> dict[str, np.ndarray]:
        """The eval inputs (without the labels ``y``)."""
        return {k: v for k, v in read_npz(self.eval).items() if k != "y"}

    def labels(self) -> np.ndarray | None:
        return read_npz(self.eval).get("y")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def tool_version(tool: str) -> str:
    try:
        return metadata.version(tool)
    except metadata.PackageNotFoundError:
        return "absent"


def tool_versions() -> dict[str, str]:
    return {tool: tool_version(tool) for tool in TOOLS}


def content_key() -> str:
    """sha256 of this builder's source and the tool versions (first 16 hex digits)."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(json.dumps(tool_versions(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_corpus(folder: Path) -> dict[str, TrapModel] | None:
    """The corpus in ``folder`` if it is complete and undamaged, else None."""
    if not (folder / "corpus.json").is_file():
        return None
    doc = json.loads((folder / "corpus.json").read_text())
    if any(not (folder / rel).is_file() or sha256_file(folder / rel) != h for rel, h in doc["sha256"].items()):
        return None
    corpus = {name: TrapModel(name=name, path=folder / m["path"], fmt=m["fmt"], calib=folder / m["calib"],
                              eval=folder / m["eval"], kind=m["kind"], expected=m["expected"])
              for name, m in doc["models"].items()}
    return corpus if set(corpus) == set(NAMES) else None


def build_corpus(root: Path | None = None) -> dict[str, TrapModel]:
    """Every trap model, built once per content key below ``root`` (default: the edgeopt cache's test-models)."""
    root = Path(root) if root is not None else cache_root() / "test-models"
    key = content_key()
    target = root / key
    if (found := load_corpus(target)) is not None:
        return found
    with file_lock(root / (key + ".lock")):
        if (found := load_corpus(target)) is not None:
            return found
        with staged_directory(target) as stage:  # renamed into place only when the build succeeded
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(stage)], capture_output=True,
                                  text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                                               "CUDA_VISIBLE_DEVICES": ""})
            if proc.returncode != 0:
                raise RuntimeError("building the trap-model corpus failed:\n" + proc.stdout[-4000:]
                                   + proc.stderr[-6000:])
    if (found := load_corpus(target)) is None:
        raise RuntimeError(f"the trap-model corpus in {target} is incomplete after building")
    return found


# --- the build (runs in the subprocess) ----------------------------------------------------------------------


FLOAT, INT64 = 1, 7  # onnx.TensorProto element types (onnx is imported by the builders only)


def tensor(name: str, shape: list[Any] | None, elem: int = FLOAT) -> Any:
    """A graph input/output declaration; a str dim is a named dynamic dim, None an unknown shape."""
    from onnx import helper

    return helper.make_tensor_value_info(name, elem, shape)


class Graph:
    """A tiny ONNX graph writer with seeded He-initialised weights (what an exporter of a trained model writes),
    and a way to set a layer's per-channel output statistics on real data (so its outputs spread across inputs)."""

    def __init__(self, seed: int) -> None:
        import onnx

        self.onnx = onnx
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.weights: dict[str, np.ndarray] = {}

    def const(self, name: str, value: Any, dtype: Any = np.float32) -> str:
        self.weights[name] = np.asarray(value, dtype=dtype)
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, cin: int, cout: int, name: str, k: int = 3, stride: int = 1, act: str | None = "relu",
             transpose: bool = False) -> str:
        shape = (cin, cout, k, k) if transpose else (cout, cin, k, k)
        w = self.const(name + ".weight", self.rng.normal(0.0, np.sqrt(2.0 / (cin * k * k)), shape))
        b = self.const(name + ".bias", self.rng.normal(0.0, 0.05, cout))
        kind, pads = ("ConvTranspose", {}) if transpose else ("Conv", {"pads": [k // 2] * 4})
        y = self.op(kind, [x, w, b], name, kernel_shape=[k, k], strides=[stride, stride], **pads)
        if act == "relu":
            return self.op("Relu", [y], name + "_relu")
        if act == "silu":  # x * sigmoid(x), as PyTorch exports SiLU at opset 13
            return self.op("Mul", [y, self.op("Sigmoid", [y], name + "_sigmoid")], name + "_silu")
        return y

    def dense(self, x: str, cin: int, cout: int, name: str) -> str:
        """Gemm with transB=1 (a torch Linear): weight (cout, cin)."""
        w = self.const(name + ".weight", self.rng.normal(0.0, np.sqrt(1.0 / cin), (cout, cin)))
        return self.op("Gemm", [x, w, self.const(name + ".bias", np.zeros(cout))], name, transB=1)

    def model(self, inputs: list[Any], outputs: list[Any], opset: int) -> Any:
        helper = self.onnx.helper
        inits = [self.onnx.numpy_helper.from_array(v, k) for k, v in self.weights.items()]
        graph = helper.make_graph(self.nodes, "trap_model", inputs, outputs, inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="trap_models",
                                 ir_version=8)

    def standardize(self, layer: str, inputs: list[Any], feeds: dict[str, np.ndarray], std: float) -> None:
        """Rescale ``layer`` (a Conv or Gemm; weight axis 0 = output channel) so that on ``feeds`` each output
        channel has mean 0 and standard deviation ``std``."""
        import onnxruntime as ort

        model = self.model(inputs, [tensor(layer, None)], 13)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        y = np.concatenate([sess.run(None, {k: v[i:i + 1] for k, v in feeds.items()})[0]
                            for i in range(len(next(iter(feeds.values()))))])
        axes = tuple(a for a in range(y.ndim) if a != 1)
        mean, factor = y.mean(axis=axes), std / np.maximum(y.std(axis=axes), 1e-6)
        w, b = self.weights[layer + ".weight"], self.weights[layer + ".bias"]
        self.weights[layer + ".weight"] = (w * factor.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        self.weights[layer + ".bias"] = ((b - mean) * factor).astype(np.float32)

    def save(self, path: Path, inputs: list[Any], outputs: list[Any], opset: int) -> None:
        model = self.onnx.shape_inference.infer_shapes(self.model(inputs, outputs, opset), strict_mode=True)
        self.onnx.checker.check_model(model, full_check=True)
        self.onnx.save(model, str(path))


def shapes_images(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """NCHW float32 in [0, 1]: noise plus one to three coloured rectangles (colour and place vary per image)."""
    x = rng.uniform(0.0, 0.25, (n, 3, h, w)).astype(np.float32)
    for img in x:
        for _ in range(rng.integers(1, 4)):
            y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
            y1, x1 = y0 + rng.integers(4, h - y0 + 1), x0 + rng.integers(4, w - x0 + 1)
            img[:, y0:y1, x0:x1] = rng.uniform(0.0, 1.0, (3, 1, 1))
    return x


def save_parts(folder: Path, calib: dict[str, np.ndarray], held: dict[str, np.ndarray]) -> None:
    np.savez(folder / "calib.npz", **calib)  # type: ignore[arg-type]
    np.savez(folder / "eval.npz", **held)  # type: ignore[arg-type]


def build_yolo_head(out: Path) -> dict[str, Any]:
    classes, side = 5, 64
    rng = np.random.default_rng(110)
    calib, held = shapes_images(rng, CALIB, side, side), shapes_images(rng, EVAL, side, side)
    inputs = [tensor("images", [1, 3, side, side])]
    g = Graph(seed=11)
    x = g.conv("images", 3, 16, "backbone.0", stride=2, act="silu")
    x = g.conv(x, 16, 32, "backbone.1", stride=2, act="silu")
    x = g.conv(x, 32, 32, "backbone.2", stride=2, act="silu")  # [1, 32, 8, 8]: 64 anchors
    anchors = (side // 8) ** 2
    box = g.conv(x, 32, 4, "head.box", k=1, act=None)
    g.standardize(box, inputs, {"images": calib}, std=1.2)
    box = g.op("Mul", [g.op("Sigmoid", [box], "head.box_sigmoid"), g.const("head.img_size", 640.0)], "head.box_px")
    box = g.op("Reshape", [box, g.const("head.box_shape", [1, 4, anchors], np.int64)], "head.box_reshape")
    cls = g.conv(x, 32, classes, "head.cls", k=1, act=None)
    g.standardize(cls, inputs, {"images": calib}, std=2.0)
    cls = g.op("Sigmoid", [cls], "head.cls_sigmoid")
    cls = g.op("Reshape", [cls, g.const("head.cls_shape", [1, classes, anchors], np.int64)], "head.cls_reshape")
    g.op("Concat", [box, cls], "output0", axis=1)
    g.save(out / "model.onnx", inputs, [tensor("output0", [1, 4 + classes, anchors])], opset=13)
    save_parts(out, {"images": calib}, {"images": held})
    return {"output": "output0", "classes": classes, "anchors": anchors, "boxes": [0, 4], "box_range": [0.0, 640.0],
            "scores": [4, 4 + classes], "score_range": [0.0, 1.0], "layout": "[1, 4+C, A]: xywh px, then class probs",
            "float_head_nodes": ["head.box_sigmoid", "head.box_px", "head.box_reshape", "head.cls_sigmoid",
                                 "head.cls_reshape", "output0"],
            "trap": "per-tensor int8 on output0 (one scale for 0..640 and 0..1) collapses every class score"}


def build_segmentation(out: Path) -> dict[str, Any]:
    k, side = 4, 32
    rng = np.random.default_rng(120)
    calib, held = shapes_images(rng, CALIB, side, side), shapes_images(rng, EVAL, side, side)
    inputs = [tensor("image", [1, 3, side, side])]
    g = Graph(seed=12)
    e1 = g.conv("image", 3, 8, "enc.0", stride=2)  # 16x16
    e2 = g.conv(e1, 8, 16, "enc.1", stride=2)  # 8x8
    d1 = g.op("Relu", [g.conv(e2, 16, 8, "dec.0", k=2, stride=2, act=None, transpose=True)], "dec.0_relu")  # 16x16
    d1 = g.op("Add", [d1, e1], "dec.skip")
    up = g.op("Resize", [d1, "", g.const("dec.scales", [1.0, 1.0, 2.0, 2.0])], "dec.resize", mode="linear",
              coordinate_transformation_mode="half_pixel")  # 32x32
    g.conv(up, 8, k, "logits", k=1, act=None)
    g.standardize("logits", inputs, {"image": calib}, std=2.0)
    g.save(out / "model.onnx", inputs, [tensor("logits", [1, k, side, side])], opset=13)
    save_parts(out, {"image": calib}, {"image": held})
    return {"output": "logits", "classes": k, "layout": "[1, K, H, W] per-pixel logits (argmax over axis 1)",
            "hw": [side, side], "ops": ["ConvTranspose", "Resize"]}


def build_multi_io(out: Path) -> dict[str, Any]:
    t, frame, bins, k, s, sr = 1600, 160, 16, 6, 8, 16000
    rng = np.random.default_rng(140)

    def tones(count: int) -> np.ndarray:  # one sine of random pitch and loudness each, plus noise
        wave = np.sin(2 * np.pi * rng.uniform(100.0, 3200.0, (count, 1)) * np.arange(t) / sr)
        return (rng.uniform(0.05, 1.0, (count, 1)) * wave + rng.normal(0, 0.02, (count, t))).astype(np.float32)

    data = {part: {"audio": tones(count), "sr": np.full(count, sr, np.int64)}
            for part, count in (("calib", CALIB), ("eval", EVAL))}
    inputs = [tensor("audio", ["N", t]), tensor("sr", [], INT64)]
    g = Graph(seed=14)
    rate = g.op("Cast", ["sr"], "sr_float", to=FLOAT)
    scale = g.op("Div", [rate, g.const("reference_rate", float(sr))], "sr_scale")
    x = g.op("Mul", ["audio", scale], "audio_scaled")
    frames = g.op("Reshape", [x, g.const("frames_shape", [-1, t // frame, frame], np.int64)], "frames")
    n = np.arange(frame)[:, None] * np.arange(1, bins + 1)[None, :] * 2.0  # cosine bank, 2..32 cycles per frame
    spec = g.op("MatMul", [frames, g.const("filterbank", np.cos(2 * np.pi * n / frame) / frame)], "spectrum")
    power = g.op("Add", [g.op("Mul", [spec, spec], "power_raw"), g.const("eps", 1e-6)], "power")
    feat = g.op("ReduceMean", [g.op("Log", [power], "log_power")], "features", axes=[1], keepdims=0)  # [N, bins]
    g.dense(feat, bins, k, "logits")
    g.op("Tanh", [g.dense(feat, bins, s, "state_pre")], "state")
    g.standardize("logits", inputs, data["calib"], std=2.0)
    g.standardize("state_pre", inputs, data["calib"], std=1.0)
    g.save(out / "model.onnx", inputs, [tensor("logits", ["N", k]), tensor("state", ["N", s])], opset=13)
    save_parts(out, data["calib"], data["eval"])
    return {"inputs": {"audio": {"shape": [None, t], "dtype": "float32"}, "sr": {"shape": [], "dtype": "int64"}},
            "sr": sr, "outputs": {"logits": [None, k], "state": [None, s]},
            "uses_sr": "audio is scaled by Cast(sr)/16000 before the features: another rate changes both outputs"}


def build_dynamic_hw(out: Path) -> dict[str, Any]:
    k, hw = 10, (48, 40)
    rng = np.random.default_rng(150)
    calib, held = shapes_images(rng, CALIB, *hw), shapes_images(rng, EVAL, *hw)
    inputs = [tensor("images", ["N", 3, "H", "W"])]
    g = Graph(seed=15)
    x = g.conv("images", 3, 16, "features.0", stride=2)
    x = g.conv(x, 16, 32, "features.1", stride=2)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x], "pool")], "flatten")
    g.dense(x, 32, k, "scores")
    g.standardize("scores", inputs, {"images": calib}, std=2.0)
    g.save(out / "model.onnx", inputs, [tensor("scores", ["N", k])], opset=13)
    save_parts(out, {"images": calib}, {"images": held})
    return {"output": "scores", "classes": k, "calib_hw": list(hw), "dynamic_dims": ["N", "H", "W"]}


def build_digits_models(out: Path) -> dict[str, dict[str, Any]]:
    """One Keras CNN trained on the digits, exported three ways: tf2onnx opset 11 and 13 (NCHW), fp16 TFLite."""
    import keras
    import tensorflow as tf
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(16)
    x, y = (load_digits().images / 16.0).astype(np.float32)[..., None], load_digits().target.astype(np.int64)
    order = np.random.default_rng(160).permutation(len(x))
    train, held = order[:-EVAL_DIGITS], order[-EVAL_DIGITS:]
    model = keras.Sequential([  # NHWC (N, 8, 8, 1) in [0, 1]
        keras.Input(shape=(8, 8, 1), name="image"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv0"),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
        keras.layers.Flatten(name="flatten"), keras.layers.Dense(10, activation="softmax", name="probs")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x[train], y[train], epochs=10, batch_size=64, verbose=0)
    accuracy = float(np.mean(np.argmax(model.predict(x[held], verbose=0), axis=1) == y[held]))

    spec = (tf.TensorSpec([None, 1, 8, 8], tf.float32, name="image"),)  # NCHW, as a PyTorch export takes it
    fn = tf.function(lambda image: {"probs": model(tf.transpose(image, [0, 2, 3, 1]), training=False)},
                     input_signature=spec)
    nchw = ({"image": x[train[:CALIB]].transpose(0, 3, 1, 2)}, {"image": x[held].transpose(0, 3, 1, 2), "y": y[held]})
    expected: dict[str, dict[str, Any]] = {}
    for opset in (11, 13):
        (folder := out / f"classifier_op{opset}").mkdir()
        tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset, output_path=str(folder / "model.onnx"))
        save_parts(folder, *nchw)
        expected[folder.name] = {"opset": opset, "output": "probs", "classes": 10, "layout": "NCHW [N,1,8,8]",
                                 "keras_accuracy": accuracy, "min_accuracy": 0.9}
    expected["classifier_op11"]["trap"] = "ORT per-channel QDQ at opset 11 does not load: upgrade the opset first"

    (folder := out / "fp16_tflite").mkdir()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    (folder / "model.tflite").write_bytes(converter.convert())
    name = Interpreter(model_path=str(folder / "model.tflite")).get_input_details()[0]["name"]
    save_parts(folder, {name: x[train[:CALIB]]}, {name: x[held], "y": y[held]})
    expected["fp16_tflite"] = {"input": name, "layout": "NHWC [1,8,8,1]", "output_classes": 10,
                               "weights": "float16, DEQUANTIZE to float32 at load", "keras_accuracy": accuracy,
                               "min_accuracy": 0.9, "labels": "eval y: the digits (a classifier in fp16 TFLite form)"}
    return expected


def build_all(out: Path) -> None:
    expected: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for name, builder in (("yolo_head", build_yolo_head), ("segmentation", build_segmentation),
                          ("multi_io", build_multi_io), ("dynamic_hw", build_dynamic_hw)):
        start = time.perf_counter()
        (out / name).mkdir()
        expected[name] = builder(out / name)
        seconds[name] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    expected.update(build_digits_models(out))
    seconds["digits (3 models)"] = round(time.perf_counter() - start, 2)
    fmts = {name: "tflite" if name == "fp16_tflite" else "onnx" for name in NAMES}
    models = {name: {"fmt": fmts[name], "kind": KINDS[name], "expected": expected[name], "path":
                     f"{name}/model.{fmts[name]}", "calib": f"{name}/calib.npz", "eval": f"{name}/eval.npz"}
              for name in NAMES}
    files = [f"{name}/{file}" for name, fmt in fmts.items() for file in (f"model.{fmt}", "calib.npz", "eval.npz")]
    doc = {"key": content_key(), "tools": tool_versions(), "build_seconds": seconds, "models": models,
           "sha256": {rel: sha256_file(out / rel) for rel in files}}
    (out / "corpus.json").write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    build_all(Path(sys.argv[1]))
