"""Device facts (what the device is) and device state (how it is right now: clocks, temperature, load)."""

from __future__ import annotations

import glob
import os
import platform
import shutil
import socket
import subprocess
import sys
from typing import Dict, List, Optional


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


def device_facts() -> Dict[str, object]:
    """What the device is. Cheap: no subprocess, only /proc, /etc and the platform module."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
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
    }


def _cpu_sort_key(path: str) -> int:
    digits = "".join(ch for ch in os.path.basename(path) if ch.isdigit())
    return int(digits) if digits else -1


def device_state(sys_root: str = "/sys") -> Dict[str, object]:
    """How the device is right now: governor and clocks per CPU (kHz), thermal zones (millidegrees C),
    load average and, on a Raspberry Pi, ``vcgencmd get_throttled``. Missing interfaces give empty values."""
    cpus = []
    for cpu_dir in sorted(glob.glob(os.path.join(sys_root, "devices/system/cpu/cpu[0-9]*")), key=_cpu_sort_key):
        freq = os.path.join(cpu_dir, "cpufreq")
        if not os.path.isdir(freq):
            continue
        cpus.append({
            "cpu": _cpu_sort_key(cpu_dir),
            "governor": _read(os.path.join(freq, "scaling_governor")),
            "cur_khz": _read_int(os.path.join(freq, "scaling_cur_freq")),
            "max_khz": _read_int(os.path.join(freq, "cpuinfo_max_freq")),
        })
    zones = []
    for zone in sorted(glob.glob(os.path.join(sys_root, "class/thermal/thermal_zone*")), key=_cpu_sort_key):
        temp = _read_int(os.path.join(zone, "temp"))
        if temp is not None:
            zones.append({"zone": os.path.basename(zone), "type": _read(os.path.join(zone, "type")),
                          "temp_mc": temp})
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    return {"cpufreq": cpus, "thermal": zones, "loadavg": load, "throttled": _throttled()}


def _throttled() -> Optional[str]:
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    return text.split("=", 1)[1] if "=" in text else (text or None)
