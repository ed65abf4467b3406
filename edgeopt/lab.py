"""A device lab for ``edgeopt ci``: ``lab.yaml`` (typed, validated like targets/profiles) and the device lock.

``lab.yaml``::

    devices:                      # each: a target (name or YAML path) plus its connection overrides
      - {name: pi4-a, target: rpi4, host: 10.0.0.7, user: pi, key: ~/.ssh/lab_ed25519}
    models:                       # a model file, `example` (the bundled MNIST CNN), or prebuilt artifacts
      - {name: mnist, path: example}
    profiles: [fp32, int8]
    bench: {runs: 200, warmup: 20, threads: null, retries: 1}
    gates:
      latency: {min_effect: 0.05, alpha: 0.01}
      accuracy: {max_drop: 0.01}
      size: {max_increase: 0.05}

Every error names the file and the field (``lab.yaml: gates.latency.min_efect: unknown field — did you mean
'min_effect'?``).

The lock lives ON THE DEVICE: an atomic ``mkdir <workdir>/lock`` holding ``owner.json`` (host, pid, user, job,
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, field_validator, model_validator

from .config import _Strict, load_model_file
from .errors import ConfigError, RemoteError

# ------------------------------------------------------------------------------------------------------------
# lab.yaml
# ------------------------------------------------------------------------------------------------------------
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class Device(_Strict):
    """One device of the lab: a target (what kind of device) plus how to reach this one."""

    name: str = Field(pattern=_NAME)
    target: str  # target name (targets/*.yaml) or a YAML path (relative to lab.yaml)
    host: str | None = None  # user@host:port also accepted
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    key: str | None = None
    python: str | None = None
    workdir: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    ssh_config: str | None = None
    threads: int | None = Field(default=None, ge=1, le=256)


class LabModel(_Strict):
    """A model of the matrix: ``path`` (a .keras/.h5/.onnx file, a SavedModel dir, or ``example``), or
    ``artifacts``: a directory already holding ``<target>/<profile>/manifest.json`` (built by an earlier step)."""

    name: str = Field(pattern=_NAME)
    path: str | None = "example"
    data: str | None = None  # calibration data for the build
    eval: str | None = None  # evaluation data (accuracy)
    artifacts: str | None = None


class BenchSettings(_Strict):
    runs: int = Field(default=200, ge=1)
    warmup: int = Field(default=20, ge=0)
    min_seconds: float = Field(default=0.0, ge=0)
    threads: int | None = Field(default=None, ge=1, le=256)
    affinity: str | None = None
    timeout: float = Field(default=600.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    retries: int = Field(default=1, ge=0, le=10)  # re-measure a result the agent marked invalid
    max_other_load: float | None = Field(default=None, ge=0)  # passed to the agent (--max-other-load)
    agent_args: list[str] = Field(default_factory=list)  # extra agent options, e.g. ["--governor", "performance"]


class LockSettings(_Strict):
    enabled: bool = True
    stale_after_s: float = Field(default=1800.0, gt=0)  # no heartbeat for this long: the lock is stale
    wait_s: float = Field(default=3600.0, ge=0)  # give up waiting for a busy device after this long
    poll_s: float = Field(default=5.0, gt=0)


class LatencyGateSettings(_Strict):
    min_effect: float = Field(default=0.05, ge=0, lt=10)
    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    method: Literal["both", "mannwhitney", "bootstrap"] = "both"
    bootstrap: int = Field(default=2000, ge=100)
    min_samples: int = Field(default=10, ge=3)
    confirm: int = Field(default=1, ge=0, le=5)  # re-measure a latency regression this often; all must regress


class AccuracyGate(_Strict):
    max_drop: float | None = Field(default=0.01, ge=0, le=1)  # absolute (0.01 = one percentage point)
    min: float | None = Field(default=None, ge=0, le=1)
    source: Literal["build", "device"] = "build"  # the build manifest's eval accuracy or the device's parity


class IncreaseGate(_Strict):
    max_increase: float | None = Field(default=0.05, ge=0)  # relative (0.05 = 5 %)
    max: float | None = Field(default=None, gt=0)  # absolute: bytes / KiB / joules per inference


class Gates(_Strict):
    latency: LatencyGateSettings | None = LatencyGateSettings()
    accuracy: AccuracyGate | None = AccuracyGate()
    size: IncreaseGate | None = IncreaseGate(max_increase=0.05)
    peak_memory: IncreaseGate | None = IncreaseGate(max_increase=0.20)
    energy: IncreaseGate | None = None


class Lab(_Strict):
    name: str
    description: str = ""
    devices: list[Device] = Field(min_length=1)
    models: list[LabModel] = Field(default_factory=lambda: [LabModel(name="example")])
    profiles: list[str] = Field(default_factory=lambda: ["fp32", "int8"], min_length=1)
    formats: list[Literal["tflite", "onnx"]] | None = None
    artifacts: str = "artifacts/ci"  # build output root: <artifacts>/<model>/<target>/<profile>/
    results: str = "results"
    bench: BenchSettings = BenchSettings()
    lock: LockSettings = LockSettings()
    gates: Gates = Gates()
    baseline: str | None = None  # default --baseline
    infra_errors_fail: bool = True  # infrastructure errors make the job fail (exit 2)
    source_file: str | None = None

    @field_validator("profiles", mode="before")
    @classmethod
    def _split_profiles(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _unique(self) -> "Lab":
        for what, names in (("devices", [d.name for d in self.devices]), ("models", [m.name for m in self.models])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what}: names must be unique ({', '.join(dupes)} repeated)")
        return self

    @property
    def base_dir(self) -> Path:
        return Path(self.source_file).resolve().parent if self.source_file else Path.cwd()

    def path(self, value: str | None) -> str | None:
        """A path from the lab file, relative to the file's directory (``~`` expanded); ``None`` stays."""
        if value is None:
            return None
        p = Path(os.path.expanduser(value))
        return str(p if p.is_absolute() else self.base_dir / p)


def load_lab(path: str | Path) -> Lab:
    """Read and validate ``lab.yaml``; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"lab file {path} does not exist", "pass --lab PATH (see examples/lab.yaml)")
    try:
        lab = load_model_file(path, Lab)
    except ConfigError as exc:
        hint = _field_hint(exc.message) if (exc.hint or "").strip() == "allowed fields:" else exc.hint
        raise ConfigError(exc.message, hint) from exc
    from .config import load_profile

    for name in lab.profiles if any(m.artifacts is None for m in lab.models) else []:  # prebuilt: any name
        try:
            load_profile(name)
        except ConfigError as exc:
            raise ConfigError(f"{path}: profiles: {exc.message}", exc.hint) from exc
    return lab


def _field_hint(message: str) -> str | None:
    """'did you mean …?' for an unknown field under an optional section (config's helper sees only plain
    nested models)."""
    import difflib
    import re
    import types
    import typing

    from pydantic import BaseModel

    match = re.search(r": ([A-Za-z0-9_.]+): unknown field", message)
    if not match:
        return None
    cur: Any = Lab
    *parents, last = match.group(1).split(".")
    for part in parents:
        if part.isdigit():
            continue
        field = cur.model_fields.get(part) if isinstance(cur, type) and issubclass(cur, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        options = typing.get_args(ann) if isinstance(ann, types.UnionType) or typing.get_origin(ann) else (ann,)
        nested = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            for a in options:  # list[Device]
                nested += [x for x in typing.get_args(a) if isinstance(x, type) and issubclass(x, BaseModel)]
        if not nested:
            return None
        cur = nested[0]
    allowed = sorted(f for f in cur.model_fields if f != "source_file")
    close = difflib.get_close_matches(last, allowed, n=1)
    return f"did you mean '{close[0]}'?" if close else f"allowed fields: {', '.join(allowed)}"


# ------------------------------------------------------------------------------------------------------------
# The device lock
# ------------------------------------------------------------------------------------------------------------
class LockTimeout(RemoteError):
    """The device stayed locked by another job for longer than we may wait."""


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
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "token": self.token,
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

    def acquire(self) -> "DeviceLock":
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

    def __enter__(self) -> "DeviceLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
