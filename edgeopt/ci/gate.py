"""The regression gate: is the current measurement really worse than the baseline?

Latency is judged on the raw samples (``latency_ms.samples`` of the agent), never on one summary number:

* **Mann–Whitney U** (one-sided: "current tends to be slower"), normal approximation with tie correction and a
  continuity correction, implemented with numpy (no scipy needed; the tests cross-check it against scipy when
  that is installed);
* **bootstrap confidence interval of the median ratio** current / baseline (percentile bootstrap, fixed seed, so
  the same samples always give the same verdict);
* **a minimum effect size**: the median slowdown must be at least ``min_effect`` (default 5 %).

A latency regression needs ALL of: p < alpha, the bootstrap interval entirely above 1 (the slowdown is not
noise), and the point estimate of the median ratio >= 1 + min_effect. Tiny-but-significant shifts (a 1 % change
measured with 10,000 samples) therefore pass, noise passes, and a real 10 % slowdown fails.

Scalar gates (accuracy drop, size, peak memory, energy) compare one number each against a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeopt.results.latency_stats import (  # the statistics live below the layers that use them; re-exported
    IMPROVED,
    PASS,
    REGRESSION,
    SKIPPED,
    LatencyGate,
    LatencyVerdict,
    bootstrap_median_ratio,
    compare_latency,
    mann_whitney_u,
)

__all__ = ["IMPROVED", "PASS", "REGRESSION", "SKIPPED", "Check", "LatencyGate", "LatencyVerdict", "accuracy_drop",
           "bootstrap_median_ratio", "compare_latency", "mann_whitney_u", "relative_increase"]


# ------------------------------------------------------------------------------------------------------------
# scalar gates
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Check:
    """One gate's verdict on one cell."""

    gate: str  # latency | accuracy | size | peak_memory | energy
    status: str
    message: str
    baseline: float | None = None
    current: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"gate": self.gate, "status": self.status, "message": self.message, "baseline": self.baseline,
                "current": self.current, **({"details": self.details} if self.details else {})}


def _num(value: float) -> str:
    """A figure for a message: whole numbers with thousands separators (bytes: 7,635,760, not 7.63576e+06)."""
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e18 else f"{value:,.6g}"


def relative_increase(gate: str, what: str, unit: str, baseline: float | None, current: float | None,
                      max_increase: float | None, max_value: float | None = None) -> Check:
    """Lower-is-better scalar: a regression when current exceeds ``max_value`` or grows by more than
    ``max_increase`` (relative) over the baseline."""
    if current is None:
        return Check(gate, SKIPPED, f"{what}: no current value", baseline, current)
    if max_value is not None and current > max_value:
        return Check(gate, REGRESSION, f"{what} {_num(current)} {unit} exceeds the limit {_num(max_value)} {unit}",
                     baseline, current)
    if max_increase is not None and baseline is not None and baseline > 0:
        change = current / baseline - 1.0
        text = (f"{what} {_num(baseline)} → {_num(current)} {unit} "
                f"({change * 100:+.1f}%, limit +{max_increase * 100:.1f}%)")
        if change > max_increase:
            return Check(gate, REGRESSION, f"{what} regressed: {text[len(what) + 1:]}", baseline, current)
        return Check(gate, PASS, text, baseline, current)
    if max_increase is not None and baseline is None:
        return Check(gate, SKIPPED, f"{what} {_num(current)} {unit} (no baseline value)", baseline, current)
    return Check(gate, PASS, f"{what} {_num(current)} {unit}", baseline, current)


def accuracy_drop(baseline: float | None, current: float | None, max_drop: float | None,
                  minimum: float | None = None) -> Check:
    """Higher-is-better: a regression when accuracy falls below ``minimum`` or drops by more than ``max_drop``
    (absolute, e.g. 0.01 = one percentage point)."""
    if current is None:
        return Check("accuracy", SKIPPED, "accuracy: not measured", baseline, current)
    if minimum is not None and current < minimum:
        return Check("accuracy", REGRESSION, f"accuracy {current:.4f} is below the minimum {minimum:.4f}",
                     baseline, current)
    if max_drop is not None and baseline is not None:
        drop = baseline - current
        text = f"accuracy {baseline:.4f} → {current:.4f} ({-drop * 100:+.2f} pt, limit -{max_drop * 100:.2f} pt)"
        if drop > max_drop + 1e-12:
            return Check("accuracy", REGRESSION, f"accuracy dropped: {text[9:]}", baseline, current)
        return Check("accuracy", PASS, text, baseline, current)
    return Check("accuracy", PASS, f"accuracy {current:.4f}", baseline, current)
