"""Device facts (what the device is) and device state (how it is right now: clocks, temperature, load)."""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from typing import Dict, List, Optional, TypedDict


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _read_int(path: str) -> Optional[int]:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> Optional[str]:
    """x86: ``model name``; ARM: ``Model`` (Raspberry Pi), ``Hardware`` or the device-tree model."""
    text = _read(cpuinfo_path) or ""
    found: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key not in found and value.strip():
            found[key] = value.strip()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if key in found:
            return found[key]
    dt = _read("/proc/device-tree/model")
    if dt:
        return dt.rstrip("\x00")
    return platform.processor() or None


def os_name() -> Optional[str]:
    text = _read("/etc/os-release")
    if text:
        for line in text.splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def numpy_version() -> Optional[str]:
    try:
        import numpy
    except Exception:  # noqa: BLE001 - a device fact, not a failure
        return None
    return str(numpy.__version__)


def affinity() -> Optional[List[int]]:
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:
        return None
    try:
        return sorted(getter(0))
    except OSError:
        return None


EMULATED_MARKER = "/etc/edgeopt-emulated"  # written by `edgeopt emulate` into an emulated device's root filesystem


def emulation(marker: str = EMULATED_MARKER) -> Optional[Dict[str, object]]:
    """The emulation facts when this device is emulated (``edgeopt emulate``: a qemu-user chroot whose root
    filesystem carries ``/etc/edgeopt-emulated``, JSON with the emulator, the CPU it emulates and the host's
    architecture), else None. A marker that is not a JSON object still says "emulated" (its text under ``raw``)."""
    text = _read(marker)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {"raw": text[:200]}
    data["marker"] = marker
    return data


def device_facts() -> Dict[str, object]:
    """What the device is. Cheap: no subprocess, only /proc, /etc and the platform module."""
    load = loadavg()
    emulated = emulation()
    return {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": affinity(),
        "kernel": platform.release(),
        "os": os_name(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "numpy": numpy_version(),
        "loadavg": load,
        "emulated": emulated is not None,  # True: latency here is NOT the hardware's (docs/emulate.md)
        "emulation": emulated,
    }


def _cpu_sort_key(path: str) -> int:
    digits = "".join(ch for ch in os.path.basename(path) if ch.isdigit())
    return int(digits) if digits else -1


def sys_path(root: str, *parts: str) -> str:
    """``<root>/sys/<parts>``: every sysfs reader of the agent goes through this one setting (``--sysfs-root``,
    default ``/``), so a test can point the agent at a tree laid out like the kernel's."""
    return os.path.join(root or "/", "sys", *parts)


def cpu_dirs(root: str = "/") -> List[str]:
    return sorted(glob.glob(sys_path(root, "devices/system/cpu/cpu[0-9]*")), key=_cpu_sort_key)


class CpuFreq(TypedDict):
    """One row of ``cpufreq_state``."""

    cpu: int
    governor: Optional[str]
    cur_khz: Optional[int]
    max_khz: Optional[int]
    scaling_max_khz: Optional[int]
    capacity: Optional[int]


class ThermalZone(TypedDict):
    """One row of ``thermal_state``."""

    zone: str
    type: Optional[str]
    temp_mc: int
    temp_c: float


def cpufreq_state(root: str = "/", cpus: Optional[List[int]] = None) -> List[CpuFreq]:
    """Per CPU with a ``cpufreq`` directory: governor, current and maximum clock (kHz), ``cpu_capacity``
    (arm64 big.LITTLE; null elsewhere). ``cpus`` limits the list."""
    rows: List[CpuFreq] = []
    for cpu_dir in cpu_dirs(root):
        cpu = _cpu_sort_key(cpu_dir)
        freq = os.path.join(cpu_dir, "cpufreq")
        if (cpus is not None and cpu not in cpus) or not os.path.isdir(freq):
            continue
        rows.append({
            "cpu": cpu,
            "governor": _read(os.path.join(freq, "scaling_governor")),
            "cur_khz": _read_int(os.path.join(freq, "scaling_cur_freq")),
            "max_khz": _read_int(os.path.join(freq, "cpuinfo_max_freq")),
            "scaling_max_khz": _read_int(os.path.join(freq, "scaling_max_freq")),
            "capacity": _read_int(os.path.join(cpu_dir, "cpu_capacity")),
        })
    return rows


def thermal_state(root: str = "/") -> List[ThermalZone]:
    """Thermal zones: ``temp`` is in millidegrees Celsius (``temp_mc``); ``temp_c`` is the same in degrees."""
    zones: List[ThermalZone] = []
    for zone in sorted(glob.glob(sys_path(root, "class/thermal/thermal_zone*")), key=_cpu_sort_key):
        temp = _read_int(os.path.join(zone, "temp"))
        if temp is not None:
            zones.append({"zone": os.path.basename(zone), "type": _read(os.path.join(zone, "type")),
                          "temp_mc": temp, "temp_c": round(temp / 1000.0, 3)})
    return zones


def hottest_c(root: str = "/") -> Optional[float]:
    temps = [z["temp_c"] for z in thermal_state(root)]
    return max(temps) if temps else None


def loadavg() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def device_state(root: str = "/") -> Dict[str, object]:
    """How the device is right now: governor and clocks per CPU (kHz), thermal zones (m°C and °C),
    load average and, on a Raspberry Pi, ``vcgencmd get_throttled`` (raw and decoded). Missing interfaces give
    empty values. ``root``: the ``--sysfs-root`` (sysfs is read under ``<root>/sys``)."""
    throttled = _throttled()
    return {"cpufreq": cpufreq_state(root), "thermal": thermal_state(root), "loadavg": loadavg(),
            "throttled": throttled, "throttled_flags": decode_throttled(throttled) if throttled else None}


# vcgencmd get_throttled bits (Raspberry Pi firmware): 0-3 are "now", 16-19 "has occurred since boot" (sticky).
THROTTLE_BITS = {
    0: "under-voltage", 1: "arm-frequency-capped", 2: "throttled", 3: "soft-temperature-limit",
    16: "under-voltage", 17: "arm-frequency-capped", 18: "throttled", 19: "soft-temperature-limit",
}


def decode_throttled(text: Optional[str]) -> Optional[Dict[str, object]]:
    """``0x50005`` -> ``{"value": 327685, "now": ["under-voltage", "throttled"], "since_boot": [...],
    "unknown_bits": []}``; None when the text is not a number."""
    if text is None:
        return None
    try:
        value = int(text.strip(), 0)
    except ValueError:
        return None
    now = [THROTTLE_BITS[b] for b in (0, 1, 2, 3) if value >> b & 1]
    since = [THROTTLE_BITS[b] for b in (16, 17, 18, 19) if value >> b & 1]
    unknown = [b for b in range(value.bit_length()) if value >> b & 1 and b not in THROTTLE_BITS]
    return {"value": value, "now": now, "since_boot": since, "unknown_bits": unknown}


def _throttled() -> Optional[str]:
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    if out.returncode != 0:
        return None
    return text.split("=", 1)[1] if "=" in text else (text or None)
