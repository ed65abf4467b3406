"""Tiny real artifacts for the agent tests, built once with the real converters and cached on disk.

Layout (mirrors ``artifacts/<target>/<profile>/`` from docs/artifacts.md)::

    <cache>/agent-models/<VERSION>/
        fp32/model.tflite  fp32/model.onnx  fp32/reference.npz   (x, y_float, y_tflite, y_onnx, labels)
        int8/model.tflite  int8/reference.npz                     (x, y_float, y_tflite, labels)
        models.json        written last: its presence means the set is complete

The model is a small CNN (8x8x1 conv -> dense(10) softmax) trained for a few epochs on scikit-learn's
8x8 digits, so its top-1 answers are decisive. Building imports TensorFlow, so it runs in a subprocess of
the host interpreter (``python tests/agent_models.py OUT``); a cached set is reused without importing TF.
Cache root: ``$EDGEOPT_TEST_CACHE`` or ``~/.cache/edgeopt-test``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

VERSION = "v1"
EVAL_SAMPLES = 32
CALIBRATION_SAMPLES = 128


def cache_root() -> Path:
    return Path(os.environ.get("EDGEOPT_TEST_CACHE") or Path.home() / ".cache" / "edgeopt-test")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock held across processes (pytest-xdist workers, parallel sessions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class AgentModels:
    root: Path

    @property
    def fp32_tflite(self) -> Path:
        return self.root / "fp32" / "model.tflite"

    @property
    def fp32_onnx(self) -> Path:
        return self.root / "fp32" / "model.onnx"

    @property
    def fp32_reference(self) -> Path:
        return self.root / "fp32" / "reference.npz"

    @property
    def int8_tflite(self) -> Path:
        return self.root / "int8" / "model.tflite"

    @property
    def int8_reference(self) -> Path:
        return self.root / "int8" / "reference.npz"

    def files(self) -> list[Path]:
        return [self.fp32_tflite, self.fp32_onnx, self.fp32_reference, self.int8_tflite, self.int8_reference]

    def healthy(self) -> bool:
        marker = self.root / "models.json"
        if not marker.is_file() or not all(p.is_file() for p in self.files()):
            return False
        recorded = json.loads(marker.read_text())["sha256"]
        return all(recorded.get(str(p.relative_to(self.root))) == sha256_file(p) for p in self.files())


def ensure_agent_models(python: str | None = None) -> AgentModels:
    """The cached model set, building it first when missing or damaged (about 20 s with TensorFlow)."""
    target = cache_root() / "agent-models" / VERSION
    models = AgentModels(target)
    if models.healthy():
        return models
    with file_lock(target.parent / (VERSION + ".lock")):
        if models.healthy():
            return models
        tmp = Path(tempfile.mkdtemp(prefix=VERSION + ".", dir=target.parent))
        try:
            proc = subprocess.run([python or sys.executable, str(Path(__file__).resolve()), str(tmp)],
                                  capture_output=True, text=True, timeout=900,
                                  env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
            if proc.returncode != 0:
                raise RuntimeError("building the agent test models failed:\n" + proc.stdout[-4000:]
                                   + proc.stderr[-4000:])
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    if not models.healthy():
        raise RuntimeError("agent test models in %s are incomplete after building" % target)
    return models


# --- the build itself (runs in the subprocess; imports TensorFlow) -------------------------------------------


def _build(out: Path) -> None:
    import keras
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    digits = load_digits()
    x_all = (digits.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    y_all = digits.target.astype(np.int64)
    x_train, y_train = x_all[:-EVAL_SAMPLES], y_all[:-EVAL_SAMPLES]
    x_eval, y_eval = x_all[-EVAL_SAMPLES:], y_all[-EVAL_SAMPLES:]

    model = keras.Sequential([
        keras.Input(shape=(8, 8, 1), name="image"),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, activation="softmax", name="probs"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=8, batch_size=64, verbose=0)
    y_float = model.predict(x_eval, verbose=0).astype(np.float32)

    fp32_dir, int8_dir = out / "fp32", out / "int8"
    fp32_dir.mkdir(parents=True)
    int8_dir.mkdir(parents=True)

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    (fp32_dir / "model.tflite").write_bytes(converter.convert())

    def representative():
        for i in range(CALIBRATION_SAMPLES):
            yield [x_train[i:i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    (int8_dir / "model.tflite").write_bytes(converter.convert())

    # tf2onnx: from_function on a tf.function with an input signature (from_keras trips on Keras 3).
    spec = (tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image"),)
    fn = tf.function(lambda image: model(image, training=False), input_signature=spec)
    tf2onnx.convert.from_function(fn, input_signature=spec, opset=13, output_path=str(fp32_dir / "model.onnx"))

    def run_tflite(path: Path) -> np.ndarray:
        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
        in_scale, in_zp = inp["quantization"]
        out_scale, out_zp = outp["quantization"]
        ys = []
        for i in range(EVAL_SAMPLES):
            x = x_eval[i:i + 1]
            if in_scale:
                info = np.iinfo(inp["dtype"])
                x = np.clip(np.round(x / in_scale) + in_zp, info.min, info.max).astype(inp["dtype"])
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            y = interp.get_tensor(outp["index"])
            ys.append(((y.astype(np.float32) - out_zp) * out_scale) if out_scale else y.astype(np.float32))
        return np.concatenate(ys).astype(np.float32)

    sess = ort.InferenceSession(str(fp32_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    y_onnx = np.concatenate([sess.run(None, {name: x_eval[i:i + 1]})[0] for i in range(EVAL_SAMPLES)])

    np.savez(fp32_dir / "reference.npz", x=x_eval, y_float=y_float, y_tflite=run_tflite(fp32_dir / "model.tflite"),
             y_onnx=y_onnx.astype(np.float32), labels=y_eval)
    np.savez(int8_dir / "reference.npz", x=x_eval, y_float=y_float, y_tflite=run_tflite(int8_dir / "model.tflite"),
             labels=y_eval)

    files = [fp32_dir / "model.tflite", fp32_dir / "model.onnx", fp32_dir / "reference.npz",
             int8_dir / "model.tflite", int8_dir / "reference.npz"]
    marker = {
        "version": VERSION,
        "tools": {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnxruntime": ort.__version__},
        "float_eval_accuracy": float(np.mean(np.argmax(y_float, axis=1) == y_eval)),
        "sha256": {str(p.relative_to(out)): sha256_file(p) for p in files},
    }
    (out / "models.json").write_text(json.dumps(marker, indent=2))


if __name__ == "__main__":
    _build(Path(sys.argv[1]))
