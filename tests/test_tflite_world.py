"""TFLite conversion of real-world model shapes: several inputs (one integer, one scalar) and outputs, and a
YOLO-style detector head whose class scores collapse under per-tensor int8 until the head stays float."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.config import TFLiteOptions
from edgeopt.convert.tflite import convert_tflite
from edgeopt.convert.tflite_debug import layer_errors
from edgeopt.errors import DataError, QuantizationError
from edgeopt.inputs.model import SourceModel, open_model
from edgeopt.inputs.tensors import Feeds

N_CLASSES = 8
INT8_FLOAT_IO = TFLiteOptions(optimizations=["default"], representative_dataset=True,
                              supported_ops=["builtins_int8", "builtins"])
INT8_FULL = TFLiteOptions(optimizations=["default"], representative_dataset=True, supported_ops=["builtins_int8"],
                          inference_input_type="int8", inference_output_type="int8", require_full_integer=True)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - got) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def run_tflite(path: Path, samples: list[Feeds]) -> dict[str, np.ndarray]:
    """Outputs of the model's serving_default signature (quantised I/O (de)quantised here), stacked on axis 0."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    ins, outs = runner.get_input_details(), runner.get_output_details()
    got: dict[str, list[np.ndarray]] = {k: [] for k in outs}
    for sample in samples:
        feed = {}
        for name, value in sample.items():
            d = ins[name]
            scale, zp = d["quantization"]
            if np.dtype(d["dtype"]) == np.int8 and value.dtype.kind == "f":
                value = np.clip(np.round(value / scale + zp), -128, 127)
            feed[name] = value.astype(d["dtype"])
        for name, value in runner(**feed).items():
            scale, zp = outs[name]["quantization"]
            got[name].append((value.astype(np.float32) - zp) * scale if value.dtype == np.int8 else value)
    return {k: np.concatenate(v) for k, v in got.items()}


# -- a detector head: boxes 0..640 px and class probabilities 0..1 concatenated on axis 1 ----------------

@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[SourceModel, np.ndarray, np.ndarray]:
    from edgeopt.tf_env import quiet_tensorflow

    quiet_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    inp = keras.Input((32, 32, 3), name="images")
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    box = layers.Permute((2, 1))(layers.Reshape((-1, 4))(layers.Conv2D(4, 1)(x)))  # [N, 4, A]
    box = layers.Rescaling(640.0)(layers.Activation("sigmoid")(box))
    cls = layers.Conv2D(N_CLASSES, 1, bias_initializer=keras.initializers.Constant(-2.0))(x)
    cls = layers.Activation("sigmoid")(layers.Permute((2, 1))(layers.Reshape((-1, N_CLASSES))(cls)))  # [N, C, A]
    model = keras.Model(inp, layers.Concatenate(axis=1, name="head")([box, cls]), name="detector")
    path = tmp_path_factory.mktemp("detector") / "detector.keras"
    model.save(path)
    x_cal = np.random.default_rng(0).random((64, 32, 32, 3), dtype=np.float32)
    return open_model(path).load(), x_cal, model.predict(x_cal[:16], verbose=0)


def class_scores(path: Path, x: np.ndarray) -> np.ndarray:
    return run_tflite(path, [{"images": x[i:i + 1]} for i in range(len(x))])["output_0"][:, 4:]


def test_full_int8_collapses_the_class_scores_of_a_concatenated_head(detector: Any, tmp_path: Path) -> None:
    src, x_cal, ref = detector
    out = tmp_path / "full.tflite"
    facts = convert_tflite(src, INT8_FLOAT_IO, out, calibration=x_cal, calibration_samples=64, static_batch=True)
    assert facts["float_nodes"] == [] and facts["quantizer"] == "TFLiteConverter"
    assert [(o["source"], o["signature"]) for o in facts["outputs"]] == [(src.outputs[0].name, "output_0")]
    got = run_tflite(out, [{"images": x_cal[i:i + 1]} for i in range(16)])["output_0"]
    assert len(np.unique(ref[:, 4:])) > 1000
    assert len(np.unique(got[:, 4:])) <= 2  # one ~2.5 px step swallows every score
    assert sqnr_db(ref[:, 4:], got[:, 4:]) < 3
    assert sqnr_db(ref[:, :4], got[:, :4]) > 30  # the boxes are fine: top-1 style checks would pass


def test_layer_errors_name_the_head_and_denylisting_them_restores_the_scores(detector: Any, tmp_path: Path) -> None:
    src, x_cal, ref = detector
    rows = layer_errors(src, INT8_FLOAT_IO, x_cal, 16, top=5)
    json.dumps(rows, allow_nan=False)
    worst = rows[0]
    assert worst["op"] in ("RESHAPE", "TRANSPOSE", "CONCATENATION", "QUANTIZE"), rows
    assert worst["sqnr_db"] < 3 and worst["under_one_step"] > 0.9 and worst["tensor"]
    assert rows[1]["sqnr_db"] > 20 and rows[1]["under_one_step"] < 0.1  # the rest loses only rounding
    denied: list[str] = []
    for _ in range(6):  # same-scale ops hand the coarse scale on: one more node per round
        worst = layer_errors(src, INT8_FLOAT_IO, x_cal, 16, top=1, denylisted_nodes=denied)[0]
        if worst["sqnr_db"] > 20 and worst["under_one_step"] < 0.5:
            break
        denied.append(worst["tensor"])
    assert 1 <= len(denied) <= 4, denied
    out = tmp_path / "selective.tflite"
    facts = convert_tflite(src, INT8_FLOAT_IO.model_copy(update={"require_full_integer": True}), out,
                           calibration=x_cal, calibration_samples=64, static_batch=True, denylisted_nodes=denied)
    assert facts["quantizer"].startswith("QuantizationDebugger") and facts["denylisted_nodes"] == denied
    assert "CONCATENATION" in facts["float_ops"] and len(facts["float_nodes"]) <= 2 * len(denied)
    got = class_scores(out, x_cal[:16])
    assert len(np.unique(got)) >= 10 and sqnr_db(ref[:, 4:], got) > 30
    assert "CONV_2D" not in facts["float_ops"]  # the body stays int8


def test_a_denylisted_op_type_stays_float_and_misnamed_nodes_are_refused(detector: Any, tmp_path: Path) -> None:
    src, x_cal, ref = detector
    out = tmp_path / "ops.tflite"
    facts = convert_tflite(src, INT8_FLOAT_IO, out, calibration=x_cal, calibration_samples=32, static_batch=True,
                           denylisted_ops=["CONCATENATION", "TRANSPOSE", "RESHAPE"])
    assert set(facts["float_ops"]) == {"CONCATENATION", "TRANSPOSE", "RESHAPE"}
    assert sqnr_db(ref[:, 4:], class_scores(out, x_cal[:16])) > 30
    with pytest.raises(QuantizationError, match="no-such-node"):
        convert_tflite(src, INT8_FLOAT_IO, tmp_path / "bad.tflite", calibration=x_cal, calibration_samples=8,
                       static_batch=True, denylisted_nodes=["no-such-node"])
    assert not (tmp_path / "bad.tflite").exists()
    with pytest.raises(QuantizationError, match="stays float32") as err:  # int8 output asked, float op at the edge
        convert_tflite(src, INT8_FULL, tmp_path / "io.tflite", calibration=x_cal, calibration_samples=8,
                       static_batch=True, denylisted_ops=["CONCATENATION"])
    assert "float32 input/output" in (err.value.hint or "")


# -- several inputs (float image, int64 tokens) and outputs ------------------------------------------------

@pytest.fixture(scope="module")
def two_in_two_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[SourceModel, Any, Feeds]:
    from edgeopt.tf_env import quiet_tensorflow

    quiet_tensorflow()
    import keras

    keras.utils.set_random_seed(1)
    layers = keras.layers
    image = keras.Input((8, 8, 3), name="zeta_image")
    tokens = keras.Input((4,), dtype="int64", name="alpha_tokens")
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3, padding="same", activation="relu")(image))
    t = layers.Flatten()(layers.Embedding(10, 3)(tokens))
    score = layers.Dense(3, name="z_score")(layers.Concatenate()([x, t]))
    vec = layers.Dense(5, name="a_vec")(x)
    model = keras.Model([image, tokens], [score, vec])
    path = tmp_path_factory.mktemp("multi") / "multi.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    feeds = {"zeta_image": rng.random((48, 8, 8, 3), dtype=np.float32),
             "alpha_tokens": rng.integers(0, 10, (48, 4)).astype(np.int64)}
    return open_model(path).load(), model, feeds


@pytest.mark.parametrize("static_batch", [True, False])
def test_several_inputs_one_integer_calibrate_and_keep_their_names_and_order(two_in_two_out: Any, tmp_path: Path,
                                                                             static_batch: bool) -> None:
    src, model, feeds = two_in_two_out
    assert [s.name for s in src.inputs] == ["zeta_image", "alpha_tokens"]
    out = tmp_path / "multi.tflite"
    facts = convert_tflite(src, INT8_FULL, out, calibration=feeds, calibration_samples=48, static_batch=static_batch)
    assert [(i["source"], i["signature"], i["dtype"]) for i in facts["inputs"]] == [
        ("zeta_image", "zeta_image", "int8"), ("alpha_tokens", "alpha_tokens", "int64")]  # the integers untouched
    assert [(o["source"], o["signature"]) for o in facts["outputs"]] == [
        (src.outputs[0].name, "output_0"), (src.outputs[1].name, "output_1")]
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(out)).get_signature_runner("serving_default").get_input_details()
    assert list(details["alpha_tokens"]["shape_signature"]) == [1 if static_batch else -1, 4]
    got = run_tflite(out, [{k: v[i:i + 1] for k, v in feeds.items()} for i in range(16)])
    ref = model.predict([feeds["zeta_image"][:16], feeds["alpha_tokens"][:16]], verbose=0)
    for i, r in enumerate(ref):  # source order: output_i is the source's i-th output
        assert got[f"output_{i}"].shape == r.shape and sqnr_db(r, got[f"output_{i}"]) > 15


def test_calibration_must_cover_every_input(two_in_two_out: Any, tmp_path: Path) -> None:
    src, _, feeds = two_in_two_out
    with pytest.raises(DataError, match="alpha_tokens") as err:
        convert_tflite(src, INT8_FULL, tmp_path / "m.tflite", calibration={"zeta_image": feeds["zeta_image"]},
                       calibration_samples=8, static_batch=True)
    assert err.value.hint
    with pytest.raises(DataError, match="shape"):
        convert_tflite(src, INT8_FULL, tmp_path / "m.tflite", calibration={**feeds, "alpha_tokens": feeds[
            "alpha_tokens"][:, :3]}, calibration_samples=8, static_batch=True)


def test_layer_errors_feed_every_input(two_in_two_out: Any) -> None:
    src, _, feeds = two_in_two_out
    rows = layer_errors(src, INT8_FLOAT_IO, feeds, 8, top=3)
    assert len(rows) == 3 and all(r["tensor"] and r["num_elements"] > 0 for r in rows)
    assert rows[0]["sqnr_db"] <= rows[1]["sqnr_db"] <= rows[2]["sqnr_db"]


# -- a SavedModel with a scalar int64 input (a sample rate) and an awkward input name -----------------------

def scalar_rate_model(tmp_path: Path) -> tuple[SourceModel, np.ndarray, Feeds]:
    from edgeopt.tf_env import quiet_tensorflow

    tf = quiet_tensorflow()
    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(0).normal(size=(6, 2)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec((None, 6), tf.float32, name="audio.frame"),
                                  tf.TensorSpec((), tf.int64, name="sr")])
    def serve(frame: Any, sr: Any) -> dict[str, Any]:
        return {"logits": tf.matmul(frame, module.w) * tf.cast(sr, tf.float32) / 16000.0}

    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": serve})
    src = open_model(tmp_path / "sm").load()
    frames = np.random.default_rng(1).normal(size=(32, 6)).astype(np.float32)
    feeds = {src.inputs[0].name: frames, "sr": np.random.default_rng(2).choice([8000, 16000, 44100], 32)}
    return src, module.w.numpy(), feeds


def run_rate_model(path: Path, src: SourceModel, feeds: Feeds, n: int) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    assert list(runner.get_input_details()["sr"]["shape"]) == []
    frame = src.inputs[0].name
    return np.concatenate([runner(**{frame: feeds[frame][i:i + 1], "sr": np.asarray(feeds["sr"][i], np.int64)})[
        "output_0"] for i in range(n)])


def test_a_scalar_integer_input_stays_a_scalar(tmp_path: Path) -> None:
    src, w, feeds = scalar_rate_model(tmp_path)
    assert [(s.name, s.shape, s.dtype) for s in src.inputs][1] == ("sr", (), "int64")
    out = tmp_path / "m.tflite"
    facts = convert_tflite(src, TFLiteOptions(), out, calibration=None, calibration_samples=0, static_batch=True)
    assert [(i["signature"], i["dtype"]) for i in facts["inputs"]][1] == ("sr", "int64")
    expected = feeds[src.inputs[0].name][:8] @ w * (feeds["sr"][:8, None] / 16000.0)
    assert sqnr_db(expected, run_rate_model(out, src, feeds, 8)) > 60
    facts = convert_tflite(src, INT8_FLOAT_IO, out, calibration=feeds, calibration_samples=32, static_batch=True)
    assert [(i["signature"], i["dtype"]) for i in facts["inputs"]][1] == ("sr", "int64")  # not quantised


@pytest.mark.xfail(strict=True, reason="int8 of a model scaled by a scalar int64 input gives all-zero outputs "
                   "(TF 2.21 converter; the float32 conversion is exact) - not diagnosed yet")
def test_int8_of_a_scalar_input_model_is_accurate(tmp_path: Path) -> None:
    src, w, feeds = scalar_rate_model(tmp_path)
    out = tmp_path / "m.tflite"
    convert_tflite(src, INT8_FLOAT_IO, out, calibration=feeds, calibration_samples=32, static_batch=True)
    expected = feeds[src.inputs[0].name][:8] @ w * (feeds["sr"][:8, None] / 16000.0)
    assert sqnr_db(expected, run_rate_model(out, src, feeds, 8)) > 20
