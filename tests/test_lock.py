"""The device lock (edgeopt/remote/lock.py) locally and over a real loopback sshd: exclusive, bounded waits, stale
locks taken over by exactly one contender, killed and frozen holders, a lost lock noticed by its holder.

The stress tests race threads AND processes on a stale lock planted before every round (the kinds rotate: a beat
too old by the device's uptime, a dead owner process, the older layout with an old mtime, an empty directory left
by a crash, no lock at all). Every holder appends ``enter``/``exit`` records with its token to one log on the
device while it holds the lock; two holders at once show as an ``enter`` while another token is inside.

Run as a script (``python tests/test_lock.py contend|hold TRANSPORT PATH ...``) this file is the contender
process the tests start.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edgeopt.errors import LockLost, LockTimeout, RemoteError
from edgeopt.remote.local import LocalTransport
from edgeopt.remote.lock import DeviceLock, owner_gone, process_identity

HERE = Path(__file__).resolve()
BOOT = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
STALE = 10.0  # stale_after_s of the stress contenders: every planted stale lock is far older


def uptime_cs() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * 100)


def make_transport(spec: dict[str, Any]) -> Any:
    if spec["kind"] == "local":
        return LocalTransport()
    from edgeopt.remote.ssh import ConnectionSpec, SSHTransport

    return SSHTransport(ConnectionSpec(**spec["kwargs"]))


def ssh_spec(sshd) -> dict[str, Any]:
    return {"kind": "ssh", "kwargs": sshd.connect_kwargs()}


def _lock(transport, path, **kw) -> DeviceLock:
    kw.setdefault("wait_s", 0.0)
    kw.setdefault("poll_s", 0.05)
    return DeviceLock(transport, str(path), **kw)


def note(log: str, line: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())  # one O_APPEND write: records of concurrent holders never interleave
    finally:
        os.close(fd)


def contend(transport: Any, path: str, log: str, who: str) -> dict[str, Any]:
    """One contender, one round: try once (taking a stale lock over), hold briefly, release."""
    time.sleep(random.uniform(0, 0.002))  # mix the arrival order of threads and processes
    lock = DeviceLock(transport, path, wait_s=0.0, stale_after_s=STALE, poll_s=0.01)
    try:
        lock.acquire()
    except LockTimeout:
        return {"who": who, "acquired": False, "took_over": len(lock.took_over)}
    note(log, f"enter {lock.token} {who}")
    time.sleep(random.uniform(0, 0.001))
    lock.check()
    note(log, f"exit {lock.token} {who}")
    return {"who": who, "acquired": True, "took_over": len(lock.took_over), "released": lock.release()}


def overlaps(log: str) -> list[str]:
    """Rounds of the log in which a holder entered while another was inside (or left without being inside)."""
    bad, inside, round_ = [], None, "start"
    for line in Path(log).read_text().splitlines():
        what, token, *_ = line.split() + [""]
        if what == "round":
            if inside is not None:
                bad.append(f"{round_}: still held by {inside} when {line} began")
            round_, inside = line, None
        elif what == "enter":
            if inside is not None:
                bad.append(f"{round_}: {token} entered while {inside} held the lock")
            inside = token
        elif what == "exit":
            if inside != token:
                bad.append(f"{round_}: {token} left while {inside} held the lock")
            inside = None
    return bad


def dead_process() -> tuple[int, str]:
    proc = subprocess.Popen(["sleep", "30"])
    start = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    proc.kill()
    proc.wait()
    return proc.pid, start


def plant(path: Path, kind: str, dead: tuple[int, str]) -> None:
    """A lock left behind that every contender must judge stale (or no lock at all)."""
    if path.exists():
        path.rmdir()  # the previous round left the lock free (empty or gone)
    if kind == "free":
        return
    path.mkdir(parents=True)
    token = secrets.token_hex(8)
    owner = {"host": "ghost", "user": "ci", "job": f"stale-{kind}", "token": token, "pid": dead[0]}
    if kind == "legacy":
        (path / "owner.json").write_text(json.dumps(owner))
        old = time.time() - 3600
        os.utime(path / "owner.json", (old, old))
    elif kind in ("uptime", "dead"):
        o = path / f"owner.{token}"
        o.mkdir()
        if kind == "dead":  # same boot and PID namespace as ours: the pid can be judged (it is gone)
            owner.update(boot_id=BOOT, pid_ns=process_identity()["pid_ns"], pid_start=dead[1])
            beat = f"7 {uptime_cs()} {BOOT}"  # a fresh beat: only the dead pid makes it stale
        else:
            owner.update(boot_id="a-foreign-host", pid_ns="pid:[1]")
            beat = f"7 0 {BOOT}"  # written at boot time, this boot: older than STALE by the device's uptime
        (o / "owner.json").write_text(json.dumps(owner))
        (o / "beat").write_text(beat + "\n")


KINDS = ("uptime", "dead", "legacy", "empty", "free")
STEALS = {"uptime": 1, "dead": 1, "legacy": 1, "empty": 0, "free": 0}


def spawn(mode: str, spec: dict[str, Any], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(HERE), mode, json.dumps(spec), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1, cwd=HERE.parent.parent)


def stress(spec: dict[str, Any], path: Path, rounds: int, threads: int, procs: int) -> dict[str, Any]:
    """``rounds`` rounds of ``threads + procs`` contenders on a freshly planted stale lock each."""
    assert uptime_cs() > STALE * 100 * 2
    log = str(path.parent / "holders.log")
    dead = dead_process()
    workers = [spawn("contend", spec, str(path), log) for _ in range(procs)]
    transports = [make_transport(spec) for _ in range(threads)]
    stats: dict[str, Any] = {"rounds": 0, "holds": 0, "wins": {"thread": 0, "process": 0}, "bad_steals": []}
    try:
        with ThreadPoolExecutor(threads) as pool:
            for i in range(rounds):
                kind = KINDS[i % len(KINDS)]
                plant(path, kind, dead)
                note(log, f"round {i} {kind}")
                for w in workers:
                    w.stdin.write("go\n")
                futures = [pool.submit(contend, t, str(path), log, "thread") for t in transports]
                results = [f.result() for f in futures] + [json.loads(w.stdout.readline()) for w in workers]
                stats["rounds"] += 1
                stats["holds"] += sum(r["acquired"] for r in results)
                first = [r for r in results if r["acquired"]]
                for r in first:
                    stats["wins"][r["who"]] += 1
                    assert r["released"], (i, kind, results)
                steals = sum(r["took_over"] for r in results)
                if steals != STEALS[kind] or not first:
                    stats["bad_steals"].append((i, kind, results))
                assert not path.exists() or not any(path.iterdir()), (i, kind, list(path.iterdir()))
    finally:
        for w in workers:
            w.stdin.close()
            w.wait(timeout=30)
        for t in transports:
            t.close()
    stats["overlaps"] = overlaps(log)
    stats["left_behind"] = sorted(p.name for p in path.parent.iterdir() if p.name != "holders.log")
    return stats


# ---------------------------------------------------------------------------------------------------------------
# stress: exactly one holder at every instant, exactly one taker per stale lock
# ---------------------------------------------------------------------------------------------------------------
def stress_lanes(spec: dict[str, Any], root: Path, rounds: int, threads: int, procs: int, lanes: int = 2) -> str:
    """Independent lanes (own lock, own contenders) side by side: the rounds of a loaded machine overlap."""
    with ThreadPoolExecutor(lanes) as pool:
        runs = list(pool.map(lambda i: stress(spec, root / f"lane{i}" / "lock", rounds // lanes, threads, procs),
                             range(lanes)))
    for stats in runs:
        assert stats["overlaps"] == [] and stats["bad_steals"] == [] and stats["left_behind"] == []
    wins = {who: sum(r["wins"][who] for r in runs) for who in ("thread", "process")}
    assert wins["thread"] > 0 and wins["process"] > 0
    return (f"{sum(r['rounds'] for r in runs)} rounds of {threads} threads + {procs} processes on a stale lock, "
            f"{sum(r['holds'] for r in runs)} holds, wins {wins}, 0 with two holders")


def test_stress_local_threads_and_processes_on_a_stale_lock(tmp_path):
    print("local stress:", stress_lanes({"kind": "local"}, tmp_path, rounds=650, threads=2, procs=1))


@pytest.mark.ssh
def test_stress_over_ssh_threads_and_processes_on_a_stale_lock(sshd):
    root = Path(sshd.home) / f"stress-{secrets.token_hex(4)}"
    print("ssh stress:", stress_lanes(ssh_spec(sshd), root, rounds=200, threads=1, procs=2))
    shutil.rmtree(root)


def test_the_overlap_check_sees_two_holders(tmp_path):
    log = str(tmp_path / "log")
    for line in ("round 0 x", "enter a", "exit a", "enter b", "enter c", "exit c", "round 1 x", "enter d"):
        note(log, line)
    assert overlaps(log) == ["round 0 x: c entered while b held the lock"]


# ---------------------------------------------------------------------------------------------------------------
# a killed holder, a frozen holder, a lost lock
# ---------------------------------------------------------------------------------------------------------------
def holder(spec: dict[str, Any], path: Path, *args: str) -> subprocess.Popen[str]:
    proc = spawn("hold", spec, str(path), *args)
    assert proc.stdout.readline().split()[0] == "HELD"
    return proc


def wait_for_takeover(spec: dict[str, Any], path: Path, stale_after_s: float,
                      n: int = 3) -> tuple[list[DeviceLock], list[threading.Thread], str, list[float]]:
    """``n`` waiters (threads, own connections) wait for the lock; each holds it briefly once it is theirs."""
    locks = [_lock(make_transport(spec), path, stale_after_s=stale_after_s, wait_s=30.0, poll_s=0.05)
             for _ in range(n)]
    log = str(path.parent / "waiters.log")
    acquired: list[float] = []

    def wait(lock: DeviceLock) -> None:
        with lock:
            acquired.append(time.monotonic())
            note(log, f"enter {lock.token}")
            time.sleep(0.05)
            note(log, f"exit {lock.token}")

    threads = [threading.Thread(target=wait, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    return locks, threads, log, acquired


@pytest.mark.parametrize("transport", ["local", "ssh"])
def test_a_killed_holder_is_taken_over_by_exactly_one_waiter(tmp_path, sshd, transport):
    spec = {"kind": "local"} if transport == "local" else ssh_spec(sshd)
    root = tmp_path if transport == "local" else Path(sshd.home) / f"kill-{secrets.token_hex(4)}"
    figures = {}
    for foreign in ("", "foreign"):  # same host and PID namespace: the pid is judged; else: its beat stops
        path = root / f"lock{foreign}"
        proc = holder(spec, path, "2.0", foreign)
        locks, threads, log, acquired = wait_for_takeover(spec, path, stale_after_s=2.0)
        time.sleep(0.3)
        assert not any(lock.held for lock in locks)
        killed = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for t in threads:
            t.join(timeout=30)
        first = min(lock.waited_s for lock in locks)
        assert all(not t.is_alive() for t in threads)
        assert sum(len(lock.took_over) for lock in locks) == 1, [lock.took_over for lock in locks]
        assert overlaps(log) == []
        took = next(lock.took_over[0] for lock in locks if lock.took_over)
        figures[foreign or "same-host"] = (round(min(acquired) - killed, 2), took["reason"])
        if foreign:
            # judged by its beat, never by a pid: by the device's uptime clock (the host watches only the beats the
            # device cannot age; before, it could win the race by its round trip's latency)
            assert "no heartbeat" in took["reason"] and "device uptime" in took["reason"], took["reason"]
        else:
            assert "is gone" in took["reason"]
        assert first > 0.2
        for lock in locks:
            lock.transport.close()
    print(f"takeover after SIGKILL ({transport}): {figures}")
    assert figures["same-host"][0] < 5.0  # poll_s, not stale_after_s
    assert 1.0 < figures["foreign"][0] < 8.0  # ~stale_after_s (2 s) since the last beat, + poll


def test_a_frozen_holder_is_taken_over_and_learns_it(tmp_path):
    path = tmp_path / "lock"
    proc = holder({"kind": "local"}, path, "1.5", "foreign")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGSTOP)  # the whole holder stops: its heartbeat too (a suspended VM, a debugger)
    try:
        taker = _lock(LocalTransport(), path, stale_after_s=1.5, wait_s=20.0, poll_s=0.05).acquire()
        assert taker.took_over and "no heartbeat" in taker.took_over[0]["reason"]
        assert time.monotonic() - t0 > 1.4
    finally:
        proc.send_signal(signal.SIGCONT)
    line = proc.stdout.readline().split(maxsplit=1)
    assert line[0] == "LOST", line  # the holder's next check after waking up says so
    assert proc.stdout.readline().split() == ["RELEASED", "False"]  # its release leaves the taker's lock alone
    proc.wait(timeout=10)
    assert (path / f"owner.{taker.token}").is_dir() and taker.held and taker.release()


class Freezable:
    """A transport whose commands can be held up (a hung link) or fail (a broken one)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.description = inner, inner.description
        self.frozen, self.failing = threading.Event(), threading.Event()
        self.calls = 0

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> Any:
        self.calls += 1
        while self.frozen.is_set():
            time.sleep(0.01)
        if self.failing.is_set():
            raise RemoteError("connection to test lost while running 'sh'", "check the network")
        return self.inner.run(argv, timeout=timeout, stdin=stdin)


def test_a_frozen_heartbeat_loses_the_lock_and_the_holder_learns_it(tmp_path):
    path = tmp_path / "lock"
    link = Freezable(LocalTransport())
    told: list[tuple[float, str]] = []
    holder_lock = _lock(link, path, stale_after_s=1.2, on_lost=lambda why: told.append((time.monotonic(), why)))
    holder_lock.acquire()
    link.frozen.set()  # the heartbeat hangs: the beat on the device ages
    taker = _lock(LocalTransport(), path, stale_after_s=1.2, wait_s=20.0, poll_s=0.05).acquire()
    taken = time.monotonic()
    assert taker.took_over and "device uptime" in taker.took_over[0]["reason"]
    # the holder was told at 0.75 * stale_after_s, before anyone could take the lock
    assert told and told[0][0] < taken and "no heartbeat confirmed" in told[0][1]
    assert holder_lock.lost and not holder_lock.held
    with pytest.raises(LockLost) as exc:
        holder_lock.check()
    assert exc.value.one_line().startswith("lost the device lock") and " — " in exc.value.one_line()
    link.frozen.clear()
    assert holder_lock.release() is False  # not ours any more: the taker's lock is left intact
    assert (path / f"owner.{taker.token}").is_dir() and taker.held
    assert taker.release() and not path.exists()


def test_a_failing_heartbeat_keeps_trying_and_the_holder_learns_a_takeover(tmp_path):
    path = tmp_path / "lock"
    link = Freezable(LocalTransport())
    lock = _lock(link, path, stale_after_s=4.0).acquire()
    link.failing.set()  # a short outage (< 0.75 * stale_after_s): the heartbeat carries on afterwards
    time.sleep(0.7)
    link.failing.clear()
    before = link.calls
    time.sleep(2.5)  # margins for a loaded CI machine: beats come every stale_after_s / 4
    assert link.calls > before and lock.held
    shutil.move(str(path / f"owner.{lock.token}"), str(tmp_path / "gone"))  # removed on the device by hand
    deadline = time.monotonic() + 10
    while not lock.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.lost and "taken over or removed" in lock.lost_reason
    assert lock.release() is False


def test_release_of_a_lock_that_is_no_longer_ours_leaves_the_new_owner_alone(tmp_path):
    path = tmp_path / "lock"
    old = _lock(LocalTransport(), path, stale_after_s=1.0, heartbeat=False).acquire()
    time.sleep(1.3)  # no heartbeat: stale by the device's uptime
    new = _lock(LocalTransport(), path, stale_after_s=1.0).acquire()
    assert new.took_over[0]["token"] == old.token and old.lost
    assert old.release() is False
    assert [p.name for p in path.iterdir()] == [f"owner.{new.token}"] and new.held
    assert new.release() is True and not path.exists()


# ---------------------------------------------------------------------------------------------------------------
# judging staleness
# ---------------------------------------------------------------------------------------------------------------
def test_a_stale_lock_is_judged_and_taken_in_one_round_trip(tmp_path):
    path = tmp_path / "lock"
    plant(path, "uptime", dead_process())
    link = Freezable(LocalTransport())
    lock = _lock(link, path, stale_after_s=STALE).acquire()
    assert link.calls == 1 and lock.took_over[0]["job"] == "stale-uptime"
    lock.release()


def test_lock_age_uses_the_device_uptime_not_its_clock(tmp_path):
    path = tmp_path / "lock"
    first = _lock(LocalTransport(), path, stale_after_s=600.0).acquire()
    owner_dir = path / f"owner.{first.token}"
    jumped = time.time() - 7200  # NTP stepped the clock 2 h forward: every mtime looks 2 h old
    for p in (owner_dir, owner_dir / "beat", owner_dir / "owner.json"):
        os.utime(p, (jumped, jumped))
    assert _lock(LocalTransport(), path, stale_after_s=600.0).try_acquire() is not None
    first.release()


def test_a_beat_from_an_earlier_boot_is_taken_after_watching_it_stand_still(tmp_path):
    path = tmp_path / "lock"
    token = secrets.token_hex(8)
    (path / f"owner.{token}").mkdir(parents=True)
    (path / f"owner.{token}" / "owner.json").write_text(json.dumps({"job": "before-reboot", "token": token}))
    (path / f"owner.{token}" / "beat").write_text("3 100 an-earlier-boot\n")  # no uptime age across boots
    t0 = time.monotonic()
    lock = _lock(LocalTransport(), path, stale_after_s=1.0, wait_s=10.0, poll_s=0.1).acquire()
    assert time.monotonic() - t0 > 0.9 and "watched from here" in lock.took_over[0]["reason"]
    lock.release()


def test_pid_liveness_counts_only_in_our_boot_and_pid_namespace():
    pid, start = dead_process()
    me = process_identity()
    same = {"pid": pid, "pid_start": start, "boot_id": me["boot_id"], "pid_ns": me["pid_ns"], "host": "x"}
    assert "is gone" in owner_gone(same)
    assert owner_gone({**same, "pid_ns": "pid:[4026532999]"}) is None  # a container: same host name, other pids
    assert owner_gone({**same, "boot_id": "another-kernel"}) is None
    assert owner_gone({**same, "pid": os.getpid(), "pid_start": me["pid_start"]}) is None  # alive
    assert "another process" in owner_gone({**same, "pid": os.getpid(), "pid_start": "1"})  # pid reused
    assert owner_gone({"pid": pid, "host": "x"}) is None  # the older owner file: no identity, never judged


def test_the_scripts_run_under_busybox_sh(tmp_path):
    busybox = shutil.which("busybox")
    # scripts/system-deps.sh installs busybox: missing here is a broken set-up, never a silent skip
    assert busybox is not None, "busybox is not installed: run scripts/system-deps.sh (apt-get install -y busybox)"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for applet in ("sh", "mkdir", "mv", "rm", "rmdir", "stat", "date"):
        (bin_dir / applet).symlink_to(busybox)

    class Busybox(LocalTransport):
        def run(self, argv, timeout, stdin=None):
            return super().run(["env", f"PATH={bin_dir}", str(bin_dir / "sh"), *argv[1:]], timeout, stdin)

    def lane(n: int) -> int:
        path, log, dead = tmp_path / f"lane{n}" / "lock", str(tmp_path / f"lane{n}.log"), dead_process()
        with ThreadPoolExecutor(3) as pool:
            for i, kind in enumerate(KINDS * 15):
                plant(path, kind, dead)
                note(log, f"round {i} {kind}")
                results = list(pool.map(lambda _: contend(Busybox(), str(path), log, "thread"), range(3)))
                assert sum(r["took_over"] for r in results) == STEALS[kind] and any(r["acquired"] for r in results)
        assert overlaps(log) == [] and [p.name for p in path.parent.iterdir()] == []
        return i + 1

    with ThreadPoolExecutor(2) as lanes:
        print(f"busybox stress: {sum(lanes.map(lane, range(2)))} rounds of 3 threads, 0 with two holders")


# ---------------------------------------------------------------------------------------------------------------
# the basics (locally and over ssh)
# ---------------------------------------------------------------------------------------------------------------
def test_lock_is_exclusive_and_names_its_owner_over_ssh(sshd):
    from edgeopt.remote.ssh import ConnectionSpec, SSHTransport

    path = f"{sshd.home}/lock-test-{os.getpid()}/lock"
    with SSHTransport(ConnectionSpec(**sshd.connect_kwargs())) as a, \
            SSHTransport(ConnectionSpec(**sshd.connect_kwargs())) as b:
        first = _lock(a, path, job="job-1").acquire()
        owner = json.loads(Path(path, f"owner.{first.token}", "owner.json").read_text())
        assert owner["job"] == "job-1" and owner["pid"] == os.getpid() and owner["token"] == first.token
        assert owner["boot_id"] == BOOT and owner["pid_ns"]
        second = _lock(b, path, job="job-2")
        info = second.try_acquire()
        assert info is not None and info.owner["job"] == "job-1" and not second.held
        with pytest.raises(LockTimeout) as exc:
            _lock(b, path, job="job-2", wait_s=0.3).acquire()
        assert "locked by" in exc.value.one_line() and "job job-1" in exc.value.one_line()
        assert first.release()
        assert not Path(path).exists()
        with _lock(b, path, job="job-2") as again:
            assert again.held and again.token in os.listdir(path)[0]
        assert not Path(path).exists()


def test_waiting_is_bounded_and_resumes_when_released(tmp_path):
    path = str(tmp_path / "lock")
    first = _lock(LocalTransport(), path, job="a").acquire()
    threading.Timer(0.5, first.release).start()
    t0 = time.monotonic()
    second = _lock(LocalTransport(), path, job="b", wait_s=10.0).acquire()
    assert 0.4 < time.monotonic() - t0 < 5 and second.waited_s > 0.4
    second.release()


def test_stale_lock_of_the_older_layout_by_age_is_taken_over(tmp_path):
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


def test_an_empty_lock_directory_left_by_a_crash_is_free(tmp_path):
    path = tmp_path / "lock"
    path.mkdir()
    lock = _lock(LocalTransport(), str(path)).acquire()
    assert lock.held and not lock.took_over
    lock.release()


def test_heartbeat_keeps_a_long_held_lock_fresh(tmp_path):
    path = str(tmp_path / "lock")
    holder_lock = _lock(LocalTransport(), path, stale_after_s=1.2).acquire()
    time.sleep(1.8)  # longer than stale_after_s, but the heartbeat (every 0.3 s) keeps it alive
    with pytest.raises(LockTimeout):
        _lock(LocalTransport(), path, stale_after_s=1.2).acquire()
    assert holder_lock.held and not holder_lock.lost
    assert holder_lock.release()


# ---------------------------------------------------------------------------------------------------------------
# the contender processes
# ---------------------------------------------------------------------------------------------------------------
class ForeignOwner(DeviceLock):
    """An owner whose process cannot be judged from here (another machine): only its heartbeat tells."""

    def owner(self) -> dict[str, Any]:
        return {**super().owner(), "boot_id": "another-machine", "pid_ns": "pid:[1]"}


def main(mode: str, spec: str, path: str, *args: str) -> None:
    transport = make_transport(json.loads(spec))
    if mode == "contend":  # one round per "go" line on stdin, one JSON line back
        for _ in sys.stdin:
            print(json.dumps(contend(transport, path, args[0], "process")), flush=True)
    elif mode == "hold":  # hold until killed; report a loss (checked every 50 ms) and the release
        cls = ForeignOwner if args[1:] and args[1] else DeviceLock
        lock = cls(transport, path, stale_after_s=float(args[0]), wait_s=0.0).acquire()
        print("HELD", lock.token, flush=True)
        while True:
            try:
                lock.check()
            except LockLost as exc:
                print("LOST", exc.one_line(), flush=True)
                print("RELEASED", lock.release(), flush=True)
                return
            time.sleep(0.05)
    transport.close()


if __name__ == "__main__":
    main(*sys.argv[1:])


def test_results_measured_under_a_lost_lock_become_infrastructure_errors(tmp_path):
    """edgeopt ci's device worker: once another job took the device over, the results measured since cannot be
    trusted (the two jobs may have run at once): they are re-stored as infrastructure errors."""
    from edgeopt.bench import BenchOptions, SilentProgress
    from edgeopt.bench.worker import RunContext
    from edgeopt.ci.run import void_if_lock_lost

    stored: list[dict] = []
    ctx = RunContext(BenchOptions(), "run-1", tmp_path / "agent.pyz", "0" * 64, stored.append, SilentProgress())
    path = tmp_path / "lock"
    old = _lock(LocalTransport(), path, stale_after_s=1.0, heartbeat=False).acquire()
    info: dict = {"lock": {"path": str(path)}}
    docs = [{"result_id": "r-1", "valid": True, "error": None}, {"result_id": "r-2", "valid": False,
                                                                  "error": {"kind": "agent", "message": "x"}}]
    assert void_if_lock_lost(old, ctx, docs, info) is False and docs[0]["valid"] and stored == []
    time.sleep(1.3)
    new = _lock(LocalTransport(), path, stale_after_s=1.0).acquire()  # another job takes the device over
    assert void_if_lock_lost(old, ctx, docs, info) is True
    assert docs[0]["valid"] is False and docs[0]["error"]["kind"] == "infrastructure"
    assert "lost the device lock" in docs[0]["error"]["message"] and docs[0]["error"]["stage"] == "lock"
    assert docs[1]["error"]["kind"] == "agent"  # already failed: left as it was
    assert [d["result_id"] for d in stored] == ["r-1"] and info["lock"]["lost"]
    new.release()
