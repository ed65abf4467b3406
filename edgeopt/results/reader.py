"""The one reader of result documents (docs/bench.md): every figure the table, the CI gate, the reports and the
search judge a result on is read here, so two of them can never read one result differently."""

from __future__ import annotations

import math
from typing import Any


def get(doc: Any, *path: str) -> Any:
    """``doc[path[0]][path[1]]…``, or ``None`` where any step is missing or not a mapping."""
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def number(value: Any) -> float | None:
    """A finite number as float, else ``None`` (the agent writes NaN as null; booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def cell_key(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    """(device, model, profile or file, format): what a CI cell and its baseline are matched on."""
    ci = doc.get("ci") or {}
    profile = doc.get("profile") or (doc.get("artifact") or {}).get("file") or "-"
    return (str(ci.get("device") or doc.get("target")), str(ci.get("model") or "default"), str(profile),
            str(doc.get("format")))


def agent_valid(doc: dict[str, Any]) -> bool:
    """The agent judged its own measurement conditions (throttling, clock drops, other load …)."""
    agent = doc.get("agent") or {}
    return agent.get("valid", True) is not False


def invalid_reasons(doc: dict[str, Any]) -> list[str]:
    return [str(r) for r in get(doc, "agent", "invalid_reasons") or []]


def usable(doc: dict[str, Any]) -> bool:
    """A result that can be compared: measured, valid for bench, valid for the agent, not superseded."""
    return bool(doc.get("valid")) and agent_valid(doc) and not (doc.get("ci") or {}).get("superseded")


def samples(doc: dict[str, Any] | None) -> list[float]:
    """The raw latency samples (ms) the agent timed."""
    return [float(x) for x in get(doc, "agent", "latency_ms", "samples") or [] if isinstance(x, (int, float))]


def latency_p50(doc: dict[str, Any] | None) -> float | None:
    return number(get(doc, "agent", "latency_ms", "p50"))


def accuracy(doc: dict[str, Any] | None, source: str = "build") -> float | None:
    """``build``: the manifest's accuracy on the eval set (host); ``device``: the agent's parity accuracy."""
    if doc is None:
        return None
    value = get(doc, "agent", "parity", "accuracy") if source == "device" else \
        get(doc, "artifact", "metrics", "accuracy")
    return number(value)


def energy_per_inference(doc: dict[str, Any] | None) -> float | None:
    """Energy per inference in joules as the agent measured it (the whole draw the sensor covers, idle
    included: what a battery pays), or ``None`` when the run measured none. The figure above idle stays in the
    document (``agent.energy.energy_per_inference_above_idle_j``) for who wants it."""
    return number(get(doc, "agent", "energy", "energy_per_inference_j"))


def energy_sensor(doc: dict[str, Any] | None) -> str | None:
    sensor = get(doc, "agent", "energy", "sensor")
    return str(sensor) if sensor else None
