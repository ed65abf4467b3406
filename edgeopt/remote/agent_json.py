"""What a device's agent prints, read strictly: one JSON document (NaN, Infinity and overflowing numbers refused,
log lines before the document tolerated) and what its exit status says (killed by which signal)."""

from __future__ import annotations

import json
import math
import signal
from typing import Any

NO_JSON = object()


class NonFinite(ValueError):
    """NaN, Infinity or a number too large for a float in a device's JSON: refused, never parsed."""


def _refuse_constant(name: str) -> Any:
    raise NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFinite(text[:40])
    return value


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity/-Infinity and numbers that overflow to infinity
    (:class:`NonFinite`)."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def parse_json(text: str) -> Any:
    text = text.strip()
    if not text:
        return NO_JSON
    try:
        return loads_strict(text)
    except NonFinite:
        raise
    except ValueError:
        pass
    last = text.splitlines()[-1].strip()  # tolerate log lines printed before the document
    try:
        return loads_strict(last)
    except NonFinite:
        raise
    except ValueError:
        return NO_JSON


def signal_name(status: int) -> str | None:
    """A signal name if ``status`` means "killed by a signal": negative (local: -signum; SSH: -1 unknown) or
    a shell's 128+N convention for the common fatal signals."""
    if status == -1:
        return "a signal"
    number = -status if status < 0 else status - 128 if status in (128 + 6, 128 + 9, 128 + 11, 128 + 15) else 0
    if number <= 0:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
