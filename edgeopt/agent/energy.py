"""Energy per inference: sensors, sampling on a background thread, integration, idle baseline.

Each sensor reads the real kernel / firmware interface (units as the kernel ABI documents them):

==============  ====================================================  ==========================================
``rpi5-pmic``   ``vcgencmd pmic_read_adc`` (Raspberry Pi 5)           ``<RAIL>_A current(i)=…A`` and
                                                                      ``<RAIL>_V volt(j)=…V``, paired by rail name
``hwmon``       ``/sys/class/hwmon/hwmonN`` (INA219/226/260/3221 …)   ``power*_input`` µW, or ``curr*_input`` mA
                                                                      × ``in*_input`` mV (same channel number)
``rapl``        ``/sys/class/powercap/intel-rapl:N`` (Intel/AMD)      cumulative ``energy_uj`` µJ, wraps at
                                                                      ``max_energy_range_uj``; root-only >= 5.10
``power-supply``  ``/sys/class/power_supply/*`` type Battery          ``current_now`` µA × ``voltage_now`` µV
                                                                      (vendor unit/sign quirks detected)
``command``     ``--energy-command 'CMD ARGS'`` (external meter)      prints watts (or cumulative joules)
==============  ====================================================  ==========================================

A sensor is either a *power* sensor (``read()`` -> watts now; integrated by trapezoid over the timestamps) or an
*energy* counter (``read()`` -> cumulative joules, unwrapped; integrated by difference). Either way the result
is an average power over the sampled interval, times the duration of the timed loop, divided by the number of
inferences. Standard library only.
"""

from __future__ import annotations

import glob
import math
import os
import re
import shlex
import shutil
import subprocess
import time
from typing import Dict, List, Optional, Sequence, Tuple

from .sysinfo import sys_path
from .timing import Periodic

SENSORS = ("rpi5-pmic", "hwmon", "rapl", "power-supply", "command")
CHOICES = ("auto", "none") + SENSORS
# auto: an external meter when one is given (the user wired it; usually wall power), then board power monitors,
# then the Pi 5 PMIC rails, then RAPL (CPU package only), then a battery (slow fuel-gauge updates).
AUTO_ORDER = ("command", "hwmon", "rpi5-pmic", "rapl", "power-supply")
BASELINE_MAX_SECONDS = 60.0


class SensorUnavailable(Exception):
    """The sensor is not present or cannot be read here (message says why and what to do)."""


class SensorError(Exception):
    """A reading could not be parsed or taken (malformed content, command failure …)."""


def _read_text(path: str) -> str:
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        return fh.read().strip()


def parse_int(text: str, where: str, unit: str) -> int:
    """A sysfs integer; a clear error for anything else."""
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        raise SensorError("%s: expected an integer (%s), got %r" % (where, unit, (text or "")[:80]))


def _read_int(path: str, where: str, unit: str) -> int:
    try:
        text = _read_text(path)
    except OSError as exc:
        raise SensorError("%s: %s" % (where, exc.strerror or exc))
    return parse_int(text, where, unit)


class Sensor:
    name = ""
    kind = "power"  # or "energy"
    default_rate_hz = 50.0
    min_seconds = 1.0  # shortest timed loop that the sensor resolves well (extends --min-seconds)
    covers = ""

    def __init__(self) -> None:
        self.quirks: List[str] = []
        self.warnings: List[str] = []
        self.details: Dict[str, object] = {}

    def read(self) -> float:
        raise NotImplementedError


# --- Raspberry Pi 5 PMIC -----------------------------------------------------------------------------------------

_PMIC_LINE = re.compile(r"^(?P<rail>[A-Za-z0-9_]+)_(?P<kind>[AV])\s+(?P<what>current|volt)\((?P<idx>\d+)\)="
                        r"(?P<val>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?P<unit>[AV])$")


def parse_pmic_adc(text: str) -> Dict[str, Dict[str, float]]:
    """``vcgencmd pmic_read_adc`` output -> ``{rail: {"A": amps, "V": volts}}`` (either key may be missing).
    Lines that look like readings but do not parse raise SensorError; other lines are ignored."""
    rails: Dict[str, Dict[str, float]] = {}
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _PMIC_LINE.match(line)
        if m is None:
            if "current(" in line or "volt(" in line or re.match(r"^\S+_[AV]\s", line):
                raise SensorError("vcgencmd pmic_read_adc: cannot parse line %r" % line[:120])
            continue
        if (m.group("kind") == "A") != (m.group("what") == "current") or m.group("kind") != m.group("unit"):
            raise SensorError("vcgencmd pmic_read_adc: inconsistent units in line %r" % line[:120])
        rails.setdefault(m.group("rail"), {})[m.group("kind")] = float(m.group("val"))
    if not any("A" in r and "V" in r for r in rails.values()):
        raise SensorError("vcgencmd pmic_read_adc printed no rail with both a current (_A) and a voltage (_V): %r"
                          % (text or "")[:200])
    return rails


def pmic_power(rails: Dict[str, Dict[str, float]]) -> float:
    """Sum of V·I over the rails that have both."""
    return math.fsum(r["A"] * r["V"] for r in rails.values() if "A" in r and "V" in r)


class Rpi5Pmic(Sensor):
    name = "rpi5-pmic"
    default_rate_hz = 10.0  # one vcgencmd call takes a few ms on a Pi 5
    min_seconds = 2.0

    def __init__(self) -> None:
        super().__init__()
        exe = shutil.which("vcgencmd")
        if exe is None:
            raise SensorUnavailable("vcgencmd is not on PATH (Raspberry Pi firmware tools)")
        self.argv = [exe, "pmic_read_adc"]
        try:
            rails = parse_pmic_adc(self._run())
        except SensorError as exc:
            raise SensorUnavailable(str(exc))
        self.rails = sorted(r for r, v in rails.items() if "A" in v and "V" in v)
        voltage_only = sorted(r for r, v in rails.items() if "A" not in v)
        self.details = {"rails": self.rails, "voltage_only_rails": voltage_only, "command": "vcgencmd pmic_read_adc"}
        self.covers = ("Raspberry Pi 5 PMIC rails (sum of V*I over %d rails: %s); not wall power: %s "
                       "has a voltage but no current reading, USB/HAT loads and PMIC losses are not included"
                       % (len(self.rails), ", ".join(self.rails), ", ".join(voltage_only) or "EXT5V"))

    def _run(self) -> str:
        try:
            out = subprocess.run(self.argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SensorError("vcgencmd pmic_read_adc: %s" % exc)
        if out.returncode != 0:
            raise SensorError("vcgencmd pmic_read_adc exited %d: %s" % (out.returncode, (out.stderr or out.stdout).strip()[:200]))
        return out.stdout

    def read(self) -> float:
        rails = parse_pmic_adc(self._run())
        missing = [r for r in self.rails if not ("A" in rails.get(r, {}) and "V" in rails.get(r, {}))]
        if missing:
            raise SensorError("vcgencmd pmic_read_adc: rails %s disappeared" % ", ".join(missing))
        return math.fsum(rails[r]["A"] * rails[r]["V"] for r in self.rails)


# --- hwmon power monitors ----------------------------------------------------------------------------------------

def _channel_num(path: str, prefix: str) -> int:
    m = re.match(r"^%s(\d+)_input$" % prefix, os.path.basename(path))
    return int(m.group(1)) if m else -1


def hwmon_channels(dev: str) -> List[Tuple[str, ...]]:
    """``[("power", path)]`` for every ``power*_input`` (µW); without them ``[("iv", curr, in)]`` for every
    ``currN_input`` (mA) that has an ``inN_input`` (mV) with the same N (the INA2xx layout: in1 = bus voltage)."""
    power = sorted(glob.glob(os.path.join(dev, "power*_input")), key=lambda p: _channel_num(p, "power"))
    if power:
        return [("power", p) for p in power]
    chans: List[Tuple[str, ...]] = []
    for curr in sorted(glob.glob(os.path.join(dev, "curr*_input")), key=lambda p: _channel_num(p, "curr")):
        volt = os.path.join(dev, "in%d_input" % _channel_num(curr, "curr"))
        if os.path.exists(volt):
            chans.append(("iv", curr, volt))
    return chans


class Hwmon(Sensor):
    name = "hwmon"
    default_rate_hz = 50.0
    min_seconds = 1.0

    def __init__(self, root: str = "/", select: Optional[str] = None) -> None:
        super().__init__()
        candidates = []
        for dev in sorted(glob.glob(sys_path(root, "class/hwmon/hwmon*")),
                          key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or -1)):
            try:
                devname = _read_text(os.path.join(dev, "name"))
            except OSError:
                devname = "?"
            chans = hwmon_channels(dev)
            if chans and (select is None or select in (devname, os.path.basename(dev))):
                candidates.append((dev, devname, chans))
        if not candidates:
            raise SensorUnavailable("no hwmon device with power*_input or curr*_input+in*_input under %s%s"
                                    % (sys_path(root, "class/hwmon"), " named %r" % select if select else ""))
        self.dev, self.devname, self.channels = candidates[0]
        if len(candidates) > 1:
            self.warnings.append("several hwmon power monitors (%s); using %s (%s): choose with --energy-hwmon NAME"
                                 % (", ".join("%s=%s" % (os.path.basename(c[0]), c[1]) for c in candidates),
                                    os.path.basename(self.dev), self.devname))
        labels = []
        for chan in self.channels:
            base = os.path.basename(chan[1]).replace("_input", "")
            try:
                label = _read_text(os.path.join(self.dev, base + "_label"))
            except OSError:
                label = base
            labels.append(label)
        self.details = {"device": os.path.basename(self.dev), "name": self.devname,
                        "channels": [os.path.basename(c[1]) if c[0] == "power" else
                                     "%s*%s" % (os.path.basename(c[1]), os.path.basename(c[2])) for c in self.channels],
                        "labels": labels}
        self.covers = ("hwmon %s (%s), sum of %s: whatever rail the monitor's shunt is wired into"
                       % (os.path.basename(self.dev), self.devname, ", ".join(labels)))
        try:
            self.read()
        except SensorError as exc:
            raise SensorUnavailable(str(exc))

    def read(self) -> float:
        total = 0.0
        for chan in self.channels:
            if chan[0] == "power":
                total += _read_int(chan[1], "%s/%s" % (self.devname, os.path.basename(chan[1])), "µW") / 1e6
            else:
                ma = _read_int(chan[1], "%s/%s" % (self.devname, os.path.basename(chan[1])), "mA")
                mv = _read_int(chan[2], "%s/%s" % (self.devname, os.path.basename(chan[2])), "mV")
                total += ma * mv / 1e6
        return total


# --- RAPL (powercap) -----------------------------------------------------------------------------------------------

def unwrap_delta(prev: int, cur: int, max_range: int) -> int:
    """Counter difference with one wrap-around at ``max_range`` (the kernel's ``max_energy_range_uj``)."""
    delta = cur - prev
    if delta < 0:
        delta += max_range
    return delta


class Rapl(Sensor):
    name = "rapl"
    kind = "energy"
    default_rate_hz = 50.0
    min_seconds = 1.0  # energy_uj updates about every ms; 1 s keeps quantisation far below 1 %

    def __init__(self, root: str = "/") -> None:
        super().__init__()
        base = sys_path(root, "class/powercap")
        zones = []
        for zone in sorted(glob.glob(os.path.join(base, "intel-rapl:*"))):
            if not re.match(r"^intel-rapl:\d+$", os.path.basename(zone)):
                continue  # subzones (core, uncore, dram) are inside their package; -mmio duplicates it
            try:
                name = _read_text(os.path.join(zone, "name"))
            except OSError:
                name = "?"
            zones.append((zone, name))
        if not zones:
            raise SensorUnavailable("no RAPL zone under %s (not Intel/AMD, or the intel_rapl driver is not loaded)" % base)
        psys = [z for z in zones if z[1] == "psys"]
        self.zones = psys or zones  # psys covers the platform and overlaps the packages: alone, or the packages
        self.max_range: List[int] = []
        self.prev: List[int] = []
        for zone, name in self.zones:
            path = os.path.join(zone, "energy_uj")
            try:
                self.max_range.append(parse_int(_read_text(os.path.join(zone, "max_energy_range_uj")),
                                                "%s/max_energy_range_uj" % os.path.basename(zone), "µJ"))
                self.prev.append(parse_int(_read_text(path), "%s/energy_uj" % os.path.basename(zone), "µJ"))
            except PermissionError:
                raise SensorUnavailable(
                    "%s: permission denied: RAPL energy_uj is readable by root only (Linux >= 5.10); run the agent "
                    "as root, or let this user read it (e.g. a udev rule or `sudo chmod o+r %s`)" % (path, path))
            except OSError as exc:
                raise SensorUnavailable("%s: %s" % (path, exc.strerror or exc))
            except SensorError as exc:
                raise SensorUnavailable(str(exc))
            if self.max_range[-1] <= 0:
                raise SensorUnavailable("%s/max_energy_range_uj is %d" % (os.path.basename(zone), self.max_range[-1]))
        self.total_uj = 0
        self.wraps = 0
        names = ["%s (%s)" % (os.path.basename(z), n) for z, n in self.zones]
        self.details = {"zones": names, "max_energy_range_uj": self.max_range}
        self.covers = ("RAPL %s: %s" % (", ".join(names),
                       "the whole platform (psys)" if psys else "CPU package(s) only: cores, caches, uncore, "
                       "integrated GPU; not DRAM (unless in the package domain), disks, fans or PSU losses"))

    def read(self) -> float:
        for i, (zone, _name) in enumerate(self.zones):
            cur = _read_int(os.path.join(zone, "energy_uj"), "%s/energy_uj" % os.path.basename(zone), "µJ")
            if cur < self.prev[i]:
                self.wraps += 1
            self.total_uj += unwrap_delta(self.prev[i], cur, self.max_range[i])
            self.prev[i] = cur
        self.details["wraps"] = self.wraps
        return self.total_uj / 1e6


# --- battery (power_supply) ----------------------------------------------------------------------------------------

def battery_units(current_raw: int, voltage_raw: int) -> Tuple[float, float, List[str]]:
    """Scale factors to A and V from one reading, by magnitude, with the quirks found. The ABI says µA and µV;
    some vendors report mA (|current| < 10000 is below 10 mA in µA, implausible for a running device) or mV."""
    quirks = []
    a_scale = 1e-6
    if 0 < abs(current_raw) < 10000:
        a_scale = 1e-3
        quirks.append("current_now looks like mA, not µA (|%d| < 10000)" % current_raw)
    v = abs(voltage_raw)
    if 1000000 <= v <= 60000000:
        v_scale = 1e-6
    elif 1000 <= v <= 60000:
        v_scale = 1e-3
        quirks.append("voltage_now looks like mV, not µV (%d)" % voltage_raw)
    else:
        raise SensorError("voltage_now %d is neither µV nor mV of a battery (1-60 V)" % voltage_raw)
    return a_scale, v_scale, quirks


class PowerSupply(Sensor):
    name = "power-supply"
    default_rate_hz = 10.0
    min_seconds = 10.0  # fuel gauges refresh current_now about once a second (some slower)

    def __init__(self, root: str = "/", auto: bool = False) -> None:
        super().__init__()
        base = sys_path(root, "class/power_supply")
        found = None
        skipped = []
        for dev in sorted(glob.glob(os.path.join(base, "*"))):
            try:
                kind = _read_text(os.path.join(dev, "type"))
            except OSError:
                continue
            if kind != "Battery":
                continue
            if not (os.path.exists(os.path.join(dev, "current_now")) and os.path.exists(os.path.join(dev, "voltage_now"))):
                skipped.append("%s: no current_now/voltage_now" % os.path.basename(dev))
                continue
            found = dev
            break
        if found is None:
            raise SensorUnavailable("no battery with current_now and voltage_now under %s%s"
                                    % (base, " (%s)" % "; ".join(skipped) if skipped else ""))
        self.dev = found
        bat = os.path.basename(found)
        try:
            self.status = _read_text(os.path.join(found, "status"))
        except OSError:
            self.status = "Unknown"
        try:
            cur = _read_int(os.path.join(found, "current_now"), "%s/current_now" % bat, "µA")
            volt = _read_int(os.path.join(found, "voltage_now"), "%s/voltage_now" % bat, "µV")
            self.a_scale, self.v_scale, quirks = battery_units(cur, volt)
        except SensorError as exc:
            raise SensorUnavailable(str(exc))
        self.quirks.extend(quirks)
        if self.status != "Discharging":
            msg = ("battery %s status is %r: current_now then includes the charger, so V*I is not the device's "
                   "consumption; unplug the charger" % (bat, self.status))
            if auto:
                raise SensorUnavailable(msg)
            self.warnings.append(msg)
        self.sign = 0
        if self.status == "Discharging" and cur != 0:
            self.sign = -1 if cur < 0 else 1
            self.quirks.append("current_now is %s while discharging%s" % (
                "negative" if cur < 0 else "positive",
                " (kernel ABI convention)" if cur < 0 else " (vendor convention; the kernel ABI says negative)"))
        self.sign_flips = 0
        self.details = {"device": bat, "status": self.status,
                        "current_unit": "mA" if self.a_scale == 1e-3 else "µA",
                        "voltage_unit": "mV" if self.v_scale == 1e-3 else "µV"}
        self.covers = ("battery %s (power_supply): everything the battery feeds while discharging, i.e. the whole "
                       "device; fuel gauges update slowly (about 1 s)" % bat)

    def read(self) -> float:
        bat = os.path.basename(self.dev)
        cur = _read_int(os.path.join(self.dev, "current_now"), "%s/current_now" % bat, "µA")
        volt = _read_int(os.path.join(self.dev, "voltage_now"), "%s/voltage_now" % bat, "µV")
        if self.sign and cur and (cur < 0) != (self.sign < 0):
            self.sign_flips += 1
            self.details["sign_flips"] = self.sign_flips  # e.g. a charger plugged in during the run
        return abs(cur) * self.a_scale * abs(volt) * self.v_scale


# --- external meter --------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^(?P<val>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>[WJ])?$")


def parse_meter_output(text: str, joules: bool) -> float:
    """The last non-empty line of the command's stdout: a number, optionally followed by ``W`` or ``J``."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        raise SensorError("energy command printed nothing (expected %s)" % ("joules" if joules else "watts"))
    m = _NUMBER.match(lines[-1])
    if m is None:
        raise SensorError("energy command printed %r, expected a number of %s" % (lines[-1][:80], "joules" if joules else "watts"))
    unit = m.group("unit")
    if unit and unit != ("J" if joules else "W"):
        raise SensorError("energy command printed %r in %s, but %s were expected%s" % (
            lines[-1][:80], unit, "joules" if joules else "watts",
            "" if joules else " (pass --energy-command-joules for a cumulative meter)"))
    value = float(m.group("val"))
    if not math.isfinite(value):
        raise SensorError("energy command printed a non-finite value %r" % lines[-1][:80])
    return value


class Command(Sensor):
    name = "command"
    default_rate_hz = 10.0
    min_seconds = 2.0

    def __init__(self, command: Optional[str], joules: bool = False) -> None:
        super().__init__()
        if not command:
            raise SensorUnavailable("no --energy-command given")
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise SensorUnavailable("--energy-command %r: %s" % (command, exc))
        if not self.argv:
            raise SensorUnavailable("--energy-command is empty")
        exe = shutil.which(self.argv[0])
        if exe is None:
            raise SensorUnavailable("--energy-command: %s not found (not on PATH, or not executable)" % self.argv[0])
        self.argv[0] = exe
        self.joules = joules
        self.kind = "energy" if joules else "power"
        self.last: Optional[float] = None
        try:
            self.read()
        except SensorError as exc:
            raise SensorUnavailable(str(exc))
        self.details = {"command": command, "output": "cumulative joules" if joules else "watts"}
        self.covers = "what the external meter measures (%s), typically the device's supply" % command

    def read(self) -> float:
        try:
            out = subprocess.run(self.argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SensorError("energy command: %s" % exc)
        if out.returncode != 0:
            raise SensorError("energy command exited %d: %s" % (out.returncode, (out.stderr or out.stdout).strip()[:200]))
        value = parse_meter_output(out.stdout, self.joules)
        if self.joules and self.last is not None and value < self.last:
            raise SensorError("energy command: cumulative joules went backwards (%s -> %s)" % (self.last, value))
        self.last = value
        return value


# --- selection ---------------------------------------------------------------------------------------------------

class EnergyOptions:
    def __init__(self, sensor: str = "none", rate_hz: Optional[float] = None, command: Optional[str] = None,
                 command_joules: bool = False, min_seconds: Optional[float] = None, hwmon: Optional[str] = None,
                 root: str = "/") -> None:
        self.sensor = sensor
        self.rate_hz = rate_hz
        self.command = command
        self.command_joules = command_joules
        self.min_seconds = min_seconds
        self.hwmon = hwmon
        self.root = root


def open_sensor(name: str, opts: EnergyOptions, auto: bool = False) -> Sensor:
    if name == "rpi5-pmic":
        return Rpi5Pmic()
    if name == "hwmon":
        return Hwmon(opts.root, opts.hwmon)
    if name == "rapl":
        return Rapl(opts.root)
    if name == "power-supply":
        return PowerSupply(opts.root, auto=auto)
    if name == "command":
        return Command(opts.command, opts.command_joules)
    raise ValueError("unknown sensor %r" % name)


def select(opts: EnergyOptions) -> Tuple[Optional[Sensor], Dict[str, str]]:
    """``(sensor or None, {tried sensor: why not})``. A forced sensor that is unavailable raises
    SensorUnavailable; ``auto`` goes down AUTO_ORDER and returns None when nothing works."""
    if opts.sensor == "none":
        return None, {}
    if opts.sensor != "auto":
        return open_sensor(opts.sensor, opts), {}
    tried: Dict[str, str] = {}
    for name in AUTO_ORDER:
        try:
            return open_sensor(name, opts, auto=True), tried
        except SensorUnavailable as exc:
            tried[name] = str(exc)
    return None, tried


def probe(opts: EnergyOptions) -> List[Dict[str, object]]:
    """Every sensor: available or why not (for ``agent.pyz probe``)."""
    rows: List[Dict[str, object]] = []
    for name in AUTO_ORDER:
        try:
            s = open_sensor(name, opts, auto=False)
            rows.append({"sensor": name, "available": True, "covers": s.covers, "quirks": s.quirks})
        except SensorUnavailable as exc:
            rows.append({"sensor": name, "available": False, "error": str(exc)})
    return rows


# --- integration -------------------------------------------------------------------------------------------------

def summarize_series(samples: Sequence[Tuple[float, float]], kind: str) -> Dict[str, object]:
    """Average power over the sampled span: trapezoid for a power series (from the second reading on: the first
    is taken just before the phase starts), first-to-last difference for a cumulative energy series. ``stderr_w``: standard error of the mean from the sample variance (power samples,
    or the powers of the intervals between counter readings), assuming independent samples."""
    if kind == "power":
        # the first reading is taken just before the measured phase starts (it brackets it for counters);
        # for a power reading it describes what came before, so the average starts with the next one
        samples = samples[1:]
    n = len(samples)
    out: Dict[str, object] = {"samples": n, "span_s": None, "avg_power_w": None, "stderr_w": None}
    if n < 2:
        return out
    ts = [t for t, _ in samples]
    vs = [v for _, v in samples]
    span = ts[-1] - ts[0]
    if span <= 0:
        return out
    if kind == "power":
        area = math.fsum((ts[i + 1] - ts[i]) * (vs[i + 1] + vs[i]) / 2.0 for i in range(n - 1))
        avg = area / span
        values = vs
    else:
        avg = (vs[-1] - vs[0]) / span
        # interval powers for the spread; an interval much shorter than the others (the bracketing reading right
        # after the thread's last one) would turn the counter's quantisation into a huge power: merge it
        gaps = sorted(ts[i + 1] - ts[i] for i in range(n - 1))
        shortest = gaps[(len(gaps) - 1) // 2] / 2.0
        kept = [0]
        for i in range(1, n):
            if ts[i] - ts[kept[-1]] >= shortest or i == n - 1:
                if i == n - 1 and ts[i] - ts[kept[-1]] < shortest and len(kept) > 1:
                    kept[-1] = i
                else:
                    kept.append(i)
        values = [(vs[b] - vs[a]) / (ts[b] - ts[a]) for a, b in zip(kept, kept[1:]) if ts[b] > ts[a]]
    m = len(values)
    if m > 1:
        mean = math.fsum(values) / m
        stderr = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (m - 1) / m)
    else:
        stderr = None
    out.update({"span_s": span, "avg_power_w": avg, "stderr_w": stderr, "rate_hz": (n - 1) / span,
                "window_monotonic": [ts[0], ts[-1]]})
    return out


def _r(value: Optional[float], digits: int = 9) -> Optional[float]:
    return None if value is None else float("%.*g" % (digits, value))


class EnergyMeter:
    """Runs the sensor on a background thread: ``baseline(seconds)`` (idle, before the loop), then
    ``start()``/``stop()`` around the timed loop; ``result(loop_seconds, inferences)`` builds the JSON block."""

    def __init__(self, sensor: Sensor, opts: EnergyOptions, selected_by: str, tried: Dict[str, str]) -> None:
        self.sensor = sensor
        self.rate_hz = opts.rate_hz or sensor.default_rate_hz
        self.min_seconds = sensor.min_seconds if opts.min_seconds is None else opts.min_seconds
        self.selected_by = selected_by
        self.tried = tried
        self.idle: Optional[Dict[str, object]] = None
        self.loop: Optional[Dict[str, object]] = None
        self.errors = 0
        self.first_error: Optional[str] = None
        self._sampler: Optional[Periodic] = None

    def _collect(self, sampler: Periodic) -> Dict[str, object]:
        samples = sampler.stop()
        self.errors += sampler.errors
        self.first_error = self.first_error or sampler.first_error
        return summarize_series(samples, self.sensor.kind)

    def baseline(self, seconds: float) -> None:
        sampler = Periodic(self.sensor.read, self.rate_hz, "edgeopt-energy-idle").start()
        time.sleep(max(0.0, seconds))
        self.idle = self._collect(sampler)

    def start(self) -> None:
        self._sampler = Periodic(self.sensor.read, self.rate_hz, "edgeopt-energy").start()

    def stop(self) -> None:
        if self._sampler is not None:
            self.loop = self._collect(self._sampler)
            self._sampler = None

    def result(self, loop_seconds: float, inferences: int) -> Dict[str, object]:
        s = self.sensor
        block: Dict[str, object] = {
            "sensor": s.name, "selected_by": self.selected_by, "covers": s.covers, "kind": s.kind,
            "integration": "trapezoid over sample timestamps" if s.kind == "power"
                           else "difference of a cumulative counter" + (" (with wrap-around)" if s.name == "rapl" else ""),
            "details": s.details, "quirks": s.quirks, "warnings": list(s.warnings),
            "rate_hz_requested": self.rate_hz, "min_seconds": self.min_seconds,
            "read_errors": self.errors, "first_read_error": self.first_error,
        }
        if self.tried:
            block["tried"] = self.tried
        loop = self.loop or {}
        idle = self.idle or {}
        p_loop = loop.get("avg_power_w")
        p_idle = idle.get("avg_power_w")
        se_loop = loop.get("stderr_w")
        se_idle = idle.get("stderr_w")
        per = loop_seconds / inferences if inferences else None
        epi = p_loop * per if p_loop is not None and per is not None else None  # type: ignore[operator]
        above = (p_loop - p_idle) * per if epi is not None and p_idle is not None else None  # type: ignore[operator]
        block.update({
            "avg_power_w": _r(p_loop), "idle_power_w": _r(p_idle),
            "energy_j": _r(p_loop * loop_seconds) if p_loop is not None else None,  # type: ignore[operator]
            "energy_per_inference_j": _r(epi),
            "energy_per_inference_uncertainty_j": _r(se_loop * per) if se_loop is not None and per else None,  # type: ignore[operator]
            "energy_per_inference_above_idle_j": _r(above),
            "energy_per_inference_above_idle_uncertainty_j":
                _r(math.hypot(se_loop, se_idle) * per) if se_loop is not None and se_idle is not None and per else None,  # type: ignore[arg-type,operator]
            "uncertainty": "standard error of the mean power from the sample variance, times seconds per inference",
            "inferences": inferences, "loop_seconds": _r(loop_seconds),
            "loop": {k: (_r(v) if isinstance(v, float) else v) for k, v in loop.items()},
            "idle": {k: (_r(v) if isinstance(v, float) else v) for k, v in idle.items()},
        })
        if epi is None:
            block["error"] = ("too few readings to integrate (loop: %s, idle: %s samples)%s"
                              % (loop.get("samples"), idle.get("samples"),
                                 ": " + self.first_error if self.first_error else ""))
        elif self.errors:
            block["warnings"].append("%d sensor reads failed and were skipped (first: %s)" % (self.errors, self.first_error))  # type: ignore[union-attr]
        return block


def none_block(reason: str, tried: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    block: Dict[str, object] = {"sensor": "none", "reason": reason}
    if tried:
        block["tried"] = tried
    return block
