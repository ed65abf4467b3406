"""Measuring conditions: control them (cool-down, pinning to the fastest cores, performance governor), watch
them during the timed loop (clock of the cores used, CPU use of other processes) and judge the run's validity.

The before/after *record* (governor, clocks, temperatures, throttle flags, load average) is
``sysinfo.device_state``; this module adds what happens around and during the loop. Standard library only.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Literal, Optional, Tuple

from . import sysinfo
from .timing import Periodic

FREQ_DROP = 0.95  # a reading below 95 % of the highest one seen before it during the loop is a drop
MONITOR_HZ = 5.0


# --- control -----------------------------------------------------------------------------------------------------

def fastest_cpus(root: str, allowed: Optional[List[int]]) -> Tuple[List[int], Dict[str, object]]:
    """The CPUs with the highest ``cpu_capacity`` (arm64 big.LITTLE), else the highest ``cpuinfo_max_freq``,
    among the ``allowed`` ones. All equal: every allowed CPU (nothing to choose)."""
    rows = [r for r in sysinfo.cpufreq_state(root) if allowed is None or r["cpu"] in allowed]
    keys: Tuple[Tuple[Literal["capacity", "max_khz"], str], ...] = (
        ("capacity", "cpu_capacity"), ("max_khz", "cpuinfo_max_freq"))
    for key, by in keys:
        values: Dict[int, int] = {}
        for r in rows:
            value = r[key]
            if value is not None:
                values[r["cpu"]] = value
        if values and len(values) == len(rows):
            top = max(values.values())
            cpus = sorted(c for c, v in values.items() if v == top)
            return cpus, {"by": by, "values": {str(c): v for c, v in sorted(values.items())},
                          "big_little": len(set(values.values())) > 1}
    return sorted(allowed or []), {"by": None, "values": {}, "big_little": None,
                                   "note": "no cpu_capacity or cpuinfo_max_freq: cannot tell the fastest cores"}


class Governor:
    """Sets ``scaling_governor`` on the CPUs' cpufreq policies and restores the previous ones.

    ``apply=False`` creates it without touching anything: call :meth:`apply` inside the ``try`` whose
    ``finally`` calls :meth:`restore`, so a signal (SIGTERM/SIGINT: the agent is being killed) that arrives
    while the governors are being set still restores every one already changed."""

    def __init__(self, root: str, cpus: Optional[List[int]], governor: str, apply: bool = True) -> None:
        self.root = root
        self.governor = governor
        self.cpus = cpus
        self.previous: Dict[int, str] = {}
        self.info: Dict[str, object] = {"requested": governor, "applied": False, "restored": None, "error": None}
        if apply:
            self.apply()

    def apply(self) -> None:
        root, cpus, governor = self.root, self.cpus, self.governor
        rows = [r for r in sysinfo.cpufreq_state(root) if cpus is None or r["cpu"] in cpus]
        if not rows:
            self.info["error"] = "no cpufreq interface under %s" % sysinfo.sys_path(root, "devices/system/cpu")
            return
        errors = []
        for row in rows:
            cpu = row["cpu"]
            path = self._path(cpu)
            avail = _read(os.path.join(os.path.dirname(path), "scaling_available_governors"))
            if avail is not None and governor not in avail.split():
                errors.append("cpu%d: %s not in scaling_available_governors (%s)" % (cpu, governor, avail))
                continue
            old = row["governor"]
            if old == governor:
                continue
            self.previous[cpu] = str(old)  # before the write: restored even if a signal ends the write
            try:
                with open(path, "w") as fh:
                    fh.write(governor)
            except OSError as exc:
                del self.previous[cpu]
                errors.append("cpu%d: %s" % (cpu, exc.strerror or exc))
                continue
        self.info["previous"] = {str(c): g for c, g in sorted(self.previous.items())}
        self.info["applied"] = not errors
        if errors:
            self.info["error"] = ("cannot set the %s governor (%s)%s" % (
                governor, "; ".join(errors[:4]),
                ": not permitted, run the agent as root" if any("ermission" in e or "not permitted" in e
                                                                for e in errors) else ""))

    def _path(self, cpu: int) -> str:
        return sysinfo.sys_path(self.root, "devices/system/cpu/cpu%d/cpufreq/scaling_governor" % cpu)

    def restore(self) -> None:
        if not self.previous:
            return
        ok = True
        for cpu, old in self.previous.items():
            try:
                with open(self._path(cpu), "w") as fh:
                    fh.write(old)
            except OSError:
                ok = False
        self.info["restored"] = ok


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def cooldown(root: str, below_c: float, timeout_s: float, poll_s: float = 0.5) -> Dict[str, object]:
    """Wait (sleeping) until the hottest thermal zone is below ``below_c`` °C, at most ``timeout_s``."""
    t0 = time.monotonic()
    start = sysinfo.hottest_c(root)
    info: Dict[str, object] = {"below_c": below_c, "timeout_s": timeout_s, "start_c": start}
    if start is None:
        info.update({"reached": None, "waited_s": 0.0, "end_c": None, "note": "no thermal zone: nothing to wait for"})
        return info
    hottest: Optional[float] = start
    while hottest is not None and hottest >= below_c and time.monotonic() - t0 < timeout_s:
        time.sleep(min(poll_s, max(0.0, timeout_s - (time.monotonic() - t0))))
        hottest = sysinfo.hottest_c(root)
    info.update({"reached": hottest is not None and hottest < below_c, "waited_s": round(time.monotonic() - t0, 3),
                 "end_c": hottest})
    return info


# --- watching the loop -------------------------------------------------------------------------------------------

def clock_ticks_per_second() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100


def cpu_ticks() -> Optional[Tuple[int, int]]:
    """(busy ticks of the whole machine from /proc/stat, ticks of this process incl. waited-for children).

    The process's own time comes from ``os.times()`` (the times() system call), not /proc/self/stat: under
    qemu-user (an emulated device) /proc/self/stat shows 0 for the emulated process, which made the agent count its
    own work as other load."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    try:
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
        steal = int(fields[8]) if len(fields) > 8 else 0
    except (ValueError, IndexError):
        return None
    own = os.times()
    mine = int(round((own.user + own.system + own.children_user + own.children_system) * clock_ticks_per_second()))
    return user + nice + system + irq + softirq + steal, mine


class OtherLoad:
    """CPU time used by other processes between ``start()`` and ``stop()``, in CPUs (1.0 = one core busy)."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.ticks0: Optional[Tuple[int, int]] = None

    def start(self) -> "OtherLoad":
        self.t0, self.ticks0 = time.monotonic(), cpu_ticks()
        return self

    def stop(self, min_window_s: float = 0.0) -> Optional[float]:
        """None when /proc is missing or the window is shorter than ``min_window_s`` (ticks are 10 ms)."""
        t1, ticks1 = time.monotonic(), cpu_ticks()
        if self.ticks0 is None or ticks1 is None or t1 - self.t0 <= max(min_window_s, 0.0) or t1 <= self.t0:
            return None
        hz = clock_ticks_per_second()
        other = (ticks1[0] - self.ticks0[0]) - (ticks1[1] - self.ticks0[1])
        return round(max(0.0, other / hz / (t1 - self.t0)), 3)


class FreqMonitor:
    """The highest current clock among the cores used, sampled on a background thread during the loop.
    (A throttle caps the whole policy; the highest clock of the cores used is the one the work runs at.)"""

    def __init__(self, root: str, cpus: Optional[List[int]]) -> None:
        self.paths = [sysinfo.sys_path(root, "devices/system/cpu/cpu%d/cpufreq/scaling_cur_freq" % r["cpu"])
                      for r in sysinfo.cpufreq_state(root, cpus) if r["cur_khz"] is not None]
        self.cpus = cpus
        self._sampler: Optional[Periodic] = None
        self.samples: List[Tuple[float, int]] = []

    def _read(self) -> int:
        values = []
        for path in self.paths:
            text = _read(path)
            if text is not None and text.isdigit():
                values.append(int(text))
        if not values:
            raise OSError("no scaling_cur_freq readable")
        return max(values)

    def start(self) -> None:
        if self.paths:
            self._sampler = Periodic(self._read, MONITOR_HZ, "edgeopt-freq").start()

    def stop(self) -> Dict[str, object]:
        if self._sampler is not None:
            self.samples = self._sampler.stop()
        values = [v for _, v in self.samples]
        drop = freq_drop(values)
        return {"cpus": self.cpus, "samples": len(values), "max_khz": max(values) if values else None,
                "min_khz": min(values) if values else None,
                "drop": {"from_khz": drop[0], "to_khz": drop[1]} if drop else None}


def freq_drop(values: List[int], ratio: float = FREQ_DROP) -> Optional[Tuple[int, int]]:
    """(highest so far, lowest after it) when a reading fell below ``ratio`` x the highest before it."""
    peak = None
    worst = None
    for v in values:
        if peak is not None and v < ratio * peak and (worst is None or v < worst[1]):
            worst = (peak, v)
        peak = v if peak is None else max(peak, v)
    return worst


# --- validity ----------------------------------------------------------------------------------------------------

def judge(before: Dict[str, object], after: Dict[str, object], freq: Optional[Dict[str, Any]],
          other_load: Dict[str, Optional[float]], max_other_load: float,
          cooldown_info: Optional[Dict[str, object]]) -> Tuple[List[str], List[str]]:
    """(reasons the run is invalid, notes). Invalid: throttling now (before or after) or newly occurred during
    the run, a clock drop on the cores used, other processes using more than ``max_other_load`` CPUs on average,
    or a requested cool-down that was not reached."""
    reasons: List[str] = []
    notes: List[str] = []
    fb = before.get("throttled_flags") or {}
    fa = after.get("throttled_flags") or {}
    for label, flags in (("before", fb), ("after", fa)):
        now = flags.get("now") if isinstance(flags, dict) else None
        if now:
            reasons.append("throttling %s the run: vcgencmd get_throttled=%s (now: %s)"
                           % (label, (before if label == "before" else after).get("throttled"), ", ".join(now)))
    if isinstance(fa, dict) and fa:
        old = set(fb.get("since_boot") or []) if isinstance(fb, dict) else set()
        new = [f for f in fa.get("since_boot") or [] if f not in old]
        if new:
            reasons.append("%s occurred during the run (vcgencmd get_throttled %s -> %s)"
                           % (", ".join(new), before.get("throttled"), after.get("throttled")))
        if old:
            notes.append("get_throttled already had %s since boot before the run: a new event of that kind during "
                         "the run cannot be seen" % ", ".join(sorted(old)))
    if freq and freq.get("drop"):
        drop = freq["drop"]
        reasons.append("CPU clock dropped during the run on CPUs %s: %s -> %s kHz"
                       % (freq.get("cpus") or "all", drop["from_khz"], drop["to_khz"]))
    for phase, load in other_load.items():
        if load is not None and load > max_other_load:
            reasons.append("other processes used %.2f CPUs on average during the %s (limit %.2f, --max-other-load)"
                           % (load, phase, max_other_load))
    if cooldown_info and cooldown_info.get("reached") is False:
        reasons.append("cool-down to below %s °C not reached within %s s (hottest %s °C)"
                       % (cooldown_info["below_c"], cooldown_info["timeout_s"], cooldown_info["end_c"]))
    return reasons, notes
