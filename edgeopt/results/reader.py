"""The one reader of result documents (docs/bench.md): every figure the table, the CI gate, the reports and the
search judge a result on is read here, so two of them can never read one result differently.

A stored document is untrusted (it holds what a device printed; the store may be old or edited): every accessor
is type-safe — a figure of the wrong type reads as ``None``, a list of the wrong type as ``[]`` — and
:func:`document_problem` names the first field of the wrong type, so such a result is shown as invalid and never
compared: never a crash.
"""

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


def figure(doc: Any, *path: str) -> float | None:
    """The finite number at ``path``, else ``None``."""
    return number(get(doc, *path))


def text(doc: Any, *path: str) -> str | None:
    """The string at ``path`` (a finite number is shown as text too), else ``None``."""
    value = get(doc, *path)
    if isinstance(value, str):
        return value
    return str(value) if number(value) is not None else None


def mapping(doc: Any, *path: str) -> dict[str, Any]:
    """The object at ``path``, else ``{}``."""
    value = get(doc, *path)
    return value if isinstance(value, dict) else {}


def error(doc: Any) -> dict[str, str] | None:
    """The result's error as ``{"kind", "message"}`` strings (whatever was stored), or ``None``."""
    value = get(doc, "error")
    if not value:
        return None
    if not isinstance(value, dict):
        return {"kind": "error", "message": str(value)}
    return {"kind": str(value.get("kind") or "error"), "message": str(value.get("message") or "")}


_OBJECTS: tuple[tuple[str, ...], ...] = (
    ("agent",), ("error",), ("ci",), ("artifact",), ("transfer",), ("agent", "latency_ms"), ("agent", "parity"),
    ("agent", "memory"), ("agent", "runtime"), ("agent", "inputs"), ("agent", "energy"), ("artifact", "metrics"))
_TYPED: tuple[tuple[tuple[str, ...], str], ...] = (
    (("agent", "memory", "peak_rss_kib"), "number"), (("agent", "parity", "top1_agreement"), "number"),
    (("agent", "parity", "accuracy"), "number"), (("agent", "energy", "energy_per_inference_j"), "number"),
    (("artifact", "metrics", "accuracy"), "number"), (("artifact", "bytes"), "int"), (("transfer", "total"), "int"),
    (("agent", "runtime", "name"), "str"), (("agent", "runtime", "version"), "str"),
    (("agent", "runtime", "threads"), "int"), (("agent", "inputs", "source"), "str"),
    (("agent", "energy", "sensor"), "str"), (("agent", "latency_ms", "count"), "int"), (("agent", "valid"), "bool"),
    *((("agent", "latency_ms", key), "number") for key in ("p50", "p90", "p99", "init", "first", "min", "max",
                                                           "mean", "std")),
)
_LISTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("agent", "latency_ms", "samples"), "number"), (("agent", "invalid_reasons"), "str"), (("flags",), "str"))
_KIND = {"number": "a number", "int": "an integer", "str": "a string", "bool": "true/false"}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "number":
        return number(value) is not None
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str if kind == "str" else bool)


def document_problem(doc: Any) -> str | None:
    """``None`` when every field this module reads has its type (a missing or null field is fine), else one
    line naming the first that does not, e.g. ``agent.latency_ms.p90 is a str, not a number``."""
    if not isinstance(doc, dict):
        return f"the result is a {type(doc).__name__}, not an object"
    for path in _OBJECTS:
        value = get(doc, *path)
        if value is not None and not isinstance(value, dict):
            return f"{'.'.join(path)} is a {type(value).__name__}, not an object"
    for path, kind in _TYPED:
        value = get(doc, *path)
        if value is not None and not _type_ok(value, kind):
            return f"{'.'.join(path)} is a {type(value).__name__}, not {_KIND[kind]}"
    for path, kind in _LISTS:
        value = get(doc, *path)
        if value is None:
            continue
        if not isinstance(value, list):
            return f"{'.'.join(path)} is a {type(value).__name__}, not a list"
        for item in value:
            if not _type_ok(item, kind):
                return f"{'.'.join(path)} holds a {type(item).__name__}, not {_KIND[kind]}"
    return None


def cell_key(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    """(device, model, profile or file, format): what a CI cell and its baseline are matched on."""
    ci = mapping(doc, "ci")
    profile = doc.get("profile") or mapping(doc, "artifact").get("file") or "-"
    return (str(ci.get("device") or doc.get("target")), str(ci.get("model") or "default"), str(profile),
            str(doc.get("format")))


def agent_valid(doc: dict[str, Any]) -> bool:
    """The agent judged its own measurement conditions (throttling, clock drops, other load …)."""
    return mapping(doc, "agent").get("valid", True) is not False


def invalid_reasons(doc: dict[str, Any]) -> list[str]:
    reasons = get(doc, "agent", "invalid_reasons")
    if not isinstance(reasons, list):
        return [] if reasons is None else [str(reasons)]
    return [r if isinstance(r, str) else str(r) for r in reasons]


def usable(doc: dict[str, Any]) -> bool:
    """A result that can be compared: measured, valid for bench, valid for the agent, not superseded, and a
    document whose fields have their types."""
    return (bool(doc.get("valid")) and agent_valid(doc) and not mapping(doc, "ci").get("superseded")
            and document_problem(doc) is None)


def samples(doc: dict[str, Any] | None) -> list[float]:
    """The raw latency samples (ms) the agent timed (the finite numbers among them)."""
    values = get(doc, "agent", "latency_ms", "samples")
    if not isinstance(values, list):
        return []
    return [float(x) for x in values if number(x) is not None]


def latency_p50(doc: dict[str, Any] | None) -> float | None:
    return figure(doc, "agent", "latency_ms", "p50")


def accuracy(doc: dict[str, Any] | None, source: str = "build") -> float | None:
    """``build``: the manifest's accuracy on the eval set (host); ``device``: the agent's parity accuracy."""
    if doc is None:
        return None
    return figure(doc, "agent", "parity", "accuracy") if source == "device" else \
        figure(doc, "artifact", "metrics", "accuracy")


QUALITY_VERDICTS = ("ok", "degraded", "broken")


def build_quality(doc: dict[str, Any] | None) -> str | None:
    """The build's verdict on the artifact (``ok``/``degraded``/``broken``, docs/quality.md), carried into the
    result by the bench; ``None`` for an artifact built before verdicts existed (or a stored value we don't know)."""
    verdict = text(doc, "artifact", "quality", "verdict")
    return verdict if verdict in QUALITY_VERDICTS else None


def quality_worst(quality: Any) -> str | None:
    """``class_scores: sqnr_db 3.1 (limit 20)`` — the worst output and figure of a verdict (limit shown unless
    ``ok``), from a manifest's or a result's ``quality`` object; ``None`` without one."""
    worst = mapping(quality, "worst")
    if not worst:
        return None
    value = number(worst.get("value"))
    line = f"{text(worst, 'output') or '?'}: {text(worst, 'figure') or '?'} " \
           f"{'-' if value is None else format(value, '.4g')}"
    limit = number(worst.get("threshold"))
    if limit is not None and text(quality, "verdict") != "ok":
        line += f" (limit {limit:.4g})"
    return line


def _parity_blocks(doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The device-vs-host comparison of every output (``agent.parity.outputs[].artifact``; a document from before
    per-output parity has only ``agent.parity.artifact``)."""
    rows = get(doc, "agent", "parity", "outputs")
    if isinstance(rows, list):
        return [mapping(r, "artifact") for r in rows]
    return [mapping(doc, "agent", "parity", "artifact")]


def parity_sqnr(doc: dict[str, Any] | None) -> float | None:
    """The lowest SQNR (dB) of the device's outputs against the host's run of the same artifact, over every
    output (``None`` when all are identical or none was compared): where top-1 agreement says nothing (a
    detector's boxes, a segmentation map), this does."""
    finite = [v for v in (figure(b, "sqnr_db") for b in _parity_blocks(doc)) if v is not None]
    return min(finite) if finite else None


def parity_exact(doc: dict[str, Any] | None) -> bool:
    """Every output the device computed equals the host's run of the artifact, value for value."""
    blocks = _parity_blocks(doc)
    return bool(blocks) and all(b and figure(b, "max_abs_diff") == 0.0 for b in blocks)


def energy_per_inference(doc: dict[str, Any] | None) -> float | None:
    """Energy per inference in joules as the agent measured it (the whole draw the sensor covers, idle
    included: what a battery pays), or ``None`` when the run measured none. The figure above idle stays in the
    document (``agent.energy.energy_per_inference_above_idle_j``) for who wants it."""
    return figure(doc, "agent", "energy", "energy_per_inference_j")


def energy_sensor(doc: dict[str, Any] | None) -> str | None:
    return text(doc, "agent", "energy", "sensor") or None


EMULATED = "emulated"  # the result-document flag (edgeopt.bench.document sets it)


def is_emulated(doc: dict[str, Any] | None) -> bool:
    """The result was measured on an emulated device: its latency says nothing about hardware. The flag, or
    the agent's device facts (for a document stored without the flag)."""
    if not isinstance(doc, dict):
        return False
    flags = doc.get("flags")
    if isinstance(flags, list) and EMULATED in flags:
        return True
    return get(doc, "agent", "device", "emulated") is True
