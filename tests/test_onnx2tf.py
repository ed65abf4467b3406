"""ONNX -> SavedModel through onnx2tf in its Python 3.12 tool venv, then OUR TensorFlow (host venv) converts the
SavedModel to float32 TFLite and LiteRT's outputs, with the reported layout permutations applied, must match ONNX
Runtime on the ONNX model: relative max error (max|diff| / max|ref|) <= 1e-5.

Models are built here with onnx.helper. Tests that need the tool venv are `slow`; the venv is built once (cached
under the edgeopt cache root). Without Python 3.12 they skip locally and FAIL in CI (``CI`` set).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgeopt.convert import onnx2tf as o2t
from edgeopt.errors import ConversionError, ModelError

TOL = 1e-5


def _w(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return nh.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)


def _model(nodes: list, name: str, ins: list, outs: list, inits: list, opset: int) -> onnx.ModelProto:
    m = h.make_model(h.make_graph(nodes, name, ins, outs, inits), opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 7 if opset < 14 else 8
    onnx.checker.check_model(m, full_check=True)
    return m


def classifier(opset: int, dynamic_hw: bool = False, image: str = "images") -> onnx.ModelProto:
    """NCHW conv classifier: conv-relu-conv-relu-GAP-flatten-gemm, images [N,3,32,32] -> logits [N,10]."""
    rng = np.random.default_rng(1)
    hw: list = ["H", "W"] if dynamic_hw else [32, 32]
    nodes = [h.make_node("Conv", [image, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c2"], ["r2"]),
             h.make_node("GlobalAveragePool", ["r2"], ["g"]),
             h.make_node("Flatten", ["g"], ["f"]),
             h.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1)]
    inits = [_w(rng, "w1", (8, 3, 3, 3)), _w(rng, "b1", (8,)), _w(rng, "w2", (16, 8, 3, 3)), _w(rng, "b2", (16,)),
             _w(rng, "wf", (10, 16)), _w(rng, "bf", (10,))]
    return _model(nodes, "classifier", [h.make_tensor_value_info(image, T.FLOAT, ["N", 3, *hw])],
                  [h.make_tensor_value_info("logits", T.FLOAT, ["N", 10])], inits, opset)


def yolo_head(classes: int = 3) -> onnx.ModelProto:
    """YOLO-style: SiLU/ReLU convs, then concat on axis 1 of sigmoid*640 boxes [1,4,A] and sigmoid class
    probabilities [1,C,A] -> [1,4+C,A] (A = 8*8 anchors)."""
    rng = np.random.default_rng(2)
    a = 64
    nodes = [h.make_node("Conv", ["images", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node("Sigmoid", ["c1"], ["s1"]), h.make_node("Mul", ["c1", "s1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node("Relu", ["c2"], ["r2"]),
             h.make_node("Conv", ["r2", "wb", "bb"], ["box"]), h.make_node("Reshape", ["box", "sb"], ["box3"]),
             h.make_node("Sigmoid", ["box3"], ["boxs"]), h.make_node("Mul", ["boxs", "k640"], ["boxes"]),
             h.make_node("Conv", ["r2", "wc", "bc"], ["cls"]), h.make_node("Reshape", ["cls", "sc"], ["cls3"]),
             h.make_node("Sigmoid", ["cls3"], ["probs"]),
             h.make_node("Concat", ["boxes", "probs"], ["output0"], axis=1)]
    inits = [_w(rng, "w1", (8, 3, 3, 3)), _w(rng, "b1", (8,)), _w(rng, "w2", (16, 8, 3, 3)), _w(rng, "b2", (16,)),
             _w(rng, "wb", (4, 16, 1, 1)), _w(rng, "bb", (4,)), _w(rng, "wc", (classes, 16, 1, 1)),
             _w(rng, "bc", (classes,)), nh.from_array(np.array([1, 4, a], np.int64), "sb"),
             nh.from_array(np.array([1, classes, a], np.int64), "sc"),
             nh.from_array(np.array(640, np.float32), "k640")]
    return _model(nodes, "yolo_head", [h.make_tensor_value_info("images", T.FLOAT, [1, 3, 32, 32])],
                  [h.make_tensor_value_info("output0", T.FLOAT, [1, 4 + classes, a])], inits, 13)


def two_in_two_out() -> onnx.ModelProto:
    """An NCHW image and a float vector in; class scores [1,4] and the NCHW feature map [1,8,16,16] out. The
    vector's name is not a valid TF name (``meta/vec:0``): its signature name is sanitised."""
    rng = np.random.default_rng(3)
    nodes = [h.make_node("Conv", ["image", "w1", "b1"], ["features"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["features"], ["r"]), h.make_node("GlobalAveragePool", ["r"], ["g"]),
             h.make_node("Flatten", ["g"], ["f"]), h.make_node("Concat", ["f", "meta/vec:0"], ["cat"], axis=1),
             h.make_node("Gemm", ["cat", "wf", "bf"], ["scores"], transB=1)]
    inits = [_w(rng, "w1", (8, 3, 3, 3)), _w(rng, "b1", (8,)), _w(rng, "wf", (4, 13)), _w(rng, "bf", (4,))]
    ins = [h.make_tensor_value_info("image", T.FLOAT, [1, 3, 16, 16]),
           h.make_tensor_value_info("meta/vec:0", T.FLOAT, [1, 5])]
    outs = [h.make_tensor_value_info("scores", T.FLOAT, [1, 4]),
            h.make_tensor_value_info("features", T.FLOAT, [1, 8, 16, 16])]
    return _model(nodes, "two_io", ins, outs, inits, 13)


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def python312() -> str:
    try:
        return o2t.find_python312()
    except ConversionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have Python 3.12 for onnx2tf: {exc.one_line()}")
        pytest.skip(f"onnx2tf tests need Python 3.12: {exc.one_line()}")


@pytest.fixture(scope="module")
def tool_venv(python312: str) -> Path:
    return o2t.ensure_tool_venv(print)


def _litert_vs_onnxruntime(onnx_file: Path, result: o2t.Onnx2TfResult, shapes: dict[str, tuple[int, ...]]) -> dict:
    """Our TF converts the SavedModel to float32 TFLite; LiteRT runs it on random ONNX-layout data (transposed
    with the reported perms); returns the relative max error per output vs ONNX Runtime, and the TFLite bytes."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from edgeopt.tf_env import quiet_tensorflow

    tf = quiet_tensorflow()
    loaded = tf.saved_model.load(str(result.saved_model))
    sig = loaded.signatures["serving_default"]
    assert sorted(sig.structured_input_signature[1]) == sorted(t.signature_name for t in result.inputs)
    assert sorted(sig.structured_outputs) == sorted(t.signature_name for t in result.outputs)
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(result.saved_model)).convert()
    rng = np.random.default_rng(7)
    feeds = {t.onnx_name: rng.standard_normal(shapes[t.onnx_name]).astype(np.float32) for t in result.inputs}
    ref = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, feeds)
    runner = Interpreter(model_content=flatbuffer).get_signature_runner("serving_default")
    got = runner(**{t.signature_name: np.transpose(feeds[t.onnx_name], t.perm) for t in result.inputs})
    errors = {}
    for t, r in zip(result.outputs, ref):
        y = np.transpose(got[t.signature_name], t.perm)
        assert y.shape == r.shape, (t.onnx_name, y.shape, r.shape)
        errors[t.onnx_name] = float(np.max(np.abs(y - r)) / np.max(np.abs(r)))
    return {"errors": errors, "tflite_bytes": len(flatbuffer)}


CASES = {
    "classifier-opset13": (lambda: classifier(13), {"images": (1, 3, 32, 32)}),
    "classifier-opset11": (lambda: classifier(11), {"images": (1, 3, 32, 32)}),
    "yolo-head": (yolo_head, {"images": (1, 3, 32, 32)}),
    "two-in-two-out": (two_in_two_out, {"image": (1, 3, 16, 16), "meta/vec:0": (1, 5)}),
    # dynamic N, H, W: converted once, then run at a size other than the check's default 32x32
    "classifier-dynamic-hw": (lambda: classifier(13, dynamic_hw=True), {"images": (1, 3, 48, 40)}),
    # torch.onnx.export's default input name: TF makes the serving argument "input_1" (it failed in LiteRT)
    "pytorch-input-name": (lambda: classifier(11, image="input.1"), {"input.1": (1, 3, 32, 32)}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_onnx2tf_then_our_tflite_matches_onnxruntime(case: str, tool_venv: Path, tmp_path: Path) -> None:
    make, shapes = CASES[case]
    onnx_file = tmp_path / f"{case}.onnx"
    onnx.save(make(), onnx_file)
    notes: list[str] = []
    t0 = time.monotonic()
    result = o2t.onnx_to_saved_model(onnx_file, tmp_path / "sm", note=notes.append, model_label=case)
    seconds = time.monotonic() - t0
    assert (tmp_path / "sm" / "saved_model.pb").is_file() and result.saved_model == tmp_path / "sm"
    assert any(case in n for n in notes)
    # NCHW image inputs become NHWC; the reported shapes agree with the perms
    for t in result.inputs:
        assert t.perm == ((0, 2, 3, 1) if len(t.onnx_shape) == 4 else tuple(range(len(t.onnx_shape))))
        assert t.tf_shape == tuple(t.onnx_shape[i] for i in t.perm)
    for t in result.outputs:
        assert tuple(t.tf_shape[i] for i in t.perm) == t.onnx_shape
        assert t.rel_max_error is not None and t.rel_max_error <= TOL
    described = result.describe()
    assert described["converter"] == "onnx2tf 2.6.9" and len(described["outputs"]) == len(result.outputs)
    import json

    json.dumps(described)  # JSON-safe for the manifest
    check = _litert_vs_onnxruntime(onnx_file, result, shapes)
    print(f"\n{case}: onnx2tf {seconds:.1f} s, LiteRT vs ORT rel max error {check['errors']}, "
          f"float32 tflite {check['tflite_bytes']} B")
    assert all(e <= TOL for e in check["errors"].values()), check


@pytest.mark.slow
def test_external_data_models_convert_and_key_their_weights(tool_venv: Path, tmp_path: Path) -> None:
    """``model.onnx`` + ``model.onnx.data`` (weights saved beside the graph): onnx2tf got the graph alone ("should
    be stored in …/model.onnx.data, but it doesn't exist"); the content key ignored the weights."""
    from edgeopt.errors import ModelError
    from edgeopt.inputs.model import open_model

    onnx_file = tmp_path / "ext" / "model.onnx"
    onnx_file.parent.mkdir()
    onnx.save(classifier(11), onnx_file, save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=0)
    assert (tmp_path / "ext" / "model.onnx.data").is_file()
    result = o2t.onnx_to_saved_model(onnx_file, tmp_path / "sm")
    check = _litert_vs_onnxruntime(onnx_file, result, {"images": (1, 3, 32, 32)})
    assert all(e <= TOL for e in check["errors"].values()), check
    key = open_model(onnx_file).sha256
    data = tmp_path / "ext" / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1
    data.write_bytes(bytes(raw))
    assert open_model(onnx_file).sha256 != key  # other weights, another key
    # a hub cache's layout: the data file a symlink to a blob elsewhere (kept: read lexically, not resolved)
    blob = tmp_path / "blobs" / "abc"
    blob.parent.mkdir()
    data.rename(blob)
    data.symlink_to(blob)
    assert open_model(onnx_file).sha256
    data.unlink()
    with pytest.raises(ModelError) as info:
        open_model(onnx_file)
    assert "has its data in model.onnx.data, which is missing" in info.value.one_line()


@pytest.mark.slow
def test_two_io_layouts_and_sanitised_names(tool_venv: Path, tmp_path: Path) -> None:
    onnx_file = tmp_path / "two.onnx"
    onnx.save(two_in_two_out(), onnx_file)
    result = o2t.onnx_to_saved_model(onnx_file, tmp_path / "sm")
    by_name = {t.onnx_name: t for t in (*result.inputs, *result.outputs)}
    assert by_name["meta/vec:0"].signature_name == "meta_vec_0" and by_name["meta/vec:0"].perm == (0, 1)
    assert by_name["features"].perm == (0, 3, 1, 2) and by_name["features"].tf_shape == (1, 16, 16, 8)
    assert by_name["features"].layout_changed and not by_name["scores"].layout_changed


@pytest.mark.slow
def test_failed_check_leaves_nothing_and_keeps_old_output(tool_venv: Path, tmp_path: Path) -> None:
    """Tolerance 0 cannot be met (float32 differs in the last bits): the conversion fails with a one-line error,
    an existing out_dir is left as it was, a new one is never created."""
    onnx_file = tmp_path / "m.onnx"
    onnx.save(classifier(13), onnx_file)
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("previous")
    for out in (old, tmp_path / "new"):
        with pytest.raises(ConversionError, match="differs from ONNX Runtime") as info:
            o2t.onnx_to_saved_model(onnx_file, out, tolerance=0.0)
        assert "\n" not in info.value.one_line()
        assert "disagrees with ONNX Runtime" in info.value.one_line() and "formats: is [onnx]" in info.value.one_line()
    assert [p.name for p in old.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "old"]


@pytest.mark.slow
def test_unconvertible_model_names_the_problem(tool_venv: Path, tmp_path: Path) -> None:
    """An op in a domain nobody implements: onnx2tf fails; the error is one line naming the model."""
    node = h.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 3, 8, 8])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13), h.make_opsetid("com.example", 1)])
    onnx_file = tmp_path / "bad.onnx"
    onnx.save(m, onnx_file)
    with pytest.raises(ConversionError, match="onnx2tf could not convert bad.onnx: it has no mapping for ONNX op Frobnicate") as info:
        o2t.onnx_to_saved_model(onnx_file, tmp_path / "out")
    assert "cannot map" in info.value.one_line()
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_pip_failure_is_one_line_and_leaves_no_venv(python312: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken requirements file (invalid line: pip fails without touching the network): the error quotes
    pip's first ERROR line, and neither the venv nor a staging directory is left in the cache."""
    bad = tmp_path / "requirements-onnx2tf.txt"
    bad.write_text("onnx2tf=== !!not a requirement\n")
    monkeypatch.setattr(o2t, "REQUIREMENTS", bad)
    monkeypatch.setenv("EDGEOPT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ConversionError, match=r"pip install -r requirements-onnx2tf.txt failed: ERROR"):
        o2t.ensure_tool_venv()
    tools = tmp_path / "cache" / "tools"
    assert [p.name for p in tools.iterdir() if not p.name.endswith(".lock")] == []


# ------------------------------------------------------------------------------------- fast, no tool venv
def test_bad_python312_override_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEOPT_PYTHON312", str(tmp_path / "nope"))
    with pytest.raises(ConversionError, match="EDGEOPT_PYTHON312=.* is not a working Python 3.12"):
        o2t.find_python312()


def test_no_python312_anywhere_names_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGEOPT_PYTHON312", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no python3.12 on PATH
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    with pytest.raises(ConversionError) as info:
        o2t.find_python312()
    assert "no Python 3.12 found" in info.value.message and "EDGEOPT_PYTHON312" in (info.value.hint or "")


def test_tool_venv_lives_under_cache_root_keyed_by_pins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEOPT_CACHE_DIR", str(tmp_path))
    first = o2t.tool_venv_dir()
    assert first.parent == tmp_path / "tools" and first.name.startswith("onnx2tf-") and len(first.name) == 24
    other = tmp_path / "req.txt"
    other.write_text(o2t.REQUIREMENTS.read_text() + "# changed\n")
    monkeypatch.setattr(o2t, "REQUIREMENTS", other)
    assert o2t.tool_venv_dir() != first


def test_missing_onnx_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        o2t.onnx_to_saved_model(tmp_path / "absent.onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_when_onnx2tf_fails_the_onnx_artifacts_are_still_built(tool_venv: Path, tmp_path: Path, capsys) -> None:
    """A tf2onnx-style NHWC graph (Transpose -> Conv -> Transpose) that onnx2tf 2.6.9 maps to a wrong TF graph
    (relative error 0.6, caught by its check): the whole build failed, the ONNX artifacts too, though ONNX
    Runtime's quantisation needs no onnx2tf. Now they are built, the TFLite skip is recorded, and the exit is 2."""
    import json

    from edgeopt.cli import main

    rng = np.random.default_rng(0)
    nodes = [h.make_node("Transpose", ["input_1:0"], ["t"], perm=[0, 3, 1, 2]),
             h.make_node("Conv", ["t", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node("Relu", ["c"], ["r"]), h.make_node("Transpose", ["r"], ["rt"], perm=[0, 2, 3, 1]),
             h.make_node("Reshape", ["rt", "shp"], ["f"]), h.make_node("MatMul", ["f", "w"], ["m"]),
             h.make_node("Add", ["m", "b"], ["l"]), h.make_node("Softmax", ["l"], ["dense/Softmax:0"], axis=1)]
    inits = [_w(rng, "cw", (8, 3, 3, 3)), nh.from_array(np.full(8, 0.1, np.float32), "cb"),
             nh.from_array(np.array([-1, 512], np.int64), "shp"), _w(rng, "w", (512, 10)),
             nh.from_array(np.zeros(10, np.float32), "b")]
    model = _model(nodes, "nhwc", [h.make_tensor_value_info("input_1:0", T.FLOAT, ["unk__6", 16, 16, 3])],
                   [h.make_tensor_value_info("dense/Softmax:0", T.FLOAT, ["unk__7", 10])], inits, 13)
    onnx.save(model, tmp_path / "nhwc.onnx")
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(64, 16, 16, 3)).astype(np.float32))
    code = main(["build", str(tmp_path / "nhwc.onnx"), "-p", "fp32,int8", "--data", str(tmp_path / "calib.npz"),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "edgeopt: error: tflite not built for fp32: onnx2tf could not convert" in err, err
    assert "disagrees with ONNX Runtime" in err
    for profile in ("fp32", "int8"):
        manifest = json.loads((tmp_path / "out" / "local" / profile / "manifest.json").read_text())
        assert [a["format"] for a in manifest["artifacts"]] == ["onnx"]
        assert manifest["artifacts"][0]["quality"]["verdict"] == "ok"
        assert [(s["format"], s["failed"]) for s in manifest["skipped"]] == [("tflite", "onnx2tf")]
        assert (tmp_path / "out" / "local" / profile / "model.onnx").is_file()
    # not a cache hit (onnx2tf is tried again: a timeout or a lost registry may pass next time) ...
    assert main(["build", str(tmp_path / "nhwc.onnx"), "-p", "fp32", "--data", str(tmp_path / "calib.npz"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "converting nhwc.onnx to TensorFlow with onnx2tf" in capsys.readouterr().err
    # ... and a bench (as edgeopt ci's) of a target that takes TFLite does not quietly leave the format out
    assert main(["bench", "--target", "local", "--artifacts", str(tmp_path / "out"), "-p", "fp32",
                 "--results", str(tmp_path / "res")]) == 2
    assert "profile fp32 for target local has no tflite artifact: onnx2tf could not convert" in capsys.readouterr().err
