"""The tensor arena: the exact size measured with the real TFLM interpreter, the stated margin on top of it, and
the static estimate of ``edgeopt.analyze.memory_plan`` set next to it.

The exact arena is the smallest size with which ``AllocateTensors()`` and ``Invoke()`` on the sample both succeed,
found by doubling then bisection (``find_exact_arena()``, with ``smallest_working()``, which the target's
search in ``target_arena`` uses too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgeopt.analyze import memory_plan
from edgeopt.convert.tflm.runtime import first_tflm_error, try_arena
from edgeopt.errors import ConversionError

# Stated allowances (documented in docs/tflm.md and in the bundle's README).
MARGIN_FRACTION = 0.10
MARGIN_MIN_BYTES = 1024
MARGIN_RULE = f"max({int(MARGIN_FRACTION * 100)}% of exact, {MARGIN_MIN_BYTES} B), rounded up to 16 B"
MAX_ARENA_BYTES = 256 * 1024 * 1024
EXACT_MEANS = ("smallest arena with which the real TFLite Micro interpreter (64-bit host build, "
               "reference kernels) ran AllocateTensors() and Invoke() on the sample")
SEARCH_METHOD = "doubling then bisection, 1-byte resolution"


def align(n: int, a: int = 16) -> int:
    """``n`` rounded up to a multiple of ``a``."""
    return (int(n) + a - 1) // a * a


def margin_for(exact: int) -> int:
    """The margin added to an exact arena of ``exact`` bytes (see ``MARGIN_RULE``)."""
    return align(max(MARGIN_MIN_BYTES, int(np.ceil(MARGIN_FRACTION * exact))))


def recommended_arena(exact: int) -> int:
    """The arena the firmware allocates: exact + margin, 16-byte aligned."""
    return align(exact + margin_for(exact))


def static_estimate(model: bytes) -> dict[str, Any]:
    """edgeopt's static arena estimate (``edgeopt.analyze.memory_plan.estimate``)."""
    return memory_plan.estimate(model)


def smallest_working(works: Callable[[int], bool], start: int, cap: int, *,
                     from_last_failure: bool = True) -> int | None:
    """Smallest ``n`` with ``works(n)``, assuming a larger size never fails where a smaller one works: doubling
    from ``start`` (clamped to ``cap``) until a size works, then bisection on (fails, works]. The bisection starts
    from the last size that failed while doubling (``from_last_failure``) or from 0 (taken to fail). None when
    even ``cap`` fails."""
    hi, failed = start, 0
    while not works(hi):
        if hi >= cap:
            return None
        failed, hi = hi, min(hi * 2, cap)
    lo = failed if from_last_failure else 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if works(mid):
            hi = mid
        else:
            lo = mid
    return hi


def find_exact_arena(model: bytes, sample_q: np.ndarray, start: int = 4096) -> tuple[int, dict[str, Any]]:
    """Smallest arena (bytes) that allocates and runs: doubling, then bisection on [fails, works]."""
    probes, last = 0, (0, "")  # the last probe's size and log

    def works(n: int) -> bool:
        nonlocal probes, last
        ok, log = try_arena(model, n, sample_q)
        probes, last = probes + 1, (n, log)
        return ok

    # from 0: host probes take milliseconds, and the manifest's probe count stays what it was
    exact = smallest_working(works, max(int(start), 64), MAX_ARENA_BYTES, from_last_failure=False)
    if exact is None:
        raise ConversionError(f"TensorFlow Lite Micro cannot run the model even with a {last[0] >> 20} MiB arena: "
                              f"{first_tflm_error(last[1])}", "check the model's ops and types in docs/tflm.md")
    return exact, {"probes": probes}


def host_arena(exact: int, search: dict[str, Any], allocs: dict[str, Any]) -> dict[str, Any]:
    """The arena measured on the build host, with TFLM's head/tail breakdown (``arena.host`` in the manifest)."""
    return {
        "exact_bytes": exact,
        "exact_means": EXACT_MEANS,
        "search": {"method": SEARCH_METHOD, **search},
        "head_bytes": allocs.get("head_bytes"), "tail_bytes": allocs.get("tail_bytes"),
        "recorded_total_bytes": allocs.get("total_bytes"),
        "tail_categories": allocs.get("tail_categories", {}),
    }


def arena_section(host: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``arena``: ``kTensorArenaSize`` (``recommended_bytes``) from the target's exact figure when it
    was measured (``basis: target``), else the host's; both figures beside it."""
    basis = "target" if target.get("measured") else "host"
    chosen = target if basis == "target" else host
    recommended = recommended_arena(chosen["exact_bytes"])
    return {
        "basis": basis, "exact_bytes": chosen["exact_bytes"], "exact_means": chosen["exact_means"],
        "margin_bytes": recommended - chosen["exact_bytes"], "margin_rule": MARGIN_RULE,
        "recommended_bytes": recommended, "host": host, "target": target,
    }


def estimate_vs_exact(static: dict[str, Any], host: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The static estimate with ``vs_exact`` (against the host arena: total and head) and ``vs_target``."""
    exact, exact_head = host["exact_bytes"], host.get("head_bytes")
    est = dict(static)
    est["vs_exact"] = {
        "total_diff_bytes": static["total_bytes"] - exact,
        "total_ratio": round(static["total_bytes"] / exact, 4),
        "head_diff_bytes": None if exact_head is None else static["head_bytes"] - exact_head,
        "head_ratio": None if not exact_head else round(static["head_bytes"] / exact_head, 4),
    }
    est["vs_target"] = ({"total_diff_bytes": static["total_bytes"] - target["exact_bytes"],
                         "total_ratio": round(static["total_bytes"] / target["exact_bytes"], 4)}
                        if target.get("measured") else None)
    return est
