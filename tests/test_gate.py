"""The regression gate on synthetic samples (fast): Mann–Whitney U against scipy, noise passes, a real 10 %
slowdown fails, a tiny-but-significant shift below the minimum effect passes, scalar gates, invalid results."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ci import ERROR, INVALID, NEW, evaluate
from edgeopt.ci.gate import (
    IMPROVED,
    PASS,
    REGRESSION,
    SKIPPED,
    LatencyGate,
    accuracy_drop,
    bootstrap_median_ratio,
    compare_latency,
    mann_whitney_u,
    relative_increase,
)
from edgeopt.config.lab import Gates
from edgeopt.report.plots import pareto_front


def latency(rng: np.random.Generator, n: int, median: float = 0.05, spread: float = 0.08) -> np.ndarray:
    """Right-skewed latencies like real ones: a lognormal body plus rare slow outliers."""
    x = median * rng.lognormal(0.0, spread, n)
    slow = rng.random(n) < 0.03
    x[slow] *= rng.uniform(1.5, 4.0, slow.sum())
    return x


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_mann_whitney_matches_scipy_with_ties(alternative):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = np.round(rng.gamma(4, 1.0, rng.integers(5, 80)), 1)  # rounding makes many ties
        y = np.round(rng.gamma(4, 1.1, rng.integers(5, 80)), 1)
        u, p = mann_whitney_u(x, y, alternative)
        ref = stats.mannwhitneyu(x, y, alternative=alternative, method="asymptotic")
        assert u == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-12)


def test_mann_whitney_all_equal_is_no_evidence():
    assert mann_whitney_u([1.0] * 10, [1.0] * 10) == (50.0, 1.0)


def test_noise_only_never_fails():
    rng = np.random.default_rng(0)
    statuses = [compare_latency(latency(rng, 200), latency(rng, 200)).status for _ in range(200)]
    assert REGRESSION not in statuses
    assert statuses.count(PASS) == 200


def test_a_real_ten_percent_slowdown_fails():
    rng = np.random.default_rng(1)
    verdicts = [compare_latency(latency(rng, 200), latency(rng, 200) * 1.10) for _ in range(50)]
    assert all(v.status == REGRESSION for v in verdicts)
    v = verdicts[0]
    assert 1.05 < v.ratio < 1.16 and v.p_value < 1e-6 and v.ci_low > 1.0
    assert "latency regressed" in v.message and "limit +5%" in v.message and "+1" in v.message


def test_tiny_but_significant_shift_below_min_effect_passes():
    rng = np.random.default_rng(2)
    base, cur = latency(rng, 20000, spread=0.03), latency(rng, 20000, spread=0.03) * 1.02
    v = compare_latency(base, cur)
    assert v.p_value < 1e-6 and v.ci_low > 1.0  # significant …
    assert v.status == PASS and "below the +5% minimum effect" in v.message  # … but too small to matter
    assert compare_latency(base, cur, LatencyGate(min_effect=0.01)).status == REGRESSION


def test_improvement_and_too_few_samples():
    rng = np.random.default_rng(4)
    assert compare_latency(latency(rng, 200), latency(rng, 200) * 0.7).status == IMPROVED
    v = compare_latency([1.0] * 5, [2.0] * 5)
    assert v.status == SKIPPED and "need 10" in v.message


def test_bootstrap_is_deterministic_and_brackets_the_ratio():
    rng = np.random.default_rng(5)
    b, c = latency(rng, 300), latency(rng, 300) * 1.2
    assert bootstrap_median_ratio(b, c, seed=7) == bootstrap_median_ratio(b, c, seed=7)
    point, low, high = bootstrap_median_ratio(b, c)
    assert low < point < high and 1.1 < point < 1.3


def test_scalar_gates():
    assert relative_increase("size", "size", "B", 1000, 1040, 0.05).status == PASS
    check = relative_increase("size", "size", "B", 1000, 1100, 0.05)
    assert check.status == REGRESSION and "+10.0%" in check.message and "limit +5.0%" in check.message
    assert relative_increase("size", "size", "B", None, 5000, None, max_value=4096).status == REGRESSION
    big = relative_increase("size", "size", "B", 500_000, 7_635_760, 0.05)  # bytes read as bytes, not 7.63576e+06
    assert "500,000 → 7,635,760 B" in big.message and "e+0" not in big.message
    assert accuracy_drop(0.98, 0.975, 0.01).status == PASS
    drop = accuracy_drop(0.98, 0.95, 0.01)
    assert drop.status == REGRESSION and "-3.00 pt" in drop.message
    assert accuracy_drop(None, 0.5, 0.01, minimum=0.9).status == REGRESSION


def _doc(key: int, samples, *, agent_valid=True, valid=True, profile="int8", bytes_=1000):
    return {"result_id": f"r{key}", "target": "dev", "profile": profile, "format": "tflite", "valid": valid,
            "error": None if valid else {"kind": "infrastructure", "message": "connection refused"},
            "artifact": {"bytes": bytes_, "metrics": {"accuracy": 0.98}},
            "ci": {"device": "dev", "model": "m"},
            "agent": None if not valid else {"valid": agent_valid,
                                             "invalid_reasons": [] if agent_valid else ["throttled"],
                                             "latency_ms": {"samples": list(samples), "p50": float(np.median(samples))},
                                             "memory": {"peak_rss_kib": 50000}}}


def test_evaluate_never_compares_invalid_results():
    rng = np.random.default_rng(6)
    base = [_doc(1, latency(rng, 100))]
    slow = latency(rng, 100) * 2
    [cell] = evaluate([_doc(2, slow, agent_valid=False)], base, Gates())
    assert cell.status == INVALID and "throttled" in cell.message and cell.check("latency") is None
    assert {c.gate for c in cell.checks} == {"accuracy", "size"}  # what the host knows without the measurement
    # an invalid measurement does not hide what needs none: a 16x larger artifact or a worse build accuracy
    big = _doc(2, slow, agent_valid=False, bytes_=16000)
    [cell] = evaluate([big], base, Gates())
    assert cell.status == REGRESSION and cell.check("size").status == REGRESSION and cell.check("latency") is None
    assert "size" in cell.message and "latency measurement invalid" in cell.message and "throttled" in cell.message
    worse = _doc(2, slow, agent_valid=False)
    worse["artifact"]["metrics"]["accuracy"] = 0.90
    [cell] = evaluate([worse], base, Gates())
    assert cell.status == REGRESSION and cell.check("accuracy").status == REGRESSION
    confirming = _doc(2, slow, agent_valid=False)
    confirming["ci"]["measured"] = "c1"  # the re-measure of a latency regression (gates.latency.confirm)
    [cell] = evaluate([confirming], base, Gates())
    assert cell.status == INVALID and "re-measure to confirm it was invalid" in cell.message
    assert "attempt" not in cell.message and "throttled" in cell.message
    [cell] = evaluate([big], base, Gates.model_validate({"size": None}))
    assert cell.status == INVALID  # peak memory and energy are measured: not judged either
    [cell] = evaluate([_doc(2, slow)], base, Gates())
    assert cell.status == REGRESSION and cell.check("latency").status == REGRESSION
    # an invalid baseline is not used either: the cell is new
    [cell] = evaluate([_doc(2, slow)], [_doc(1, latency(rng, 100), agent_valid=False)], Gates())
    assert cell.status == NEW and cell.baseline is None
    [cell] = evaluate([_doc(3, [], valid=False)], base, Gates())
    assert cell.status == ERROR and "connection refused" in cell.message
    [cell] = evaluate([_doc(2, latency(rng, 100), bytes_=2000)], base, Gates())
    assert cell.status == REGRESSION and cell.check("size").status == REGRESSION


def test_pareto_front():
    points = [(1.0, 0.90), (2.0, 0.95), (3.0, 0.94), (0.5, 0.80), (2.0, 0.90)]
    assert sorted(pareto_front(points)) == [0, 1, 3]


def test_emulated_results_are_never_judged_on_latency():
    """An emulated device (edgeopt emulate: qemu-user, 20-340x slower, nothing like the hardware): its latency is
    neither judged nor used as a baseline; the other gates still apply."""
    rng = np.random.default_rng(7)
    fast, slow = latency(rng, 100), latency(rng, 100) * 3

    def emulated(doc, by="flag"):
        if by == "flag":
            doc["flags"] = ["emulated"]
        else:  # a document stored without the flag: the agent's device facts still say so
            doc["agent"]["device"] = {"machine": "aarch64", "emulated": True, "emulation": {"emulator": "qemu-user"}}
        return doc

    for by in ("flag", "facts"):
        [cell] = evaluate([emulated(_doc(2, slow), by)], [_doc(1, fast)], Gates())
        lat = cell.check("latency")
        assert cell.status == PASS and lat.status == SKIPPED
        assert "latency not judged" in lat.message and "this result" in lat.message and "emulated" in lat.message
    # an emulated baseline is no latency baseline for a real device either
    [cell] = evaluate([_doc(2, slow)], [emulated(_doc(1, fast))], Gates())
    assert cell.status == PASS and cell.check("latency").status == SKIPPED
    assert "the baseline ran on an emulated device" in cell.check("latency").message
    # … but the other gates still judge it
    [cell] = evaluate([emulated(_doc(2, slow, bytes_=2000))], [emulated(_doc(1, fast))], Gates())
    assert cell.status == REGRESSION and cell.check("size").status == REGRESSION
    assert cell.check("latency").status == SKIPPED and "latency" not in cell.message
    # no baseline at all: new, and the message says its latency is emulated
    [cell] = evaluate([emulated(_doc(2, slow))], [], Gates())
    assert cell.status == NEW and "emulated" in cell.message
    # an invalid emulated measurement is still invalid, not compared
    [cell] = evaluate([emulated(_doc(2, slow, agent_valid=False))], [_doc(1, fast)], Gates())
    assert cell.status == INVALID
