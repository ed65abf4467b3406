"""TFLite Micro firmware bundle (issue 7): the real TFLM interpreter, the real cross-compiler, no mocks.

These are the host-side figures (``emulate=False``); the bundle on the emulated Cortex-M7 is tests/test_tflm_target.py.
The harness compile check uses the real TFLM headers: without a TFLM source (``EDGEOPT_TFLM_SRC`` or the shared
bundle) that test fails, naming both."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.analyze import memory_plan
from edgeopt.config import Memory, load_target
from edgeopt.convert import tflm
from edgeopt.convert.tflm.target_src import find_source, missing_reason
from edgeopt.errors import ConversionError, QuantizationError

pytestmark = pytest.mark.slow

ARM_GXX = shutil.which("arm-none-eabi-g++")


@pytest.fixture(scope="module")
def bundle(example_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example, int8 for cortex-m7 through `edgeopt build` (emulated target switched off: that is
    test_tflm_target.py's), then build_firmware(emulate=False) into fw/: the host figures."""
    from edgeopt.build import BuildRequest, build
    from edgeopt.config import load_profile

    tmp = tmp_path_factory.mktemp("tflm")
    target = load_target("cortex-m7")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEOPT_TFLM_SRC", "off")
        res = build(BuildRequest(target=target, profiles=[load_profile("int8")], out=tmp / "art"))[0]
    tflite = res.directory / "model.tflite"
    ref = np.load(res.directory / "reference.npz")
    out = tmp / "fw"
    summary = tflm.build_firmware(tflite, target, out, sample_input=ref["x"][0], eval_inputs=ref["x"], emulate=False)
    return {"summary": summary, "out": out, "tflite": tflite, "model": tflite.read_bytes(), "x": ref["x"],
            "target": target}


def _tiny_keras_tflite(activation: str, *, dynamic_range: bool = False) -> bytes:
    from edgeopt.tf_env import quiet_tensorflow

    tf = quiet_tensorflow()
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((32,), batch_size=1), tf.keras.layers.Dense(64, activation=activation),
                                 tf.keras.layers.Dense(4)])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if dynamic_range:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    with contextlib.redirect_stdout(io.StringIO()):
        return conv.convert()


def _c_array(text: str, name: str) -> list[int]:
    body = re.search(name + r"\[[^\]]*\] = \{(.*?)\};", text, re.S)
    assert body, name
    return [int(v, 0) for v in re.findall(r"-?(?:0x[0-9a-f]+|\d+)", body.group(1))]


# ----------------------------------------------------------------------------------------------------------------


def test_bundle_files_and_manifest(bundle: dict[str, Any]) -> None:
    out, s = bundle["out"], bundle["summary"]
    assert sorted(p.name for p in out.iterdir()) == sorted(tflm.FILES)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tflm"]["arena"]["exact_bytes"] == s["arena"]["exact_bytes"]
    json.dumps(s)  # JSON-able for the build manifest
    cc = (out / "model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_model_data[]" in cc
    assert bytes(_c_array(cc, "g_model_data")) == bundle["model"]  # the embedded model is the artifact, byte for byte
    h = (out / "model_data.h").read_text()
    assert f"kTensorArenaSize = {s['arena']['recommended_bytes']};" in h
    assert f"kTensorArenaExactBytes = {s['arena']['exact_bytes']};" in h
    # without the emulated target, kTensorArenaSize comes from the host figure, and the manifest says so
    assert s["arena"]["basis"] == "host" and s["arena"]["exact_bytes"] == s["arena"]["host"]["exact_bytes"]
    assert s["arena"]["target"] == {"measured": False, "reason": "not requested (emulate=False)"}
    assert s["target_run"]["measured"] is False and 'kTensorArenaExactBasis = "host"' in h
    assert "alignas(16) uint8_t tensor_arena[kTensorArenaSize];" in (out / "main.cc").read_text()


def test_arena_is_the_smallest_that_allocates_and_runs(bundle: dict[str, Any]) -> None:
    s, model = bundle["summary"], bundle["model"]
    exact = s["arena"]["exact_bytes"]
    in_io = s["input"]
    sample = tflm.quantize_input(bundle["x"][0], in_io)
    ok, _ = tflm.try_arena(model, exact, sample)
    assert ok, "the reported arena must work in the real TFLM interpreter"
    for smaller in (exact - 1, exact - 16):
        ok, log = tflm.try_arena(model, smaller, sample)
        assert not ok, f"{smaller} B also works: {exact} is not the smallest"
        assert "allocate" in log.lower() or "missing" in log.lower()
    ar = s["arena"]
    assert ar["recommended_bytes"] == ar["exact_bytes"] + ar["margin_bytes"] and ar["recommended_bytes"] % 16 == 0
    assert ar["margin_bytes"] >= max(1024, 0.10 * exact)
    # head/tail from print_allocations(): they add up to what the recorder saw, which fits in the exact arena
    host = ar["host"]
    assert host["head_bytes"] > 0 and host["tail_bytes"] > 0
    assert host["head_bytes"] + host["tail_bytes"] == host["recorded_total_bytes"] <= exact
    assert host["tail_categories"]["NodeAndRegistration struct"]["count"] == sum(o["count"] for o in s["ops"])


def test_resolver_lists_exactly_the_models_ops(bundle: dict[str, Any]) -> None:
    from edgeopt.analyze.tflite import inspect  # LiteRT's view of the ops: an independent reader

    ops = inspect(bundle["model"])["ops"]
    text = (bundle["out"] / "op_resolver.h").read_text()
    calls = re.findall(r"resolver\.(Add\w+)\(\)", text)
    assert sorted(calls) == sorted(tflm.RESOLVER_METHODS[op] for op in ops)
    assert len(calls) == len(set(calls))
    assert f"kNumOps = {len(ops)};" in text
    assert {"CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE"} <= set(ops)
    assert "AddConv2D" in calls and "AddMaxPool2D" in calls and "AddFullyConnected" in calls


def test_generated_sources_compile_for_cortex_m7(bundle: dict[str, Any], tmp_path: Path) -> None:
    if ARM_GXX is None:  # CI installs it (scripts/system-deps.sh): there a missing compiler is a failure
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "arm-none-eabi-g++ not installed (apt-get install gcc-arm-none-eabi libstdc++-arm-none-eabi-newlib)")
    if find_source() is None:  # never skipped: the harness is checked against the real TFLM headers
        pytest.fail(f"{missing_reason()} — the harness compile check needs the real TFLM headers")
    s, out = bundle["summary"], bundle["out"]
    md = s["compile"]["model_data"]
    assert md["compiled"] and md["sections"][".rodata.g_model_data"] == len(bundle["model"])
    harness = s["compile"]["harness"]
    assert harness["syntax_checked"] and "TFLM headers" in harness["against"], harness
    assert not (Path(tflm.__file__).parents[2] / "firmware" / "tflm" / "stubs").exists()  # no stand-in API left
    # compile again here and check the model array is 16-byte aligned read-only data in the object file
    obj = tmp_path / "model_data.o"
    subprocess.run([ARM_GXX, *tflm.CM7_FLAGS, "-I", str(out), "-c", str(out / "model_data.cc"), "-o", str(obj)],
                   check=True)
    sections = subprocess.run(["arm-none-eabi-readelf", "-SW", str(obj)], capture_output=True, text=True,
                              check=True).stdout
    line = next(ln for ln in sections.splitlines() if ".rodata.g_model_data " in ln)
    assert line.split()[-1] == "16" and " A " in line + " "  # Al column = 16, flags: allocated, not writable
    # the harness check can fail: a misspelt resolver call must not pass
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "op_resolver.h").write_text((out / "op_resolver.h").read_text().replace("AddConv2D", "AddConv2d"))
    with pytest.raises(ConversionError, match="do not compile against the TFLM headers"):
        tflm.compile_check(bad)


def test_parity_with_litert_within_one_step(bundle: dict[str, Any]) -> None:
    p = bundle["summary"]["parity"]
    assert p["samples"] == len(bundle["x"]) and p["unit"] == "quantisation steps"
    assert p["ok"] and p["max_step_diff"] <= 1 and p["values_beyond_tolerance"] == 0
    assert 0 <= p["values_differing"] <= p["values"]
    # the bundle's expected output is what the real TFLM produces for the bundle's sample input
    cc = (bundle["out"] / "model_data.cc").read_text()
    sample = np.array(_c_array(cc, "g_sample_input"), dtype=np.int8).reshape(bundle["summary"]["input"]["shape"])
    outs, _ = tflm.run_tflm(bundle["model"], bundle["summary"]["arena"]["exact_bytes"], sample[None])
    assert outs[0].reshape(-1).tolist() == _c_array(cc, "g_expected_output")


def test_over_budget_names_by_how_much(bundle: dict[str, Any], tmp_path: Path) -> None:
    s, target = bundle["summary"], bundle["target"]
    overhead = target.memory.runtime_overhead_bytes
    ram = s["arena"]["recommended_bytes"] + overhead - 1000
    small_ram = target.model_copy(update={"memory": Memory(ram_bytes=ram, flash_bytes=2 ** 21,
                                                           runtime_overhead_bytes=overhead)})
    with pytest.raises(tflm.BudgetError) as exc:
        tflm.build_firmware(bundle["tflite"], small_ram, tmp_path / "a", sample_input=bundle["x"][0], eval_inputs=None,
                            emulate=False)
    line = exc.value.one_line()
    assert "RAM" in line and "1,000 B" in line and "over budget" in line and "smaller profile" in line
    assert not (tmp_path / "a").exists()  # nothing written
    small_flash = target.model_copy(update={"memory": Memory(ram_bytes=2 ** 20, flash_bytes=100_000)})
    with pytest.raises(tflm.BudgetError, match=r"flash .* over budget"):
        tflm.build_firmware(bundle["tflite"], small_flash, tmp_path / "b", sample_input=bundle["x"][0],
                            eval_inputs=None, emulate=False)


def test_op_tflm_lacks_is_a_clear_error(tmp_path: Path) -> None:
    model = _tiny_keras_tflite("gelu")  # Keras gelu -> the GELU builtin, which TFLM has no kernel for
    names = [op.name for op in memory_plan.read_graph(model).ops]
    assert "GELU" in names
    path = tmp_path / "gelu.tflite"
    path.write_bytes(model)
    with pytest.raises(ConversionError) as exc:
        tflm.build_firmware(path, load_target("cortex-m7"), tmp_path / "fw", sample_input=np.zeros(32, np.float32),
                            eval_inputs=None, emulate=False)
    assert "GELU" in exc.value.one_line() and "TensorFlow Lite Micro" in exc.value.one_line()
    # and the real interpreter agrees: it refuses the op at any arena size
    ok, log = tflm.try_arena(model, 1 << 20, np.zeros((1, 32), np.float32))
    assert not ok and "GELU" in log


def test_float_model_runs_and_hybrid_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.tflite"
    path.write_bytes(_tiny_keras_tflite("relu"))
    x = np.random.default_rng(0).normal(size=(4, 32)).astype(np.float32)
    s = tflm.build_firmware(path, load_target("cortex-m7"), tmp_path / "fw", sample_input=x[0], eval_inputs=x,
                            compile=False, emulate=False)
    assert s["parity"]["ok"] and s["parity"]["unit"] == "float"
    assert "typedef float edgeopt_input_t;" in (tmp_path / "fw" / "model_data.h").read_text()
    hybrid = tmp_path / "hybrid.tflite"
    hybrid.write_bytes(_tiny_keras_tflite("relu", dynamic_range=True))
    with pytest.raises(QuantizationError, match="hybrid"):
        tflm.build_firmware(hybrid, load_target("cortex-m7"), tmp_path / "fw2", sample_input=x[0], eval_inputs=None,
                            emulate=False)


def test_static_estimate_close_to_exact(bundle: dict[str, Any]) -> None:
    est = bundle["summary"]["static_estimate"]
    arena = bundle["summary"]["arena"]
    assert abs(est["vs_exact"]["total_ratio"] - 1) <= 0.10, est["vs_exact"]
    assert est["vs_exact"]["total_diff_bytes"] == est["total_bytes"] - arena["exact_bytes"]
    # the head is the greedy plan TFLM makes: it should match to the byte on this model
    assert est["head_bytes"] == arena["host"]["head_bytes"]


def test_greedy_planner_places_by_size_and_lifetime() -> None:
    bufs = [memory_plan.Buffer(0, 112, 0, 1), memory_plan.Buffer(1, 64, 1, 2), memory_plan.Buffer(2, 112, 2, 3)]
    # largest first: #0 at 0; #2 does not overlap #0 in time -> also at 0; #1 overlaps both -> above them
    assert memory_plan.greedy_plan(bufs) == 176
    assert [b.offset for b in bufs] == [0, 112, 0]
    bufs = [memory_plan.Buffer(0, 32, 0, 0), memory_plan.Buffer(1, 48, 1, 1), memory_plan.Buffer(2, 16, 0, 1)]
    assert memory_plan.greedy_plan(bufs) == 64 and [b.offset for b in bufs] == [0, 0, 48]


def test_smallest_working_doubles_then_bisects() -> None:
    from edgeopt.convert.tflm.arena import smallest_working

    for exact in (1, 63, 64, 65, 4097, 28_644, 100_000):
        probes: dict[bool, list[int]] = {True: [], False: []}
        for from_last in (True, False):
            def works(n: int, log: list[int] = probes[from_last], e: int = exact) -> bool:
                log.append(n)
                return n >= e

            assert smallest_working(works, 64, 1 << 20, from_last_failure=from_last) == exact
            assert exact - 1 in probes[from_last] or exact == 1
        assert len(probes[True]) <= len(probes[False])  # from the last failing size: no more probes than from 0
    assert smallest_working(lambda n: False, 64, 1000) is None


def test_library_code_does_not_print() -> None:
    """Only edgeopt.cli prints: the TFLM pass reports progress through the ``note`` callback."""
    root = Path(tflm.__file__).parent
    offenders = [f"{p.name}:{i}" for p in sorted(root.glob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"(?<![\w.])print\(", line)]
    assert not offenders, offenders
