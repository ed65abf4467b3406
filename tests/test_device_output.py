"""Device output is untrusted (issue 12): capped in size, NaN/Infinity refused, the agent's document checked
against the host's schema, device strings printed as text (never Rich markup), and a stored bad document shown
as invalid by `edgeopt report`, never a crash.

Real transports (a subprocess; a loopback OpenSSH server), the real `edgeopt bench` over SSH against a hostile
"device": its `python:` is a script that answers the agent's `run` with a crafted document (what a compromised or
broken device can print) and hashes files with the real Python.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from sshd import SshServer

from edgeopt.bench import BenchOptions, bench
from edgeopt.bench.schema import schema_problem
from edgeopt.cli import main
from edgeopt.cli.console import BenchLineProgress, CILineProgress, RichProgress
from edgeopt.errors import DeviceOutputError
from edgeopt.remote import DeviceSession, LocalTransport
from edgeopt.remote.ssh import ConnectionSpec, SSHTransport
from edgeopt.remote.transport import STDERR_TAIL, STDOUT_LIMIT
from edgeopt.report import render_table, result_row
from edgeopt.results.reader import document_problem, invalid_reasons, samples, usable
from edgeopt.results.store import open_store

MARKUP = "[/x] [bold]b[/bold] [red]"


def _procs(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmd:
                pids.append(int(entry))
    return pids


def _gone(marker: str, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while _procs(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def ssh(sshd: SshServer, tmp_path: Path):
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    with SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known))) as t:  # type: ignore[arg-type]
        yield t


# ---------------------------------------------------------------------------------------------------------------
# size caps, on both transports
# ---------------------------------------------------------------------------------------------------------------
def _endless(marker: str) -> list[str]:  # prints forever; the marker names it in /proc
    return [sys.executable if marker.startswith("local") else "/usr/bin/python3", "-c",
            "import sys\nwhile True: sys.stdout.buffer.write(b'x' * 65536)", marker]


@pytest.mark.ssh
@pytest.mark.parametrize("where", ["local", "ssh"])
def test_endless_stdout_is_cut_at_the_cap_and_the_command_killed(where: str, ssh: SSHTransport, tmp_path: Path):
    transport = LocalTransport(home=tmp_path) if where == "local" else ssh
    marker = f"{where}-endless-{os.getpid()}-{time.monotonic_ns()}"
    started = time.monotonic()
    with pytest.raises(DeviceOutputError) as info:
        transport.run(_endless(marker), timeout=120)
    assert time.monotonic() - started < 60
    message = info.value.one_line()
    assert f"more than {STDOUT_LIMIT:,} bytes on stdout (killed)" in message and "\n" not in message
    assert _gone(marker), "the command was not killed"


@pytest.mark.ssh
@pytest.mark.parametrize("where", ["local", "ssh"])
def test_stderr_keeps_only_its_tail(where: str, ssh: SSHTransport, tmp_path: Path):
    transport = LocalTransport(home=tmp_path) if where == "local" else ssh
    python = sys.executable if where == "local" else "/usr/bin/python3"
    code = "import sys\nfor i in range(20000): print('line %06d' % i, file=sys.stderr)\nprint('{}')"
    result = transport.run([python, "-c", code], timeout=60)
    assert result.exit_code == 0 and result.stdout == b"{}\n"
    assert 0 < len(result.stderr) <= STDERR_TAIL and result.stderr.endswith(b"line 019999\n")


# ---------------------------------------------------------------------------------------------------------------
# NaN / Infinity
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['{"p50": NaN}', '{"p50": Infinity}', '{"p50": -Infinity}', '{"p50": 1e999}',
                                  'log line\n{"samples": [1, NaN]}'])
def test_non_finite_numbers_in_the_json_are_refused(text: str, tmp_path: Path):
    session = DeviceSession(LocalTransport(home=tmp_path), python=sys.executable)
    with pytest.raises(DeviceOutputError, match="non-finite number"):
        session.run_json(["printf", "%s\n", text], timeout=30)
    assert session.run_json(["printf", "%s\n", '{"p50": 1.5e3}'], timeout=30) == {"p50": 1500.0}


# ---------------------------------------------------------------------------------------------------------------
# the schema, on the host
# ---------------------------------------------------------------------------------------------------------------
GOOD = {"command": "run", "model": {"sha256": "0" * 64}, "valid": True, "invalid_reasons": [],
        "latency_ms": {"p50": 1.0, "p90": 2, "count": 2, "samples": [1.0, 2.0]},
        "parity": {"artifact": {"all_finite": True, "top1_agreement": 1.0}, "accuracy": 0.5},
        "memory": {"peak_rss_kib": 1024}, "runtime": {"name": "litert", "version": "2.3.0", "threads": 1},
        "energy": {"sensor": "none"}, "device": {"emulated": False}, "extra": {"anything": [1, "x"]}}


@pytest.mark.parametrize("path, value, field", [
    (("latency_ms", "p90"), "2.0", "latency_ms.p90"),
    (("latency_ms", "p50"), True, "latency_ms.p50"),
    (("latency_ms", "samples"), [1.0, "x"], "latency_ms.samples.1"),
    (("latency_ms", "samples"), "1,2", "latency_ms.samples"),
    (("invalid_reasons",), [1, 2], "invalid_reasons.0"),
    (("invalid_reasons",), "hot", "invalid_reasons"),
    (("memory", "peak_rss_kib"), {"a": 1}, "memory.peak_rss_kib"),
    (("parity", "artifact"), [], "parity.artifact"),
    (("energy", "energy_per_inference_j"), "1 mJ", "energy.energy_per_inference_j"),
    (("runtime", "name"), 7, "runtime.name"),
    (("valid",), "yes", "valid"),
    (("model",), None, "model"),
])
def test_schema_names_the_first_bad_field(path: tuple[str, ...], value: object, field: str):
    assert schema_problem(GOOD) is None
    doc = json.loads(json.dumps(GOOD))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    problem = schema_problem(doc)
    assert problem is not None and problem.startswith(field + ":"), problem
    assert schema_problem([GOOD]) == "the document is a list, not an object"


# ---------------------------------------------------------------------------------------------------------------
# a hostile device, through the real `edgeopt bench`
# ---------------------------------------------------------------------------------------------------------------
HOSTILE = """#!/bin/sh
# the device's "python": answers the agent's `run` with a crafted document; hashes with the real Python
if [ "$1" = -I ] && [ "$7" = run ]; then  # -I -c <stub> <zipapp> <sha> <package> run …
  kind=$(cat {dir}/kind)
  case "$kind" in
    flood) exec /usr/bin/python3 -c 'import sys
while True: sys.stdout.buffer.write(b"{{" * 65536)' ;;
    *) cat {dir}/"$kind.json"; exit "$(cat {dir}/status)" ;;
  esac
fi
exec /usr/bin/python3 "$@"
"""


def _agent_doc(sha: str, **changes: object) -> dict:
    doc = json.loads(json.dumps(GOOD))
    doc["model"]["sha256"] = sha
    doc.update(changes)
    return doc


@pytest.mark.ssh
@pytest.mark.slow
def test_hostile_device_documents_fail_as_agent_errors_never_crash(sshd: SshServer, tmp_path: Path, capsys):
    from agent_models import ensure_agent_models

    model = ensure_agent_models().fp32_tflite
    import hashlib

    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    device = tmp_path / "device"
    device.mkdir()
    script = device / "python"
    script.write_text(HOSTILE.format(dir=device))
    script.chmod(0o755)
    bad_p90 = _agent_doc(sha, latency_ms={"p50": 1.0, "p90": "fast", "count": 1, "samples": [1.0]})
    cases = {
        "p90": (json.dumps(bad_p90), 0, "latency_ms.p90: expected a number"),
        "reasons": (json.dumps(_agent_doc(sha, invalid_reasons=[1, 2])), 0, "invalid_reasons.0"),
        "nan": (json.dumps(_agent_doc(sha)).replace('"p50": 1.0', '"p50": NaN'), 0, "non-finite number (NaN)"),
        "markup": (json.dumps({"error": {"type": "x", "message": MARKUP, "hint": MARKUP}}), 1, MARKUP),
        "flood": ("", 0, "bytes on stdout (killed)"),
    }
    known = tmp_path / "known_hosts"
    sshd.write_known_hosts(known)
    (tmp_path / "ssh_config").write_text("")
    target = tmp_path / "hostile.yaml"
    target.write_text(json.dumps({
        "arch": "native", "transport": "ssh", "formats": ["tflite"], "runtimes": ["litert"],
        "connection": {"host": sshd.host, "user": sshd.user, "port": sshd.port, "key": str(sshd.client_key),
                       "python": str(script), "workdir": f"{sshd.home}/wd/{tmp_path.name}"}}))
    runs: dict[str, str] = {}
    for kind, (text, status, expected) in cases.items():
        (device / f"{kind}.json").write_text(text + "\n")
        (device / "kind").write_text(kind)
        (device / "status").write_text(str(status))
        run = bench(BenchOptions(targets=[str(target)], models=[model], results=tmp_path / "results", runs=1,
                                 warmup=0, known_hosts=str(known), ssh_config=str(tmp_path / "ssh_config"),
                                 connect_timeout=5.0, timeout=120.0, agent_cache=tmp_path / "agent"))
        doc = run.results[0]
        runs[kind] = run.run_id
        assert run.exit_code == 3 and doc["valid"] is False and doc["agent"] is None, (kind, doc)
        assert doc["error"]["kind"] == "agent" and expected in doc["error"]["message"], (kind, doc["error"])
        assert not _procs(f"{device}/python"), kind
    # the stored run prints, markup and all, as text
    capsys.readouterr()
    assert main(["report", "--results", str(tmp_path / "results"), "--run", runs["markup"]]) == 0
    out = capsys.readouterr().out
    assert "[/x]" in out and "[bold]b[/bold]" in out


# ---------------------------------------------------------------------------------------------------------------
# device strings are text, never markup
# ---------------------------------------------------------------------------------------------------------------
def _failed_doc(message: str) -> dict:
    return {"result_id": "r-1", "run_id": "r", "target": f"dev{MARKUP}", "profile": f"p{MARKUP}", "format": "tflite",
            "valid": False, "error": {"kind": "agent", "message": message}, "transfer": {"total": 0},
            "artifact": {"file": f"m{MARKUP}.tflite", "bytes": 10}, "agent": None}


def test_device_strings_print_literally_in_tables_and_progress_lines():
    doc = _failed_doc(f"boom {MARKUP}")
    console = Console(record=True, width=400)
    render_table([doc], console)  # "[/x]" as markup raises MarkupError
    assert f"boom {MARKUP}" in console.export_text()
    console = Console(record=True, width=400)
    with RichProgress(verbose=True, console=console) as progress:
        progress.device(f"dev{MARKUP}", f"push {MARKUP}")
        progress.upload(f"dev{MARKUP}", f"m{MARKUP}.tflite", 1, 2)
        progress.running(f"dev{MARKUP}", f"p{MARKUP}", 1, 1)
        progress.result(f"dev{MARKUP}", doc)
    assert f"boom {MARKUP}" in console.export_text()
    console = Console(record=True, width=400)
    BenchLineProgress(console, verbose=True).result("dev", doc)
    assert f"boom {MARKUP}" in console.export_text()


# ---------------------------------------------------------------------------------------------------------------
# a stored bad document: shown as invalid, never a crash
# ---------------------------------------------------------------------------------------------------------------
def _stored_bad(tmp_path: Path) -> tuple[Path, str]:
    results = tmp_path / "results"
    good = {"result_id": "run1-dev-001", "run_id": "run1", "created_at": "2026-12-01T00:00:00.000+00:00",
            "target": "dev", "profile": "int8", "format": "tflite", "valid": True, "error": None, "flags": [],
            "artifact": {"file": "model.tflite", "bytes": 10, "sha256": "0" * 64}, "transfer": {"total": 0},
            "agent": _agent_doc("0" * 64)}
    bad_p90 = json.loads(json.dumps(good))
    bad_p90["result_id"] = "run1-dev-002"
    bad_p90["agent"]["latency_ms"]["p90"] = "fast"
    bad_reasons = json.loads(json.dumps(good))
    bad_reasons["result_id"] = "run1-dev-003"
    bad_reasons["agent"]["valid"] = False
    bad_reasons["agent"]["invalid_reasons"] = [1, 2]
    odd = json.loads(json.dumps(good))
    odd["result_id"] = "run1-dev-004"
    odd["error"] = f"a plain string {MARKUP}"
    odd["valid"] = False
    odd["agent"]["latency_ms"]["samples"] = "1,2"
    with open_store(results) as store:
        store.begin_run({"run_id": "run1", "created_at": good["created_at"], "command": "edgeopt bench",
                         "targets": ["dev"]})
        for doc in (good, bad_p90, bad_reasons, odd):
            store.add_result(doc)
        store.finish_run("run1", good["created_at"], "complete", {})
    return results, "run1"


def test_a_stored_bad_document_is_shown_as_invalid_by_report(tmp_path: Path, capsys):
    results, run_id = _stored_bad(tmp_path)
    assert main(["report", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "agent.latency_ms.p90 is a str, not a number" in out
    assert "agent.invalid_reasons holds a int, not a string" in out
    assert f"FAILED (error): a plain string {MARKUP}" in out.replace("\n", "") or "a plain string" in out
    assert main(["report", "--results", str(results), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["valid"] for r in rows] == [True, False, False, False]
    assert rows[1]["p90_ms"] is None and rows[1]["status"].startswith("INVALID DOCUMENT")
    with open_store(results) as store:
        docs = store.results(run_id)
    assert [usable(d) for d in docs] == [True, False, False, False]
    assert invalid_reasons(docs[2]) == ["1", "2"] and samples(docs[3]) == []
    assert document_problem(docs[0]) is None
    lines: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    not_an_object = {**docs[0], "agent": "not an object", "ci": ["x"], "error": None}
    for doc in [*docs, not_an_object]:
        CILineProgress(verbose=True, stream=Sink()).result("dev", doc)
        result_row(doc)
    assert any("a plain string" in line for line in lines)
    assert result_row(not_an_object)["status"] == "INVALID DOCUMENT: agent is a str, not an object"
    assert not usable(not_an_object) and samples(not_an_object) == [] and invalid_reasons(not_an_object) == []
