"""Synthetic report inputs for the plot and browser tests: a search result of N candidates and CI cells of N devices,
shaped like real ones (clusters of int8 candidates within a few µs of each other, one slow outlier, devices from
0.03 ms to 14 ms, identical accuracies) — the cases that made the old plots unreadable. Raw samples are drawn from
a seeded generator, so every run draws the same figures."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.ci.gate import Check, LatencyGate, compare_latency
from edgeopt.ci.model import Cell, CIResult
from edgeopt.report.plots import pareto_front

PROFILES = ["fp32", "fp16", "dynamic", "int8", "int8-float-io", "pruned-int8", "distilled-int8", "qat-int8",
            "pruned-qat-int8", "int8-auto", "int8-per-tensor", "int16x8", "mixed-a", "mixed-b", "mixed-c"]


def search_data(n: int, seed: int = 0) -> dict[str, Any]:
    """A SearchResult.to_json()-shaped dict of ``n`` candidates (profile x {tflite, onnx})."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        profile, fmt = PROFILES[(i // 2) % len(PROFILES)], ("tflite", "onnx")[i % 2]
        if i // 2 >= len(PROFILES):
            profile = f"{profile}-{i // (2 * len(PROFILES))}"
        int8 = "int8" in profile
        p50 = (0.031 + 0.003 * rng.random()) if int8 else (0.05 + 0.04 * rng.random())
        if i == n - 1 and n > 2:
            p50 = 0.54  # the one slow candidate that stretched the linear axis
        acc = round(0.983 - (0.001 * int(rng.integers(0, 4)) if int8 else 0.0), 4)
        size = int(128_000 if int8 else 475_000 * (0.5 if "16" in profile else 1.0))
        rows.append({"candidate": f"{profile}/{fmt}", "profile": profile, "format": fmt, "accuracy": acc,
                     "accuracy_drop_pp": round(100 * (0.983 - acc), 3), "bytes": size + 37 * i,
                     "bytes_gzip": int(size * 0.88), "weight_sparsity": 0.01, "latency_p50_ms": p50,
                     "latency_p90_ms": p50 * 1.1, "energy_per_inference_j": None, "bench_valid": True,
                     "within_budget": True})
    front = pareto_front([(r["latency_p50_ms"], r["accuracy"]) for r in rows])
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    best = min((r for r in rows if r["pareto"]), key=lambda r: r["latency_p50_ms"])
    return {"target": "synthetic", "objective": "latency", "max_accuracy_drop_pp": 1.0, "metric": "accuracy",
            "energy_measured": False, "bench_run_id": "synthetic", "rows": rows,
            "pareto_front": [r["candidate"] for r in rows if r["pareto"]],
            "recommended": {"candidate": best["candidate"], "why": "synthetic", "tie": None}, "notes": []}


def _doc(device: str, fmt: str, profile: str, s: np.ndarray, acc: float, size: int) -> dict[str, Any]:
    return {"valid": True, "target": device, "profile": profile, "format": fmt,
            "artifact": {"bytes": size, "metrics": {"accuracy": acc}},
            "agent": {"valid": True, "latency_ms": {"samples": [float(v) for v in s], "p50": float(np.median(s)),
                                                    "count": int(s.size)}}}


def ci_result(devices: int, seed: int = 0, samples: int = 60) -> CIResult:
    """A CIResult of ``devices`` devices x (int8, fp32) x (tflite, onnx), latencies from 0.03 ms to ~14 ms
    (log-spaced over the devices), each cell judged against a baseline by the real gate."""
    rng = np.random.default_rng(seed)
    cells = []
    speeds = np.geomspace(0.03, 14.0, devices) if devices > 1 else np.array([0.03])
    for d, base_ms in enumerate(speeds):
        device = f"dev-{d:02d}"
        for profile, factor, acc in (("int8", 1.0, 0.982), ("fp32", 1.7, 0.983)):
            for fmt, ffac in (("tflite", 1.0), ("onnx", 0.9)):
                med = base_ms * factor * ffac
                slowdown = 1.3 if (d == 0 and profile == "fp32") else 1.0
                base = med * (1 + 0.03 * rng.standard_normal(samples)).clip(0.8)
                cur = med * slowdown * (1 + 0.03 * rng.standard_normal(samples)).clip(0.8)
                size = 128_000 if profile == "int8" else 475_000
                verdict = compare_latency(base.tolist(), cur.tolist(), LatencyGate())
                check = Check("latency", verdict.status, verdict.message, verdict.median_baseline,
                              verdict.median_current, verdict.to_json())
                cells.append(Cell(device, "mnist", profile, fmt, verdict.status, verdict.message, [check],
                                  current=_doc(device, fmt, profile, cur, acc, size),
                                  baseline=_doc(device, fmt, profile, base, acc, size)))
    return CIResult(run_id=f"synthetic-{devices}", lab="synthetic", cells=cells,
                    baseline={"label": "synthetic baseline", "note": "drawn from a seeded generator"},
                    gates={"latency": {"min_effect": 0.05, "alpha": 0.01}},
                    devices={f"dev-{d:02d}": {} for d in range(devices)})
