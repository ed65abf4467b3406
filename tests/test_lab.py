"""lab.yaml validation and the device lock (on a real loopback SSH device and locally)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgeopt.config.lab import load_lab
from edgeopt.errors import ConfigError, LockTimeout
from edgeopt.remote.local import LocalTransport
from edgeopt.remote.lock import DeviceLock

LAB = """
name: bench-lab
devices:
  - {name: pi-a, target: rpi4, host: 10.0.0.7, user: pi, key: keys/lab}
  - {name: pi-b, target: rpi5, host: "pi@10.0.0.8:2222"}
models:
  - {name: mnist, path: example}
profiles: fp32,int8
bench: {runs: 50, retries: 2}
gates:
  latency: {min_effect: 0.1}
  energy: {max_increase: 0.1}
"""


def test_lab_loads_into_typed_objects(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(LAB)
    lab = load_lab(path)
    assert [d.name for d in lab.devices] == ["pi-a", "pi-b"] and lab.profiles == ["fp32", "int8"]
    assert lab.bench.runs == 50 and lab.bench.retries == 2 and lab.bench.warmup == 20
    assert lab.gates.latency.min_effect == 0.1 and lab.gates.latency.alpha == 0.01
    assert lab.gates.energy.max_increase == 0.1 and lab.gates.size.max_increase == 0.05
    assert lab.path(lab.devices[0].key) == str(tmp_path / "keys" / "lab")
    assert lab.infra_errors_fail is True and lab.lock.enabled


@pytest.mark.parametrize("text,expected", [
    (LAB.replace("min_effect: 0.1", "min_efect: 0.1"), "gates.latency.min_efect: unknown field"),
    (LAB.replace("retries: 2", "retries: -1"), "bench.retries"),
    (LAB.replace("name: pi-b", "name: pi-a"), "names must be unique (pi-a repeated)"),
    (LAB.replace("profiles: fp32,int8", "profiles: fp32,int9"), "profiles: unknown profile 'int9'"),
    (LAB.replace("devices:", "device:"), "unknown field"),
    (LAB.replace("{name: mnist, path: example}", "{name: 'bad name', path: example}"), "models.0.name"),
])
def test_lab_errors_name_file_and_field(tmp_path, text, expected):
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_lab(path)
    line = info.value.one_line()
    assert str(path) in line and expected in line, line
    if "min_efect" in text:
        assert "did you mean 'min_effect'?" in line


def test_missing_lab_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_lab(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------------------------------------------
# the lock
# ---------------------------------------------------------------------------------------------------------------
def _lock(transport, path, **kw) -> DeviceLock:
    kw.setdefault("wait_s", 0.0)
    kw.setdefault("poll_s", 0.05)
    return DeviceLock(transport, path, **kw)


def test_lock_is_exclusive_and_names_its_owner_over_ssh(sshd):
    from edgeopt.remote.ssh import ConnectionSpec, SSHTransport

    path = f"{sshd.home}/lock-test-{os.getpid()}/lock"
    with SSHTransport(ConnectionSpec(**sshd.connect_kwargs())) as a, \
            SSHTransport(ConnectionSpec(**sshd.connect_kwargs())) as b:
        first = _lock(a, path, job="job-1").acquire()
        owner = json.loads(Path(path, "owner.json").read_text())
        assert owner["job"] == "job-1" and owner["pid"] == os.getpid() and owner["token"] == first.token
        second = _lock(b, path, job="job-2")
        info = second.try_acquire()
        assert info is not None and info.owner["job"] == "job-1" and not second.held
        with pytest.raises(LockTimeout) as exc:
            _lock(b, path, job="job-2", wait_s=0.3).acquire()
        assert "locked by" in exc.value.one_line() and "job job-1" in exc.value.one_line()
        first.release()
        assert not Path(path).exists()
        with _lock(b, path, job="job-2") as again:
            assert again.held and json.loads(Path(path, "owner.json").read_text())["job"] == "job-2"
        assert not Path(path).exists()


def test_waiting_is_bounded_and_resumes_when_released(tmp_path):
    path = str(tmp_path / "lock")
    first = _lock(LocalTransport(), path, job="a").acquire()
    threading.Timer(0.5, first.release).start()
    t0 = time.monotonic()
    second = _lock(LocalTransport(), path, job="b", wait_s=10.0).acquire()
    assert 0.4 < time.monotonic() - t0 < 5 and second.waited_s > 0.4
    second.release()


def test_stale_lock_by_age_is_taken_over(tmp_path):
    path = tmp_path / "lock"
    path.mkdir()
    (path / "owner.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "user": "ci", "job": "old",
                                                 "time": "2020-01-01T00:00:00+00:00", "token": "ab" * 8}))
    old = time.time() - 3600
    os.utime(path / "owner.json", (old, old))
    fresh = _lock(LocalTransport(), str(path), stale_after_s=600.0)
    with pytest.raises(LockTimeout):  # 1 h old but the limit is 2 h: still held
        _lock(LocalTransport(), str(path), stale_after_s=7200.0).acquire()
    fresh.acquire()
    assert fresh.held and fresh.took_over[0]["job"] == "old" and "no heartbeat" in fresh.took_over[0]["reason"]
    fresh.release()


def test_lock_of_a_dead_local_process_is_taken_over(tmp_path):
    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that is gone
    path = tmp_path / "lock"
    path.mkdir()
    import platform

    (path / "owner.json").write_text(json.dumps({"host": platform.node(), "pid": proc.pid, "job": "crashed",
                                                 "token": "cd" * 8}))
    lock = _lock(LocalTransport(), str(path)).acquire()
    assert lock.took_over and "is gone" in lock.took_over[0]["reason"]
    lock.release()


def test_heartbeat_keeps_a_long_held_lock_fresh(tmp_path):
    path = str(tmp_path / "lock")
    holder = _lock(LocalTransport(), path, stale_after_s=2.0).acquire()
    time.sleep(3.0)  # longer than stale_after_s, but the heartbeat (every 0.5 s) keeps it alive
    with pytest.raises(LockTimeout):
        _lock(LocalTransport(), path, stale_after_s=2.0).acquire()
    holder.release()
