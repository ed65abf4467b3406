"""The agent zipapp run as on a device: each "device" is a minimal virtualenv (tests/device_envs.py) with only
numpy and a runtime, the models are real converter outputs (tests/agent_models.py). No mocks.

First run: builds the models (~10 s, TensorFlow) and the envs (pip; under a minute); later runs reuse the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from agent_models import AgentModels, ensure_agent_models, sha256_file
from device_envs import DeviceEnv, EnvUnavailable, ensure_env

from edgeopt.bench.zipapp import build_zipapp

pytestmark = pytest.mark.slow

RUNS = 30


@pytest.fixture(scope="session")
def agent_pyz(tmp_path_factory) -> Path:
    return build_zipapp(tmp_path_factory.mktemp("agent") / "agent.pyz")


@pytest.fixture(scope="session")
def models() -> AgentModels:
    return ensure_agent_models()


def _env(name: str) -> DeviceEnv:
    try:
        return ensure_env(name)
    except EnvUnavailable as exc:  # CI must have every device env: a failure there, a skip only by hand
        (pytest.fail if os.environ.get("CI") else pytest.skip)(str(exc))


@pytest.fixture(scope="session")
def litert() -> DeviceEnv:
    return _env("litert")


@pytest.fixture(scope="session")
def rpios() -> DeviceEnv:
    return _env("rpios")


@pytest.fixture(scope="session")
def bare() -> DeviceEnv:
    return _env("bare")


@pytest.fixture(scope="session")
def py39() -> DeviceEnv:
    return _env("py39")


@pytest.fixture
def envs(litert, rpios, bare) -> dict[str, DeviceEnv]:
    return {"litert": litert, "rpios": rpios, "bare": bare}


def agent(env: DeviceEnv, pyz: Path, *args: str, cwd: Path) -> tuple[int, dict]:
    """Run the zipapp; stdout must be exactly one JSON document, whatever the exit code."""
    proc = env.run([str(pyz), *args], cwd=cwd)
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail("agent stdout is not one JSON document (rc=%d):\n%s\nstderr:\n%s"
                    % (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:]))
    return proc.returncode, doc


def run_ok(env: DeviceEnv, pyz: Path, model: Path, *args: str, cwd: Path) -> dict:
    code, doc = agent(env, pyz, "run", "--model", str(model), "--sha256", sha256_file(model), *args, cwd=cwd)
    assert code == 0 and "error" not in doc, doc
    return doc


def check_result(doc: dict, model: Path, runs: int) -> None:
    assert doc["schema"] == 1 and doc["agent_version"]
    assert doc["model"]["sha256"] == sha256_file(model) and doc["model"]["bytes"] == model.stat().st_size
    lat = doc["latency_ms"]
    assert lat["count"] == runs == len(lat["samples"])
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] == min(lat["samples"]) and lat["max"] == max(lat["samples"])
    assert lat["p50"] == pytest.approx(float(np.percentile(lat["samples"], 50)), abs=1e-6)
    assert lat["mean"] == pytest.approx(float(np.mean(lat["samples"])), abs=1e-6)
    assert lat["std"] >= 0 and lat["init"] > 0 and lat["first"] > 0 and lat["warmup"] == 10
    mem = doc["memory"]
    assert mem["peak_rss_kib"] >= mem["rss_after_init_kib"] > mem["rss_before_init_kib"] > 0
    assert mem["model_rss_kib"] == mem["rss_after_init_kib"] - mem["rss_before_init_kib"]
    dev = doc["device"]
    for key in ("cpu_model", "cpu_count", "machine", "kernel", "os", "python", "numpy", "loadavg", "hostname"):
        assert dev[key], key
    assert dev["machine"] == __import__("platform").machine()


# --- the envs are what a device has, nothing more ---------------------------------------------------------------


@pytest.mark.parametrize("name,runtime_module", [("litert", "ai_edge_litert"), ("rpios", "tflite_runtime"),
                                                 ("bare", "numpy")])
def test_device_envs_hold_no_tensorflow_and_no_edgeopt(envs, name, runtime_module, tmp_path):
    env = envs[name]
    assert env.run(["-c", "import %s" % runtime_module], cwd=tmp_path).returncode == 0
    for forbidden in ("tensorflow", "edgeopt", "keras"):
        proc = env.run(["-c", "import %s" % forbidden], cwd=tmp_path)
        assert proc.returncode != 0 and "No module named '%s'" % forbidden in proc.stderr, (name, forbidden)
    numpy_major = env.run(["-c", "import numpy; print(numpy.__version__.split('.')[0])"], cwd=tmp_path).stdout
    assert numpy_major.strip() == ("1" if name == "rpios" else "2")


# --- runs on each runtime, parity against the host reference ---------------------------------------------------


@pytest.mark.parametrize("env_name,runtime", [("litert", "litert"), ("rpios", "tflite-runtime")])
@pytest.mark.parametrize("profile", ["fp32", "int8"])
def test_tflite_on_device_runtimes_matches_host_reference(envs, agent_pyz, models, tmp_path, env_name, runtime,
                                                          profile):
    model = models.fp32_tflite if profile == "fp32" else models.int8_tflite
    reference = models.fp32_reference if profile == "fp32" else models.int8_reference
    doc = run_ok(envs[env_name], agent_pyz, model, "--reference", str(reference), "--runs", str(RUNS), cwd=tmp_path)
    check_result(doc, model, RUNS)
    assert doc["model"]["format"] == "tflite"
    assert doc["runtime"]["name"] == runtime
    assert doc["runtime"]["version"] == ("2.3.0" if runtime == "litert" else "2.14.0")
    assert doc["inputs"]["source"] == "reference" and doc["inputs"]["samples"] == 32
    io_in = doc["io"]["inputs"][0]
    assert io_in["dtype"] == ("float32" if profile == "fp32" else "int8")
    assert (io_in["quantization"] is None) == (profile == "fp32")
    par = doc["parity"]
    assert par["samples"] == 32 and par["artifact"]["key"] == "y_tflite"
    assert par["top1_agreement"] == 1.0
    # fp32: the same kernels up to float rounding; int8: at most one output quantum (1/256) apart.
    assert par["max_abs_diff"] <= (1e-5 if profile == "fp32" else 1 / 256 + 1e-7)
    assert par["float"]["top1_agreement"] >= 0.9 and par["float"]["max_abs_diff"] < 0.1
    assert par["accuracy"] >= 0.9


def test_onnx_on_rpios_matches_host_reference(rpios, agent_pyz, models, tmp_path):
    doc = run_ok(rpios, agent_pyz, models.fp32_onnx, "--reference", str(models.fp32_reference),
                 "--runs", str(RUNS), "--threads", "1", cwd=tmp_path)
    check_result(doc, models.fp32_onnx, RUNS)
    assert doc["model"]["format"] == "onnx"
    assert doc["runtime"]["name"] == "onnxruntime" and doc["runtime"]["version"] == "1.32.0"
    assert doc["runtime"]["threads"] == 1 and doc["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert doc["device"]["numpy"].startswith("1.")
    assert doc["io"]["inputs"][0]["shape_signature"][0] == -1  # dynamic batch, run with 1
    par = doc["parity"]
    assert par["artifact"]["key"] == "y_onnx" and par["top1_agreement"] == 1.0 and par["max_abs_diff"] < 1e-5


def test_agent_on_python39_with_numpy1(py39, agent_pyz, models, tmp_path):
    for model, reference, runtime in ((models.int8_tflite, models.int8_reference, "tflite-runtime"),
                                      (models.fp32_onnx, models.fp32_reference, "onnxruntime")):
        doc = run_ok(py39, agent_pyz, model, "--reference", str(reference), "--runs", "10", cwd=tmp_path)
        check_result(doc, model, 10)
        assert doc["device"]["python"].startswith("3.9.") and doc["runtime"]["name"] == runtime
        assert doc["parity"]["top1_agreement"] == 1.0


def test_host_tensorflow_runtime_when_forced_and_litert_first_in_auto(agent_pyz, models, tmp_path):
    """The host venv has all three TFLite runtimes: auto takes ai-edge-litert, --runtime picks tf.lite."""
    host = DeviceEnv("host", Path(sys.prefix))
    doc = run_ok(host, agent_pyz, models.fp32_tflite, "--runs", "5", cwd=tmp_path)
    assert doc["runtime"]["name"] == "litert"
    doc = run_ok(host, agent_pyz, models.fp32_tflite, "--runs", "5", "--reference", str(models.fp32_reference),
                 "--runtime", "tensorflow", cwd=tmp_path)
    assert doc["runtime"]["name"] == "tensorflow" and doc["runtime"]["version"].startswith("2.")
    assert doc["parity"]["top1_agreement"] == 1.0 and doc["parity"]["max_abs_diff"] < 1e-5


# --- inputs, timing options --------------------------------------------------------------------------------------


def test_random_inputs_are_flagged_and_skip_parity(litert, agent_pyz, models, tmp_path):
    doc = run_ok(litert, agent_pyz, models.int8_tflite, "--runs", "12", cwd=tmp_path)
    check_result(doc, models.int8_tflite, 12)
    assert doc["inputs"]["source"] == "random" and doc["inputs"]["seed"] == 0
    assert doc["parity"] is None


def test_min_seconds_is_honoured_beyond_runs(litert, agent_pyz, models, tmp_path):
    doc = run_ok(litert, agent_pyz, models.fp32_tflite, "--runs", "5", "--min-seconds", "0.3",
                 "--max-runs", "2000000", cwd=tmp_path)
    lat = doc["latency_ms"]
    assert lat["measure_seconds"] >= 0.3 and lat["count"] > 5 and lat["count"] == len(lat["samples"])
    assert lat["min_seconds"] == 0.3 and doc["warnings"] == []
    doc = run_ok(litert, agent_pyz, models.fp32_tflite, "--runs", "5", "--min-seconds", "30", "--max-runs", "40",
                 cwd=tmp_path)
    assert doc["latency_ms"]["count"] == 40 and any("--max-runs" in w for w in doc["warnings"])


def test_threads_and_affinity_are_applied_and_recorded(litert, agent_pyz, models, tmp_path):
    doc = run_ok(litert, agent_pyz, models.fp32_tflite, "--runs", "5", "--threads", "1", "--affinity", "0",
                 cwd=tmp_path)
    assert doc["runtime"]["threads"] == 1
    assert doc["runtime"]["affinity_requested"] == [0] and doc["runtime"]["affinity"] == [0]
    doc = run_ok(litert, agent_pyz, models.fp32_tflite, "--runs", "5", "--threads", "2", cwd=tmp_path)
    assert doc["runtime"]["threads"] == 2 and doc["runtime"]["affinity_requested"] is None
    assert doc["runtime"]["affinity"] == doc["device"]["cpus_allowed"]


# --- failures: one JSON error document, non-zero exit ---------------------------------------------------------


def test_hash_mismatch_names_expected_and_actual(litert, agent_pyz, models, tmp_path):
    wrong = "0" * 64
    code, doc = agent(litert, agent_pyz, "run", "--model", str(models.fp32_tflite), "--sha256", wrong, cwd=tmp_path)
    actual = sha256_file(models.fp32_tflite)
    assert code == 1
    err = doc["error"]
    assert err["type"] == "hash_mismatch" and err["expected"] == wrong and err["actual"] == actual
    assert wrong in err["message"] and actual in err["message"] and err["hint"]


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_missing_runtime_says_what_to_install(bare, agent_pyz, models, tmp_path, fmt):
    model = models.fp32_tflite if fmt == "tflite" else models.fp32_onnx
    code, doc = agent(bare, agent_pyz, "run", "--model", str(model), "--sha256", sha256_file(model), cwd=tmp_path)
    assert code == 1
    err = doc["error"]
    assert err["type"] == "runtime_missing"
    if fmt == "tflite":
        for install in ("pip install ai-edge-litert", "pip install tflite-runtime", "pip install tensorflow"):
            assert install in err["hint"]
        assert "No module named 'ai_edge_litert'" in err["message"]
        assert "No module named 'tflite_runtime'" in err["message"]
        assert set(err["tried"]) == {"litert", "tflite-runtime", "tensorflow"}
    else:
        assert "pip install onnxruntime" in err["hint"] and "No module named 'onnxruntime'" in err["message"]


def test_forced_runtime_that_cannot_import_reports_its_error(litert, agent_pyz, models, tmp_path):
    code, doc = agent(litert, agent_pyz, "run", "--model", str(models.fp32_tflite), "--sha256",
                      sha256_file(models.fp32_tflite), "--runtime", "tflite-runtime", cwd=tmp_path)
    assert code == 1 and doc["error"]["type"] == "runtime_missing"
    assert list(doc["error"]["tried"]) == ["tflite-runtime"]
    code, doc = agent(litert, agent_pyz, "run", "--model", str(models.fp32_tflite), "--sha256",
                      sha256_file(models.fp32_tflite), "--runtime", "onnxruntime", cwd=tmp_path)
    assert code == 2 and doc["error"]["type"] == "bad_usage"


def test_bad_inputs_are_typed_errors(litert, agent_pyz, models, tmp_path):
    sha = sha256_file(models.fp32_tflite)
    code, doc = agent(litert, agent_pyz, "run", "--model", str(tmp_path / "nope.tflite"), "--sha256", sha,
                      cwd=tmp_path)
    assert code == 1 and doc["error"]["type"] == "model_not_found"
    bad_ref = tmp_path / "bad.npz"
    np.savez(bad_ref, x=np.zeros((2, 3), np.float32))
    code, doc = agent(litert, agent_pyz, "run", "--model", str(models.fp32_tflite), "--sha256", sha,
                      "--reference", str(bad_ref), cwd=tmp_path)
    assert code == 1 and doc["error"]["type"] == "bad_reference" and "[1, 8, 8, 1]" in doc["error"]["message"]
    code, doc = agent(litert, agent_pyz, "run", "--model", str(models.fp32_tflite), cwd=tmp_path)
    assert code == 2 and doc["error"]["type"] == "bad_usage" and "--sha256" in doc["error"]["message"]
    not_a_model = tmp_path / "junk.tflite"
    not_a_model.write_bytes(b"this is not a flatbuffer" * 10)
    code, doc = agent(litert, agent_pyz, "run", "--model", str(not_a_model), "--sha256", sha256_file(not_a_model),
                      cwd=tmp_path)
    assert code == 1 and doc["error"]["type"] == "model_load_failed" and "litert" in doc["error"]["message"]


def test_probe_lists_device_facts_and_importable_runtimes(litert, agent_pyz, tmp_path):
    code, doc = agent(litert, agent_pyz, "probe", cwd=tmp_path)
    assert code == 0 and doc["schema"] == 1 and doc["command"] == "probe"
    rows = {r["name"]: r for r in doc["runtimes"]}
    assert rows["litert"]["available"] and rows["litert"]["version"] == "2.3.0"
    for missing in ("tflite-runtime", "tensorflow", "onnxruntime"):
        assert not rows[missing]["available"] and "No module named" in rows[missing]["error"]
    assert doc["device"]["numpy"].startswith("2.") and doc["device"]["cpu_count"] >= 1


def test_zipapp_runs_from_a_foreign_directory_without_edgeopt(litert, agent_pyz, tmp_path):
    """The zip carries the agent under its own name: nothing of the host's edgeopt is needed or found."""
    code = ("import sys; sys.path.insert(0, %r); import edgeopt_agent.runner; "
            "print(edgeopt_agent.AGENT_VERSION, 'edgeopt' in sys.modules)" % str(agent_pyz))
    proc = litert.run(["-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    version, edgeopt_loaded = proc.stdout.split()
    assert version and edgeopt_loaded == "False"
    sub = subprocess.run([litert.python, str(agent_pyz), "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert sub.returncode == 0 and sub.stdout.strip() == version


def test_device_without_numpy_gets_a_clear_error_and_a_working_probe(agent_pyz, models, tmp_path):
    empty = _env("empty")
    assert empty.run(["-c", "import numpy"], cwd=tmp_path).returncode != 0
    code, doc = agent(empty, agent_pyz, "run", "--model", str(models.fp32_tflite), "--sha256",
                      sha256_file(models.fp32_tflite), cwd=tmp_path)
    assert code == 1 and doc["error"]["type"] == "numpy_missing" and "pip install numpy" in doc["error"]["hint"]
    code, doc = agent(empty, agent_pyz, "probe", cwd=tmp_path)
    assert code == 0 and doc["device"]["numpy"] is None
    assert not any(r["available"] for r in doc["runtimes"])


def test_tflite_runtime_beside_numpy2_is_reported_not_crashed(agent_pyz, models, tmp_path):
    env = _env("numpy2-tflrt")
    code, doc = agent(env, agent_pyz, "run", "--model", str(models.fp32_tflite), "--sha256",
                      sha256_file(models.fp32_tflite), cwd=tmp_path)
    assert code == 1 and doc["error"]["type"] == "runtime_missing", doc
    assert "built for numpy 1.x" in doc["error"]["tried"]["tflite-runtime"]
    assert "numpy<2" in doc["error"]["hint"]
    code, doc = agent(env, agent_pyz, "probe", cwd=tmp_path)
    row = {r["name"]: r for r in doc["runtimes"]}["tflite-runtime"]
    assert code == 0 and not row["available"] and "numpy 2." in row["error"]
