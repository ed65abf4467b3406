"""Bad input -> one clear line, non-zero exit, nothing lost (through the real CLI entry point)."""

from __future__ import annotations

import os
import shutil
import subprocess
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
