"""A wheel works alone: built from this checkout, installed into a fresh virtualenv outside the repository and
run from an empty directory, it lists the shipped targets, builds firmware for cortex-m7 (templates from the
package) and benchmarks on this machine.

The fresh venv holds only the wheel; the heavy third-party packages (TensorFlow, LiteRT, ONNX Runtime, …) are
made visible from the project's .venv through a ``.pth`` path line — that adds the directory to ``sys.path``
without running the ``.pth`` hooks inside it, so the project's editable install of edgeopt stays invisible (the
test asserts which edgeopt was imported).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(dist)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheels = list(dist.glob("edgeopt-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    inst = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_edgeopt_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = base / "empty"
    work.mkdir()
    return {"python": python, "edgeopt": env_dir / "bin" / "edgeopt", "site": site, "work": work, "wheel": wheels[0]}


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEOPT_CONFIG_DIR")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def test_the_wheel_carries_the_shipped_data(installed: dict[str, Path]) -> None:
    import zipfile

    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for shipped in ("edgeopt/targets/rpi4.yaml", "edgeopt/targets/cortex-m7.yaml", "edgeopt/profiles/int8.yaml",
                    "edgeopt/firmware/tflm/main.cc", "edgeopt/firmware/tflm/model_data.cc.in",
                    "edgeopt/agent/__main__.py"):
        assert shipped in names, shipped


def test_installed_wheel_is_the_edgeopt_that_runs(installed: dict[str, Path]) -> None:
    out = run([str(installed["python"]), "-c", "import edgeopt; print(edgeopt.__file__)"], installed["work"],
              clean_env())
    assert out.returncode == 0, out.stderr
    where = Path(out.stdout.strip()).resolve()
    assert where.is_relative_to(installed["site"].resolve()), where
    assert not where.is_relative_to(ROOT), where


def test_targets_from_an_empty_directory(installed: dict[str, Path]) -> None:
    out = run([str(installed["edgeopt"]), "targets"], installed["work"], clean_env())
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert {"local", "rpi4", "rpi5", "android-arm64", "cortex-m7"} <= set(names), out.stdout


def test_firmware_build_then_bench_from_an_empty_directory(installed: dict[str, Path], example_model: Path) -> None:
    work = installed["work"]
    env = clean_env()
    built = run([str(installed["edgeopt"]), "build", "--target", "cortex-m7", "-p", "int8", "--json"], work, env)
    assert built.returncode == 0, built.stderr[-3000:]
    firmware = work / "artifacts" / "cortex-m7" / "int8" / "firmware"
    for name in ("model_data.h", "model_data.cc", "op_resolver.h", "main.cc", "README.md"):
        assert (firmware / name).is_file(), name
    assert "kTensorArenaSize" in (firmware / "model_data.h").read_text() + (firmware / "main.cc").read_text()

    local = run([str(installed["edgeopt"]), "build", "--target", "local", "-p", "int8", "--json"], work, env)
    assert local.returncode == 0, local.stderr[-3000:]
    bench = run([str(installed["edgeopt"]), "bench", "--target", "local", "--runs", "20", "--warmup", "2",
                 "--json"], work, env)
    assert bench.returncode == 0, bench.stderr[-3000:]
    import json

    doc = json.loads(bench.stdout)
    assert doc["summary"]["valid"] == doc["summary"]["results"] >= 2, doc["summary"]
    assert (work / "results" / "edgeopt.sqlite").is_file()
