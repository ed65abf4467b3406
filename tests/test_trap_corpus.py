"""The trap-model corpus (tests/trap_models.py) is what it claims: each model builds (once, cached), loads in ONNX
Runtime or LiteRT with the documented opset, input names, dtypes and dynamic dims, runs on its calibration data
with outputs that vary across samples, and carries its trap (the detector's class scores collapse under int8 QDQ;
opset 11 breaks per-channel QDQ)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from trap_models import NAMES, TrapModel, build_corpus, content_key, load_corpus

from edgeopt.analyze.tflite import inspect as inspect_tflite
from edgeopt.analyze.tflite import interpreter
from edgeopt.inputs.tensors import TensorSpec, one_sample

pytestmark = pytest.mark.slow

# name -> (opset, {input: (shape, dtype)}, {output: shape}); None = a dynamic dim
CLAIMS: dict[str, tuple[int, dict[str, tuple[tuple[int | None, ...], str]], dict[str, tuple[int | None, ...]]]] = {
    "yolo_head": (13, {"images": ((1, 3, 64, 64), "float32")}, {"output0": (1, 9, 64)}),
    "segmentation": (13, {"image": ((1, 3, 32, 32), "float32")}, {"logits": (1, 4, 32, 32)}),
    "classifier_op11": (11, {"image": ((None, 1, 8, 8), "float32")}, {"probs": (None, 10)}),
    "classifier_op13": (13, {"image": ((None, 1, 8, 8), "float32")}, {"probs": (None, 10)}),
    "multi_io": (13, {"audio": ((None, 1600), "float32"), "sr": ((), "int64")}, {"logits": (None, 6),
                                                                                  "state": (None, 8)}),
    "dynamic_hw": (13, {"images": ((None, 3, None, None), "float32")}, {"scores": (None, 10)}),
}
ONNX_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}


@pytest.fixture(scope="module")
def corpus() -> dict[str, TrapModel]:
    return build_corpus()


def session(model: TrapModel | Path) -> ort.InferenceSession:
    path = model.path if isinstance(model, TrapModel) else model
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def dims(shape: list[Any]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) else None for d in shape)


def specs(sess: ort.InferenceSession) -> list[TensorSpec]:
    return [TensorSpec(i.name, dims(i.shape), ONNX_DTYPES[i.type]) for i in sess.get_inputs()]


def run_each(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], limit: int | None = None) -> list[np.ndarray]:
    """Every output over the samples fed one at a time (batch 1; a scalar input as a 0-d array)."""
    spec = specs(sess)
    n = len(next(iter(feeds.values()))) if limit is None else limit
    runs = [sess.run(None, one_sample(spec, feeds, i)) for i in range(n)]
    return [np.concatenate([r[j] for r in runs]) for j in range(len(runs[0]))]


class Reader(CalibrationDataReader):
    def __init__(self, sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> None:
        spec = specs(sess)
        self.samples = iter([one_sample(spec, feeds, i) for i in range(len(next(iter(feeds.values()))))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.samples, None)


def int8_qdq(model: TrapModel, out: Path, exclude: list[str] | None = None) -> Path:
    """ONNX Runtime static quantisation as people run it: QDQ, per-channel, int8, MinMax."""
    quantize_static(str(model.path), str(out), Reader(session(model), model.calib_feeds()),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=exclude or [])
    return out


def test_the_corpus_is_complete_and_a_warm_build_is_fast(corpus: dict[str, TrapModel]) -> None:
    assert set(corpus) == set(NAMES)
    assert {n: (m.kind, m.fmt) for n, m in corpus.items()} == {
        "yolo_head": ("detector", "onnx"), "segmentation": ("segmentation", "onnx"),
        "classifier_op11": ("classifier", "onnx"), "classifier_op13": ("classifier", "onnx"),
        "multi_io": ("multi_io", "onnx"), "dynamic_hw": ("dynamic", "onnx"), "fp16_tflite": ("fp16_tflite", "tflite")}
    for m in corpus.values():
        assert m.path.is_file() and m.calib.is_file() and m.eval.is_file()
        assert m.path.suffix == "." + m.fmt and m.path.parent.parent.name == content_key()
        assert set(m.calib_feeds()) == set(m.eval_feeds())
        assert (m.labels() is not None) == (m.name.startswith("classifier") or m.name == "fp16_tflite")
    start = time.perf_counter()
    again = build_corpus()
    assert time.perf_counter() - start < 2.0
    assert again == corpus


def test_a_damaged_cached_corpus_is_not_used(corpus: dict[str, TrapModel], tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(corpus["yolo_head"].path.parent.parent, folder)
    assert load_corpus(folder) is not None
    data = bytearray((folder / "segmentation" / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (folder / "segmentation" / "model.onnx").write_bytes(bytes(data))
    assert load_corpus(folder) is None
    (folder / "corpus.json").unlink()
    assert load_corpus(folder) is None


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_an_onnx_model_has_its_claimed_interface_and_runs_on_its_calibration_data(
        corpus: dict[str, TrapModel], name: str) -> None:
    model = corpus[name]
    opset, inputs, outputs = CLAIMS[name]
    proto = onnx.load(str(model.path))
    assert model.fmt == "onnx"
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == opset
    sess = session(model)
    assert {s.name: (s.shape, s.dtype) for s in specs(sess)} == inputs
    assert {o.name: dims(o.shape) for o in sess.get_outputs()} == outputs
    feeds = model.calib_feeds()
    for spec in specs(sess):
        assert feeds[spec.name].dtype == np.dtype(spec.dtype)
        shape = feeds[spec.name].shape[1:]
        assert len(shape) == len(spec.sample_shape) and all(d in (None, f) for d, f in zip(spec.sample_shape, shape))
    results = run_each(sess, feeds)
    for out, y in zip(sess.get_outputs(), results):
        assert np.isfinite(y).all(), out.name
        rows = y.reshape(len(y), -1)
        assert len(np.unique(rows, axis=0)) == len(rows), f"{name}.{out.name}: two samples gave the same output"
        assert rows.std(axis=0).mean() > 1e-3, f"{name}.{out.name} barely varies across samples"


def test_the_detector_joins_pixel_boxes_and_class_probabilities(corpus: dict[str, TrapModel]) -> None:
    model = corpus["yolo_head"]
    e = model.expected
    (y,) = run_each(session(model), model.calib_feeds())
    assert 3 <= e["classes"] <= 8 and y.shape[1:] == (4 + e["classes"], e["anchors"])
    boxes, scores = y[:, e["boxes"][0]:e["boxes"][1]], y[:, e["scores"][0]:e["scores"][1]]
    assert 0.0 <= boxes.min() and boxes.max() <= 640.0 and boxes.max() - boxes.min() > 400.0
    assert 0.0 <= scores.min() and scores.max() <= 1.0
    assert np.percentile(scores, 5) < 0.2 and np.percentile(scores, 95) > 0.8
    assert [n.op_type for n in onnx.load(str(model.path)).graph.node][-1] == "Concat"


def test_int8_qdq_collapses_the_detector_class_scores_unless_the_head_stays_float(
        corpus: dict[str, TrapModel], tmp_path: Path) -> None:
    model = corpus["yolo_head"]
    e = model.expected
    feeds = model.eval_feeds()
    (y_float,) = run_each(session(model), feeds, limit=16)
    (y_int8,) = run_each(session(int8_qdq(model, tmp_path / "int8.onnx")), feeds, limit=16)
    scores = slice(*e["scores"])
    assert len(np.unique(y_float[:, scores])) > 1000
    assert len(np.unique(y_int8[:, scores])) <= 3  # the trap: one scale for 0..640 and 0..1
    assert np.abs(y_int8[:, scores] - y_float[:, scores]).max() > 0.5
    (y_fixed,) = run_each(session(int8_qdq(model, tmp_path / "fixed.onnx", e["float_head_nodes"])), feeds, limit=16)
    assert len(np.unique(y_fixed[:, scores])) > 50
    assert np.abs(y_fixed[:, scores] - y_float[:, scores]).mean() < 0.05


def test_the_segmentation_model_labels_pixels_differently_per_image(corpus: dict[str, TrapModel]) -> None:
    model = corpus["segmentation"]
    assert {"ConvTranspose", "Resize"} <= {n.op_type for n in onnx.load(str(model.path)).graph.node}
    (y,) = run_each(session(model), model.eval_feeds())
    labels = y.argmax(axis=1)
    assert np.mean([len(np.unique(m)) >= 2 for m in labels]) > 0.9
    assert len(np.unique(labels.reshape(len(labels), -1), axis=0)) == len(labels)


@pytest.mark.parametrize("name", ["classifier_op11", "classifier_op13"])
def test_the_digits_classifier_is_accurate_on_a_dynamic_batch(corpus: dict[str, TrapModel], name: str) -> None:
    model = corpus[name]
    (probs,) = session(model).run(None, model.eval_feeds())  # the whole eval set in one batch
    labels = model.labels()
    assert labels is not None and probs.shape == (len(labels), 10)
    assert np.mean(probs.argmax(axis=1) == labels) >= model.expected["min_accuracy"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_both_opsets_hold_the_same_classifier(corpus: dict[str, TrapModel]) -> None:
    feeds = corpus["classifier_op11"].eval_feeds()
    (p11,) = session(corpus["classifier_op11"]).run(None, feeds)
    (p13,) = session(corpus["classifier_op13"]).run(None, feeds)
    np.testing.assert_allclose(p11, p13, atol=1e-5)


def test_per_channel_qdq_of_the_opset_11_classifier_does_not_load(corpus: dict[str, TrapModel],
                                                                 tmp_path: Path) -> None:
    with pytest.raises(Exception, match="INVALID_GRAPH"):
        session(int8_qdq(corpus["classifier_op11"], tmp_path / "op11.onnx"))
    session(int8_qdq(corpus["classifier_op13"], tmp_path / "op13.onnx"))  # the same model at opset 13 loads


def test_the_multi_input_model_really_uses_its_scalar_sample_rate(corpus: dict[str, TrapModel]) -> None:
    model = corpus["multi_io"]
    feeds = model.eval_feeds()
    assert feeds["sr"].shape == (len(feeds["audio"]),) and set(feeds["sr"].tolist()) == {model.expected["sr"]}
    sess = session(model)
    logits, state = run_each(sess, feeds)
    logits8k, state8k = run_each(sess, {**feeds, "sr": np.full_like(feeds["sr"], 8000)})
    assert np.abs(logits - logits8k).max() > 0.1 and np.abs(state - state8k).max() > 0.1
    batched = sess.run(None, {"audio": feeds["audio"][:4], "sr": np.array(model.expected["sr"], np.int64)})
    np.testing.assert_allclose(batched[0], logits[:4], rtol=1e-4, atol=1e-4)


def test_the_dynamic_model_takes_any_batch_and_image_size(corpus: dict[str, TrapModel]) -> None:
    model = corpus["dynamic_hw"]
    inp = onnx.load(str(model.path)).graph.input[0]
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["N", 3, "H", "W"]
    feeds = model.calib_feeds()
    assert feeds["images"].shape[2:] == tuple(model.expected["calib_hw"])
    sess = session(model)
    (scores,) = sess.run(None, feeds)
    assert scores.shape == (len(feeds["images"]), 10) and len(np.unique(scores.argmax(axis=1))) >= 3
    (other,) = sess.run(None, {"images": np.random.default_rng(0).uniform(0, 1, (3, 3, 64, 72)).astype(np.float32)})
    assert other.shape == (3, 10)


def test_the_fp16_tflite_model_has_float16_weights_and_classifies(corpus: dict[str, TrapModel]) -> None:
    model = corpus["fp16_tflite"]
    assert model.fmt == "tflite"
    facts = inspect_tflite(str(model.path))
    assert facts["ops"].get("DEQUANTIZE", 0) >= 2
    it = interpreter(str(model.path))
    it.allocate_tensors()
    assert any(np.dtype(t["dtype"]) == np.float16 for t in it.get_tensor_details())
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    assert inp["name"] == model.expected["input"] and np.dtype(inp["dtype"]) == np.float32
    assert list(inp["shape"]) == [1, 8, 8, 1]
    feeds, labels = model.eval_feeds(), model.labels()
    assert set(feeds) == {inp["name"]} and labels is not None
    probs = []
    for x in feeds[inp["name"]]:
        it.set_tensor(inp["index"], x[None])
        it.invoke()
        probs.append(it.get_tensor(out["index"])[0].copy())
    y = np.stack(probs)
    assert np.mean(y.argmax(axis=1) == labels) >= model.expected["min_accuracy"]
    assert len(np.unique(y.argmax(axis=1))) == 10 and y.std(axis=0).min() > 0.1  # outputs vary across digits
