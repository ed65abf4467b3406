"""`edgeopt build` on the bundled example: every profile converted for real and executed in LiteRT and ONNX
Runtime; accuracy, agreement, manifest, reference data and cache asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeopt.analyze.outputs import run_onnx, run_tflite
from edgeopt.artifacts.files import sha256_file
from edgeopt.build import BuildRequest, build
from edgeopt.config import load_profile, load_target

pytestmark = pytest.mark.slow
PROFILES = ["fp32", "fp16", "dynamic", "int8", "int8-float-io"]


def _artifact(result, fmt: str) -> dict:
    return next(a for a in result.manifest["artifacts"] if a["format"] == fmt)


def test_example_float_accuracy_meets_seed_figure(example_build, example_eval) -> None:
    m = _artifact(example_build["results"]["fp32"], "tflite")["metrics"]
    assert m["float_accuracy"] >= 0.98, m
    assert m["samples"] == len(example_eval) == 1000


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_every_profile_runs_in_its_runtime_with_asserted_accuracy(example_build, example_eval, profile: str,
                                                                   fmt: str) -> None:
    result = example_build["results"][profile]
    art = _artifact(result, fmt)
    path = result.directory / art["file"]
    assert sha256_file(path) == art["sha256"] and path.stat().st_size == art["bytes"]
    # run it here, independently of the build's own evaluation: one digit per call, as on a device (dynamic-range
    # quantisation picks its activation scales per call, so a 1,000-digit batch would compute other numbers)
    run = run_tflite if fmt == "tflite" else run_onnx
    outputs = np.concatenate([run(path, example_eval.x[i:i + 1]) for i in range(len(example_eval.x))])
    accuracy = float(np.mean(outputs.argmax(1) == example_eval.y))
    assert accuracy == pytest.approx(art["metrics"]["accuracy"], abs=1e-9)
    assert accuracy >= 0.975, (profile, fmt, accuracy)
    assert art["metrics"]["top1_agreement"] >= 0.985
    assert art["metrics"]["accuracy_drop_pp"] <= 1.0
    if profile in ("fp32",):
        assert art["metrics"]["max_abs_diff"] < 1e-3
    assert art["params"] > 100_000 and sum(art["ops"].values()) >= 5


def test_tflite_types_follow_the_profile(example_build) -> None:
    r = example_build["results"]
    int8 = _artifact(r["int8"], "tflite")
    (inp,), (out,) = int8["inputs"], int8["outputs"]
    assert inp["dtype"] == "int8" and out["dtype"] == "int8"
    assert inp["quantization"]["scale"][0] > 0 and -128 <= inp["quantization"]["zero_point"][0] <= 127
    assert inp["shape_signature"][0] == -1  # the local target keeps a dynamic batch
    fio = _artifact(r["int8-float-io"], "tflite")
    assert fio["inputs"][0]["dtype"] == "float32" and fio["outputs"][0]["dtype"] == "float32"
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(fio["ops"])
    fp32 = _artifact(r["fp32"], "tflite")
    assert "DEQUANTIZE" not in fp32["ops"]
    assert _artifact(r["fp16"], "tflite")["ops"].get("DEQUANTIZE", 0) >= 1  # fp16 weights dequantised at load
    sizes = {p: _artifact(r[p], "tflite")["bytes"] for p in PROFILES}
    assert sizes["int8"] < 0.3 * sizes["fp32"]
    assert sizes["dynamic"] < 0.3 * sizes["fp32"]
    assert 0.45 * sizes["fp32"] < sizes["fp16"] < 0.6 * sizes["fp32"]


def test_onnx_types_follow_the_profile(example_build) -> None:
    import onnx

    r = example_build["results"]

    def ops(profile: str) -> dict:
        return _artifact(r[profile], "onnx")["ops"]

    assert "QuantizeLinear" in ops("int8") and "DequantizeLinear" in ops("int8")
    assert _artifact(r["int8"], "onnx")["inputs"][0]["dtype"] == "float32"  # ORT QDQ keeps float model I/O
    assert "DynamicQuantizeLinear" in ops("dynamic") or "MatMulInteger" in ops("dynamic")
    assert "QuantizeLinear" not in ops("fp32")
    fp16 = onnx.load(str(r["fp16"].directory / "model.onnx"))
    dtypes = {i.data_type for i in fp16.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes
    assert _artifact(r["fp16"], "onnx")["inputs"][0]["dtype"] == "float32"  # keep_io_types


def test_manifest_and_reference_data(example_build, example_eval) -> None:
    result = example_build["results"]["int8"]
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert manifest["target"] == "local" and manifest["profile"] == "int8"
    assert manifest["tools"]["tensorflow"] == "2.21.0" and manifest["tools"]["onnxruntime"]
    assert manifest["source"]["format"] == "keras" and len(manifest["source"]["sha256"]) == 64
    assert manifest["data"]["calibration_samples_used"] == 200
    assert {a["file"] for a in manifest["artifacts"]} == {"model.tflite", "model.onnx"}
    ref_path = result.directory / manifest["reference"]["file"]
    assert sha256_file(ref_path) == manifest["reference"]["sha256"]
    with np.load(ref_path) as ref:
        assert ref["x"].shape == (32, 28, 28, 1) and ref["x"].dtype == np.float32
        assert np.array_equal(ref["x"], example_eval.x[:32])
        assert np.array_equal(ref["labels"], example_eval.y[:32])
        y_tfl = run_tflite(result.directory / "model.tflite", ref["x"])
        np.testing.assert_allclose(ref["y_tflite"], y_tfl, atol=1e-6)
        assert np.mean(ref["y_float"].argmax(1) == ref["y_tflite"].argmax(1)) >= 0.95
        assert ref["y_onnx"].shape == ref["y_float"].shape
    leftovers = [p.name for p in result.directory.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_rebuild_is_a_cache_hit_and_changes_invalidate(example_build, tmp_path: Path) -> None:
    req: BuildRequest = example_build["request"]
    before = {p: (example_build["results"][p].directory / "model.tflite").stat().st_mtime_ns for p in PROFILES}
    again = build(req)
    assert all(r.cached for r in again)
    assert {r.profile: (r.directory / "model.tflite").stat().st_mtime_ns for r in again} == before
    # a damaged artifact is not trusted: that profile is rebuilt, the others stay cached
    victim = example_build["results"]["fp16"].directory / "model.onnx"
    victim.write_bytes(victim.read_bytes()[:-10])
    third = {r.profile: r for r in build(req)}
    assert not third["fp16"].cached and all(third[p].cached for p in PROFILES if p != "fp16")
    assert sha256_file(victim) == _artifact(third["fp16"], "onnx")["sha256"]
    # a changed profile setting changes the key (on a copy: the session build stays as it is for other tests)
    import shutil

    shutil.copytree(req.out / "local" / "int8", tmp_path / "out" / "local" / "int8")
    f = tmp_path / "int8.yaml"
    f.write_text(Path(load_profile("int8").source_file).read_text().replace("samples: 200", "samples: 100"))
    changed = build(BuildRequest(target=req.target, profiles=[load_profile(str(f))], out=tmp_path / "out"))
    assert not changed[0].cached and changed[0].manifest["data"]["calibration_samples_used"] == 100


def test_static_batch_target_exports_batch_one(example_model: Path, tmp_path: Path) -> None:
    results = build(BuildRequest(target=load_target("cortex-m7"), profiles=[load_profile("int8")], out=tmp_path))
    (r,) = results
    assert [a["format"] for a in r.manifest["artifacts"]] == ["tflite"]
    art = r.manifest["artifacts"][0]
    assert art["inputs"][0]["shape_signature"] == [1, 28, 28, 1]
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(art["ops"])
    assert art["metrics"]["accuracy"] >= 0.975
    # a microcontroller target also gets the TensorFlow Lite Micro firmware bundle, with the measured arena
    tflm = r.manifest["tflm"]
    for name in ("model_data.h", "model_data.cc", "op_resolver.h", "main.cc", "README.md"):
        assert (r.directory / "firmware" / name).is_file(), name
    assert 0 < tflm["arena"]["exact_bytes"] <= tflm["arena"]["recommended_bytes"]
    # cached like everything else, and a damaged firmware file is caught
    (again,) = build(BuildRequest(target=load_target("cortex-m7"), profiles=[load_profile("int8")], out=tmp_path))
    assert again.cached
    (r.directory / "firmware" / "op_resolver.h").write_text("// edited\n")
    (third,) = build(BuildRequest(target=load_target("cortex-m7"), profiles=[load_profile("int8")], out=tmp_path))
    assert not third.cached and "// edited" not in (r.directory / "firmware" / "op_resolver.h").read_text()
