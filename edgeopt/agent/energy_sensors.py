"""Energy sensors read from sysfs (hwmon INA2xx monitors, RAPL powercap, power_supply battery), and what every
sensor shares: the ``Sensor`` base class, ``SensorUnavailable`` / ``SensorError`` and sysfs integer parsing.

Units as the kernel ABI documents them (table in ``energy``). The sensors that run a program (Pi 5 PMIC, external
meter) are in ``energy_commands``. Standard library only.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Dict, List, Optional, Tuple

from .sysinfo import sys_path


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
    """One energy sensor: ``read()`` -> watts now (kind "power") or cumulative joules (kind "energy")."""

    name: str = ""
    kind: str = "power"  # or "energy"
    default_rate_hz: float = 50.0
    min_seconds: float = 1.0  # shortest timed loop that the sensor resolves well (extends --min-seconds)
    covers: str = ""

    def __init__(self) -> None:
        self.quirks: List[str] = []
        self.warnings: List[str] = []
        self.details: Dict[str, object] = {}

    def read(self) -> float:
        raise NotImplementedError


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
        candidates: List[Tuple[str, str, List[Tuple[str, ...]]]] = []
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
        labels: List[str] = []
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
        zones: List[Tuple[str, str]] = []
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
        for zone, _name in self.zones:
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
    quirks: List[str] = []
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
        found: Optional[str] = None
        skipped: List[str] = []
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
