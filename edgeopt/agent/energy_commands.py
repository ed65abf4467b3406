"""Energy sensors read by running a program (no shell): the Raspberry Pi 5 PMIC through ``vcgencmd pmic_read_adc``
(sum of V·I over the rails that report both) and an external meter through ``--energy-command 'CMD ARGS'`` (watts,
or cumulative joules). Output formats are in ``energy``'s table. Standard library only.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
from typing import Dict, List, Optional

from .energy_sensors import Sensor, SensorError, SensorUnavailable

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
        self.argv: List[str] = [exe, "pmic_read_adc"]
        try:
            rails = parse_pmic_adc(self._run())
        except SensorError as exc:
            raise SensorUnavailable(str(exc))
        self.rails: List[str] = sorted(r for r, v in rails.items() if "A" in v and "V" in v)
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
            self.argv: List[str] = shlex.split(command)
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
