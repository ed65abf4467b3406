"""The search's tie-aware recommendation (edgeopt/build/recommend.py) on synthetic RAW latency samples, judged by
the CI gate's own test (edgeopt.ci.gate.compare_latency): a difference inside the noise is a tie and goes to
accuracy, then size, then energy; a real speed difference wins; the result carries the evidence."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.build.recommend import TieTest, latency_samples, recommend
from edgeopt.ci.gate import LatencyGate, compare_latency

GATE = LatencyGate()
TEST = TieTest(lambda fastest, other: compare_latency(fastest, other, GATE),
               "one-sided Mann–Whitney U + bootstrap CI of the median ratio (the CI gate)")


def noisy(rng: np.random.Generator, median_ms: float, n: int = 200, spread: float = 0.04) -> list[float]:
    """Latency-like samples: multiplicative noise around ``median_ms`` with a slow tail."""
    s = median_ms * (1 + spread * rng.standard_normal(n)).clip(0.7)
    s[rng.random(n) < 0.03] *= 1.6
    return s.tolist()


def row(name: str, samples: list[float], accuracy: float, size: int, gzip: int | None = None,
        energy: float | None = None) -> dict:
    return {"candidate": name, "profile": name.split("/")[0], "format": name.split("/")[1], "accuracy": accuracy,
            "accuracy_drop_pp": round(100 * (0.99 - accuracy), 3), "bytes": size, "bytes_gzip": gzip or size,
            "latency_p50_ms": float(np.median(samples)), "energy_per_inference_j": energy, "pareto": True}


def test_a_tie_within_noise_goes_to_accuracy() -> None:
    rng = np.random.default_rng(1)
    # the case: int8 0.032 ms vs qat-int8 0.033 ms, the second strictly more accurate
    a, b = noisy(rng, 0.0320), noisy(rng, 0.0322)
    rows = [row("int8/tflite", a, 0.989, 4200), row("qat-int8/tflite", b, 0.990, 4200)]
    assert rows[0]["latency_p50_ms"] < rows[1]["latency_p50_ms"]  # the faster p50 by face value...
    rec = recommend(rows, "latency", 1.0, samples={"int8/tflite": a, "qat-int8/tflite": b}, test=TEST)
    assert rec is not None and rec["candidate"] == "qat-int8/tflite"  # ...loses the tie to accuracy
    tie = rec["tie"]
    assert tie["tested"] and tie["called"] and tie["fastest"] == "int8/tflite" and tie["with"] == ["qat-int8/tflite"]
    assert tie["decided_by"] == "accuracy"
    (ev,) = tie["evidence"]
    assert ev["candidate"] == "qat-int8/tflite" and ev["tie"] and ev["status"] != "regression"
    assert ev["n_fastest"] == ev["n_candidate"] == 200 and ev["ratio"] == pytest.approx(b_over_a(a, b), rel=1e-3)
    assert ev["p_value"] is not None and 0 <= ev["p_value"] <= 1
    assert "tied with the fastest int8/tflite" in rec["why"] and "goes to accuracy" in rec["why"]
    assert "p=" in rec["why"] and "n=200/200" in rec["why"]


def b_over_a(a: list[float], b: list[float]) -> float:
    return float(np.median(b) / np.median(a))


def test_a_real_speed_difference_wins() -> None:
    rng = np.random.default_rng(2)
    a, b = noisy(rng, 0.030), noisy(rng, 0.036)  # 20 % slower: beyond noise and beyond the 5 % minimum effect
    rows = [row("int8/tflite", a, 0.985, 4200), row("qat-int8/tflite", b, 0.990, 4200)]
    rec = recommend(rows, "latency", 1.0, samples={"int8/tflite": a, "qat-int8/tflite": b}, test=TEST)
    assert rec["candidate"] == "int8/tflite"
    assert rec["tie"]["tested"] and not rec["tie"]["called"]
    (ev,) = rec["tie"]["evidence"]
    assert not ev["tie"] and ev["status"] == "regression" and ev["p_value"] < GATE.alpha and ev["ci_low"] > 1.0
    assert "really faster" in rec["why"] and "qat-int8/tflite" in rec["why"]


def test_ties_go_to_accuracy_then_size_then_energy() -> None:
    rng = np.random.default_rng(3)
    s = {n: noisy(rng, 0.05) for n in ("a/tflite", "b/tflite", "c/onnx", "d/onnx")}
    same_acc = [row("a/tflite", s["a/tflite"], 0.98, 9000, energy=2e-6),
                row("b/tflite", s["b/tflite"], 0.98, 5000, energy=3e-6),
                row("c/onnx", s["c/onnx"], 0.98, 5000, energy=1e-6),
                row("d/onnx", s["d/onnx"], 0.97, 1000, energy=1e-7)]
    rec = recommend(same_acc, "latency", 5.0, samples=s, test=TEST)
    assert rec["tie"]["called"] and len(rec["tie"]["with"]) == 3
    # accuracy first (d is out), then bytes (a is out), then energy: c
    assert rec["candidate"] == "c/onnx" and rec["tie"]["decided_by"] == "energy"
    same_acc[2]["bytes"] = 5001
    assert recommend(same_acc, "latency", 5.0, samples=s, test=TEST)["candidate"] == "b/tflite"


def test_a_candidate_outside_the_tie_never_wins_on_accuracy() -> None:
    rng = np.random.default_rng(4)
    s = {"fast/tflite": noisy(rng, 0.03), "twin/onnx": noisy(rng, 0.0301), "slow/onnx": noisy(rng, 0.06)}
    rows = [row("fast/tflite", s["fast/tflite"], 0.980, 4000), row("twin/onnx", s["twin/onnx"], 0.981, 4000),
            row("slow/onnx", s["slow/onnx"], 0.990, 4000)]
    rec = recommend(rows, "latency", 5.0, samples=s, test=TEST)
    assert rec["candidate"] == "twin/onnx"  # whichever p50 came out lower, the two are one tie group
    assert {rec["tie"]["fastest"], *rec["tie"]["with"]} == {"fast/tflite", "twin/onnx"}
    slow = next(e for e in rec["tie"]["evidence"] if e["candidate"] == "slow/onnx")
    assert not slow["tie"] and slow["ratio"] > 1.5


def test_without_a_test_or_samples_no_tie_is_guessed() -> None:
    rng = np.random.default_rng(5)
    a, b = noisy(rng, 0.0320), noisy(rng, 0.0322)
    rows = [row("int8/tflite", a, 0.989, 4200), row("qat-int8/tflite", b, 0.990, 4200)]
    rec = recommend(rows, "latency", 1.0)
    assert rec["candidate"] == "int8/tflite" and not rec["tie"]["tested"] and not rec["tie"]["called"]
    assert "not tested" in rec["why"]
    rec = recommend(rows, "latency", 1.0, samples={"qat-int8/tflite": b}, test=TEST)  # fastest has none
    assert rec["candidate"] == "int8/tflite" and "no raw latency samples" in rec["tie"]["reason"]
    rec = recommend(rows, "latency", 1.0, samples={"int8/tflite": a}, test=TEST)  # the other has none
    assert rec["candidate"] == "int8/tflite" and rec["tie"]["evidence"][0]["status"] == "untested"


def test_budget_front_and_other_objectives() -> None:
    rng = np.random.default_rng(6)
    s = {n: noisy(rng, m) for n, m in (("a/tflite", 0.03), ("b/tflite", 0.03), ("c/onnx", 0.04))}
    rows = [row("a/tflite", s["a/tflite"], 0.970, 4000), row("b/tflite", s["b/tflite"], 0.989, 9000),
            row("c/onnx", s["c/onnx"], 0.989, 2000)]
    rows[0]["pareto"] = True
    rec = recommend(rows, "latency", 1.0, samples=s, test=TEST)  # a is over budget (2 pp)
    assert rec["candidate"] == "b/tflite" and [r["within_budget"] for r in rows] == [False, True, True]
    rows[1]["pareto"] = False  # only front rows are candidates
    assert recommend(rows, "latency", 1.0, samples=s, test=TEST)["candidate"] == "c/onnx"
    assert recommend(rows, "size", 5.0)["candidate"] == "c/onnx"
    assert recommend(rows, "size", 5.0)["tie"] is None
    assert recommend(rows, "accuracy", 5.0)["candidate"] == "c/onnx"
    assert recommend(rows, "latency", 0.05, samples=s, test=TEST) is None


def test_samples_from_benchmark_documents() -> None:
    docs = [{"valid": True, "profile": "int8", "format": "tflite",
             "agent": {"latency_ms": {"samples": [0.1, 0.2, 0.3]}}},
            {"valid": False, "profile": "fp32", "format": "tflite", "agent": {"latency_ms": {"samples": [1.0]}}},
            {"valid": True, "profile": "fp16", "format": "onnx", "agent": {"latency_ms": {"samples": "junk"}}}]
    assert latency_samples(docs) == {"int8/tflite": [0.1, 0.2, 0.3]}
