"""Synthetic sysfs trees laid out exactly as the kernel ABI documents them, plus fake ``vcgencmd`` and meter
commands, driven by a helper thread with a known true power.

No machine here has hwmon/powercap/power_supply/thermal/cpufreq, so the agent is pointed at such a tree with
``--sysfs-root ROOT`` (it reads ``ROOT/sys/...``) and at the fake commands with ``PATH``.

``PowerDriver`` plays the hardware: it watches the agent's CPU time (``/proc/PID/schedstat``, ns) and sets the
true power to ``busy_w`` while the agent computes (its CPU use over the last 20 ms >= 30 %) and ``idle_w``
otherwise, 200 times a second. Each update rewrites every registered sensor in its own units (µW, mA/mV, µJ
counter with wrap-around, µA/µV with vendor quirks, PMIC rails, meter output) and appends
``(time.monotonic(), cumulative true joules, watts)`` to a log, so the true energy over any window the agent
reports (its windows are ``time.monotonic`` too) is known exactly.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import deque
from pathlib import Path

# Real Raspberry Pi 5 rails: (name, current index, voltage index, volts, constant amps). VDD_CORE carries the
# variable part of the power; the others are constant. EXT5V and BATT have a voltage only.
PMIC_RAILS = [
    ("3V7_WL_SW", 0, 8, 3.71486300, 0.00390372), ("3V3_SYS", 1, 9, 3.30234800, 0.05562150),
    ("1V8_SYS", 2, 10, 1.79912600, 0.16885820), ("DDR_VDD2", 3, 11, 1.11177500, 0.02049600),
    ("DDR_VDDQ", 4, 12, 0.60292800, 0.0), ("1V1_SYS", 5, 13, 1.10524900, 0.18540960),
    ("0V8_SW", 6, 14, 0.80248200, 0.30599820), ("VDD_CORE", 7, 15, 0.72178200, None),
    ("3V3_DAC", 17, 20, 3.30402300, 0.00048840), ("3V3_ADC", 18, 21, 3.30402300, 0.00042714),
    ("0V8_AON", 16, 19, 0.80248200, 0.00573486), ("HDMI", 22, 23, 5.14800000, 0.02323260),
]
PMIC_VOLT_ONLY = [("EXT5V", 24, 5.14632000), ("BATT", 25, 0.0)]
PMIC_SCALE = 0.25  # the fixed rails scaled so that they stay below the 0.5 W idle power of the tests
PMIC_FIXED_W = sum(v * a * PMIC_SCALE for _, _, _, v, a in PMIC_RAILS if a is not None)


def pmic_text(watts: float) -> str:
    """``vcgencmd pmic_read_adc`` output (real Pi 5 format) whose rails sum to ``watts``."""
    core_v = 0.72178200
    lines = []
    for name, ai, _vi, volts, amps in PMIC_RAILS:
        a = amps * PMIC_SCALE if amps is not None else max(0.0, watts - PMIC_FIXED_W) / core_v
        lines.append("%16s current(%d)=%.8fA" % (name + "_A", ai, a))
    for name, _ai, vi, volts, _amps in PMIC_RAILS:
        lines.append("%16s volt(%d)=%.8fV" % (name + "_V", vi, volts))
    for name, vi, volts in PMIC_VOLT_ONLY:
        lines.append("%16s volt(%d)=%.8fV" % (name + "_V", vi, volts))
    return "\n".join(lines) + "\n"


def write(path: Path, value: object) -> None:
    """Atomic replace (a reader sees the old or the new value, as with sysfs), keeping the file's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text("%s\n" % value)
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)


class SysfsTree:
    """``root/sys/...`` as on a device; ``bin`` holds the fake commands (put it first on PATH)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.sys = self.root / "sys"
        self.bin = self.root / "bin"
        self.state = self.root / "state"
        for d in (self.sys, self.bin, self.state):
            d.mkdir(parents=True, exist_ok=True)
        self.writers: list = []  # callables (watts, joules) -> None, run by the driver at every update

    # --- sensors ---------------------------------------------------------------------------------------------
    def hwmon(self, index: int = 0, name: str = "ina226", mode: str = "power", mv: int = 5000) -> Path:
        """``power1_input`` µW (mode "power") or ``curr1_input`` mA + ``in1_input`` mV (mode "curr_in"; plus the
        shunt voltage ``in0_input``, as the INA2xx driver has it)."""
        dev = self.sys / ("class/hwmon/hwmon%d" % index)
        write(dev / "name", name)
        if mode == "power":
            self.writers.append(lambda w, j: write(dev / "power1_input", int(round(w * 1e6))))
        else:
            write(dev / "in0_input", 2)
            write(dev / "in1_input", mv)
            self.writers.append(lambda w, j: write(dev / "curr1_input", int(round(w / (mv / 1000.0) * 1000))))
        self.writers[-1](0.0, 0.0)
        return dev

    def rapl(self, max_range_uj: int = 262143328850, start_uj: int = 0, name: str = "package-0") -> Path:
        """``intel-rapl:0`` with a cumulative ``energy_uj`` that wraps at ``max_energy_range_uj``; a subzone
        ``intel-rapl:0:0`` (core) that must not be added to its package."""
        zone = self.sys / "class/powercap/intel-rapl:0"
        write(zone / "name", name)
        write(zone / "max_energy_range_uj", max_range_uj)
        sub = self.sys / "class/powercap/intel-rapl:0:0"
        write(sub / "name", "core")
        write(sub / "max_energy_range_uj", max_range_uj)
        self.writers.append(lambda w, j: write(zone / "energy_uj", int(start_uj + j * 1e6) % max_range_uj))
        self.writers.append(lambda w, j: write(sub / "energy_uj", int(start_uj + j * 0.6e6) % max_range_uj))
        for fn in self.writers[-2:]:
            fn(0.0, 0.0)
        return zone

    def battery(self, current_unit: str = "uA", discharge_sign: int = -1, voltage_uv: int = 3_900_000,
                voltage_unit: str = "uV", status: str = "Discharging") -> Path:
        bat = self.sys / "class/power_supply/battery"
        write(bat / "type", "Battery")
        write(bat / "status", status)
        write(self.sys / "class/power_supply/usb/type", "USB")
        v = voltage_uv if voltage_unit == "uV" else voltage_uv // 1000
        write(bat / "voltage_now", v)
        scale = 1e6 if current_unit == "uA" else 1e3
        self.writers.append(lambda w, j: write(bat / "current_now",
                                               int(round(discharge_sign * w / (voltage_uv / 1e6) * scale))))
        self.writers[-1](0.0, 0.0)
        return bat

    def vcgencmd(self, throttled: str = "0x0") -> Path:
        exe = self.bin / "vcgencmd"
        exe.write_text('#!/bin/sh\ncase "$1" in\n'
                       '  pmic_read_adc) cat "%s/pmic.txt" ;;\n'
                       '  get_throttled) echo "throttled=$(cat "%s/throttled")" ;;\n'
                       '  *) echo "error=1 error_msg=\\"Command not registered\\"" >&2; exit 255 ;;\n'
                       'esac\n' % (self.state, self.state))
        exe.chmod(0o755)
        write(self.state / "throttled", throttled)
        self.writers.append(lambda w, j: write(self.state / "pmic.txt", pmic_text(w).rstrip("\n")))
        self.writers[-1](0.0, 0.0)
        return exe

    def meter(self, joules: bool = False) -> Path:
        """An external meter command: prints watts (``2.5``) or cumulative joules (``12.345 J``)."""
        exe = self.bin / "meter"
        exe.write_text('#!/bin/sh\ncat "%s/meter"\n' % self.state)
        exe.chmod(0o755)
        self.writers.append(lambda w, j: write(self.state / "meter", "%.6f J" % (100 + j) if joules else "%.6f" % w))
        self.writers[-1](0.0, 0.0)
        return exe

    # --- state -----------------------------------------------------------------------------------------------
    def cpus(self, max_khz=(1800000, 2400000), capacity=(512, 1024), governor: str = "ondemand") -> None:
        """cpufreq per CPU (``scaling_governor``, ``scaling_cur_freq``, ``cpuinfo_max_freq`` …) and
        ``cpu_capacity`` (big.LITTLE)."""
        for cpu, (mx, cap) in enumerate(zip(max_khz, capacity)):
            d = self.sys / ("devices/system/cpu/cpu%d" % cpu)
            write(d / "cpu_capacity", cap)
            f = d / "cpufreq"
            write(f / "scaling_governor", governor)
            write(f / "scaling_available_governors", "ondemand userspace powersave performance schedutil")
            write(f / "scaling_cur_freq", mx)
            write(f / "cpuinfo_max_freq", mx)
            write(f / "scaling_max_freq", mx)

    def thermal(self, temps_c=(45.0,), types=("cpu-thermal",)) -> None:
        for i, (t, kind) in enumerate(zip(temps_c, types)):
            write(self.sys / ("class/thermal/thermal_zone%d/type" % i), kind)
            write(self.sys / ("class/thermal/thermal_zone%d/temp" % i), int(t * 1000))


class PowerDriver(threading.Thread):
    """The hardware: true power ``busy_w`` while the watched process computes, ``idle_w`` otherwise."""

    def __init__(self, tree: SysfsTree, idle_w: float = 0.5, busy_w: float = 2.5, hz: float = 200.0) -> None:
        super().__init__(daemon=True)
        self.tree = tree
        self.idle_w, self.busy_w, self.period = idle_w, busy_w, 1.0 / hz
        self.pid = None
        self.joules = 0.0
        self.log_t: list = []
        self.log_e: list = []
        self.log_w: list = []
        self.hooks: list = []  # callables (t, busy_seconds) -> None: throttle, cool-down …
        self.busy_since = None
        self._halt = threading.Event()
        self._hz = os.sysconf("SC_CLK_TCK")
        # busy = the main thread got >= 20 % of a CPU over the last 100 ms: smooth enough that a loaded CI machine
        # (the agent descheduled now and then) does not turn the true power into a 200 Hz flicker
        self.window_s = 0.1

    def watch(self, pid: int) -> None:
        self.pid = pid

    def _cpu_seconds(self):
        """CPU time of the watched process's main thread (the one that runs invoke()), in seconds:
        ``/proc/PID/schedstat`` (ns), else utime+stime of the process from ``/proc/PID/stat`` (10 ms ticks)."""
        try:
            with open("/proc/%d/schedstat" % self.pid) as fh:
                return int(fh.read().split()[0]) / 1e9
        except (OSError, IndexError, ValueError):
            pass
        try:
            with open("/proc/%d/stat" % self.pid) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / self._hz
        except (OSError, IndexError, TypeError, ValueError):
            return None

    def run(self) -> None:
        window = deque()
        t_prev = time.monotonic()
        watts = self.idle_w
        while not self._halt.is_set():
            t = time.monotonic()
            self.joules += watts * (t - t_prev)  # the previous power held until now
            t_prev = t
            busy = False
            cpu = self._cpu_seconds() if self.pid else None
            if cpu is not None:
                window.append((t, cpu))
                while window and window[0][0] < t - self.window_s:
                    window.popleft()
                if len(window) > 1 and window[-1][0] - window[0][0] > self.window_s / 2:
                    busy = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) >= 0.2
            watts = self.busy_w if busy else self.idle_w
            self.busy_since = (self.busy_since or t) if busy else None
            for hook in self.hooks:
                hook(t, t - self.busy_since if self.busy_since else 0.0)
            for fn in self.tree.writers:
                fn(watts, self.joules)
            self.log_t.append(t)
            self.log_e.append(self.joules)
            self.log_w.append(watts)
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def energy_at(self, t: float) -> float:
        """True cumulative joules at monotonic time ``t`` (power piecewise constant between updates)."""
        i = bisect.bisect_right(self.log_t, t) - 1
        if i < 0:
            return 0.0
        return self.log_e[i] + self.log_w[i] * (t - self.log_t[i])

    def avg_power(self, t0: float, t1: float) -> float:
        return (self.energy_at(t1) - self.energy_at(t0)) / (t1 - t0)

    def counter_at(self, t: float) -> float:
        """What a cumulative counter file showed at ``t``: the value of the last update before ``t``. This driver
        thread is not real-time (a loaded machine delays it by tens of ms), unlike a hardware counter, so a reader
        of the file sees a stale value; the truth for a counter sensor is what the file held."""
        i = bisect.bisect_right(self.log_t, t) - 1
        return self.log_e[i] if i >= 0 else 0.0

    def avg_counter_power(self, t0: float, t1: float) -> float:
        return (self.counter_at(t1) - self.counter_at(t0)) / (t1 - t0)
