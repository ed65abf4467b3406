"""How a progress line names a result and its figures (shared by :mod:`.console` and :mod:`.lines`)."""

from __future__ import annotations

from typing import Any

from edgeopt.results.reader import text


def result_label(doc: dict[str, Any]) -> str:
    return f"{text(doc, 'profile') or text(doc, 'artifact', 'file')}/{text(doc, 'format')}"


def p50_text(doc: dict[str, Any]) -> str:
    return text(doc, "agent", "latency_ms", "p50") or "None"


def sent_text(doc: dict[str, Any]) -> str:
    return text(doc, "transfer", "total") or "-"
