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
inferences.

This module holds the options, the sensor selection (``auto``), the sampling and the measurement; the sensors are
in ``energy_sensors`` (sysfs: hwmon, RAPL, power_supply) and ``energy_commands`` (vcgencmd, external meter), and
are re-exported here. Standard library only.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .energy_commands import Command, Rpi5Pmic, parse_meter_output, parse_pmic_adc, pmic_power  # noqa: F401
from .energy_sensors import (  # noqa: F401
    Hwmon,
    PowerSupply,
    Rapl,
    Sensor,
    SensorError,
    SensorUnavailable,
    battery_units,
    hwmon_channels,
    parse_int,
    unwrap_delta,
)
from .timing import Periodic

SENSORS = ("rpi5-pmic", "hwmon", "rapl", "power-supply", "command")
CHOICES = ("auto", "none") + SENSORS
# auto: an external meter when one is given (the user wired it; usually wall power), then board power monitors,
# then the Pi 5 PMIC rails, then RAPL (CPU package only), then a battery (slow fuel-gauge updates).
AUTO_ORDER = ("command", "hwmon", "rpi5-pmic", "rapl", "power-supply")
BASELINE_MAX_SECONDS = 60.0


# --- selection ---------------------------------------------------------------------------------------------------

class EnergyOptions:
    """What ``--energy*`` asked for: the sensor (a CHOICES name), its rate, minimum loop length, command, hwmon
    device and the sysfs root."""

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

def summarize_series(samples: Sequence[Tuple[float, float]], kind: str) -> Dict[str, Any]:
    """Average power over the sampled span: trapezoid for a power series (from the second reading on: the first
    is taken just before the phase starts), first-to-last difference for a cumulative energy series. ``stderr_w``: standard error of the mean from the sample variance (power samples,
    or the powers of the intervals between counter readings), assuming independent samples."""
    if kind == "power":
        # the first reading is taken just before the measured phase starts (it brackets it for counters);
        # for a power reading it describes what came before, so the average starts with the next one
        samples = samples[1:]
    n = len(samples)
    out: Dict[str, Any] = {"samples": n, "span_s": None, "avg_power_w": None, "stderr_w": None}
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
        self.idle: Optional[Dict[str, Any]] = None
        self.loop: Optional[Dict[str, Any]] = None
        self.errors = 0
        self.first_error: Optional[str] = None
        self._sampler: Optional[Periodic] = None

    def _collect(self, sampler: Periodic) -> Dict[str, Any]:
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

    def result(self, loop_seconds: float, inferences: int) -> Dict[str, Any]:
        s = self.sensor
        block: Dict[str, Any] = {
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
        p_loop: Optional[float] = loop.get("avg_power_w")
        p_idle: Optional[float] = idle.get("avg_power_w")
        se_loop: Optional[float] = loop.get("stderr_w")
        se_idle: Optional[float] = idle.get("stderr_w")
        per = loop_seconds / inferences if inferences else None
        epi = p_loop * per if p_loop is not None and per is not None else None
        # epi is not None exactly when p_loop and per are not None
        above = (p_loop - p_idle) * per if p_loop is not None and per is not None and p_idle is not None else None
        block.update({
            "avg_power_w": _r(p_loop), "idle_power_w": _r(p_idle),
            "energy_j": _r(p_loop * loop_seconds) if p_loop is not None else None,
            "energy_per_inference_j": _r(epi),
            "energy_per_inference_uncertainty_j": _r(se_loop * per) if se_loop is not None and per else None,
            "energy_per_inference_above_idle_j": _r(above),
            "energy_per_inference_above_idle_uncertainty_j":
                _r(math.hypot(se_loop, se_idle) * per) if se_loop is not None and se_idle is not None and per else None,
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
            block["warnings"].append("%d sensor reads failed and were skipped (first: %s)" % (self.errors, self.first_error))
        return block


def none_block(reason: str, tried: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    block: Dict[str, object] = {"sensor": "none", "reason": reason}
    if tried:
        block["tried"] = tried
    return block
