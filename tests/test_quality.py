"""The per-output quality verdict (edgeopt.analyze.quality.assess): synthetic arrays for each figure, the bundled
example's real artifacts (every standard profile, both formats: ok), and a real YOLO-style detector quantised by
ONNX Runtime (its class channels collapse: broken, where top-1 agreement would have passed it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.analyze.evaluate import compare
from edgeopt.analyze.quality import assess, channel_axis, is_classifier
from edgeopt.config.base import load_model_file
from edgeopt.config.profile import Profile, QualityOptions
from edgeopt.errors import ConfigError, DataError

OPTS = QualityOptions()
CLASSES, SIDE = 6, 16  # detector: 4 box + 6 class channels over 16 x 16 = 256 anchors


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def verdict(ref: np.ndarray, cand: np.ndarray, **kw: Any) -> dict[str, Any]:
    result = assess(["out"], [ref], [cand], OPTS, **kw)
    json.dumps(result, allow_nan=False)  # JSON-safe, always
    return result


# ------------------------------------------------------------------------------------- a YOLO-style detector
def detector_onnx(path: Path, seed: int = 0) -> Path:
    """images [N, 3, 32, 32] -> two 3x3 convs -> a head: Concat(sigmoid(box conv) * 640 as [N, 4, A],
    sigmoid(class conv) as [N, C, A]) on axis 1 = output0 [N, 4 + C, A], as YOLOv8 exports end. Random weights."""
    rng = np.random.default_rng(seed)

    def conv(name: str, cin: int, cout: int, k: int) -> list[onnx.TensorProto]:
        w = rng.normal(scale=np.sqrt(2 / (cin * k * k)), size=(cout, cin, k, k)).astype(np.float32)
        b = rng.normal(scale=0.1, size=cout).astype(np.float32)
        return [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]

    inits = conv("c1", 3, 16, 3) + conv("c2", 16, 32, 3) + conv("box", 32, 4, 1) + conv("cls", 32, CLASSES, 1)
    inits += [numpy_helper.from_array(np.array([640.0], np.float32), "px"),
              numpy_helper.from_array(np.array([0, 4, -1], np.int64), "box_shape"),
              numpy_helper.from_array(np.array([0, CLASSES, -1], np.int64), "cls_shape")]
    nodes = [
        helper.make_node("Conv", ["images", "c1.w", "c1.b"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "box.w", "box.b"], ["box"]),
        helper.make_node("Sigmoid", ["box"], ["box_s"]),
        helper.make_node("Mul", ["box_s", "px"], ["box_px"]),
        helper.make_node("Reshape", ["box_px", "box_shape"], ["boxes"], name="head_box_reshape"),
        helper.make_node("Conv", ["r2", "cls.w", "cls.b"], ["cls"]),
        helper.make_node("Sigmoid", ["cls"], ["cls_s"], name="head_cls_sigmoid"),
        helper.make_node("Reshape", ["cls_s", "cls_shape"], ["scores"], name="head_cls_reshape"),
        helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1, name="head_concat"),
    ]
    graph = helper.make_graph(
        nodes, "detector", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 4 + CLASSES, (SIDE * SIDE)])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def structured_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random but image-like: 4x4 blocks of colour blown up to 32x32, a brightness ramp, a little pixel noise."""
    blocks = np.kron(rng.random((n, 3, 4, 4)), np.ones((1, 1, 8, 8)))
    ramp = np.linspace(0, 0.3, 32)[None, None, None, :] * rng.random((n, 1, 1, 1))
    return np.clip(blocks + ramp + rng.normal(scale=0.02, size=blocks.shape), 0, 1).astype(np.float32)


def run_onnx_model(path: Path, x: np.ndarray, optimise: bool = True) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if not optimise:  # the reference: every node as written, no fusions
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"images": x})[0], dtype=np.float32)


def quantize_detector(src: Path, out: Path, calib: np.ndarray, keep_head_float: bool = False) -> Path:
    """ONNX Runtime static int8: QDQ, per-channel, MinMax (optionally the head's last nodes left in float)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"images": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    head = ["head_box_reshape", "head_cls_sigmoid", "head_cls_reshape", "head_concat"] if keep_head_float else []
    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=head)
    return out


def fp16_detector(src: Path, out: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(out))
    return out


# ---------------------------------------------------------------------------------------------- synthetic arrays
def test_exact_output_is_ok_with_capped_sqnr() -> None:
    ref = softmax(np.random.default_rng(0).normal(size=(64, 10)) * 3).astype(np.float32)
    r = verdict(ref, ref.copy())
    fig = r["outputs"]["out"]
    assert r["verdict"] == "ok" and r["reasons"] == []
    assert fig["sqnr_db"] == 200.0 and fig["channel_snr_db_min"] == 200.0 and fig["cosine_min"] == 1.0
    assert fig["classifier"] and fig["top1_agreement"] == 1.0 and fig["channel_axis"] == 1
    assert r["worst"] == {"output": "out", "figure": "sqnr_db", "value": 200.0,
                          "threshold": OPTS.degraded.min_sqnr_db}


def test_small_noise_is_ok_and_heavy_noise_is_not() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(32, 8, 12, 12)).astype(np.float32)
    small = verdict(ref, ref + rng.normal(scale=0.01, size=ref.shape).astype(np.float32))
    assert small["verdict"] == "ok", small["reasons"]
    assert 35 < small["outputs"]["out"]["sqnr_db"] < 45  # 10 log10(1 / 0.01^2) = 40 dB
    medium = verdict(ref, ref + rng.normal(scale=0.3, size=ref.shape).astype(np.float32))  # ~10.5 dB
    assert medium["verdict"] == "degraded", medium["reasons"]
    assert any("sqnr_db" in line and "(degraded)" in line for line in medium["reasons"])
    heavy = verdict(ref, ref + rng.normal(scale=1.5, size=ref.shape).astype(np.float32))  # ~-3.5 dB
    assert heavy["verdict"] == "broken"
    assert heavy["worst"]["value"] < heavy["worst"]["threshold"]


def test_one_constant_channel_is_broken_though_top1_agrees() -> None:
    rng = np.random.default_rng(2)
    ref = softmax(rng.normal(size=(200, 5)) * 2).astype(np.float32)
    cand = ref.copy()
    cand[:, 4] = 0.0  # one class never scores: argmax mostly agrees, the class is dead
    r = verdict(ref, cand)
    fig = r["outputs"]["out"]
    assert r["verdict"] == "broken"
    assert fig["constant_channels"] == 1 and fig["constant_channel_examples"] == [4]
    assert fig["channel_snr_db_min"] <= 0 and fig["worst_channel"] == 4
    assert any(line.startswith("out: channel_snr_db_min") and "(broken)" in line for line in r["reasons"])


def test_single_distinct_value_is_broken() -> None:
    ref = np.random.default_rng(3).random((16, 30)).astype(np.float32)
    r = verdict(ref, np.full_like(ref, 0.5))
    assert r["verdict"] == "broken"
    fig = r["outputs"]["out"]
    assert fig["distinct_values"] == {"float": int(np.unique(ref).size), "artifact": 1}
    assert fig["constant_channel_share"] == 1.0
    assert r["worst"] == {"output": "out", "figure": "distinct_values", "value": 1.0, "threshold": 2.0}
    assert "out: distinct_values 1 < 2 (broken)" in r["reasons"]


def test_segmentation_map_where_argmax_agreement_says_nothing() -> None:
    """[N, K, H, W] class maps: one class map is lost (zeroed) in the artifact. The flattened argmax of the old
    comparison still agrees on every sample (the strongest pixel is elsewhere); the per-channel figures do not."""
    rng = np.random.default_rng(4)
    ref = rng.random((8, 4, 16, 16)).astype(np.float32)
    ref[:, 0, 0, 0] = 5.0  # the global argmax of every sample sits in class 0
    cand = ref.copy()
    cand[:, 3] = 0.0
    old = compare(cand, ref, None)
    assert old["top1_agreement"] == 1.0
    r = verdict(ref, cand)
    fig = r["outputs"]["out"]
    assert not fig["classifier"] and "top1_agreement" not in fig
    assert fig["channel_axis"] == 1 and fig["constant_channel_examples"] == [3]
    assert r["verdict"] == "broken"


def test_channel_axis_and_classifier_rules() -> None:
    assert channel_axis((8,)) is None and channel_axis((8, 10)) == 1
    assert channel_axis((8, 84, 8400)) == 1 and channel_axis((8, 21, 64, 64)) == 1
    assert channel_axis((8, 25200, 85)) == 2 and channel_axis((8, 64, 64, 21)) == 3
    assert is_classifier((8, 10)) and not is_classifier((8, 1)) and not is_classifier((8, 84, 100))


def test_a_detection_s_collapsed_score_is_caught_on_the_last_axis() -> None:
    """``[N, 1, 4+1]`` (one detection: pixel box and a score): axis 1 (size 1) was the only channel axis judged,
    so a score quantised to two values hid behind the boxes' 640-pixel range (int8 reported ok, SQNR 44 dB)."""
    rng = np.random.default_rng(3)
    ref = np.concatenate([rng.uniform(0, 640, (200, 1, 4)), rng.uniform(0.58, 1.0, (200, 1, 1))], 2).astype(np.float32)
    cand = ref + rng.normal(0, 0.5, ref.shape).astype(np.float32)
    cand[:, :, 4] = np.where(ref[:, :, 4] > 0.9, 1.859, 0.0)
    r = verdict(ref, cand)
    fig = r["outputs"]["out"]
    assert fig["sqnr_db"] > 40  # the whole output looks fine
    assert fig["channel_axis"] == 2 and fig["worst_channel"] == 4 and fig["channel_snr_db_min"] < 0
    assert r["verdict"] == "broken"
    ok = verdict(ref, ref + rng.normal(0, 0.002, ref.shape).astype(np.float32))  # both axes fine: ok
    assert ok["verdict"] == "ok"
    seq = rng.normal(size=(50, 2, 1000)).astype(np.float32)  # a long last axis (positions) is no second channel axis
    assert verdict(seq, seq + 0.001)["outputs"]["out"]["channel_axis"] == 1


def test_a_regression_output_collapsed_to_one_value_is_broken() -> None:
    ref = np.linspace(-3, 3, 50, dtype=np.float32)
    r = verdict(ref, np.zeros_like(ref))
    assert r["verdict"] == "broken" and r["outputs"]["out"]["channel_axis"] is None


def test_labels_score_the_first_classifier_and_accuracy_drop_is_judged() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 400)
    ref = np.eye(4, dtype=np.float32)[labels] * 4 + rng.normal(scale=0.3, size=(400, 4)).astype(np.float32)
    cand = ref.copy()
    swap = np.arange(400) < 40  # 10 % of samples now predict the next class
    cand[swap] = np.roll(ref[swap], 1, axis=1)
    box = rng.random((400, 4, 7)).astype(np.float32)
    r = assess(["boxes", "logits"], [box, ref], [box, cand], OPTS, labels=labels)
    fig = r["outputs"]["logits"]
    assert fig["float_accuracy"] == 1.0 and fig["accuracy"] == pytest.approx(0.9)
    assert fig["accuracy_drop_pp"] == pytest.approx(10.0) and fig["top1_agreement"] == pytest.approx(0.9)
    assert "accuracy" not in r["outputs"]["boxes"]
    assert r["verdict"] == "broken" and r["worst"]["output"] == "logits"  # 40 samples wholly wrong (cosine < 0)
    assert "logits: accuracy_drop_pp 10 > 2 (degraded)" in r["reasons"]
    assert "logits: top1_agreement 0.9 < 0.95 (degraded)" in r["reasons"]
    off = {f: None for f in ("min_sqnr_db", "min_cosine", "max_relative_error", "min_channel_snr_db")}
    only_classes = QualityOptions(degraded=off, broken=off)  # None switches a figure off
    r = assess(["boxes", "logits"], [box, ref], [box, cand], only_classes, labels=labels)
    assert r["verdict"] == "degraded" and r["worst"]["figure"] == "top1_agreement"
    assert len(r["reasons"]) == 2
    with pytest.raises(DataError, match="outside 0..3"):
        assess(["logits"], [ref], [cand], OPTS, labels=labels + 1)


def test_non_finite_artifact_output_is_broken() -> None:
    ref = np.random.default_rng(6).random((4, 3)).astype(np.float32)
    cand = ref.copy()
    cand[1, 2] = np.nan
    r = verdict(ref, cand)
    assert r["verdict"] == "broken" and r["worst"]["figure"] == "non_finite_values"
    assert r["reasons"] == ["out: non_finite_values 1 > 0 (broken)"]


def test_input_mistakes_raise_data_errors() -> None:
    a = np.zeros((4, 3), np.float32)
    with pytest.raises(DataError, match="shape"):
        assess(["y"], [a], [np.zeros((4, 2), np.float32)], OPTS)
    with pytest.raises(DataError, match="names"):
        assess(["y", "z"], [a], [a], OPTS)
    with pytest.raises(DataError, match="repeat"):
        assess(["y", "y"], [a, a], [a, a], OPTS)
    with pytest.raises(DataError, match="NaN"):
        assess(["y"], [np.full((4, 3), np.inf, np.float32)], [a], OPTS)


def test_profile_quality_section(tmp_path: Path) -> None:
    p = tmp_path / "strict.yaml"
    p.write_text("quality:\n  degraded: {min_sqnr_db: 30}\n  broken: {min_channel_snr_db: null}\n")
    prof = load_model_file(p, Profile)
    assert prof.quality.degraded.min_sqnr_db == 30 and prof.quality.broken.min_sqnr_db == 5.0
    assert prof.quality.broken.min_channel_snr_db is None
    p.write_text("quality:\n  broken: {min_sqnr_db: 40}\n")
    with pytest.raises(ConfigError, match="broken level must be the looser"):
        load_model_file(p, Profile)
    p.write_text("quality:\n  degraded: {min_sqnr: 30}\n")
    with pytest.raises(ConfigError, match="unknown field") as err:
        load_model_file(p, Profile)
    assert err.value.hint == "did you mean 'min_sqnr_db'?"


# ------------------------------------------------------------------------------------------ real artifacts
@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The float detector's outputs (reference: ORT, no graph optimisation) and those of its artifacts."""
    tmp = tmp_path_factory.mktemp("detector")
    model = detector_onnx(tmp / "detector.onnx")
    calib = structured_images(np.random.default_rng(10), 64)
    x = structured_images(np.random.default_rng(11), 32)
    return {"reference": run_onnx_model(model, x, optimise=False),
            "float": run_onnx_model(model, x),
            "fp16": run_onnx_model(fp16_detector(model, tmp / "fp16.onnx"), x),
            "int8": run_onnx_model(quantize_detector(model, tmp / "int8.onnx", calib), x),
            "int8_head_float": run_onnx_model(quantize_detector(model, tmp / "int8h.onnx", calib, True), x)}


def test_detector_int8_class_channels_collapse_and_are_broken(detector: dict[str, np.ndarray]) -> None:
    ref, int8 = detector["reference"], detector["int8"]
    scores_f, scores_q = ref[:, 4:], int8[:, 4:]
    assert all(np.unique(scores_f[:, j]).size > 1000 for j in range(CLASSES))  # the float model's scores vary
    collapsed = [j for j in range(CLASSES) if np.unique(scores_q[:, j]).size == 1]
    assert collapsed == list(range(CLASSES))  # per-tensor int8 at 640/255 px a step: every score one value
    r = assess(["output0"], [ref], [int8], OPTS)
    fig = r["outputs"]["output0"]
    assert r["verdict"] == "broken"
    assert fig["constant_channel_examples"] == [4 + j for j in range(CLASSES)]
    assert fig["constant_channel_share"] == pytest.approx(CLASSES / (4 + CLASSES))
    assert fig["channel_snr_db_min"] < 0 and fig["worst_channel"] >= 4
    # what the old judgement saw: a fine whole output and a top-1 agreement as good as the healthy artifact's
    assert fig["sqnr_db"] > OPTS.degraded.min_sqnr_db and fig["cosine_min"] > OPTS.degraded.min_cosine
    assert compare(int8, ref, None)["top1_agreement"] == compare(detector["int8_head_float"], ref, None
                                                                 )["top1_agreement"]


@pytest.mark.parametrize("artifact", ["float", "fp16", "int8_head_float"])
def test_detector_float_fp16_and_int8_with_a_float_head_are_ok(detector: dict[str, np.ndarray],
                                                                artifact: str) -> None:
    r = assess(["output0"], [detector["reference"]], [detector[artifact]], OPTS)
    fig = r["outputs"]["output0"]
    assert r["verdict"] == "ok", r["reasons"]
    assert fig["constant_channels"] == 0 and fig["varying_channels"] == 4 + CLASSES
    assert fig["channel_snr_db_min"] > OPTS.degraded.min_channel_snr_db


@pytest.mark.parametrize("profile", ["fp32", "fp16", "dynamic", "int8", "int8-float-io"])
def test_example_artifacts_are_ok(example_build: dict[str, Any], profile: str) -> None:
    """The bundled MNIST CNN built with every standard profile: both formats pass, with labels."""
    data = np.load(example_build["out"] / "local" / profile / "reference.npz")
    fmts = [f for f in ("tflite", "onnx") if f"y_{f}" in data]
    assert fmts == ["tflite", "onnx"]
    for fmt in fmts:
        r = assess(["probabilities"], [data["y_float"]], [data[f"y_{fmt}"]], OPTS, labels=data["labels"])
        fig = r["outputs"]["probabilities"]
        assert r["verdict"] == "ok", (profile, fmt, r["reasons"])
        assert fig["classifier"] and fig["varying_channels"] == 10 and fig["constant_channels"] == 0
        assert fig["sqnr_db"] > 25 and fig["channel_snr_db_min"] > 20 and fig["accuracy_drop_pp"] <= 0


def test_every_shipped_profile_calls_the_collapsed_detector_broken(detector: dict[str, np.ndarray]) -> None:
    """Profiles may loosen the fidelity figures (re-trained models); none may pass a dead output."""
    from edgeopt.config.profile import list_profiles

    profiles = list_profiles()
    assert {"int8", "pruned-int8", "distilled-int8"} <= {p.name for p in profiles}
    for prof in profiles:
        r = assess(["output0"], [detector["reference"]], [detector["int8"]], prof.quality)
        assert r["verdict"] == "broken", prof.name
        assert assess(["output0"], [detector["reference"]], [detector["fp16"]], prof.quality)["verdict"] == "ok"
