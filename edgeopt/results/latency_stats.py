"""The latency statistics of the regression gate (``edgeopt.ci.gate``), below every layer that needs them (the
CI gate, the build search's tie-aware recommendation): is one set of raw latency samples really slower than another?

* **Mann–Whitney U** (one-sided: "current tends to be slower"), normal approximation with tie correction and a
  continuity correction, implemented with numpy (no scipy needed; the tests cross-check it against scipy when
  that is installed);
* **bootstrap confidence interval of the median ratio** current / baseline (percentile bootstrap, fixed seed, so
  the same samples always give the same verdict);
* **a minimum effect size**: the median slowdown must be at least ``min_effect`` (default 5 %).

A latency regression needs ALL of: p < alpha, the bootstrap interval entirely above 1 (the slowdown is not
noise), and the point estimate of the median ratio >= 1 + min_effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

PASS = "pass"
REGRESSION = "regression"
IMPROVED = "improved"
SKIPPED = "skipped"


@dataclass(frozen=True)
class LatencyGate:
    """How latency is judged. ``method``: ``both`` (Mann–Whitney AND bootstrap), ``mannwhitney`` or
    ``bootstrap``."""

    min_effect: float = 0.05  # relative median slowdown that counts (0.05 = 5 %)
    alpha: float = 0.01  # significance level (one-sided test; the bootstrap interval is 1 - 2·alpha two-sided)
    method: str = "both"
    bootstrap: int = 2000  # resamples
    seed: int = 0
    min_samples: int = 10  # fewer samples on either side: not judged (reported)


@dataclass
class LatencyVerdict:
    status: str  # pass | regression | improved | skipped
    message: str
    n_baseline: int = 0
    n_current: int = 0
    median_baseline: float | None = None
    median_current: float | None = None
    ratio: float | None = None  # median current / median baseline
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None  # one-sided, current slower
    u: float | None = None
    effect: float | None = None  # ratio - 1

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 6) if math.isfinite(value) else None
        return out


def _norm_sf(z: float) -> float:
    """Survival function of the standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_u(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                   alternative: str = "greater") -> tuple[float, float]:
    """Mann–Whitney U of ``x`` against ``y`` and its p-value (normal approximation, tie-corrected variance,
    continuity correction 0.5 — what ``scipy.stats.mannwhitneyu(x, y, alternative=..., method="asymptotic")``
    computes). ``alternative="greater"``: x tends to be larger than y. Returns (U of x, p)."""
    a = np.asarray(x, dtype=float)
    b = np.asarray(y, dtype=float)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples must be non-empty")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size, dtype=float)
    sorted_vals = both[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0  # 1-based average rank of each distinct value
    ranks[order] = np.repeat(avg, counts)
    r1 = ranks[:n1].sum()
    u1 = r1 - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    mu = n1 * n2 / 2.0
    tie_term = float((counts ** 3 - counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:  # every value identical: no evidence either way
        return float(u1), 1.0
    sd = math.sqrt(var)
    if alternative == "greater":
        z = (u1 - mu - 0.5) / sd
        p = _norm_sf(z)
    elif alternative == "less":
        z = (u1 - mu + 0.5) / sd
        p = 1.0 - _norm_sf(z)
    elif alternative == "two-sided":
        z = (abs(u1 - mu) - 0.5) / sd
        p = min(1.0, 2.0 * _norm_sf(z))
    else:
        raise ValueError(f"alternative must be greater, less or two-sided, not {alternative!r}")
    return float(u1), float(min(max(p, 0.0), 1.0))


def bootstrap_median_ratio(baseline: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray, *,
                           resamples: int = 2000, confidence: float = 0.98, seed: int = 0
                           ) -> tuple[float, float, float]:
    """(point estimate, low, high) of median(current) / median(baseline), percentile bootstrap: each side is
    resampled with replacement independently. Deterministic for a given seed."""
    b = np.asarray(baseline, dtype=float)
    c = np.asarray(current, dtype=float)
    rng = np.random.default_rng(seed)
    point = float(np.median(c) / np.median(b))
    mb = np.median(b[rng.integers(0, b.size, size=(resamples, b.size))], axis=1)
    mc = np.median(c[rng.integers(0, c.size, size=(resamples, c.size))], axis=1)
    ratios = mc / mb
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return point, float(low), float(high)


def compare_latency(baseline: Sequence[float], current: Sequence[float],
                    gate: LatencyGate | None = None) -> LatencyVerdict:
    """Judge current latency samples against baseline samples (ms)."""
    gate = gate or LatencyGate()
    b = np.asarray([v for v in baseline if v is not None and math.isfinite(v)], dtype=float)
    c = np.asarray([v for v in current if v is not None and math.isfinite(v)], dtype=float)
    verdict = LatencyVerdict(SKIPPED, "", n_baseline=int(b.size), n_current=int(c.size))
    if b.size < gate.min_samples or c.size < gate.min_samples:
        verdict.message = (f"latency not judged: {b.size} baseline and {c.size} current samples "
                           f"(need {gate.min_samples} each)")
        return verdict
    verdict.median_baseline = float(np.median(b))
    verdict.median_current = float(np.median(c))
    if verdict.median_baseline <= 0:
        verdict.message = "latency not judged: baseline median is 0"
        return verdict
    u, p = mann_whitney_u(c, b, "greater")
    _, p_faster = mann_whitney_u(c, b, "less")
    ratio, low, high = bootstrap_median_ratio(b, c, resamples=gate.bootstrap, confidence=1 - 2 * gate.alpha,
                                              seed=gate.seed)
    verdict.u, verdict.p_value = u, p
    verdict.ratio, verdict.ci_low, verdict.ci_high = ratio, low, high
    verdict.effect = ratio - 1.0
    significant_slower = {
        "both": p < gate.alpha and low > 1.0,
        "mannwhitney": p < gate.alpha,
        "bootstrap": low > 1.0,
    }[gate.method]
    significant_faster = {
        "both": p_faster < gate.alpha and high < 1.0,
        "mannwhitney": p_faster < gate.alpha,
        "bootstrap": high < 1.0,
    }[gate.method]
    pct = (ratio - 1.0) * 100.0
    figures = (f"p50 {verdict.median_baseline:.4g} → {verdict.median_current:.4g} ms ({pct:+.1f}%, "
               f"{100 * (1 - 2 * gate.alpha):.0f}% CI {100 * (low - 1):+.1f}%…{100 * (high - 1):+.1f}%, "
               f"Mann–Whitney p={p:.2g}, n={b.size}/{c.size})")
    if significant_slower and ratio >= 1.0 + gate.min_effect:
        verdict.status = REGRESSION
        verdict.message = f"latency regressed: {figures}; limit +{gate.min_effect * 100:.0f}%"
    elif significant_faster and ratio <= 1.0 - gate.min_effect:
        verdict.status = IMPROVED
        verdict.message = f"latency improved: {figures}"
    else:
        verdict.status = PASS
        why = "not significant" if not significant_slower else f"below the +{gate.min_effect * 100:.0f}% minimum effect"
        verdict.message = f"latency ok ({why}): {figures}"
    return verdict
