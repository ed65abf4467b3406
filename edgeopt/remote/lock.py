"""The device lock of ``edgeopt ci``, held ON THE DEVICE; acquire, take-over and release are each one atomic step.

``<workdir>/lock`` held by the job with token T holds one entry, the directory ``owner.T/``: ``owner.json`` (host,
user, job, time, token, and the owner process's identity: pid, its start time, PID namespace, kernel boot id) and
``beat`` (``<count> <device uptime, 1/100 s> <device boot id>``, rewritten by the heartbeat). Missing or empty: free.

* acquire: stage ``lock.new.T/lock/owner.T/{owner.json,beat}`` complete, then ``mv lock.new.T/lock <parent>/`` —
  one ``rename(2)``, which fails unless ``lock`` is missing or empty: the owner file exists before the lock does.
* take-over: ``mv lock/owner.T lock.dead.U.owner.T`` — one rename of the token-named entry, judged stale in the same
  shell script; once moved it cannot be moved again, so of several takers exactly one succeeds, and a late taker
  can never touch the next owner's ``owner.V``. Release: ``rmdir lock/owner.T`` (emptied first): only ever T's.
* heartbeat: writes ``lock/owner.T/beat.new`` and renames it over ``beat``; both fail once ``owner.T`` is gone,
  which is how the holder learns that it lost the lock (:attr:`DeviceLock.lost`, :meth:`DeviceLock.check`).

Stale: the beat is older than ``stale_after_s`` by the device's ``/proc/uptime`` (monotonic: NTP steps on a Pi
without RTC do not count; same boot only); or the host watched the beat stand still for ``stale_after_s`` on its own
monotonic clock (no ``/proc/uptime``, a beat from an earlier boot); or the owner process is gone, judged only in our
own kernel boot and PID namespace (containers share host names, not these) — the host-side judgements take over in
a second round trip, only if the beat is still the one judged. The older ``lock/owner.json``: mtime, device clock.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import platform
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

from edgeopt.errors import LockLost, LockTimeout, RemoteError

# POSIX sh (dash, busybox ash). $1 = lock dir, $2 = our token; $now = device uptime in 1/100 s ("" if unknown).
_PRELUDE = r'''
d=$1 me=$2 now= boot=
[ -r /proc/uptime ] && read -r now _ </proc/uptime
case $now in *[!0-9.]*|*.*.*) now= ;; [0-9]*.[0-9][0-9]) now=$(( ${now%.*}*100 + 1${now#*.} - 100 )) ;; *) now= ;; esac
[ -r /proc/sys/kernel/random/boot_id ] && read -r boot </proc/sys/kernel/random/boot_id
'''
# $3 = owner JSON, $4 = stale after (1/100 s), $5/$6 = an owner the host judged stale and the beat it saw,
# $7 = "1" on the last attempt (else our staging directory is kept for the next one: fewer processes on the device).
_ACQUIRE = _PRELUDE + r'''
js=$3 st=$4 v=$5 sig=$6 fin=$7 P=${d%/*} B=${d##*/} s="$d.new.$me"
o="$s/$B/owner.$me"
[ -n "$P" ] || P=/
look() {
  kind=free tok= bn= bu= bb= oj= lm= la=
  for h in "$d"/owner.*; do
    [ -d "$h" ] || continue
    kind=held tok=${h##*/owner.}
    { read -r bn bu bb <"$h/beat"; read -r oj <"$h/owner.json" || [ -n "$oj" ]; } 2>/dev/null; return 0
  done
  if [ -f "$d/owner.json" ]; then
    kind=legacy lm=$(stat -c %Y "$d/owner.json" 2>/dev/null) t=$(date +%s)
    { read -r oj <"$d/owner.json" || [ -n "$oj" ]; } 2>/dev/null
    case $lm$t in ''|*[!0-9]*) lm= ;; *) la=$(( t - lm )) ;; esac; return 0
  fi
  for h in "$d"/* "$d"/.[!.]* "$d"/..?*; do if [ -e "$h" ] || [ -L "$h" ]; then kind=other; return 0; fi; done
}
stage() { [ -d "$o" ] || mkdir -p -- "$o" || exit 3; }
take() {  # one rename moves the judged owner out (to our grave): of several takers exactly one succeeds
  mv -- "$1" "$d.dead.$me.${1##*/}" 2>/dev/null && printf 'STOLEN %s %s\nSJSON %s\n' "$2" "$3" "$oj"
}
mine() { for h in "$s" "$d.dead.$me".*; do [ -e "$h" ] && return 0; done; return 1; }
look
if [ -n "$v" ]; then
  if [ "$kind" = held ] && [ "$tok" = "$v" ] && [ "$bn $bu $bb" = "$sig" ]; then take "$d/owner.$tok" host "$tok"; look
  elif [ "$kind" = legacy ] && [ "$v" = legacy ] && [ "$lm" = "$sig" ]; then take "$d/owner.json" host legacy; look; fi
fi
if [ "$kind" = held ] && [ -n "$now" ] && [ -n "$boot" ] && [ "$bb" = "$boot" ]; then
  case $bu in ''|*[!0-9]*|0?*) ;; *) a=$((now-bu)); [ $a -gt $st ] && { take "$d/owner.$tok" uptime $a; look; } ;; esac
fi
if [ "$kind" = legacy ] && [ -n "$la" ] && [ $(( la * 100 )) -gt "$st" ]; then
  take "$d/owner.json" clock $(( la * 100 )); look
fi
if [ "$kind" = free ]; then
  stage
  printf '%s\n' "$js" >"$o/owner.json" && printf '0 %s %s\n' "${now:--}" "${boot:--}" >"$o/beat" || exit 3
  if mv -- "$s/$B" "$P/" 2>/dev/null; then echo ACQUIRED; exit 0; fi
  look
fi
if mine; then if [ -n "$fin" ]; then rm -rf -- "$s" "$d.dead.$me".*; else echo STAGED; fi; fi
printf 'BUSY %s\nNOW %s %s\nJSON %s\n' "$kind" "${now:--}" "${boot:--}" "$oj"
[ "$kind" = held ] && printf 'HELD %s\nBEAT %s %s %s\n' "$tok" "$bn" "$bu" "$bb"
[ "$kind" = legacy ] && printf 'LEGACY %s %s\n' "${lm:--}" "${la:--}"
exit 0
'''
# $3 = beat count. Both the write and the rename fail once owner.$me is gone.
_BEAT = _PRELUDE + r'''
o="$d/owner.$me"
if { printf '%s %s %s\n' "$3" "${now:--}" "${boot:--}" >"$o/beat.new" && mv -f -- "$o/beat.new" "$o/beat"; } 2>/dev/null
then echo OK; elif [ -d "$o" ]; then echo ERROR; else echo LOST; fi
'''
# The atomic step is the rmdir of our token-named entry (emptied first); "$d" goes too if nobody took it since.
_RELEASE = _PRELUDE + r'''
o="$d/owner.$me" s="$d.new.$me"
if [ -d "$o" ]; then
  rm -rf -- "$o/owner.json" "$o/beat" "$o/beat.new" "$s" "$d.dead.$me".*
  e=$(rmdir -- "$o" "$d" 2>&1)
  case $e in *"owner.$me"*) ;; *) echo RELEASED; exit 0 ;; esac
  if [ -d "$o" ] && mv -- "$o" "$s" 2>/dev/null; then  # something unexpected in our entry: move it out whole
    rm -rf -- "$s"; rmdir -- "$d" 2>/dev/null; echo RELEASED; exit 0
  fi
else rm -rf -- "$s" "$d.dead.$me".*
fi
echo NOT-OURS
'''
_UNSTAGE = r'''rm -rf -- "$1.new.$2" "$1.dead.$2".*'''
_TOKEN = re.compile(r"[0-9a-f]{16}")
_LOSE_AT = 0.75  # of stale_after_s without a confirmed beat: the holder counts the lock as lost before anyone may


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _proc_start(pid: int | str) -> tuple[str, str] | None:
    """(state, start time in clock ticks after boot) of a process, from /proc/<pid>/stat."""
    stat = _read(f"/proc/{pid}/stat")
    fields = stat.rsplit(")", 1)[-1].split() if stat else []
    return (fields[0], fields[19]) if len(fields) > 19 else None


def process_identity() -> dict[str, Any]:
    """Who we are, so that another job can tell whether we still run: pid and its start time, valid only within
    the same kernel boot (``boot_id``) and PID namespace (``pid_ns``) — containers share host names, not these."""
    try:
        ns: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = None
    me = _proc_start(os.getpid())
    return {"pid": os.getpid(), "pid_start": me[1] if me else None, "pid_ns": ns,
            "boot_id": _read("/proc/sys/kernel/random/boot_id")}


def owner_gone(owner: dict[str, Any]) -> str | None:
    """Why the owner process is certainly gone, or None (alive, or not ours to judge)."""
    mine, pid = process_identity(), owner.get("pid")
    if not (mine["boot_id"] and mine["pid_ns"] and isinstance(pid, int) and pid > 0) \
            or owner.get("boot_id") != mine["boot_id"] or owner.get("pid_ns") != mine["pid_ns"]:
        return None
    proc = _proc_start(pid)
    if proc is None or proc[0] in ("Z", "X"):
        return f"its owner process (pid {pid}, same boot and PID namespace as ours) is gone"
    if owner.get("pid_start") is not None and proc[1] != owner["pid_start"]:
        return f"its owner process (pid {pid}) is gone; the pid now belongs to another process"
    return None


@dataclass
class LockInfo:
    owner: dict[str, Any]
    age_s: float
    kind: str = "held"  # held | legacy | other | free (changed while we looked)
    token: str = ""
    beat: str = ""  # the heartbeat as seen (the older layout: the owner file's mtime)
    device_age_s: float | None = None  # by the device's uptime (or, older layout, its clock)

    def describe(self) -> str:
        if not (o := self.owner):
            return f"an unreadable lock ({self.kind}; unchanged for {self.age_s:.0f} s)"
        job = f" job {o['job']}" if o.get("job") else ""
        return (f"{o.get('user', '?')}@{o.get('host', '?')} pid {o.get('pid', '?')}{job} since {o.get('time', '?')}"
                f" (heartbeat {self.age_s:.0f} s ago)")


def _parse(text: str) -> tuple[bool, list[dict[str, Any]], LockInfo]:
    acquired, stolen, values = False, [], {}  # type: tuple[bool, list[dict[str, Any]], dict[str, str]]
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if key == "ACQUIRED":
            acquired = True
        elif key == "STOLEN":
            why, _, arg = rest.partition(" ")
            stolen.append({"why": why, "arg": arg})
        elif key == "SJSON" and stolen:
            stolen[-1]["owner"] = _json(rest)
        else:
            values[key] = rest
    now, _, boot = values.get("NOW", "- -").partition(" ")
    info = LockInfo(_json(values.get("JSON", "")), 0.0, kind=values.get("BUSY", "free") or "free",
                    token=values.get("HELD", ""), beat=values.get("BEAT", ""))
    _, up, beat_boot = (info.beat.split(" ", 2) + ["", ""])[:3]
    if info.kind == "held" and now.isdigit() and up.isdigit() and beat_boot == boot and boot != "-":
        info.device_age_s = (int(now) - int(up)) / 100.0
    elif info.kind == "legacy":
        (info.beat, _, age), info.token = values.get("LEGACY", "- -").partition(" "), "legacy"
        info.device_age_s = float(age) if age.lstrip("-").isdigit() else None
    return acquired, stolen, info


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        value = {"raw": text[:200]}
    return value if isinstance(value, dict) else {}


class DeviceLock:
    """``with DeviceLock(transport, f"{workdir}/lock", job="ci-123") as lock: ... lock.check() ...``

    ``transport``: any Transport (a connection used only by the lock). A lock whose beat is older than
    ``stale_after_s`` is taken over; a busy device is waited for at most ``wait_s``, then :class:`LockTimeout`. While
    held, a thread rewrites the beat every ``stale_after_s / 4`` (``heartbeat=False``: none; a hold is then good for
    ``0.75 * stale_after_s``). The holder learns a loss — taken over or removed, or no beat confirmed for
    ``0.75 * stale_after_s``, before anyone may take it — from :attr:`lost` / :attr:`lost_reason`, :meth:`check`
    (raises :class:`LockLost`) and ``on_lost(reason)`` (called once, from the heartbeat thread or whoever noticed)."""

    def __init__(self, transport: Any, path: str, *, job: str | None = None, stale_after_s: float = 1800.0,
                 wait_s: float = 3600.0, poll_s: float = 5.0, on_wait: Callable[[LockInfo], None] | None = None,
                 command_timeout: float = 60.0, on_lost: Callable[[str], None] | None = None,
                 heartbeat: bool = True) -> None:
        self.transport, self.job, self.on_wait, self.on_lost = transport, job, on_wait, on_lost
        self.path = path.rstrip("/") if "/" in path.rstrip("/") else f"./{path}"
        self.stale_after_s, self.wait_s, self.poll_s = stale_after_s, wait_s, poll_s
        self.timeout, self.heartbeat = command_timeout, heartbeat
        self.token, self.waited_s = secrets.token_hex(8), 0.0
        self.took_over: list[dict[str, Any]] = []
        self.lost_reason: str | None = None
        self._acquired = self._staged = False  # _staged: our staging directory is on the device
        self._confirmed = 0.0  # monotonic start of the last round trip that proved the lock ours
        self._seen: dict[str, tuple[str, float]] = {}  # holder token -> (beat as seen, since when, our clock)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._io, self._state = threading.Lock(), threading.Lock()  # _io: the heartbeat and the caller share it

    def owner(self) -> dict[str, Any]:
        return {"host": platform.node(), "user": getpass.getuser(), "job": self.job,
                "time": datetime.now(UTC).isoformat(timespec="seconds"), "token": self.token,
                "tool": "edgeopt ci", **process_identity()}

    def _sh(self, script: str, *args: str) -> str:
        with self._io:
            result = self.transport.run(["sh", "-c", script, "edgeopt-lock", self.path, self.token, *args],
                                        timeout=self.timeout)
        if result.exit_code != 0:
            raise RemoteError(f"device lock {self.path} on {self.transport.description}: "
                              f"{result.last_error_line() or f'exit status {result.exit_code}'}",
                              "check that the lock's directory on the device is writable")
        return result.text

    @property
    def held(self) -> bool:
        """We acquired the lock and, as far as we know, it is still ours."""
        return self._acquired and not self.lost

    @property
    def lost(self) -> bool:
        if self.lost_reason is None and self._acquired and self._overdue():
            self._lose(f"no heartbeat confirmed for {time.monotonic() - self._confirmed:.1f} s (the lock goes stale "
                       f"after {self.stale_after_s:g} s): another job may have taken it over")
        return self.lost_reason is not None

    def check(self) -> None:
        """Raise :class:`LockLost` if the lock is no longer (surely) ours; call it before each measurement."""
        if self.lost:
            raise LockLost(f"lost the device lock {self.path} on {self.transport.description}: {self.lost_reason}",
                           "the measurements since the last check may overlap another job's: run again")

    def _overdue(self) -> bool:
        return time.monotonic() - self._confirmed > _LOSE_AT * self.stale_after_s

    def _lose(self, reason: str, definite: bool = False) -> None:
        with self._state:
            first = self.lost_reason is None
            self.lost_reason = reason if first or definite else self.lost_reason
        if first:
            self._stop.set()
            if self.on_lost is not None:
                self.on_lost(reason)

    def _heartbeat(self) -> None:
        """Beat every stale_after_s / 4 (each beat in its own thread, so that a hung link cannot stop the watch)
        and notice, on time, a lease that ran out without a confirmed beat."""
        interval, count, beat = max(0.05, self.stale_after_s / 4.0), 0, None
        due = time.monotonic() + interval
        while not self._stop.wait(max(0.01, min(due, self._confirmed + _LOSE_AT * self.stale_after_s + 0.01)
                                      - time.monotonic())):
            if self.lost:
                return
            if time.monotonic() >= due:
                due = time.monotonic() + interval
                if beat is None or not beat.is_alive():
                    count += 1
                    beat = threading.Thread(target=self._beat_once, args=(count,), daemon=True)
                    beat.start()

    def _beat_once(self, count: int) -> None:
        sent = time.monotonic()
        try:
            answer = self._sh(_BEAT, str(count)).strip()
        except Exception:  # a broken link: the next beat tries again; the lease runs out on its own
            return
        if self._stop.is_set():  # released meanwhile: the answer is about a lock we gave back
            return
        if answer == "OK":  # the beat (written after ``sent``) restarts the device-side age too
            self._confirmed = max(self._confirmed, sent)
        elif answer == "LOST":
            self._lose("the lock was taken over or removed on the device (our owner entry is gone)", True)

    def _judge(self, info: LockInfo) -> str | None:
        """A host-side reason to take over (the device-side ones are judged in the acquire script itself)."""
        if info.kind == "held" and (why := owner_gone(info.owner)):
            return why
        now, key = time.monotonic(), f"{info.kind} {info.token}"
        seen = self._seen.get(key)
        if seen is None or seen[0] != info.beat:
            self._seen = {key: (info.beat, now)}
            info.age_s = info.device_age_s if info.device_age_s is not None else 0.0
            return None
        watched = now - seen[1]
        info.age_s = max(watched, info.device_age_s or 0.0)
        if watched > self.stale_after_s and (info.kind == "legacy"  # a beat aged by the device's uptime is
                                             or info.kind == "held" and info.device_age_s is None):  # judged there
            return f"no heartbeat for {watched:.0f} s (> {self.stale_after_s:g} s, watched from here)"
        return None

    def try_acquire(self, final: bool = True) -> LockInfo | None:
        """One attempt: ``None`` when acquired, else who holds it (stale locks are taken over first).
        ``final=False``: more attempts follow (the staged owner entry stays on the device for them)."""
        victim, sig, host_why = "", "", ""
        for _ in range(3):  # again at once after a host-side judgement, or when the lock changed as we looked
            sent = time.monotonic()
            text = self._sh(_ACQUIRE, json.dumps(self.owner()), str(int(self.stale_after_s * 100)), victim, sig,
                            "1" if final else "")
            acquired, stolen, info = _parse(text)
            self._staged = "\nSTAGED\n" in f"\n{text}"
            for s in stolen:
                age = int(s["arg"]) / 100.0 if s["arg"].isdigit() else 0.0
                clock = "device uptime" if s["why"] == "uptime" else "device clock, older lock layout"
                why = f"no heartbeat for {age:.1f} s (> {self.stale_after_s:g} s, {clock})"
                why = host_why if s["why"] == "host" else why
                self.took_over.append({**s.get("owner", {}), "reason": why})
            if acquired:
                with self._state:
                    self._acquired, self._confirmed, self.lost_reason = True, sent, None
                return None
            host_why = self._judge(info) or ""
            if host_why and (info.kind == "legacy" or _TOKEN.fullmatch(info.token)):
                victim, sig = info.token, info.beat
            elif info.kind != "free":
                return info
        return info

    def acquire(self) -> DeviceLock:
        started = time.monotonic()
        try:
            while (info := self.try_acquire(final=time.monotonic() - started + self.poll_s >= self.wait_s)):
                self.waited_s = time.monotonic() - started
                if self.waited_s >= self.wait_s:
                    raise LockTimeout(f"{self.transport.description} is busy: locked by {info.describe()}; "
                                      f"waited {self.waited_s:.0f} s",
                                      "raise lock.wait_s in lab.yaml, or remove the lock directory "
                                      f"{self.path} on the device if its owner is gone")
                if self.on_wait:
                    self.on_wait(info)
                time.sleep(min(self.poll_s, max(0.01, self.wait_s - self.waited_s)))
        except BaseException:
            if self._staged:  # best effort: leave nothing of ours on the device
                with contextlib.suppress(Exception):
                    self._sh(_UNSTAGE)
            raise
        self.waited_s = time.monotonic() - started
        self._stop.clear()
        if self.heartbeat:
            self._beat = threading.Thread(target=self._heartbeat, name="edgeopt-lock-heartbeat", daemon=True)
            self._beat.start()
        return self

    def release(self) -> bool:
        """Give the lock back if it is still ours (True); a new owner's lock is left alone (False)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=self.timeout)
            self._beat = None
        if not self._acquired:
            return False
        self._acquired = False
        if self._sh(_RELEASE).strip() == "RELEASED":
            return True
        self.lost_reason = self.lost_reason or "the lock was taken over or removed on the device before we released it"
        return False

    def __enter__(self) -> DeviceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

