"""The device lock of ``edgeopt ci``, held ON THE DEVICE: an atomic ``mkdir <workdir>/lock`` holding
``owner.json`` (host, pid, user, job,
time, token). Whoever created the directory owns the device; everyone else waits (bounded), polling. A lock is
stale — and taken over — when its heartbeat (the owner file's mtime on the device's own clock, refreshed while
held) is older than ``stale_after_s``, or when its owner is a process on this host that no longer exists.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable

from edgeopt.errors import LockTimeout, RemoteError

# ------------------------------------------------------------------------------------------------------------
# One shell round trip per attempt: try the atomic mkdir; on success write the owner file; else print the
# current owner and the heartbeat age in seconds (device clock). $1 = lock dir, stdin = owner JSON.
_ACQUIRE = r'''
d="$1"
mkdir -p "$(dirname "$d")" 2>/dev/null
if mkdir "$d" 2>/dev/null; then cat > "$d/owner.json"; echo ACQUIRED; exit 0; fi
cat >/dev/null
now=$(date +%s)
m=$(stat -c %Y "$d/owner.json" 2>/dev/null || stat -c %Y "$d" 2>/dev/null || echo "$now")
echo "BUSY $((now - m))"
cat "$d/owner.json" 2>/dev/null
exit 0
'''
# Take over a stale lock only if it still holds the owner we judged stale ($2 = its token, "" = no owner file).
_STEAL = r'''
d="$1"
cur=$(sed -n 's/.*"token": *"\([0-9a-f]*\)".*/\1/p' "$d/owner.json" 2>/dev/null)
if [ "$cur" = "$2" ] && mv "$d" "$d.stale.$$" 2>/dev/null; then rm -rf "$d.stale.$$"; echo STOLEN; fi
exit 0
'''
_RELEASE = r'''
d="$1"
cur=$(sed -n 's/.*"token": *"\([0-9a-f]*\)".*/\1/p' "$d/owner.json" 2>/dev/null)
if [ "$cur" = "$2" ]; then rm -rf "$d"; echo RELEASED; else echo "NOT-OURS $cur"; fi
'''
_HEARTBEAT = r'''
d="$1"
cur=$(sed -n 's/.*"token": *"\([0-9a-f]*\)".*/\1/p' "$d/owner.json" 2>/dev/null)
[ "$cur" = "$2" ] && touch "$d/owner.json" && echo OK
exit 0
'''


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LockInfo:
    owner: dict[str, Any]
    age_s: float

    def describe(self) -> str:
        o = self.owner
        who = f"{o.get('user', '?')}@{o.get('host', '?')} pid {o.get('pid', '?')}"
        job = f" job {o['job']}" if o.get("job") else ""
        return f"{who}{job} since {o.get('time', '?')} (heartbeat {self.age_s:.0f} s ago)"


class DeviceLock:
    """``with DeviceLock(transport, f"{workdir}/lock", job="ci-123"):`` — hold the device for one job.

    ``transport`` is any Transport (a connection used only by the lock). ``stale_after_s``: a lock whose heartbeat
    is older is taken over; ``wait_s``: wait at most this long for a busy device, then :class:`LockTimeout`.
    While held, a thread refreshes the heartbeat every ``stale_after_s / 4`` s."""

    def __init__(self, transport: Any, path: str, *, job: str | None = None, stale_after_s: float = 1800.0,
                 wait_s: float = 3600.0, poll_s: float = 5.0, on_wait: Callable[[LockInfo], None] | None = None,
                 command_timeout: float = 60.0) -> None:
        self.transport = transport
        self.path = path.rstrip("/")
        self.job = job
        self.stale_after_s = stale_after_s
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.on_wait = on_wait
        self.timeout = command_timeout
        self.token = secrets.token_hex(8)
        self.held = False
        self.waited_s = 0.0
        self.took_over: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._io = threading.Lock()  # the heartbeat thread and release share the transport

    def owner(self) -> dict[str, Any]:
        return {"host": platform.node(), "pid": os.getpid(), "user": getpass.getuser(), "job": self.job,
                "time": datetime.now(UTC).isoformat(timespec="seconds"), "token": self.token,
                "tool": "edgeopt ci"}

    def _sh(self, script: str, *args: str, stdin: bytes | None = None) -> str:
        with self._io:
            result = self.transport.run(["sh", "-c", script, "edgeopt-lock", *args], timeout=self.timeout,
                                        stdin=stdin)
        if result.exit_code != 0:
            raise RemoteError(f"device lock {self.path} on {self.transport.description}: "
                              f"{result.last_error_line() or f'exit status {result.exit_code}'}")
        return result.text

    def _stale(self, info: LockInfo) -> str | None:
        if info.age_s > self.stale_after_s:
            return f"no heartbeat for {info.age_s:.0f} s (> {self.stale_after_s:g} s)"
        pid = info.owner.get("pid")
        if info.owner.get("host") == platform.node() and isinstance(pid, int) and pid != os.getpid() \
                and not _pid_alive(pid):
            return f"its owner (pid {pid} on this host) is gone"
        return None

    def try_acquire(self) -> LockInfo | None:
        """One attempt: ``None`` when acquired, else who holds it (stale locks are taken over first)."""
        text = self._sh(_ACQUIRE, self.path, stdin=json.dumps(self.owner()).encode())
        first, _, rest = text.partition("\n")
        if first.strip() == "ACQUIRED":
            self.held = True
            return None
        try:
            age = float(first.split()[1])
        except (IndexError, ValueError):
            age = 0.0
        try:
            owner = json.loads(rest) if rest.strip() else {}
        except ValueError:
            owner = {"raw": rest[:200]}
        info = LockInfo(owner if isinstance(owner, dict) else {}, age)
        why = self._stale(info)
        if why is None and not owner and age > min(self.stale_after_s, 60.0):
            why = "a lock without an owner file"  # a crash between mkdir and writing the owner
        if why:
            if "STOLEN" in self._sh(_STEAL, self.path, str(info.owner.get("token") or "")):
                self.took_over.append({**info.owner, "reason": why})
            return self.try_acquire() if not self.held else None
        return info

    def acquire(self) -> DeviceLock:
        started = time.monotonic()
        while True:
            info = self.try_acquire()
            if info is None:
                break
            self.waited_s = time.monotonic() - started
            if self.waited_s >= self.wait_s:
                raise LockTimeout(f"{self.transport.description} is busy: locked by {info.describe()}; waited "
                                  f"{self.waited_s:.0f} s",
                                  "raise lock.wait_s in lab.yaml, or remove the lock directory "
                                  f"{self.path} on the device if its owner is gone")
            if self.on_wait:
                self.on_wait(info)
            time.sleep(min(self.poll_s, max(0.05, self.wait_s - self.waited_s)))
        self.waited_s = time.monotonic() - started
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="edgeopt-lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        interval = max(0.5, self.stale_after_s / 4.0)
        while not self._stop.wait(interval):
            try:
                self._sh(_HEARTBEAT, self.path, self.token)
            except Exception:  # a lost link: the measurement fails on its own; the lock expires
                return

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=self.timeout)
            self._beat = None
        if self.held:
            self.held = False
            self._sh(_RELEASE, self.path, self.token)

    def __enter__(self) -> DeviceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
