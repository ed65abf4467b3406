"""Ctrl-C (issue 12): `edgeopt bench` with three loopback OpenSSH devices in the middle of a long measurement gets
SIGINT; it must exit 130 within 5 s, kill the agents on every device (nothing left running), and store the run as
interrupted. The real command in a subprocess, real sshd servers, the real agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bench import agent_processes

from edgeopt.results.store import open_store

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

GOAL_S = 5.0


def interrupt_mid_run(proc: subprocess.Popen, markers: list[str]) -> tuple[float, str]:
    """Once an agent runs on every device (``markers``: their workdirs) and is well into its timed loop, SIGINT
    ``proc``; the seconds it took to exit and its stderr. ``proc`` never outlives this."""
    try:
        deadline = time.monotonic() + 120
        while not all(agent_processes(m) for m in markers):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the agents never started on all three devices"
            time.sleep(0.1)
        time.sleep(1.0)  # well into the timed loop
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        return time.monotonic() - sent, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def lab_targets(tmp_path: Path, servers: list) -> tuple[list[Path], Path, Path, list[str]]:
    known = tmp_path / "known_hosts"
    known.write_text("".join(s.known_hosts_line + "\n" for s in servers))
    config = tmp_path / "ssh_config"
    config.write_text("")
    targets, markers = [], []
    for i, server in enumerate(servers):
        workdir = f"{server.home}/wd/{tmp_path.name}-dev{i}"
        markers.append(workdir)
        path = tmp_path / f"dev{i}.yaml"
        path.write_text(json.dumps({
            "arch": "native", "transport": "ssh", "formats": ["tflite"], "runtimes": ["litert"], "threads": 1,
            "connection": {"host": server.host, "user": server.user, "port": server.port,
                           "key": str(server.client_key), "python": sys.executable, "workdir": workdir}}))
        targets.append(path)
    return targets, known, config, markers


def test_ctrl_c_with_three_devices_mid_run(sshd_factory, tmp_path: Path):
    from agent_models import ensure_agent_models

    model = ensure_agent_models().fp32_tflite
    servers = [sshd_factory(f"interrupt-{i}") for i in range(3)]
    targets, known, config, markers = lab_targets(tmp_path, servers)
    results = tmp_path / "results"
    argv = [sys.executable, "-m", "edgeopt.cli", "bench", str(model), "--results", str(results),
            "--known-hosts", str(known), "--ssh-config", str(config), "--connect-timeout", "5",
            "--runs", "1", "--warmup", "0", "--min-seconds", "300", "--max-runs", str(10**9), "--timeout", "600"]
    for t in targets:
        argv += ["--target", str(t)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    took, err = interrupt_mid_run(proc, markers)
    print(f"Ctrl-C to exit with 3 devices mid-run: {took:.2f} s (goal <= {GOAL_S:g} s)")
    assert proc.returncode == 130, err
    assert took <= GOAL_S, f"exit took {took:.2f} s"
    time.sleep(0.2)
    assert [agent_processes(m) for m in markers] == [[], [], []], "agents left running on the devices"
    text = err
    assert "interrupted" in text and "Traceback" not in text
    with open_store(results) as store:
        run_id = store.latest_run_id()
        assert run_id is not None
        run = store.run(run_id)
        docs = store.results(run_id)
    assert run["status"] == "interrupted"
    assert len(docs) == 3 and all(d["valid"] is False and d["error"]["kind"] == "interrupted" for d in docs)
    assert len({d["target"] for d in docs}) == 3


def test_sigint_handler_only_in_the_main_thread_and_restored():
    """bench() from a worker thread (a library caller) must not touch signal handlers; in the main thread the
    previous handler comes back after the run."""
    import threading

    from edgeopt.bench.run import cancel_on_sigint

    before = signal.getsignal(signal.SIGINT)
    event = threading.Event()
    with cancel_on_sigint(event):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert event.is_set()
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C: out now
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before
    seen: list[bool] = []

    def in_thread() -> None:
        with cancel_on_sigint(threading.Event()):
            seen.append(signal.getsignal(signal.SIGINT) is before)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert seen == [True]


def test_ctrl_c_in_ci_with_three_devices_mid_run(sshd_factory, example_build, tmp_path: Path):
    """`edgeopt ci` likewise: exit 130 within 5 s, agents killed, run stored as interrupted, locks released."""
    servers = [sshd_factory(f"ci-interrupt-{i}") for i in range(3)]
    known = tmp_path / "known_hosts"
    known.write_text("".join(s.known_hosts_line + "\n" for s in servers))
    workdirs = [f"{s.home}/.cache/edgeopt" for s in servers]
    devices = [{"name": f"dev{i}", "target": "local", "host": s.host, "port": s.port, "user": s.user,
                "key": str(s.client_key), "python": sys.executable, "known_hosts": str(known)}
               for i, s in enumerate(servers)]
    lab = tmp_path / "lab.yaml"
    lab.write_text(json.dumps({
        "name": "interrupt", "devices": devices,
        "models": [{"name": "mnist", "artifacts": str(Path(example_build["out"]))}], "profiles": ["int8"],
        "formats": ["tflite"], "results": str(tmp_path / "results"),
        "bench": {"runs": 1, "warmup": 0, "min_seconds": 300, "retries": 0, "connect_timeout": 5},
        "lock": {"poll_s": 0.2, "wait_s": 60}}))
    proc = subprocess.Popen([sys.executable, "-m", "edgeopt.cli", "ci", "--lab", str(lab), "--no-build", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    took, err = interrupt_mid_run(proc, workdirs)
    print(f"edgeopt ci: Ctrl-C to exit with 3 devices mid-run: {took:.2f} s (goal <= {GOAL_S:g} s)")
    assert proc.returncode == 130, err
    assert took <= GOAL_S, f"exit took {took:.2f} s"
    time.sleep(0.2)
    assert [agent_processes(w) for w in workdirs] == [[], [], []], "agents left running on the devices"
    assert "interrupted" in err and "Traceback" not in err
    assert not any(Path(w, "lock").exists() for w in workdirs), "a device lock was left behind"
    with open_store(tmp_path / "results") as store:
        run_id = store.latest_run_id()
        assert run_id is not None and store.run(run_id)["status"] == "interrupted"
