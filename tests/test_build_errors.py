"""Bad input -> one clear line, non-zero exit, nothing lost (through the real CLI entry point)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeopt.build import BuildRequest, build
from edgeopt.cli import main
from edgeopt.config import load_profile, load_target
from edgeopt.errors import OutputError, QuantizationError

pytestmark = pytest.mark.slow


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, (err[-1] if err else "")


def _one_line(line: str) -> None:
    assert line.startswith("edgeopt: error: ") and "Traceback" not in line and "\n" not in line


def test_corrupt_and_truncated_model_files(capsys, tmp_path: Path, example_model: Path) -> None:
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(example_model.read_bytes()[: example_model.stat().st_size // 2])
    code, line = run_cli(capsys, "build", str(truncated), "--out", str(tmp_path / "a"), "--data", "example:calibration")
    assert code == 2 and "not a valid .keras file" in line and "re-save" in line
    _one_line(line)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x08\x07garbage-not-protobuf" * 10)
    code, line = run_cli(capsys, "build", str(bad_onnx), "--out", str(tmp_path / "a"), "-p", "fp32")
    assert code == 2 and "not a valid ONNX model" in line
    code, line = run_cli(capsys, "build", str(tmp_path / "nope.keras"), "--out", str(tmp_path / "a"))
    assert code == 2 and "no such file" in line
    (tmp_path / "m.pt").write_bytes(b"x")
    code, line = run_cli(capsys, "build", str(tmp_path / "m.pt"), "--out", str(tmp_path / "a"))
    assert code == 2 and "unknown model format '.pt'" in line
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").rglob("manifest.json"))


def test_bad_calibration_data(capsys, tmp_path: Path, example_model: Path) -> None:
    out = str(tmp_path / "out")
    np.savez(tmp_path / "shape.npz", x=np.zeros((50, 8, 8, 1), np.float32))
    code, line = run_cli(capsys, "build", str(example_model), "-p", "int8", "--data", str(tmp_path / "shape.npz"),
                         "--out", out)
    assert code == 2 and "each sample has shape (8, 8, 1) but the model input expects (28, 28, 1)" in line
    np.savez(tmp_path / "dtype.npz", x=np.zeros((50, 28, 28, 1), np.uint8))
    code, line = run_cli(capsys, "build", str(example_model), "-p", "int8", "--data", str(tmp_path / "dtype.npz"),
                         "--out", out)
    assert code == 2 and "dtype uint8 but the model input is float32" in line
    np.savez(tmp_path / "few.npz", x=np.zeros((3, 28, 28, 1), np.float32))
    code, line = run_cli(capsys, "build", str(example_model), "-p", "int8", "--data", str(tmp_path / "few.npz"),
                         "--out", out)
    assert code == 2 and "3 samples, at least 16 needed" in line
    code, line = run_cli(capsys, "build", str(example_model), "-p", "int8", "--out", out)
    assert code == 2 and "needs calibration data" in line and "--data" in line
    assert not Path(out).exists() or not any(Path(out).rglob("manifest.json"))


def test_unknown_target_profile_and_typo_yaml(capsys, tmp_path: Path) -> None:
    code, line = run_cli(capsys, "build", "--target", "rpi-4")
    assert code == 2 and "unknown target 'rpi-4'" in line and "did you mean 'rpi4'" in line
    code, line = run_cli(capsys, "build", "--profile", "int-8")
    assert code == 2 and "unknown profile 'int-8'" in line and "did you mean 'int8'" in line
    bad = tmp_path / "mine.yaml"
    bad.write_text("tflite:\n  optimisations: [default]\n")
    code, line = run_cli(capsys, "build", "--profile", str(bad))
    assert code == 2 and f"{bad}: tflite.optimisations: unknown field" in line and "'optimizations'" in line


def _sin_model(tmp_path: Path) -> Path:
    import keras

    @keras.saving.register_keras_serializable(package="edgeopt_tests")
    class Sine(keras.layers.Layer):  # a custom layer: Keras refuses to deserialise Lambda layers (safe mode)
        def call(self, x):  # type: ignore[no-untyped-def]
            return keras.ops.sin(x)

    keras.utils.set_random_seed(1)
    inp = keras.Input((16,), name="features")
    x = keras.layers.Dense(16)(inp)
    x = Sine(name="sine")(x)
    out = keras.layers.Dense(4)(x)
    path = tmp_path / "sine.keras"
    keras.Model(inp, out).save(path)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((64, 16), dtype=np.float32))
    return path


def test_op_without_int8_kernel_is_named_with_the_fix(capsys, tmp_path: Path) -> None:
    model = _sin_model(tmp_path)
    out = tmp_path / "out"
    code, line = run_cli(capsys, "build", str(model), "-p", "int8", "--data", str(tmp_path / "calib.npz"),
                         "--out", str(out))
    assert code == 2 and "op SIN cannot be fully int8-quantised" in line
    assert "int8-float-io" in line and "dynamic" in line
    assert not (out / "local" / "int8").exists()
    # the suggested profile works: SIN stays in float, the rest is int8
    with pytest.raises(QuantizationError):
        build(BuildRequest(target=load_target("local"), profiles=[load_profile("int8")], model=str(model),
                           data=str(tmp_path / "calib.npz"), out=out))
    (r,) = build(BuildRequest(target=load_target("local"), profiles=[load_profile("int8-float-io")],
                              model=str(model), data=str(tmp_path / "calib.npz"), out=out))
    tfl = next(a for a in r.manifest["artifacts"] if a["format"] == "tflite")
    assert "SIN" in tfl["ops"] and tfl["inputs"][0]["dtype"] == "float32"


def _mount_tmpfs(where: Path, options: str) -> None:
    if os.geteuid() != 0:  # CI runs as root: there this must not be skipped
        (pytest.fail if os.environ.get("CI") else pytest.skip)("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_only_output_directory(capsys, tmp_path: Path, example_build) -> None:
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "size=1m,ro")
    try:
        code, line = run_cli(capsys, "build", "-p", "fp32", "--out", str(ro))
        assert code == 2 and "cannot write to" in line and "writable --out" in line
    finally:
        _umount(ro)


def test_disk_full_leaves_the_previous_artifacts_intact(capsys, tmp_path: Path, example_build) -> None:
    small = tmp_path / "small"
    _mount_tmpfs(small, "size=600k")
    try:
        # a good fp32 build is already there (a copy of the session build) ...
        good = small / "local" / "dynamic"
        shutil.copytree(example_build["results"]["dynamic"].directory, good)
        before = {p.name: p.read_bytes() for p in good.iterdir()}
        # ... and a forced rebuild that cannot fit fails cleanly
        with pytest.raises(OutputError, match="disk full"):
            build(BuildRequest(target=load_target("local"), profiles=[load_profile("dynamic"), load_profile("fp32")],
                               out=small, force=True))
        code, line = run_cli(capsys, "build", "-p", "fp32", "--out", str(small))
        assert code == 2 and "disk full" in line and "free space" in line
        assert {p.name: p.read_bytes() for p in good.iterdir()} == before
        assert not (small / "local" / "fp32").exists()
        assert [p.name for p in (small / "local").iterdir()] == ["dynamic"]  # no staging leftovers
    finally:
        _umount(small)


# -- issue 12: bad input never crashes or lies ------------------------------------------------------------------
EDGEOPT = str(Path(sys.executable).with_name("edgeopt"))


def _edgeopt(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGEOPT, *argv], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, **(env or {})})


def _calibration(tmp_path: Path, name: str, value: float) -> Path:
    from edgeopt.inputs.data import example_split

    x = example_split("calibration").x.copy()
    x[3, 14, 14, 0] = value
    np.savez(tmp_path / name, x=x)
    return tmp_path / name


def test_non_finite_calibration_is_refused_not_a_crash(tmp_path: Path, example_model: Path) -> None:
    """Inf in calibration data made the TFLite calibrator segfault (exit 139, a .staging dir left behind); NaN
    calibrated int8 silently."""
    out = tmp_path / "out"
    for name, value, kind in (("inf.npz", np.inf, "Inf: 1"), ("nan.npz", np.nan, "NaN: 1")):
        proc = _edgeopt("build", "-p", "int8", "--data", str(_calibration(tmp_path, name, value)), "--out", str(out),
                        cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
        assert line.startswith(f"edgeopt: error: {tmp_path / name}: x holds 1 non-finite value") and kind in line
        assert "in 1 of 200 samples" in line and "--drop-non-finite" in line
    assert not out.exists() or not any(out.rglob("*"))


def test_drop_non_finite_builds_and_records_the_count(capsys, tmp_path: Path) -> None:
    from edgeopt.inputs.data import example_split

    x = example_split("calibration").x.copy()
    x[[2, 9], 0, 0, 0] = [np.nan, np.inf]
    x[9, 1, 1, 0] = -np.inf
    np.savez(tmp_path / "calib.npz", x=x)
    out = tmp_path / "out"
    code = main(["build", "-p", "int8", "--data", str(tmp_path / "calib.npz"), "--drop-non-finite", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "local" / "int8" / "manifest.json").read_text())
    cal = manifest["data"]["calibration"]
    assert cal["samples"] == 198 and cal["dropped_non_finite"] == {"samples": 2, "values": 3}
    assert manifest["data"]["calibration_samples_used"] == 198
    assert "dropped_non_finite" not in (manifest["data"]["eval"] or {})  # only where the flag applied: all data
    assert sorted(p.name for p in (out / "local").iterdir()) == ["int8"]


def test_eval_labels_outside_the_model_classes_are_refused(capsys, tmp_path: Path, example_build) -> None:
    """Labels 42 or -1 for a 10-class model gave "accuracy 0.0000" as a normal result."""
    from edgeopt.inputs.data import example_split

    ev = example_split("eval").head(100)
    root = example_build["out"]
    before = {p: p.read_bytes() for p in (root / "local" / "fp32").iterdir()}
    for label, shown in ((42, "e.g. 42"), (-1, "e.g. -1")):
        np.savez(tmp_path / "eval.npz", x=ev.x, y=np.full(100, label))
        code, line = run_cli(capsys, "build", "-p", "fp32", "--eval", str(tmp_path / "eval.npz"), "--out", str(root))
        assert code == 2 and f"eval data {tmp_path / 'eval.npz'}: 100 of 100 labels are outside 0..9" in line
        assert shown in line and "10 output classes" in line
        _one_line(line)
    assert {p: p.read_bytes() for p in (root / "local" / "fp32").iterdir()} == before


def test_an_empty_profile_list_is_an_error(capsys, tmp_path: Path) -> None:
    """``-p ,`` built the target's default profiles without a word."""
    for value in (",", "", " , "):
        code, line = run_cli(capsys, "build", "-p", value, "--out", str(tmp_path / "out"))
        assert code == 2 and "--profile: empty profile list" in line and "edgeopt profiles" in line
    assert not (tmp_path / "out").exists()


def test_former_tracebacks_are_one_line(capsys, tmp_path: Path, example_build, monkeypatch) -> None:
    import onnx
    from onnx import TensorProto, helper

    out = str(tmp_path / "out")
    # a module:function data source that raises
    (tmp_path / "userdata.py").write_text("def calib():\n    raise KeyError('the user bug')\n")
    monkeypatch.chdir(tmp_path)
    code, line = run_cli(capsys, "build", "-p", "int8", "--data", "userdata:calib", "--out", out)
    assert code == 2 and "userdata:calib: the data function raised KeyError: 'the user bug'" in line
    # an ONNX model with a custom op domain
    graph = helper.make_graph([helper.make_node("Fancy", ["x"], ["y"], domain="com.acme")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)])
    onnx.save(model, str(tmp_path / "custom.onnx"))
    code, line = run_cli(capsys, "build", str(tmp_path / "custom.onnx"), "-p", "fp32", "--out", out)
    assert code == 2 and f"{tmp_path / 'custom.onnx'}: uses custom operators (domain 'com.acme': Fancy)" in line
    # a non-UTF-8 target / profile YAML: the file is named
    (tmp_path / "mine.yaml").write_bytes(b"arch: native\nformats: [tflite]\nruntimes: [litert]\ndescription: \xff\n")
    code, line = run_cli(capsys, "build", "-t", str(tmp_path / "mine.yaml"), "--out", out)
    assert code == 2 and f"{tmp_path / 'mine.yaml'} line 4: not UTF-8 text" in line
    (tmp_path / "prof.yaml").write_bytes(b"description: \xc3\x28\n")
    code, line = run_cli(capsys, "build", "-p", str(tmp_path / "prof.yaml"), "--out", out)
    assert code == 2 and f"{tmp_path / 'prof.yaml'} line 1: not UTF-8 text" in line
    _one_line(line)
    assert not (tmp_path / "out").exists()


def test_misleading_messages_now_say_what_is_wrong(capsys, tmp_path: Path, example_build) -> None:
    out = str(tmp_path / "out")
    # a corrupt .npz: not a valid .npz (named), never "allow_pickle"
    (tmp_path / "calib.npz").write_bytes(b"not a zip archive at all" * 20)
    code, line = run_cli(capsys, "build", "-p", "int8", "--data", str(tmp_path / "calib.npz"), "--out", out)
    assert code == 2 and f"{tmp_path / 'calib.npz'}: not a valid .npz file" in line and "pickle" not in line
    # a .tflite given to build: build takes Keras/SavedModel/ONNX, bench takes ready files
    tfl = tmp_path / "model.tflite"
    tfl.write_bytes((example_build["results"]["fp32"].directory / "model.tflite").read_bytes())
    code, line = run_cli(capsys, "build", str(tfl), "--out", out)
    assert code == 2 and "unknown model format" not in line
    assert "edgeopt build converts Keras (.keras, .h5), SavedModel and ONNX (.onnx) models" in line
    assert f"edgeopt bench {tfl}" in line and "ready .tflite/.onnx" in line


def test_an_unexpected_exception_is_one_line_and_exit_70(tmp_path: Path, example_build) -> None:
    """A bug (here: a broken installation, an ``onnx`` package that fails to import) is not a user error: one
    line, exit 70 (EX_SOFTWARE); the traceback only with EDGEOPT_DEBUG=1."""
    model = tmp_path / "m.onnx"
    model.write_bytes((example_build["results"]["fp32"].directory / "model.onnx").read_bytes())
    broken = tmp_path / "site"
    (broken / "onnx").mkdir(parents=True)
    (broken / "onnx" / "__init__.py").write_text("raise RuntimeError('this onnx installation is broken')\n")
    env = {"PYTHONPATH": str(broken)}
    proc = _edgeopt("build", str(model), "-p", "fp32", "--out", str(tmp_path / "out"), cwd=tmp_path, env=env)
    assert proc.returncode == 70, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert lines == ["edgeopt: internal error: RuntimeError: this onnx installation is broken — rerun with "
                     "EDGEOPT_DEBUG=1 and report it"]
    proc = _edgeopt("build", str(model), "-p", "fp32", "--out", str(tmp_path / "out"), cwd=tmp_path,
                    env={**env, "EDGEOPT_DEBUG": "1"})
    assert proc.returncode not in (0, 2, 70) and "Traceback (most recent call last)" in proc.stderr
    assert not (tmp_path / "out").exists()


def _dead_branch_model(path: Path, *, live: bool, constant_second_output: bool = False) -> Path:
    """A 28x28x1 model with a dead hidden layer (zero kernel, bias -1, ReLU: never fires); with ``live`` its output
    also has a live path, so only the layer is dead; without, every output is the same for any input."""
    from edgeopt.tf_env import quiet_tensorflow

    quiet_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Flatten()(inp)
    dead = keras.layers.Dense(32, activation="relu", kernel_initializer="zeros",
                              bias_initializer=keras.initializers.Constant(-1.0), name="dead")(x)
    out = keras.layers.Dense(10, name="after_dead")(dead)
    if live:
        out = keras.layers.Add(name="logits")([keras.layers.Dense(10, name="live")(x), out])
    outputs = [out]
    if constant_second_output:  # e.g. a detector's anchor grid: the same for every input
        outputs.append(keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer="ones", name="anchors")(x))
    keras.Model(inp, outputs).save(path)
    return path


def test_a_dead_model_is_refused_before_anything_is_built(capsys, tmp_path: Path) -> None:
    """Every output the same for all eval samples: its artifacts would copy it exactly and be judged ok (they were:
    fp32 and int8 'ok', accuracy 0.104)."""
    model = _dead_branch_model(tmp_path / "dead.keras", live=False)
    out = tmp_path / "out"
    code, line = run_cli(capsys, "build", str(model), "-p", "fp32,int8", "--data", "example:calibration",
                         "--eval", "example:eval", "--out", str(out))
    _one_line(line)
    assert code != 0 and "every output of the model (after_dead) is the same for all 1000 eval samples" in line
    assert "it is dead" in line and "should change with the input" in line
    assert not any(out.rglob("manifest.json")) and not any(out.rglob("model.*"))
    same = tmp_path / "same.npz"
    np.savez(same, x=np.full((20, 28, 28, 1), 0.5, np.float32))
    live = _dead_branch_model(tmp_path / "live.keras", live=True)
    code, line = run_cli(capsys, "build", str(live), "-p", "fp32", "--eval", str(same), "--out", str(out))
    assert code == 2 and "the 20 eval samples are all the same input" in line and "samples that differ" in line


def test_one_constant_output_among_varying_ones_builds(tmp_path: Path) -> None:
    model = _dead_branch_model(tmp_path / "m.keras", live=True, constant_second_output=True)
    req = BuildRequest(target=load_target("local"), profiles=[load_profile("fp32")], model=str(model),
                       eval="example:eval", out=tmp_path / "out")
    [result] = build(req)
    assert result.manifest["verdict"] == "ok"
    assert all(len(a["quality"]["outputs"]) == 2 for a in result.manifest["artifacts"])


def test_a_dead_layer_is_named_when_the_runtime_refuses_an_artifact(tmp_path: Path) -> None:
    """XNNPACK refuses to prepare ops reading an activation whose int8 range was empty in calibration (seen: a
    collapsed distilled student, "failed to prepare" and nothing else); the error now names the dead layer."""
    from edgeopt.analyze.tflite import empty_range_tensors
    from edgeopt.build.judge import runtime_refusal
    from edgeopt.convert.tflite import convert_tflite
    from edgeopt.inputs.data import example_split
    from edgeopt.inputs.model import open_model

    src = open_model(str(_dead_branch_model(tmp_path / "m.keras", live=True))).load()
    art = tmp_path / "model.tflite"
    profile = load_profile("int8")
    convert_tflite(src, profile.tflite, art, calibration=example_split("calibration").x, calibration_samples=64,
                   static_batch=True)
    dead = empty_range_tensors(art.read_bytes())
    # the dead layer first, then what it feeds (zero bias: zero too); never the live path
    assert [d["op"] for d in dead[:2]] == ["FULLY_CONNECTED"] * 2 and all(d["range"] < 1e-5 for d in dead)
    assert "/dead" in dead[0]["name"] and "/after_dead" in dead[1]["name"]
    assert not any("/live" in d["name"] for d in dead)
    line = runtime_refusal(art, "tflite", RuntimeError("Node number 13 (TfLiteXNNPackDelegate) failed to prepare.")
                    ).one_line()
    assert line.startswith("model.tflite does not run in litert: Node number 13") and "3 quantised activation(s)" in line
    assert "never varied over the calibration data" in line and "dead" in line.split("first ")[1]
    healthy = tmp_path / "healthy.tflite"
    convert_tflite(open_model(str(_dead_branch_model(tmp_path / "h.keras", live=True))).load(), load_profile(
        "fp32").tflite, healthy, calibration=None, calibration_samples=0, static_batch=True)
    assert empty_range_tensors(healthy.read_bytes()) == []  # float: nothing quantised


def test_a_float16_onnx_model_is_refused_in_one_line(capsys, tmp_path: Path) -> None:
    """A float16 ONNX export failed deep in the converters (onnx2tf's check on fp16 rounding, ORT's quantiser on
    float16 inputs) with hints that blamed an op, and its fp32 profile gave a float16 model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.transformers.float16 import convert_float_to_float16

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    w16 = numpy_helper.from_array(numpy_helper.to_array(w).astype(np.float16), "w16")  # float16 weights, float32 I/O
    weights = helper.make_model(helper.make_graph(
        [helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT), helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g", list(graph.input), list(graph.output), [w16]), opset_imports=[helper.make_opsetid("", 13)])
    weights.ir_version = 7
    onnx.save(convert_float_to_float16(model, keep_io_types=False), tmp_path / "half.onnx")
    onnx.save(weights, tmp_path / "half-weights.onnx")
    for name, keep_io in (("half.onnx", False), ("half-weights.onnx", True)):
        code, line = run_cli(capsys, "build", str(tmp_path / name), "-p", "fp32", "--out", str(tmp_path / "out"))
        assert code == 2 and "a float16 model" in line and "export the model in float32" in line, line
        assert ("float16 inputs/outputs (x, y)" if not keep_io else "float16 weights") in line
        _one_line(line)
    assert not (tmp_path / "out").exists()
    onnx.save(model, tmp_path / "float.onnx")  # the float32 original builds
    assert main(["build", str(tmp_path / "float.onnx"), "-p", "fp32", "--out", str(tmp_path / "out")]) == 0


def test_an_onnx_output_that_is_a_constant_is_refused_in_one_line(capsys, tmp_path: Path) -> None:
    """An anchor grid exported as an initializer output ([3, 4], no batch axis): onnx2tf dropped it ("made 1/1
    outputs, the ONNX model has 1/2") and an ONNX-only build leaked an internal shape check."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("anchors", TensorProto.FLOAT, [3, 4])],
        [numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "anchors")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, tmp_path / "m.onnx")
    code, line = run_cli(capsys, "build", str(tmp_path / "m.onnx"), "-p", "fp32", "--out", str(tmp_path / "out"))
    assert code == 2 and "output 'anchors' is a constant of the model" in line and "export the model without it" in line
    _one_line(line)
    assert not (tmp_path / "out").exists()


def test_calibration_data_scaled_unlike_the_eval_data_is_pointed_out(capsys, tmp_path: Path) -> None:
    """Images calibrated in 0..255 and evaluated in 0..1: the int8 artifact is rightly broken, but the only fix
    offered was -p int8-auto, which cannot help."""
    from edgeopt.inputs.data import example_split

    np.savez(tmp_path / "calib255.npz", x=example_split("calibration").x * 255.0)
    main(["build", "-p", "int8", "--data", str(tmp_path / "calib255.npz"), "--eval", "example:eval",
          "--out", str(tmp_path / "out")])
    err = " ".join(capsys.readouterr().err.split())
    assert "the calibration data span 0..255 but the eval data 0..1" in err, err[-2000:]
    assert "preprocess both alike" in err and "rest on them" not in err
    ev = example_split("eval")
    np.savez(tmp_path / "eval5.npz", x=ev.x[:5], y=ev.y[:5])  # five eval samples: said, not silently judged on
    main(["build", "-p", "fp32", "--eval", str(tmp_path / "eval5.npz"), "--out", str(tmp_path / "out5")])
    err = " ".join(capsys.readouterr().err.split())
    assert "holds 5 samples: the accuracy and every verdict rest on them" in err, err[-2000:]


def test_int8_auto_progress_names_the_format(capsys, tmp_path: Path) -> None:
    """int8-auto's progress lines did not say which format they were about ("0 layer(s) in float -> broken" as the
    last line of a build whose TFLite result was ok)."""
    assert main(["build", "-p", "int8-auto", "--data", "example:calibration", "--eval", "example:eval",
                 "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "int8-auto (tflite): 0 layer(s) in float -> ok" in err and "int8-auto (onnx): 0 layer(s) in float" in err
