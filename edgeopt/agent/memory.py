"""Process memory from /proc/self/status (Linux): VmRSS (resident now) and VmHWM (peak resident), in KiB."""

from __future__ import annotations

from typing import Dict, Optional

STATUS_PATH = "/proc/self/status"


def read_status(path: str = STATUS_PATH) -> Dict[str, int]:
    """The ``Vm*`` fields of a /proc/<pid>/status file in KiB; {} where the file does not exist."""
    fields: Dict[str, int] = {}
    try:
        with open(path, "r", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if not sep or not key.startswith("Vm"):
                    continue
                parts = value.split()
                if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
                    fields[key] = int(parts[0])
    except OSError:
        return {}
    return fields


def rss_kib(path: str = STATUS_PATH) -> Optional[int]:
    return read_status(path).get("VmRSS")


def peak_rss_kib(path: str = STATUS_PATH) -> Optional[int]:
    return read_status(path).get("VmHWM")


def memory_block(before_init: Optional[int], after_init: Optional[int], path: str = STATUS_PATH) -> Dict[str, object]:
    """The result's ``memory`` block; read at the end of the run, so the peak covers everything."""
    status = read_status(path)
    added = after_init - before_init if before_init is not None and after_init is not None else None
    return {
        "peak_rss_kib": status.get("VmHWM"),
        "model_rss_kib": added,
        "rss_before_init_kib": before_init,
        "rss_after_init_kib": after_init,
        "rss_end_kib": status.get("VmRSS"),
        "source": STATUS_PATH if status else None,
    }
