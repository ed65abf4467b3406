"""The real TensorFlow Lite Micro interpreter (``tflite-micro`` package), with its native log captured.

``try_arena()`` asks whether a given arena size allocates and runs; ``run_tflm()`` runs samples and can read the
allocation breakdown TFLM prints (``print_allocations()``), parsed by ``parse_allocations()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata as md
import os
import re
import sys
import tempfile
from typing import Any, Iterator

import numpy as np

from edgeopt.errors import ConversionError

_ALLOC_RE = re.compile(r"\[RecordingMicroAllocator\] Arena allocation (total|head|tail) (\d+) bytes")
_CAT_RE = re.compile(r"\[RecordingMicroAllocator\] '([^']+)' used (\d+) bytes with alignment overhead "
                     r"\(requested (\d+) bytes for (\d+) ")


@contextlib.contextmanager
def capture_native_output() -> Iterator[list[str]]:
    """Capture what C/C++ code writes to fds 1 and 2 (TFLM's MicroPrintf) into ``box[0]`` after the block."""
    libc = ctypes.CDLL(None)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    libc.fflush(None)
    saved = (os.dup(1), os.dup(2))
    box: list[str] = []
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield box
        finally:
            libc.fflush(None)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            box.append(sink.read().decode("utf-8", "replace"))


def tflm_version() -> str:
    """The installed ``tflite-micro`` package version, or ``"missing"``."""
    try:
        return md.version("tflite-micro")
    except md.PackageNotFoundError:
        return "missing"


def _interpreter(model: bytes, arena: int) -> Any:
    try:
        from tflite_micro import runtime
    except ImportError as exc:  # pragma: no cover - the package is pinned in requirements.txt
        raise ConversionError("the tflite-micro package is not installed",
                              "pip install tflite-micro (pinned in requirements.txt)") from exc
    return runtime.Interpreter.from_bytes(model, arena_size=arena)


def try_arena(model: bytes, arena: int, sample_q: np.ndarray) -> tuple[bool, str]:
    """Does the real TFLM interpreter allocate AND run the model with an ``arena``-byte arena? (ok, TFLM's log)"""
    with capture_native_output() as log:
        try:
            it = _interpreter(model, arena)
            it.set_input(sample_q, 0)
            it.invoke()
            ok = True
        except (RuntimeError, ValueError):
            ok = False
    return ok, log[0] if log else ""


def first_tflm_error(log: str) -> str:
    """The most telling line of a TFLM log (an op it lacks, something unsupported or failed), at most 300 chars."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in lines:
        if "Didn't find op" in ln or "not supported" in ln.lower() or "failed" in ln.lower():
            return ln[:300]
    return (lines[0][:300] if lines else "no message from TFLM")


def parse_allocations(text: str) -> dict[str, Any]:
    """Total/head/tail bytes and the tail's categories from the output of TFLM's ``print_allocations()``."""
    out: dict[str, Any] = {}
    for kind, n in _ALLOC_RE.findall(text):
        out[f"{kind}_bytes"] = int(n)
    cats = {name: {"bytes": int(used), "requested": int(req), "count": int(cnt)}
            for name, used, req, cnt in _CAT_RE.findall(text)}
    if cats:
        out["tail_categories"] = cats
    return out


def run_tflm(model: bytes, arena: int, inputs_q: np.ndarray, *, allocations: bool = False
             ) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Outputs of the real TFLM interpreter for each input (batch-1 samples), and optionally its allocations."""
    outs: list[np.ndarray] = []
    with capture_native_output() as log:
        try:
            it = _interpreter(model, arena)
            for x in inputs_q:
                it.set_input(np.ascontiguousarray(x), 0)
                it.invoke()
                outs.append(np.array(it.get_output(0)))
            if allocations:
                it.print_allocations()
        except (RuntimeError, ValueError) as exc:
            err: Exception | None = exc
        else:
            err = None
    text = log[0] if log else ""
    if err is not None:
        raise ConversionError(f"TensorFlow Lite Micro failed to run the model with a {arena}-byte arena: "
                              f"{first_tflm_error(text) if text.strip() else err}")
    return outs, (parse_allocations(text) if allocations else {})
