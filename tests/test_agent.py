"""The agent's own rules, checked on its source and its zipapp (fast: no runtime, no device env)."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeopt.agent import memory, timing
from edgeopt.bench.zipapp import AGENT_DIR, ZIP_PACKAGE, agent_sha256, agent_sources, build_zipapp

ALLOWED_TOP_LEVEL = {"numpy"}  # besides the standard library; runtimes are imported by name (importlib)


def import_violations(source: str, filename: str = "<src>") -> list[str]:
    """Every import in ``source`` that is not stdlib, numpy, or relative (inside the agent package)."""
    bad = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:
                continue  # relative: stays inside the agent package
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top == "__future__" or top in sys.stdlib_module_names or top in ALLOWED_TOP_LEVEL:
                continue
            bad.append("%s:%d imports %s" % (filename, node.lineno, name))
    return bad


_TYPE_NAMES = {"int", "float", "str", "bytes", "bool", "list", "dict", "tuple", "set", "type", "object"}


def py310_runtime_features(source: str) -> list[str]:
    """What the 3.9 grammar accepts but 3.9 cannot run: ``int | None`` evaluated at run time (outside
    annotations), ``zip(strict=…)``, ``dataclass(slots=…/kw_only=…)``."""
    tree = ast.parse(source)
    annotations = set()
    for node in ast.walk(tree):
        for ann in [getattr(node, "annotation", None), getattr(node, "returns", None)]:
            if ann is not None:
                annotations.update(id(n) for n in ast.walk(ann))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) not in annotations:
            sides = [node.left, node.right]
            if any(isinstance(s, ast.Name) and s.id in _TYPE_NAMES or isinstance(s, ast.Constant) and s.value is None
                   for s in sides):
                found.append("line %d: X | Y type union" % node.lineno)
        if isinstance(node, ast.Call):
            fn = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            kws = {k.arg for k in node.keywords}
            if fn == "zip" and "strict" in kws or fn == "dataclass" and kws & {"slots", "kw_only"}:
                found.append("line %d: %s(%s)" % (node.lineno, fn, ", ".join(sorted(k for k in kws if k))))
    return found


def test_py310_feature_checker_catches_runtime_unions():
    src = "def f(x: int | None) -> str | None:\n    return isinstance(x, int | None) or zip(a, b, strict=True)\n"
    assert sorted(py310_runtime_features(src)) == ["line 2: X | Y type union", "line 2: zip(strict)"]


def agent_files() -> list[Path]:
    files = sorted(AGENT_DIR.glob("*.py"))
    assert len(files) >= 8, files
    return files


def test_import_checker_catches_forbidden_imports():
    src = "import os\nimport tensorflow as tf\nfrom edgeopt.errors import AgentError\nfrom . import timing\nimport numpy\n"
    assert import_violations(src) == ["<src>:2 imports tensorflow", "<src>:3 imports edgeopt.errors"]


@pytest.mark.parametrize("path", agent_files(), ids=lambda p: p.name)
def test_agent_imports_only_stdlib_numpy_and_itself(path: Path):
    assert import_violations(path.read_text(), path.name) == []


@pytest.mark.parametrize("path", agent_files(), ids=lambda p: p.name)
def test_agent_source_parses_as_python39(path: Path):
    source = path.read_text()
    tree = ast.parse(source, path.name, feature_version=(3, 9))
    # Annotations such as ``int | None`` only stay unevaluated on 3.9 with postponed evaluation.
    has_annotations = any(isinstance(n, (ast.AnnAssign, ast.arg)) and getattr(n, "annotation", None) is not None
                          or isinstance(n, ast.FunctionDef) and n.returns is not None for n in ast.walk(tree))
    if has_annotations:
        assert "from __future__ import annotations" in source, path.name
    assert not any(type(n).__name__ == "Match" for n in ast.walk(tree)), path.name
    assert py310_runtime_features(source) == [], path.name


def test_zipapp_is_deterministic_and_atomic(tmp_path: Path):
    first = build_zipapp(tmp_path / "a" / "agent.pyz")
    (tmp_path / "b").mkdir()
    second = build_zipapp(tmp_path / "b")  # an existing directory: the default name inside it
    assert second.name == "edgeopt-agent.pyz"
    data = first.read_bytes()
    assert data == second.read_bytes()
    assert hashlib.sha256(data).hexdigest() == agent_sha256()
    assert data.startswith(b"#!/usr/bin/env python3\n")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["agent.pyz"]  # no temp file left behind
    with zipfile.ZipFile(first) as zf:
        names = zf.namelist()
        assert names[0] == "__main__.py"
        assert sorted(names[1:]) == names[1:]
        assert {n.split("/")[-1] for n in names[1:]} == {p.name for p in agent_sources()}
        assert "%s/package.py" % ZIP_PACKAGE not in names  # host-only builder is not shipped
        assert {zi.date_time for zi in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_zipapp_sha_changes_with_its_source(tmp_path: Path):
    copy = tmp_path / "agent"
    copy.mkdir()
    for path in agent_sources():
        (copy / path.name).write_bytes(path.read_bytes())
    same = agent_sha256(copy)
    assert same == agent_sha256()
    (copy / "timing.py").write_text((copy / "timing.py").read_text() + "\n# changed\n")
    assert agent_sha256(copy) != same


def test_percentile_matches_numpy_linear():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 10, 101):
        values = sorted(rng.exponential(size=n).tolist())
        for q in (0, 50, 90, 99, 100):
            assert timing.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_summarize_orders_and_moments():
    samples = [5.0, 1.0, 3.0, 2.0, 4.0]
    stats = timing.summarize(samples)
    assert stats["min"] == 1.0 and stats["max"] == 5.0 and stats["p50"] == 3.0
    assert stats["mean"] == 3.0
    assert stats["std"] == pytest.approx(math.sqrt(2.5))  # sample std (n - 1)
    assert stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert timing.summarize([7.0])["std"] == 0.0
    with pytest.raises(ValueError):
        timing.summarize([])


def test_measure_times_only_the_call_and_honours_runs_and_min_seconds():
    prepared = []

    def prepare(i: int) -> None:
        prepared.append(i)
        time.sleep(0.002)  # slow preparation must not show in the samples

    out = timing.measure(lambda: None, prepare, warmup=3, runs=20, min_seconds=0.0, max_runs=1000)
    assert len(out["samples_ms"]) == 20
    assert prepared == list(range(23))  # warm-up calls are prepared too
    assert max(out["samples_ms"]) < 2.0  # a no-op call, not the 2 ms sleep
    out = timing.measure(lambda: time.sleep(0.001), None, warmup=0, runs=2, min_seconds=0.1, max_runs=10000)
    assert out["measure_seconds"] >= 0.1 and len(out["samples_ms"]) > 2
    out = timing.measure(lambda: None, None, warmup=0, runs=5, min_seconds=60.0, max_runs=7)
    assert len(out["samples_ms"]) == 7 and out["capped"]


def test_memory_reads_this_process():
    status = memory.read_status()
    assert status["VmHWM"] >= status["VmRSS"] > 1000
    block = memory.memory_block(100, 150)
    assert block["model_rss_kib"] == 50 and block["peak_rss_kib"] >= block["rss_end_kib"]
    assert memory.read_status("/nonexistent/status") == {}


def test_cli_bad_usage_is_json_with_exit_2(tmp_path: Path):
    pyz = build_zipapp(tmp_path)
    for args in (["run", "--model", "m.tflite"], ["run", "--model", "m.tflite", "--sha256", "xyz"], ["frobnicate"]):
        proc = subprocess.run([sys.executable, str(pyz), *args], capture_output=True, text=True, cwd=tmp_path,
                              timeout=120)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        doc = json.loads(proc.stdout)
        assert doc["error"]["type"] == "bad_usage" and doc["error"]["message"], doc


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_killed_agent_restores_the_governor_and_says_it_was_interrupted(tmp_path: Path, signum: int):
    """The host stops an agent with SIGTERM to its process group (Ctrl-C, a timeout) before SIGKILL: the agent
    must put the CPU governor back and still print one JSON document."""
    from agent_models import ensure_agent_models
    from sysfs_fixtures import SysfsTree

    models = ensure_agent_models()
    tree = SysfsTree(tmp_path / "dev")
    tree.cpus(max_khz=(1800000, 2400000), capacity=(512, 1024), governor="ondemand")
    governors = [tree.sys / f"devices/system/cpu/cpu{c}/cpufreq/scaling_governor" for c in (0, 1)]
    pyz = build_zipapp(tmp_path / "pyz")
    sha = hashlib.sha256(models.fp32_tflite.read_bytes()).hexdigest()
    proc = subprocess.Popen([sys.executable, str(pyz), "run", "--model", str(models.fp32_tflite), "--sha256", sha,
                             "--runs", "1", "--warmup", "0", "--min-seconds", "120", "--max-runs", str(10**9),
                             "--governor", "performance", "--sysfs-root", str(tree.root), "--affinity", "0,1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not all(g.read_text().strip() == "performance" for g in governors):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the agent never set the governor"
            time.sleep(0.05)
        time.sleep(0.3)  # into the timing loop
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signum, err
    doc = json.loads(out)
    assert doc["error"]["type"] == "interrupted" and signal.Signals(signum).name in doc["error"]["message"]
    assert [g.read_text().strip() for g in governors] == ["ondemand", "ondemand"]


# ---------------------------------------------------------------------------------------------------------------
# check-then-use: the agent runs the bytes it verified, the model is loaded from the bytes it hashed
# ---------------------------------------------------------------------------------------------------------------
def _launch(pyz: Path, sha: str, *args: str, python: str = sys.executable) -> list[str]:
    from edgeopt.bench.worker import verified_zipapp_argv

    return verified_zipapp_argv(python, str(pyz), sha, ZIP_PACKAGE, list(args))


def test_launcher_stub_parses_as_python39():
    from edgeopt.bench.worker import VERIFIED_ZIPAPP_CODE

    ast.parse(VERIFIED_ZIPAPP_CODE, "<stub>", feature_version=(3, 9))
    assert py310_runtime_features(VERIFIED_ZIPAPP_CODE) == []


def test_a_zipapp_swapped_after_the_push_is_refused_never_run(tmp_path: Path):
    """The stub hashes the bytes it is about to run: another zipapp at the verified path (here one that would
    leave a mark) is refused with the agent's hash_mismatch document and never executes."""
    pyz = build_zipapp(tmp_path / "good")
    sha = agent_sha256()
    assert sha == hashlib.sha256(pyz.read_bytes()).hexdigest()
    ok = subprocess.run(_launch(pyz, sha, "--version"), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.strip(), ok.stderr
    mark = tmp_path / "EVIL-RAN"
    with zipfile.ZipFile(pyz, "w") as zf:
        zf.writestr("__main__.py", f"open({str(mark)!r}, 'w').write('x')\n")
        zf.writestr(f"{ZIP_PACKAGE}/__init__.py", "")
        zf.writestr(f"{ZIP_PACKAGE}/__main__.py", f"def main():\n    open({str(mark)!r}, 'w').write('x')\n")
    bad = subprocess.run(_launch(pyz, sha, "--version"), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 1 and not mark.exists()
    doc = json.loads(bad.stdout)
    assert doc["error"]["type"] == "hash_mismatch" and doc["error"]["expected"] == sha


def _fifo_feeding(path: Path, data: bytes) -> threading.Thread:
    """``path`` becomes a named pipe that hands out ``data`` exactly once: a second open() would block."""
    os.mkfifo(path)

    def feed() -> None:
        with open(path, "wb") as fh:
            fh.write(data)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_agent_and_model_are_each_read_exactly_once(tmp_path: Path):
    """The zipapp and the model are named pipes that can be read once: the agent still runs and measures, so it
    executed the zipapp bytes it hashed and loaded the model from the bytes it hashed (reading a path a second
    time would hang, and the old launch `python agent.pyz` cannot even open a zipapp from a pipe)."""
    from agent_models import ensure_agent_models

    models = ensure_agent_models()
    for model_file in (models.fp32_tflite, models.fp32_onnx):
        work = tmp_path / model_file.suffix[1:]
        work.mkdir()
        pyz_bytes = build_zipapp(work / "build").read_bytes()
        model_bytes = model_file.read_bytes()
        pyz, model = work / "edgeopt-agent.pyz", work / model_file.name
        feeders = [_fifo_feeding(pyz, pyz_bytes), _fifo_feeding(model, model_bytes)]
        proc = subprocess.run(_launch(pyz, hashlib.sha256(pyz_bytes).hexdigest(), "run", "--model", str(model),
                                      "--sha256", hashlib.sha256(model_bytes).hexdigest(), "--runs", "3",
                                      "--warmup", "1"),
                              capture_output=True, text=True, timeout=120, cwd=work)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
        doc = json.loads(proc.stdout)
        assert doc["latency_ms"]["count"] == 3 and doc["model"]["bytes"] == len(model_bytes)
        assert all(not t.is_alive() for t in feeders)


@pytest.mark.slow
def test_reference_is_read_exactly_once_and_its_hash_is_of_those_bytes(tmp_path: Path):
    """reference.npz as a named pipe readable once: the agent hashes and loads the same bytes (a second read of the
    path would hang), and reports the hash of what it used."""
    from agent_models import ensure_agent_models

    models = ensure_agent_models()
    pyz = build_zipapp(tmp_path / "edgeopt-agent.pyz")
    ref_bytes = models.fp32_reference.read_bytes()
    ref = tmp_path / "reference.npz"
    feeder = _fifo_feeding(ref, ref_bytes)
    model_sha = hashlib.sha256(models.fp32_tflite.read_bytes()).hexdigest()
    proc = subprocess.run(_launch(pyz, hashlib.sha256(pyz.read_bytes()).hexdigest(), "run", "--model",
                                  str(models.fp32_tflite), "--sha256", model_sha, "--reference", str(ref),
                                  "--runs", "3", "--warmup", "1"),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["inputs"]["source"] == "reference" and doc["inputs"]["sha256"] == hashlib.sha256(ref_bytes).hexdigest()
    assert doc["parity"]["artifact"] is not None and not feeder.is_alive()
