"""The other input formats: ONNX files, SavedModel directories, legacy .h5; and the installed CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeopt.build import BuildRequest, build
from edgeopt.config import load_profile, load_target
from edgeopt.inputs.data import example_split

pytestmark = pytest.mark.slow
EDGEOPT = str(Path(sys.executable).with_name("edgeopt"))


@pytest.fixture(scope="module")
def example_data(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("data")
    cal, ev = example_split("calibration"), example_split("eval")
    np.savez(d / "calib.npz", x=cal.x)
    np.savez(d / "eval.npz", x=ev.x, y=ev.y)
    return d / "calib.npz", d / "eval.npz"


def test_onnx_input_is_simplified_and_quantised(example_build, example_data, tmp_path: Path) -> None:
    onnx_file = tmp_path / "mnist.onnx"
    onnx_file.write_bytes((example_build["results"]["fp32"].directory / "model.onnx").read_bytes())
    calib, ev = example_data
    results = {r.profile: r for r in build(BuildRequest(
        target=load_target("rpi5"), profiles=[load_profile("int8"), load_profile("dynamic")],
        model=str(onnx_file), data=str(calib), eval=str(ev), out=tmp_path / "out"))}
    for profile, r in results.items():  # an ONNX input gets TFLite artifacts too (onnx2tf), judged the same way
        assert [a["format"] for a in r.manifest["artifacts"]] == ["tflite", "onnx"] and not r.manifest["skipped"]
        for art in r.manifest["artifacts"]:
            assert art["metrics"]["accuracy"] >= 0.975 and art["metrics"]["top1_agreement"] >= 0.985, profile
        assert r.manifest["source"]["format"] == "onnx"
        layout = r.manifest["artifacts"][0]["conversion"]["layout_change"]
        assert layout["converter"].startswith("onnx2tf") and layout["inputs"][0]["onnx_name"] == "image"
    onnx_int8 = results["int8"].manifest["artifacts"][1]
    assert "QuantizeLinear" in onnx_int8["ops"]
    assert [p["pass"] for p in results["int8"].manifest["passes"]] == [
        "tflite", "tflite-int8-debug", "onnx-simplify", "onnx-static", "onnx-int8-debug"]
    worst = onnx_int8["conversion"]["worst_tensors"]
    assert worst and all("error" not in w and w["tensor"] and w["node"]["name"] for w in worst)
    assert all(a["quality"]["verdict"] == "ok" for r in results.values() for a in r.manifest["artifacts"])


def test_onnx_input_made_static_for_static_targets(example_build, example_data, tmp_path: Path) -> None:
    onnx_file = tmp_path / "mnist.onnx"
    onnx_file.write_bytes((example_build["results"]["fp32"].directory / "model.onnx").read_bytes())
    target = load_target("local").model_copy(update={"static_batch": True, "formats": ["onnx"]})
    (r,) = build(BuildRequest(target=target, profiles=[load_profile("fp32")], model=str(onnx_file),
                              data=str(example_data[0]), out=tmp_path / "out"))
    assert r.manifest["artifacts"][0]["inputs"][0]["shape_signature"] == [1, 28, 28, 1]


def test_savedmodel_and_h5_inputs(example_model: Path, example_data, tmp_path: Path) -> None:
    import keras

    model = keras.models.load_model(example_model)
    model.export(str(tmp_path / "sm"), verbose=False)
    model.save(tmp_path / "legacy.h5")
    calib, ev = example_data
    for src, kind in ((tmp_path / "sm", "savedmodel"), (tmp_path / "legacy.h5", "keras")):
        results = {r.profile: r for r in build(BuildRequest(
            target=load_target("rpi4"), profiles=[load_profile("fp32"), load_profile("int8")], model=str(src),
            data=str(calib), eval=str(ev), out=tmp_path / f"out-{kind}"))}
        for r in results.values():
            assert r.manifest["source"]["format"] == kind
            assert {a["format"] for a in r.manifest["artifacts"]} == {"tflite", "onnx"}
            for a in r.manifest["artifacts"]:
                assert a["metrics"]["accuracy"] >= 0.975, (kind, r.profile, a["format"])
        # a SavedModel made static for a batch-1 target
    (r,) = build(BuildRequest(target=load_target("cortex-m7"), profiles=[load_profile("int8")],
                              model=str(tmp_path / "sm"), data=str(calib), out=tmp_path / "out-mcu"))
    assert r.manifest["artifacts"][0]["inputs"][0]["shape_signature"] == [1, 28, 28, 1]


def test_console_script_lists_and_builds(example_build) -> None:
    out = subprocess.run([EDGEOPT, "targets"], capture_output=True, text=True, check=True).stdout.splitlines()
    names = {line.split()[0] for line in out}
    assert {"local", "rpi4", "rpi5", "android-arm64", "cortex-m7"} <= names
    assert all(len(line.split()) >= 4 for line in out)
    out = subprocess.run([EDGEOPT, "profiles"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert {line.split()[0] for line in out} >= {"fp32", "fp16", "dynamic", "int8", "int8-float-io"}
    root = example_build["out"]
    proc = subprocess.run([EDGEOPT, "build", "-p", "fp32,int8", "--json", "--out", str(root)],
                          capture_output=True, text=True, check=True)
    doc = json.loads(proc.stdout)
    assert [r["profile"] for r in doc["results"]] == ["fp32", "int8"] and all(r["cached"] for r in doc["results"])
    proc = subprocess.run([EDGEOPT, "build", "--target", "rpi-5"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "did you mean 'rpi5'" in proc.stderr
