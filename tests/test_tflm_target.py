"""The TFLM firmware bundle on an emulated Cortex-M7 (issue 13): TFLM built for the target from the pinned source,
the bundle's own harness linked against it and booted on qemu-system-arm -M mps2-an500. No mocks.

Needs a TFLM source: ``EDGEOPT_TFLM_SRC`` or the shared bundle ``<repo>/../shared/tflm/tflm-src-*.tar.gz``, and the
tools of scripts/system-deps.sh. Without them these tests fail (never skip) and say so. The first run builds
``libtensorflow-microlite.a`` (minutes, cached in ``~/.cache/edgeopt/tflm``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.config import Memory, load_target
from edgeopt.convert import tflm
from edgeopt.convert.tflm.arena import recommended_arena
from edgeopt.convert.tflm.qemu import boot, link
from edgeopt.convert.tflm.target_lib import library, missing_tools
from edgeopt.convert.tflm.target_src import ENV_VAR, TflmSource, find_source, missing_reason
from edgeopt.errors import TflmSourceError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source() -> TflmSource:
    src = find_source()
    if src is None:
        pytest.fail(f"{missing_reason()} — the emulated Cortex-M7 tests need it ({ENV_VAR} or the shared bundle)")
    missing = missing_tools()
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run scripts/system-deps.sh")
    return src


@pytest.fixture(scope="module")
def example(source: TflmSource, example_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`edgeopt build --target cortex-m7 -p int8` of the bundled example: the pipeline runs the emulated target."""
    from edgeopt.build import BuildRequest, build
    from edgeopt.config import load_profile

    t0 = time.perf_counter()
    res = build(BuildRequest(target=load_target("cortex-m7"), profiles=[load_profile("int8")],
                             out=tmp_path_factory.mktemp("tflm-target") / "art"))[0]
    ref = np.load(res.directory / "reference.npz")
    return {"summary": res.manifest["tflm"], "out": res.directory / "firmware", "x": ref["x"],
            "model": (res.directory / "model.tflite").read_bytes(), "seconds": time.perf_counter() - t0}


@pytest.fixture(scope="module")
def kws(source: TflmSource, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A keyword-spotting DS-CNN (bench/tflm.py's builder), int8, through build_firmware()."""
    spec = importlib.util.spec_from_file_location("bench_tflm", ROOT / "bench" / "tflm.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, x = bench.dscnn_int8()
    tmp = tmp_path_factory.mktemp("tflm-kws")
    (tmp / "kws.tflite").write_bytes(model)
    t0 = time.perf_counter()
    s = tflm.build_firmware(tmp / "kws.tflite", load_target("cortex-m7"), tmp / "fw", sample_input=x[0], eval_inputs=x)
    return {"summary": s, "out": tmp / "fw", "x": x, "model": model, "seconds": time.perf_counter() - t0}


@pytest.fixture(params=["example", "kws"])
def bundle(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.getfixturevalue(request.param)


# ----------------------------------------------------------------------------------------------------------------


def test_outputs_identical_to_host_tflm(bundle: dict[str, Any]) -> None:
    run = bundle["summary"]["target_run"]
    assert run["measured"], run
    vs_host, vs_lite = run["outputs"]["vs_host_tflm"], run["outputs"]["vs_litert"]
    assert vs_host["samples"] == len(bundle["x"]) == 32 and vs_host["output_dtype"] == "int8"
    assert vs_host["identical"] and vs_host["values_differing"] == 0, vs_host  # bit-identical int8
    assert vs_lite["ok"] and vs_lite["max_step_diff"] <= 1, vs_lite
    # the harness's own check (kTensorArenaSize, embedded sample vs host output) passed on the target
    assert run["self_check"]["rc"] == 0 and any("output OK" in ln for ln in run["self_check"]["lines"])
    # what was booted is what the bundle holds
    files = bundle["summary"]["files"]
    assert run["sources_sha256"] == {n: files[n]["sha256"] for n in run["sources_sha256"]}


def test_target_arena_is_exact_and_sizes_the_bundle(bundle: dict[str, Any], source: TflmSource,
                                                     tmp_path: Path) -> None:
    s = bundle["summary"]
    ar = s["arena"]
    tgt = ar["target"]
    assert ar["basis"] == "target" and tgt["measured"] and ar["exact_bytes"] == tgt["exact_bytes"]
    exact = tgt["exact_bytes"]
    assert tgt["search"]["below_exact_failed"] and tgt["search"]["boots"] <= 40
    assert all(p["seconds"] < 5 for p in tgt["search"]["probes"])
    # kTensorArenaSize = target exact + the margin rule; the manifest keeps the host figure and the estimate beside it
    assert ar["recommended_bytes"] == recommended_arena(exact)
    h = (bundle["out"] / "model_data.h").read_text()
    assert f"kTensorArenaSize = {recommended_arena(exact)};" in h and f"kTensorArenaExactBytes = {exact};" in h
    assert 'kTensorArenaExactBasis = "target"' in h
    assert ar["host"]["exact_bytes"] > 0 and s["static_estimate"]["vs_target"]["total_diff_bytes"] == (
        s["static_estimate"]["total_bytes"] - exact)
    manifest = json.loads((bundle["out"] / "manifest.json").read_text())["tflm"]
    assert manifest["arena"]["target"]["exact_bytes"] == exact
    # independent of the search: the bundle's own sources relinked with kTensorArenaSize = exact and exact - 1
    lib = library(source)
    codes = {}
    for size in (exact, exact - 1):
        src = tmp_path / str(size)
        shutil.copytree(bundle["out"], src)
        (src / "model_data.h").write_text(re.sub(r"kTensorArenaSize = \d+;", f"kTensorArenaSize = {size};", h))
        b = boot(link(lib, src, tmp_path / f"{size}.elf"))
        codes[size] = (b.rc, b.arena)
    assert codes[exact] == (0, exact), codes
    assert codes[exact - 1] == (3, exact - 1), codes  # AllocateTensors fails one byte below


def test_size_report_against_the_budget(bundle: dict[str, Any]) -> None:
    s = bundle["summary"]
    size, budget = s["target_run"]["size"], s["budget"]
    assert size["flash_bytes"] == size["text"] + size["data"] > len(bundle["model"])
    assert size["ram_bytes"] == size["data"] + size["bss"] >= size["arena_bytes"] == s["arena"]["recommended_bytes"]
    assert budget["basis"].startswith("measured")
    assert budget["flash"]["needed_bytes"] == size["flash_bytes"] <= budget["flash"]["budget_bytes"]
    target = load_target("cortex-m7")
    assert budget["ram"]["needed_bytes"] == size["ram_bytes"] + target.memory.runtime_overhead_bytes
    assert budget["ram"]["ok"] and budget["flash"]["ok"]
    icount = s["target_run"]["qemu_icount"]
    assert icount["instructions_median"] > 0 and "not cycles" in icount["note"]
    assert "latency" not in json.dumps(s["target_run"]).replace("not a latency", "")
    readme = (bundle["out"] / "README.md").read_text()
    assert f"{s['arena']['target']['exact_bytes']:,} B exact** on the emulated Cortex-M7" in readme
    assert "bit-identical to host TFLM" in readme


def test_measured_image_over_budget_names_by_how_much(example: dict[str, Any], tmp_path: Path) -> None:
    size = example["summary"]["target_run"]["size"]
    target = load_target("cortex-m7")
    small = target.model_copy(update={"memory": Memory(ram_bytes=2 ** 20, flash_bytes=size["flash_bytes"] - 500)})
    (tmp_path / "m.tflite").write_bytes(example["model"])
    with pytest.raises(tflm.BudgetError) as exc:
        tflm.build_firmware(tmp_path / "m.tflite", small, tmp_path / "fw", sample_input=example["x"][0],
                            eval_inputs=None)
    line = exc.value.one_line()
    assert "500 B" in line and "arm-none-eabi-size" in line and "over budget" in line
    assert not (tmp_path / "fw").exists()


def test_library_is_built_once_and_reused(source: TflmSource, example: dict[str, Any]) -> None:
    lib = library(source)
    assert lib.cached and lib.seconds < 10 and lib.archive.stat().st_size > 1_000_000
    assert lib.info["build_seconds"] > 0 and lib.info["make_args"][2] == "OPTIMIZED_KERNEL_DIR=cmsis_nn"
    assert example["summary"]["target_run"]["library"]["key"] == lib.flags.key


def test_without_a_source_the_manifest_says_which_figure(monkeypatch: pytest.MonkeyPatch, example: dict[str, Any],
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, "off")
    (tmp_path / "m.tflite").write_bytes(example["model"])
    s = tflm.build_firmware(tmp_path / "m.tflite", load_target("cortex-m7"), tmp_path / "fw",
                            sample_input=example["x"][0], eval_inputs=None, compile=False)
    assert s["arena"]["basis"] == "host" and s["arena"]["exact_bytes"] == s["arena"]["host"]["exact_bytes"]
    assert not s["arena"]["target"]["measured"] and ENV_VAR in s["arena"]["target"]["reason"]
    assert s["budget"]["basis"].startswith("allowance")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(TflmSourceError, match=ENV_VAR):
        tflm.build_firmware(tmp_path / "m.tflite", load_target("cortex-m7"), tmp_path / "fw2",
                            sample_input=example["x"][0], eval_inputs=None, compile=False)
