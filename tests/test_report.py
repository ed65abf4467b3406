"""edgeopt report over a real stored run (the local target benchmarked for real, plus one failed device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from sshd import free_port

from edgeopt.bench import BenchOptions, bench
from edgeopt.cli import main
from edgeopt.report import render_table, result_row

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stored(example_build, tmp_path_factory) -> dict:
    """A real run: the example's int8 artifacts on this machine (a local target whose blob cache is private)
    and a device that refuses connections."""
    root = tmp_path_factory.mktemp("report")
    built = Path(example_build["out"]) / "local"
    (root / "artifacts").mkdir()
    for name in ("here", "gone"):
        (root / "artifacts" / name).symlink_to(built, target_is_directory=True)
    here = root / "here.yaml"
    here.write_text(json.dumps({"arch": "native", "transport": "local", "formats": ["tflite", "onnx"],
                                "runtimes": ["litert", "onnxruntime"], "connection": {"workdir": str(root / "dev")}}))
    gone = root / "gone.yaml"
    (root / "key").write_text("")
    gone.write_text(json.dumps({"arch": "native", "transport": "ssh", "formats": ["tflite"], "runtimes": ["litert"],
                                "connection": {"host": "127.0.0.1", "port": free_port(), "user": "x",
                                               "key": str(root / "key")}}))
    (root / "ssh_config").write_text("")
    run = bench(BenchOptions(targets=[str(here), str(gone)], artifacts=root / "artifacts", results=root / "results",
                             profiles=["int8"], runs=5, warmup=1, ssh_config=str(root / "ssh_config"),
                             known_hosts=str(root / "known_hosts"), connect_timeout=5.0,
                             agent_cache=root / "agent"))
    return {"root": root, "run": run, "built": built}


def cli(*argv: object) -> int:
    """The real command line (edgeopt.cli.main): parse, call, one line + exit code on an EdgeoptError."""
    return main([str(a) for a in argv])


def test_rows_carry_the_reported_figures(stored):
    run = stored["run"]
    assert run.exit_code == 3  # one device failed
    rows = {(r["target"], r["format"]): result_row(r) for r in run.results}
    ok = rows[("here", "tflite")]
    doc = next(r for r in run.results if r["target"] == "here" and r["format"] == "tflite")
    manifest = json.loads((stored["built"] / "int8" / "manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["format"] == "tflite")
    assert ok["valid"] and ok["status"] == "ok" and ok["profile"] == "int8"
    assert ok["runtime"] == "litert 2.3.0" and ok["bytes"] == art["bytes"]
    assert ok["p50_ms"] == doc["agent"]["latency_ms"]["p50"] and ok["p90_ms"] == doc["agent"]["latency_ms"]["p90"]
    assert ok["init_ms"] == doc["agent"]["latency_ms"]["init"] > 0
    assert ok["peak_rss_kib"] == doc["agent"]["memory"]["peak_rss_kib"] > 0
    assert ok["top1_agreement"] == 1.0 and ok["accuracy"] == art["metrics"]["accuracy"]
    assert rows[("here", "onnx")]["runtime"].startswith("onnxruntime ")
    bad = rows[("gone", "tflite")]
    assert not bad["valid"] and bad["p50_ms"] is None
    assert bad["status"].startswith("FAILED (infrastructure): connection refused")


def test_report_table_latest_run(stored, capsys):
    assert cli("report", "--results", stored["root"] / "results") == 0
    out = capsys.readouterr().out
    assert stored["run"].run_id in out
    for header in ("target", "profile", "format", "runtime", "bytes", "p50 ms", "p90 ms", "init ms", "peak RSS",
                   "parity top-1", "accuracy"):
        assert header in out
    here = [line for line in out.splitlines() if "here" in line and "tflite" in line]
    assert len(here) == 1 and "litert 2.3.0" in here[0] and "1.0000" in here[0] and " ok " in here[0] + " "
    assert "FAILED (infrastructure)" in out and "connection refused" in out


def test_report_json_and_run_selection(stored, capsys):
    results = stored["root"] / "results"
    run_id = stored["run"].run_id
    assert cli("report", "--results", results, "--json", "--run", run_id[:18], "--full") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run"]["run_id"] == run_id and doc["run"]["status"] == "failed"
    assert doc["run"]["summary"]["failed_devices"] == ["gone"]
    assert len(doc["rows"]) == 3 and doc["results"] == stored["run"].results
    assert [r["valid"] for r in doc["rows"]] == [r["valid"] for r in stored["run"].results]
    assert cli("report", "--results", results, "--list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["run_id"] == run_id and listed[0]["results"] == 3 and listed[0]["valid"] == 2


def test_report_errors_are_one_line(tmp_path, stored, capsys):
    assert cli("report", "--results", tmp_path / "empty") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no results store" in err and "edgeopt bench" in err
    assert cli("report", "--results", stored["root"] / "results", "--run", "19990101") == 2
    assert "no run '19990101'" in capsys.readouterr().err


def test_table_marks_random_inputs():
    console = Console(record=True, width=200)
    doc = {"target": "t", "profile": None, "format": "tflite", "valid": True, "error": None,
           "artifact": {"file": "m.tflite", "bytes": 10}, "agent": {"inputs": {"source": "random"}}}
    render_table([doc], console)
    text = console.export_text()
    assert "ok (random inputs)" in text and "m.tflite" in text


def test_table_marks_emulated_devices():
    """A result from an emulated device (flag `emulated`) says so in the status column: its latency is not the
    hardware's."""
    console = Console(record=True, width=250)
    base = {"target": "rpi4", "profile": "int8", "format": "tflite", "valid": True, "error": None,
            "artifact": {"file": "model.tflite", "bytes": 10},
            "agent": {"inputs": {"source": "reference"}, "latency_ms": {"p50": 12.5}}}
    emulated = {**base, "flags": ["emulated"]}
    real = {**base, "target": "pi-real", "flags": []}
    row = result_row(emulated)
    assert row["emulated"] and row["status"] == "emulated — latency is not hardware latency"
    assert not result_row(real)["emulated"] and result_row(real)["status"] == "ok"
    failed = {**emulated, "valid": False, "error": {"kind": "timeout", "message": "killed after 900 s"}}
    assert result_row(failed)["status"].startswith("FAILED (timeout)")
    render_table([emulated, real], console)
    text = console.export_text()
    assert "emulated — latency is not hardware latency" in text
