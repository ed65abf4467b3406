"""ONNX quantisation of models as the world exports them: old opsets, several inputs (an int64 scalar, dynamic
H/W), two outputs, nodes kept in float, and where int8 loses it (ONNX Runtime's QDQ debugging tools).

Every model is built here: Keras + tf2onnx 1.17 at opsets 7/11/12/13, or onnx.helper with numpy weights.
Nothing is mocked: the real tf2onnx, onnx.version_converter, ONNX Runtime quantiser and runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as oh
from onnx import numpy_helper as nh

from edgeopt.config import ONNXOptions
from edgeopt.convert.onnx_debug import tensor_errors
from edgeopt.convert.onnx_quantize import quantize_onnx
from edgeopt.errors import ConversionError, DataError

STATIC = ONNXOptions(quantization="static")  # QDQ, per-channel int8, MinMax: the int8 profile's ONNX side
RNG = np.random.default_rng(7)


def run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def save(nodes: list, inputs: list, outputs: list, inits: list, opset: int, path: Path, ir: int = 7) -> Path:
    model = oh.make_model(oh.make_graph(nodes, path.stem, inputs, outputs, inits),
                          opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def keras_classifier(opset: int, path: Path) -> Path:
    """A small conv classifier (Conv+BN, depthwise ReLU6, dense softmax) exported by tf2onnx at ``opset``."""
    import tensorflow as tf
    import tf2onnx

    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input((16, 16, 3), name="image")
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(10, activation="softmax")(x))
    spec = (tf.TensorSpec((None, 16, 16, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_function(tf.function(lambda z: model(z)), input_signature=spec, opset=opset)
    onnx.save(proto, str(path))
    return path


def detector(path: Path, classes: int = 20) -> Path:
    """A YOLO-style head: boxes sigmoid*640 (0-640 px) and class sigmoids (0-1) joined by one Concat."""
    inits = [nh.from_array(w(16, 3, 3, 3), "w1"), nh.from_array(w(16, 16, 3, 3), "w2"),
             nh.from_array(w(4, 16, 1, 1), "wb"), nh.from_array(w(classes, 16, 1, 1), "wc"),
             nh.from_array(np.array([640], np.float32), "k640"),
             nh.from_array(np.array([0, 4, -1], np.int64), "sb"), nh.from_array(np.array([0, classes, -1], np.int64), "sc")]
    nodes = [oh.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", strides=[2, 2], pads=[1, 1, 1, 1]),
             oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             oh.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", strides=[2, 2], pads=[1, 1, 1, 1]),
             oh.make_node("Relu", ["c2"], ["feat"], name="relu2"),
             oh.make_node("Conv", ["feat", "wb"], ["bx"], name="box_conv"),
             oh.make_node("Sigmoid", ["bx"], ["bs"], name="box_sig"),
             oh.make_node("Mul", ["bs", "k640"], ["bpx"], name="box_scale"),
             oh.make_node("Reshape", ["bpx", "sb"], ["boxes"], name="box_flat"),
             oh.make_node("Conv", ["feat", "wc"], ["cx"], name="cls_conv"),
             oh.make_node("Sigmoid", ["cx"], ["probs4"], name="cls_sig"),
             oh.make_node("Reshape", ["probs4", "sc"], ["probs"], name="cls_flat"),
             oh.make_node("Concat", ["boxes", "probs"], ["out"], name="head_concat", axis=1)]
    return save(nodes, [oh.make_tensor_value_info("x", T.FLOAT, ["N", 3, 32, 32])],
                [oh.make_tensor_value_info("out", T.FLOAT, ["N", 4 + classes, 64])], inits, 13, path)


def graph(path: Path) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]], list[onnx.NodeProto]]:
    nodes = list(onnx.load(str(path)).graph.node)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return {o: n for n in nodes for o in n.output}, consumers, nodes


def test_the_trap_is_real_ort_alone_makes_an_unloadable_model_from_opset_11(tmp_path: Path) -> None:
    """Why the upgrade exists: ONNX Runtime's per-channel static QDQ of an opset-11 export does not load."""
    from onnxruntime import quantization as q

    from edgeopt.convert.onnx_opset import graph_inputs
    from edgeopt.convert.onnx_quantize import CalibrationReader

    src = keras_classifier(11, tmp_path / "cls11.onnx")
    feeds = {"image": RNG.normal(size=(4, 16, 16, 3)).astype(np.float32)}
    q.quantize_static(str(src), str(tmp_path / "q.onnx"), CalibrationReader(graph_inputs(onnx.load(str(src))), feeds),
                      per_channel=True)
    with pytest.raises(Exception, match="DequantizeLinear"):
        ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("opset", [7, 11, 12, 13])
def test_tf2onnx_classifier_int8_static_at_every_opset(opset: int, tmp_path: Path) -> None:
    src = keras_classifier(opset, tmp_path / f"cls{opset}.onnx")
    x = RNG.normal(size=(24, 16, 16, 3)).astype(np.float32)
    facts = quantize_onnx(src, STATIC, tmp_path / "int8.onnx", calibration={"image": x}, calibration_samples=16)
    json.dumps(facts)
    if opset < 13:
        assert (facts["opset_from"], facts["opset_to"]) == (opset, 13)
        assert facts["opset_check"].startswith("same outputs on 4 calibration samples")
    else:
        assert facts["opset"] == 13 and "opset_from" not in facts
    if opset == 7:  # tf2onnx lists the weights as graph inputs at IR 3/4: dropped, or ORT would not quantise them
        assert facts["initializer_inputs_dropped"] > 0
    assert facts["calibration_samples"] == 16
    q = onnx.load(str(tmp_path / "int8.onnx"))
    assert max(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) >= 13
    per_channel = [n for n in q.graph.node if n.op_type == "DequantizeLinear"
                   and any(a.name == "axis" for a in n.attribute)]
    assert per_channel, "per-channel weights were asked for"
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    producers, _, _ = graph(tmp_path / "int8.onnx")
    assert all(producers[c.input[1]].op_type == "DequantizeLinear" for c in convs), "every conv weight is int8"
    ref, got = run(src, {"image": x[16:]})[0], run(tmp_path / "int8.onnx", {"image": x[16:]})[0]
    sqnr = 20 * np.log10(np.linalg.norm(ref - ref.mean()) / np.linalg.norm(ref - got))
    assert sqnr > 12, f"int8 output SQNR {sqnr:.1f} dB (around the mean: softmax of random weights is near uniform)"


def test_a_model_the_converter_cannot_upgrade_says_which_op_and_opset(tmp_path: Path) -> None:
    """Tiny-YOLOv2-style opset-7 export starting with ImageScaler (an experimental op without a schema today)."""
    staging = tmp_path / "staging-dir"
    staging.mkdir()
    nodes = [oh.make_node("ImageScaler", ["image"], ["scaled"], name="scaler", scale=1 / 255, bias=[0.0, 0.0, 0.0]),
             oh.make_node("Conv", ["scaled", "w"], ["y"], name="conv")]
    src = save(nodes, [oh.make_tensor_value_info("image", T.FLOAT, [1, 3, 8, 8]),
                       oh.make_tensor_value_info("w", T.FLOAT, [4, 3, 3, 3])],  # IR 3: weights are inputs too
               [oh.make_tensor_value_info("y", T.FLOAT, [1, 4, 6, 6])], [nh.from_array(w(4, 3, 3, 3), "w")], 7,
               staging / "simplified.onnx", ir=3)
    calib = {"image": RNG.uniform(0, 255, size=(4, 1, 3, 8, 8)).astype(np.float32)[:, 0]}
    with pytest.raises(ConversionError) as err:
        quantize_onnx(src, STATIC, tmp_path / "int8.onnx", calibration=calib, calibration_samples=4,
                      model_label="tinyyolov2.onnx")
    line = err.value.one_line()
    assert "tinyyolov2.onnx" in line and "ImageScaler" in line and "opset 7" in line and "opset 13" in line
    assert str(tmp_path) not in line and "/tmp" not in line and "simplified" not in line
    assert not (tmp_path / "int8.onnx").exists()


def two_input_model(path: Path, opset: int = 12) -> Path:
    """Audio/OCR style: float image [N,3,H,W] (dynamic H/W) + int64 scalar sample rate; two outputs."""
    inits = [nh.from_array(w(8, 3, 3, 3), "w1"), nh.from_array(w(8), "b1"), nh.from_array(w(8, 5), "wf"),
             nh.from_array(w(5), "bf"), nh.from_array(np.array(16000.0, np.float32), "ref_rate")]
    nodes = [oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             oh.make_node("GlobalAveragePool", ["r1"], ["g"], name="gap"),
             oh.make_node("Flatten", ["g"], ["f"], name="flat", axis=1),
             oh.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc"),
             oh.make_node("Cast", ["sample_rate"], ["rate_f"], name="rate_cast", to=T.FLOAT),
             oh.make_node("Div", ["rate_f", "ref_rate"], ["rate_ratio"], name="rate_ratio"),
             oh.make_node("ReduceMean", ["r1"], ["energy0"], name="energy_mean", axes=[1, 2, 3], keepdims=0),
             oh.make_node("Mul", ["energy0", "rate_ratio"], ["energy"], name="energy_scale")]
    inputs = [oh.make_tensor_value_info("x", T.FLOAT, ["N", 3, "H", "W"]),
              oh.make_tensor_value_info("sample_rate", T.INT64, [])]
    outputs = [oh.make_tensor_value_info("logits", T.FLOAT, ["N", 5]), oh.make_tensor_value_info("energy", T.FLOAT, ["N"])]
    return save(nodes, inputs, outputs, inits, opset, path)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_two_inputs_int64_scalar_dynamic_hw_two_outputs(mode: str, tmp_path: Path) -> None:
    src = two_input_model(tmp_path / "asr.onnx")
    calib = {"x": RNG.normal(size=(12, 3, 20, 20)).astype(np.float32),
             "sample_rate": RNG.choice([8000, 16000, 44100], size=12).astype(np.int64)}
    facts = quantize_onnx(src, ONNXOptions(quantization=mode), tmp_path / "q.onnx", calibration=calib,
                          calibration_samples=12)
    assert (facts["opset_from"], facts["opset_to"]) == (12, 13)
    assert facts["inputs"] == [{"name": "x", "shape": [-1, 3, -1, -1], "dtype": "float32"},
                               {"name": "sample_rate", "shape": [], "dtype": "int64"}]
    q = onnx.load(str(tmp_path / "q.onnx"))
    kinds = {n.op_type for n in q.graph.node}
    assert ({"QuantizeLinear", "DequantizeLinear"} <= kinds) if mode == "static" else ("DynamicQuantizeLinear" in kinds
                                                                                      or "MatMulInteger" in kinds)
    feed = {"x": RNG.normal(size=(1, 3, 24, 16)).astype(np.float32), "sample_rate": np.array(44100, np.int64)}
    (ref_logits, ref_energy), (logits, energy) = run(src, feed), run(tmp_path / "q.onnx", feed)
    assert logits.shape == (1, 5) and energy.shape == (1,)
    assert np.abs(ref_logits - logits).max() < 0.05 * max(1.0, np.abs(ref_logits).max())
    assert abs(float(ref_energy[0] - energy[0])) < 0.05 * abs(float(ref_energy[0]))
    assert abs(float(energy[0]) / float(run(tmp_path / "q.onnx", {**feed, "sample_rate": np.array(8000, np.int64)})[1][0])
               - 44100 / 8000) < 0.05, "the int64 scalar still drives the second output"


def test_calibration_data_that_does_not_fit_is_a_data_error(tmp_path: Path) -> None:
    src = two_input_model(tmp_path / "asr.onnx")
    x = RNG.normal(size=(4, 3, 20, 20)).astype(np.float32)
    with pytest.raises(DataError, match="sample_rate"):
        quantize_onnx(src, STATIC, tmp_path / "q.onnx", calibration={"x": x}, calibration_samples=4)
    with pytest.raises(DataError, match="one array"):
        quantize_onnx(src, STATIC, tmp_path / "q.onnx", calibration=x, calibration_samples=4)
    with pytest.raises(DataError, match="float32"):
        quantize_onnx(src, STATIC, tmp_path / "q.onnx", calibration={"x": x, "sample_rate": np.ones(4, np.float32)},
                      calibration_samples=4)


def test_nodes_to_exclude_keeps_the_detector_head_in_float(tmp_path: Path) -> None:
    src = detector(tmp_path / "det.onnx")
    x = RNG.normal(size=(8, 3, 32, 32)).astype(np.float32)
    quantize_onnx(src, STATIC, tmp_path / "all.onnx", calibration={"x": x}, calibration_samples=8)
    head = ["head_concat", "box_flat", "cls_flat"]
    facts = quantize_onnx(src, STATIC, tmp_path / "head.onnx", calibration={"x": x}, calibration_samples=8,
                          nodes_to_exclude=head)
    assert facts["nodes_excluded"] == head
    producers, consumers, nodes = graph(tmp_path / "head.onnx")
    concat = next(n for n in nodes if n.name == "head_concat")
    assert [producers[i].op_type for i in concat.input] == ["Reshape", "Reshape"]
    assert not any(c.op_type == "QuantizeLinear" for c in consumers.get(concat.output[0], []))
    assert any(n.op_type == "Conv" and producers[n.input[1]].op_type == "DequantizeLinear" for n in nodes)
    scores = lambda p: np.unique(run(p, {"x": x[:1]})[0][0, 4:]).size  # noqa: E731
    assert scores(tmp_path / "all.onnx") <= 2, "per-tensor int8 collapses every class score (the trap)"
    assert scores(tmp_path / "head.onnx") > 20


def test_excluded_names_survive_pre_processing_or_are_mapped(tmp_path: Path) -> None:
    """ORT's pre-processing folds BatchNormalization into the Conv: the BN's name maps to the Conv."""
    inits = [nh.from_array(w(8, 3, 3, 3), "w1"), *(nh.from_array(np.abs(w(8)) + 0.5, f"bn_{k}") for k in "sbmv"),
             nh.from_array(w(4, 8, 1, 1), "w2")]
    nodes = [oh.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             oh.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn1"], name="bn1"),
             oh.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
             oh.make_node("Identity", ["r1"], ["i1"], name="ident"),
             oh.make_node("Conv", ["i1", "w2"], ["y"])]  # unnamed, as exporters leave them
    src = save(nodes, [oh.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
               [oh.make_tensor_value_info("y", T.FLOAT, ["N", 4, 8, 8])], inits, 11, tmp_path / "bn.onnx")
    x = RNG.normal(size=(6, 3, 8, 8)).astype(np.float32)
    facts = quantize_onnx(src, STATIC, tmp_path / "q.onnx", calibration={"x": x}, calibration_samples=6,
                          nodes_to_exclude=["bn1", "ident", "Conv_4"])
    assert facts["nodes_exclude_mapped"] == {"bn1": "conv1"}
    assert facts["nodes_exclude_dropped"] == ["ident"]
    assert facts["nodes_excluded"] == ["conv1", "Conv_4"] and facts["nodes_named"] == 1
    producers, _, nodes = graph(tmp_path / "q.onnx")
    by_name = {n.name: n for n in nodes}
    assert all(p not in producers or producers[p].op_type != "DequantizeLinear" for p in by_name["conv1"].input[1:])
    assert by_name["Conv_4"].input[1] not in producers, "the unnamed conv got a stable name and stayed float"
    with pytest.raises(ConversionError, match="conv_typo"):
        quantize_onnx(src, STATIC, tmp_path / "q2.onnx", calibration={"x": x}, calibration_samples=6,
                      nodes_to_exclude=["conv_typo"])


def test_tensor_errors_points_at_the_detector_concat(tmp_path: Path) -> None:
    src = detector(tmp_path / "det.onnx")
    x = RNG.normal(size=(8, 3, 32, 32)).astype(np.float32)
    quantize_onnx(src, STATIC, tmp_path / "int8.onnx", calibration={"x": x}, calibration_samples=8)
    rows = tensor_errors(src, tmp_path / "int8.onnx", {"x": x}, samples=3, top=5)
    json.dumps(rows)
    assert len(rows) == 5
    assert [r["rank_db"] for r in rows] == sorted(r["rank_db"] for r in rows)
    near_concat = {"out", "boxes", "probs"}
    assert rows[0]["tensor"] in near_concat and rows[0]["node"]["name"] in ("head_concat", "box_flat", "cls_flat")
    worst = rows[0]["worst_slice"]
    assert worst["axis"] == 1 and worst["index"] >= 4, "a class-score row, not a box row"
    assert worst["sqnr_db"] < 3 and worst["distinct_int8"] <= 2 < worst["distinct_float"]
    assert rows[0]["xmodel_err_db"] > 20, "the whole-tensor SQNR alone hides it"
    # the names it gives are what nodes_to_exclude takes: keeping the worst node in float fixes the scores
    quantize_onnx(src, STATIC, tmp_path / "fixed.onnx", calibration={"x": x}, calibration_samples=8,
                  nodes_to_exclude=[rows[0]["node"]["name"]])
    again = tensor_errors(src, tmp_path / "fixed.onnx", {"x": x}, samples=3, top=20)
    out_row = next((r for r in again if r["tensor"] == rows[0]["tensor"]), None)
    assert out_row is None or out_row["rank_db"] > 20


def test_tensor_errors_wants_a_qdq_model(tmp_path: Path) -> None:
    src = detector(tmp_path / "det.onnx")
    x = RNG.normal(size=(4, 3, 32, 32)).astype(np.float32)
    with pytest.raises(ConversionError, match="no QuantizeLinear/DequantizeLinear"):
        tensor_errors(src, src, {"x": x}, samples=2)
    quantize_onnx(src, ONNXOptions(quantization="static", quant_format="QOperator"), tmp_path / "qop.onnx",
                  calibration={"x": x}, calibration_samples=4)
    with pytest.raises(ConversionError, match="QOperator format .*QLinearConv"):
        tensor_errors(src, tmp_path / "qop.onnx", {"x": x}, samples=2)
