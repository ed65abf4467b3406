"""The search's recommendation, honest about measurement noise (``edgeopt build --search``).

Among the candidates on the Pareto front within the accuracy budget, the objective picks. For ``latency`` a
difference of p50s is not taken at face value: every candidate is compared with the fastest on the RAW latency
samples by the regression gate's own test (``edgeopt.ci.gate.compare_latency``: one-sided Mann–Whitney U, a
bootstrap interval of the median ratio and a minimum effect; passed in as a :class:`TieTest`, see below). A
candidate the gate would not call slower than the fastest is a **tie**; ties go to accuracy, then size (bytes),
then energy per inference, then p50. The result says whether it called a tie and on what evidence (test, p-value,
median ratio and its interval, samples on each side).

Without a test or without raw samples, no tie is called on a guess: the lowest p50 wins and the result says the
latency difference was not tested.

Other objectives (``size``, ``download``, ``energy``, ``accuracy``) compare exact, deterministic figures (bytes,
gzip bytes) or one number each; their ties go to accuracy, then bytes, then p50 (as before).

Why the test is passed in: ``edgeopt.build`` sits below ``edgeopt.ci`` in the layer contract (pyproject.toml), so
this module cannot import the gate; the caller that can see both hands it over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from edgeopt.results.latency_stats import LatencyGate, compare_latency
from edgeopt.results.reader import samples as raw_samples

OBJECTIVE_KEY = {"latency": "latency_p50_ms", "size": "bytes", "download": "bytes_gzip",
                 "energy": "energy_per_inference_j"}
SLOWER = "regression"  # the gate's status for "really slower": anything else is a tie with the fastest


@dataclass(frozen=True)
class TieTest:
    """``compare(fastest_samples, candidate_samples)`` returns the gate's verdict on the candidate against the
    fastest (an object with ``status``, ``p_value``, ``ratio``, ``ci_low``, ``ci_high``, ``n_baseline``,
    ``n_current``, ``message``, as ``edgeopt.ci.gate.LatencyVerdict``); ``status == "regression"`` means really
    slower, anything else is a tie. ``name`` says which test it is (shown in the result)."""

    compare: Callable[[Sequence[float], Sequence[float]], Any]
    name: str


# The test used when the caller gives none: the CI regression gate's own (edgeopt.results.latency_stats)
DEFAULT_TEST: TieTest | None = TieTest(
    lambda fastest, other: compare_latency(fastest, other, LatencyGate()),
    "the CI gate's test (one-sided Mann-Whitney U + bootstrap CI of the median ratio, min effect 5 %)")


def latency_samples(docs: Iterable[dict[str, Any]]) -> dict[str, list[float]]:
    """Raw latency samples (ms) of each valid benchmark result, by candidate name ``profile/format``."""
    out: dict[str, list[float]] = {}
    for doc in docs:
        if doc.get("valid") and doc.get("profile") and doc.get("format"):
            values = raw_samples(doc)
            if values:
                out[f"{doc['profile']}/{doc['format']}"] = values
    return out


def _energy(r: dict[str, Any]) -> float:
    e = r.get("energy_per_inference_j")
    return float(e) if isinstance(e, (int, float)) and math.isfinite(e) else math.inf


TIE_BREAKS = ("accuracy", "size", "download size", "energy", "latency")


def tie_break_key(r: dict[str, Any]) -> tuple[float, ...]:
    """Ties go to accuracy (higher), then size (bytes, smaller; then gzip bytes, what a download costs), then
    energy per inference (smaller; unmeasured last), then p50 (the order of ``TIE_BREAKS``)."""
    gz = r.get("bytes_gzip")
    return (-float(r["accuracy"]), float(r["bytes"]), float(gz) if gz is not None else math.inf, _energy(r),
            float(r["latency_p50_ms"]))


def _round(value: Any) -> Any:
    """Four significant digits (a p-value of 1e-50 stays 1e-50, not 0)."""
    return float(f"{value:.4g}") if isinstance(value, float) and math.isfinite(value) else value


def _evidence(name: str, verdict: Any) -> dict[str, Any]:
    return {"candidate": name, "tie": verdict.status != SLOWER, "status": verdict.status,
            "p_value": _round(verdict.p_value), "ratio": _round(verdict.ratio), "ci_low": _round(verdict.ci_low),
            "ci_high": _round(verdict.ci_high), "n_fastest": verdict.n_baseline, "n_candidate": verdict.n_current,
            "message": verdict.message}


def latency_ties(pool: list[dict[str, Any]], samples: Mapping[str, Sequence[float]] | None,
                 test: TieTest | None) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(fastest row, rows tied with it (the fastest included), the tie record). The fastest is the lowest p50
    (equal p50s: the tie-break order)."""
    fastest = min(pool, key=lambda r: (float(r["latency_p50_ms"]), *tie_break_key(r)))
    others = [r for r in pool if r is not fastest]
    record: dict[str, Any] = {"fastest": fastest["candidate"], "test": test.name if test else None,
                              "tested": False, "evidence": []}
    base = list((samples or {}).get(fastest["candidate"]) or [])
    if test is None or not base:
        record["reason"] = ("no latency test given" if test is None
                            else f"no raw latency samples for {fastest['candidate']}")
        tied = [fastest] + [r for r in others if float(r["latency_p50_ms"]) == float(fastest["latency_p50_ms"])]
        record["called"] = len(tied) > 1
        record["with"] = [r["candidate"] for r in tied if r is not fastest]
        return fastest, tied, record
    record["tested"] = True
    tied = [fastest]
    for r in sorted(others, key=lambda r: float(r["latency_p50_ms"])):
        mine = list((samples or {}).get(r["candidate"]) or [])
        if not mine:
            record["evidence"].append({"candidate": r["candidate"], "tie": False, "status": "untested",
                                       "message": "no raw latency samples: not a tie"})
            continue
        ev = _evidence(r["candidate"], test.compare(base, mine))
        record["evidence"].append(ev)
        if ev["tie"]:
            tied.append(r)
    record["called"] = len(tied) > 1
    record["with"] = [r["candidate"] for r in tied if r is not fastest]
    return fastest, tied, record


def _decided_by(best: dict[str, Any], tied: list[dict[str, Any]]) -> str:
    """Which tie-break criterion separated the winner from the runner-up of the tie group."""
    if len(tied) < 2:
        return "latency"
    second = sorted(tied, key=tie_break_key)[1]
    for name, a, b in zip(TIE_BREAKS, tie_break_key(best), tie_break_key(second)):
        if a != b:
            return name
    return "latency"


def _why_latency(best: dict[str, Any], fastest: dict[str, Any], tie: dict[str, Any]) -> str:
    if not tie["tested"]:
        return f"lowest p50 {float(best['latency_p50_ms']):.4g} ms (latency difference not tested: {tie['reason']})"
    by_name = {e["candidate"]: e for e in tie["evidence"]}
    if best is fastest:
        slower = [e for e in tie["evidence"] if not e["tie"]]
        if not tie["called"]:
            if not slower:
                return f"fastest (p50 {float(best['latency_p50_ms']):.4g} ms; no other candidate in budget)"
            nxt = slower[0]
            return (f"fastest, really faster than every other candidate by {tie['test']} (next: {nxt['candidate']}, "
                    f"{_figures(nxt)})")
        lead = ("equal on accuracy, size and energy: the lowest p50 stays" if tie["decided_by"] == "latency"
                else f"first by {tie['decided_by']}")
        return f"fastest, tied on latency with {', '.join(tie['with'])} ({_tied_figures(tie)}); {lead}"
    ev = by_name[best["candidate"]]
    return (f"latency tied with the fastest {fastest['candidate']} ({_figures(ev)}, not really slower by "
            f"{tie['test']}); the tie goes to {tie['decided_by']}")


def _tied_figures(tie: dict[str, Any]) -> str:
    return "; ".join(f"{e['candidate']}: {_figures(e)}" for e in tie["evidence"] if e["tie"])


def _figures(ev: dict[str, Any]) -> str:
    if ev.get("ratio") is None:
        return ev.get("message", "untested")
    return (f"median {100 * (ev['ratio'] - 1):+.1f}%, CI {100 * (ev['ci_low'] - 1):+.1f}…"
            f"{100 * (ev['ci_high'] - 1):+.1f}%, p={ev['p_value']:.2g}, n={ev['n_fastest']}/{ev['n_candidate']}")


def recommend(rows: list[dict[str, Any]], objective: str, max_drop: float, *,
              samples: Mapping[str, Sequence[float]] | None = None,
              docs: Iterable[dict[str, Any]] | None = None, test: TieTest | None = None) -> dict[str, Any] | None:
    """The recommended row among those on the Pareto front (``row["pareto"]``) within ``max_drop`` pp of the float
    model, or ``None``. Marks ``within_budget`` on every row. Raw latency samples come from ``samples``
    (candidate -> ms) or the benchmark ``docs``; ``test`` decides latency ties (module docstring)."""
    for r in rows:
        r["within_budget"] = r["accuracy_drop_pp"] is not None and r["accuracy_drop_pp"] <= max_drop
    ok = [r for r in rows if r.get("pareto") and r["within_budget"] and r["accuracy"] is not None]
    if not ok:
        return None
    budget = f"on the Pareto front, accuracy drop {{:.2f}} pp <= {max_drop:g} pp"
    if objective == "latency":
        test = test if test is not None else DEFAULT_TEST
        pool = [r for r in ok if r["latency_p50_ms"] is not None]
        if not pool:
            return None
        if samples is None and docs is not None:
            samples = latency_samples(docs)
        fastest, tied, tie = latency_ties(pool, samples, test)
        best = min(tied, key=tie_break_key)
        tie["decided_by"] = _decided_by(best, tied)
        why = f"{budget.format(best['accuracy_drop_pp'])}; {_why_latency(best, fastest, tie)}"
        return {"candidate": best["candidate"], "profile": best.get("profile"), "format": best.get("format"),
                "objective": objective, "why": why, "tie": tie}
    key: Callable[[dict[str, Any]], tuple[Any, ...]]
    if objective == "accuracy":
        key = lambda r: (-r["accuracy"], r["latency_p50_ms"], r["bytes"])  # noqa: E731
    else:
        k = OBJECTIVE_KEY[objective]
        ok = [r for r in ok if r.get(k) is not None]
        if not ok:
            return None
        key = lambda r: (r[k], -r["accuracy"], r["bytes"], r["latency_p50_ms"])  # noqa: E731
    best = min(ok, key=key)
    return {"candidate": best["candidate"], "profile": best.get("profile"), "format": best.get("format"),
            "objective": objective, "why": f"{budget.format(best['accuracy_drop_pp'])}, best {objective}",
            "tie": None}
