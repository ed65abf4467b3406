"""Timing: the measurement loop and its statistics (standard library only).

Only the runtime's invoke/run call is inside the timed region; input preparation happens before
the clock starts (``prepare(i)``), and nothing after ``invoke()`` returns is timed.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypedDict

_NS_PER_MS = 1_000_000.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Percentile ``q`` in [0, 100] of already sorted values, by linear interpolation between
    closest ranks (the same definition as numpy's default ``np.percentile``)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError("q must be within [0, 100]")
    pos = (len(sorted_values) - 1) * (q / 100.0)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def summarize(samples_ms: Sequence[float]) -> Dict[str, float]:
    """min, p50, p90, p99, max, mean and sample standard deviation (n - 1; 0 for one sample), in ms."""
    if not samples_ms:
        raise ValueError("no samples")
    ordered = sorted(samples_ms)
    n = len(ordered)
    mean = math.fsum(ordered) / n
    var = math.fsum((v - mean) ** 2 for v in ordered) / (n - 1) if n > 1 else 0.0
    return {
        "min": ordered[0],
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
        "mean": mean,
        "std": math.sqrt(var),
    }


def time_call(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn``, in ms."""
    t0 = time.perf_counter_ns()
    fn()
    t1 = time.perf_counter_ns()
    return (t1 - t0) / _NS_PER_MS


class Measurement(TypedDict):
    """What ``measure`` returns."""

    samples_ms: List[float]
    measure_seconds: float
    start_ns: int
    end_ns: int
    capped: bool


def measure(invoke: Callable[[], object], prepare: Optional[Callable[[int], object]],
            warmup: int, runs: int, min_seconds: float, max_runs: int,
            between: Optional[Callable[[Optional[float]], object]] = None) -> Measurement:
    """Warm up, then time ``invoke`` until at least ``runs`` samples AND ``min_seconds`` of measuring
    have passed (whichever is later), never more than ``max_runs`` samples.

    ``prepare(i)`` (untimed) sets the inputs for call number i; None when the inputs never change.
    ``between(seconds_per_call)`` runs after the warm-up and before the timed loop (the idle energy baseline,
    starting the samplers); it gets the mean wall time of one warm-up call including ``prepare`` (None without
    warm-up). ``start_ns``/``end_ns`` (``time.perf_counter_ns``) bound the timed loop.
    """
    perf = time.perf_counter_ns
    call = 0
    w0 = perf()
    for _ in range(warmup):
        if prepare is not None:
            prepare(call)
        invoke()
        call += 1
    if between is not None:
        between((perf() - w0) / 1e9 / warmup if warmup else None)

    samples_ns: List[int] = []
    deadline_ns = int(min_seconds * 1e9)
    start = perf()
    while True:
        n = len(samples_ns)
        if n >= max_runs:
            break
        if n >= runs and perf() - start >= deadline_ns:
            break
        if prepare is not None:
            prepare(call)
        t0 = perf()
        invoke()
        t1 = perf()
        samples_ns.append(t1 - t0)
        call += 1
    end = perf()
    measure_seconds = (end - start) / 1e9
    samples_ms = [ns / _NS_PER_MS for ns in samples_ns]
    return {"samples_ms": samples_ms, "measure_seconds": measure_seconds, "start_ns": start, "end_ns": end,
            "capped": len(samples_ns) >= max_runs and (len(samples_ns) < runs or measure_seconds < min_seconds)}


class Periodic:
    """Calls ``read()`` on a background thread about ``rate_hz`` times a second and keeps ``(t, value)`` pairs
    (``t``: ``time.perf_counter()`` seconds, taken after the read returned).

    Sleep-based (``Event.wait``): between reads the thread holds nothing, so the timed calls on the main thread
    are not disturbed beyond one short read. ``start()`` and ``stop()`` each take one reading on the calling
    thread, so the series brackets the measured interval. A read that raises is counted in ``errors``
    (first message kept in ``first_error``) and skipped.
    """

    def __init__(self, read: Callable[[], Any], rate_hz: float, name: str = "edgeopt-sampler") -> None:
        if not rate_hz > 0:
            raise ValueError("rate_hz must be > 0")
        self._read = read
        self.period = 1.0 / rate_hz
        self.samples: List[Tuple[float, Any]] = []
        self.errors = 0
        self.first_error: Optional[str] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _take(self) -> None:
        try:
            value = self._read()
        except Exception as exc:  # noqa: BLE001 - counted and reported by the caller
            self.errors += 1
            if self.first_error is None:
                self.first_error = "%s: %s" % (type(exc).__name__, exc)
            return
        self.samples.append((time.perf_counter(), value))

    def _loop(self) -> None:
        next_t = time.perf_counter() + self.period
        while not self._stop.wait(max(0.0, next_t - time.perf_counter())):
            self._take()
            next_t += self.period
            now = time.perf_counter()
            if next_t < now:  # a read slower than the period: do not try to catch up in a burst
                next_t = now

    def start(self) -> "Periodic":
        self._take()
        self._thread.start()
        return self

    def stop(self) -> List[Tuple[float, Any]]:
        self._stop.set()
        self._thread.join()
        self._take()
        return self.samples
