"""The best profile for a target, from measured numbers: ``edgeopt build --target T --search``.

1. build every candidate profile (the target's default profiles plus the compression profiles; cached builds are
   reused) — accuracy and sizes come from the build's own evaluation (manifest). In this process by default; with
   a ``runner`` (``--ray local|auto``) each candidate is one cell of :mod:`edgeopt.build.matrix` (one Ray task),
   in the same layout and under the same content keys, so either way finds the other's builds cached; a
   candidate whose cell fails is left out (its line in the notes) and the search goes on with the others;
2. benchmark every artifact on the target through ``edgeopt.bench`` (the agent on the device; ``local`` runs here)
   — p50 latency, and energy per inference where the target measures it;
3. one row per (profile, format): accuracy, accuracy drop (pp) against the float source model, bytes, gzip bytes,
   p50 latency, energy; the Pareto front over (accuracy up, latency down, bytes down, gzip bytes down, energy down
   when every row has it: raw bytes are what flash/RAM hold, gzip bytes what a download or OTA update costs — where
   pruning pays); the recommendation = among rows on the front within ``--max-accuracy-drop``, the best by
   ``--objective`` — :func:`edgeopt.build.recommend.recommend` (latency ties decided by the CI gate's test).

Without labels in the eval data the "accuracy" is top-1 agreement with the float model (the drop is then the
disagreement, in pp); the table says which.

The command line (``edgeopt/cli/build.py``) prints the result; ``edgeopt/report/search.py`` plots it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from edgeopt.bench import BenchOptions, bench
from edgeopt.build import recommend as recommendation
from edgeopt.build.matrix import CellRunner, MatrixProgress, run_matrix, single_model_cells
from edgeopt.build.pipeline import BuildRequest, BuildResult, build
from edgeopt.config import available, load_profile, load_target
from edgeopt.errors import ConfigError, ConversionError
from edgeopt.results.reader import energy_per_inference

COMPRESSION_PROFILES = ["pruned-int8", "distilled-int8", "qat-int8"]
OBJECTIVES = ("latency", "size", "download", "energy", "accuracy")


@dataclass
class SearchResult:
    target: str
    objective: str
    max_accuracy_drop: float
    rows: list[dict[str, Any]]
    recommended: dict[str, Any] | None
    metric: str  # "accuracy" or "top1_agreement"
    energy_measured: bool
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    # how the candidates were built: sent (built, in this process or as Ray tasks), cached, failed [{profile, error}]
    build: dict[str, Any] = field(default_factory=dict)

    @property
    def front(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["pareto"]]

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "objective": self.objective, "max_accuracy_drop_pp": self.max_accuracy_drop,
                "metric": self.metric, "energy_measured": self.energy_measured, "bench_run_id": self.run_id,
                "rows": self.rows, "pareto_front": [r["candidate"] for r in self.front],
                "recommended": self.recommended, "notes": self.notes, "build": self.build}


def candidate_profiles(target: Any, extra: Sequence[str] | None = None) -> list[str]:
    """The target's default profiles and the compression profiles (unique, in that order)."""
    known = available("profiles")
    names = list(dict.fromkeys([*target.default_profiles, *COMPRESSION_PROFILES, *(extra or [])]))
    return [n for n in names if n in known]


def table_rows(build_results: list[Any], bench_docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """One row per (profile, format) that built and ran."""
    by_key = {(d.get("profile"), d.get("format")): d for d in bench_docs}
    rows = []
    with_labels = all((a.get("metrics") or {}).get("accuracy") is not None
                      for r in build_results for a in r.manifest["artifacts"])
    metric = "accuracy" if with_labels else "top1_agreement"
    for r in build_results:
        transform = r.manifest.get("transform") or {}
        for a in r.manifest["artifacts"]:
            m = a.get("metrics") or {}
            doc = by_key.get((r.profile, a["format"])) or {}
            lat = ((doc.get("agent") or {}).get("latency_ms") or {})
            acc = m.get(metric)
            if metric == "accuracy":
                drop = m.get("accuracy_drop_pp")
                if drop is None and acc is not None and m.get("float_accuracy") is not None:
                    drop = round(100 * (m["float_accuracy"] - acc), 3)
            else:
                drop = round(100 * (1 - acc), 3) if acc is not None else None
            rows.append({
                "candidate": f"{r.profile}/{a['format']}", "profile": r.profile, "format": a["format"],
                "accuracy": acc, "accuracy_drop_pp": drop,
                "bytes": a["bytes"], "bytes_gzip": a.get("bytes_gzip"),
                "weight_sparsity": (a.get("weight_sparsity") or {}).get("sparsity"),
                "params": a.get("params"),
                "latency_p50_ms": lat.get("p50") if doc.get("valid") else None,
                "latency_p90_ms": lat.get("p90") if doc.get("valid") else None,
                "energy_per_inference_j": energy_per_inference(doc) if doc.get("valid") else None,
                "bench_valid": bool(doc.get("valid")),
                "bench_error": (doc.get("error") or {}).get("message") if doc else "not benchmarked",
                "transform": transform.get("kind"),
                "directory": str(r.directory),
            })
    return rows, metric


def pareto(rows: list[dict[str, Any]], use_energy: bool) -> None:
    """Mark ``pareto`` on each row: no other row is at least as good on every axis and better on one.
    Axes: accuracy (max), latency p50 (min), bytes (min), gzip bytes (min), energy per inference (min, when
    measured for all)."""
    def axes(r: dict[str, Any]) -> tuple[float, ...] | None:
        if r["accuracy"] is None or r["latency_p50_ms"] is None:
            return None
        v = [-float(r["accuracy"]), float(r["latency_p50_ms"]), float(r["bytes"]),
             float(r.get("bytes_gzip") or r["bytes"])]
        if use_energy:
            v.append(float(r["energy_per_inference_j"]))
        return tuple(v)

    pts = [axes(r) for r in rows]
    for r, p in zip(rows, pts):
        if p is None:
            r["pareto"] = False
            continue
        r["pareto"] = not any(q is not None and q != p and all(a <= b for a, b in zip(q, p)) for q in pts)


def run_search(target: str | Any = "local", *, model: str | None = None, data: str | None = None,
               eval: str | None = None, train: str | None = None, out: Path = Path("artifacts"),
               results: Path = Path("results"), profiles: Sequence[str] | None = None,
               max_accuracy_drop: float = 1.0, objective: str = "latency", runs: int = 50, warmup: int = 5,
               force: bool = False, reporter: Any = None, bench_progress: Any = None,
               connection: dict[str, Any] | None = None, runner: CellRunner | None = None,
               progress: MatrixProgress | None = None) -> SearchResult:
    """Build the candidates, benchmark them on the target, and pick. ``connection``: BenchOptions overrides
    (host, user, port, key, python, accept_new_host_key, known_hosts, ssh_config). ``runner``: build the
    candidates as matrix cells (``edgeopt.build.ray_cells.ray_runner``), one ``progress`` event per cell; the
    benchmark stays here, one candidate after the other, on the target."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective {objective!r}: allowed {', '.join(OBJECTIVES)}")
    if not (max_accuracy_drop >= 0 and math.isfinite(max_accuracy_drop)):
        raise ConfigError(f"--max-accuracy-drop must be 0 or more percentage points (got {max_accuracy_drop:g})")
    tgt = load_target(target) if isinstance(target, str) else target
    names = list(profiles) if profiles else candidate_profiles(tgt)
    if not names:
        raise ConfigError("no candidate profiles for --search", "pass --profile names to compare")
    if tgt.transport == "none":
        raise ConfigError(f"target {tgt.name} has no transport (transport: none): nothing can be measured on it",
                          "search on a target the agent can run on (local, ssh)")
    req = BuildRequest(target=tgt, profiles=[load_profile(n) for n in names], model=model, data=data, eval=eval,
                       train=train, out=Path(out), force=force)
    failed: list[dict[str, str]] = []
    if runner is None:
        built = build(req, reporter)
        sent = sum(not r.cached for r in built)
    else:
        built, failed, sent = build_cells(req, runner, progress)
    opts = BenchOptions(targets=[tgt.source_file or tgt.name], profiles=[r.profile for r in built],
                        artifacts=Path(out), results=Path(results), runs=runs, warmup=warmup,
                        command=f"edgeopt build --search --target {tgt.name}", **(connection or {}))
    run = bench(opts, bench_progress)
    rows, metric = table_rows(built, run.results)
    energy = bool(rows) and all(r["energy_per_inference_j"] is not None for r in rows)
    if objective == "energy" and not energy:
        raise ConfigError(f"--objective energy: no energy was measured on target {tgt.name}",
                          "give the target an energy sensor (energy_sensor in its YAML) or use --objective "
                          "latency|size")
    pareto(rows, energy)
    best = recommendation.recommend(rows, objective, max_accuracy_drop, docs=run.results)
    result = SearchResult(tgt.name, objective, max_accuracy_drop, rows, best, metric, energy, run.run_id)
    result.build = {"runner": "cells" if runner is not None else "in-process", "sent": sent,
                    "cached": sum(r.cached for r in built), "failed": failed}
    for f in failed:
        result.notes.append(f"not built (its cell failed, the search went on without it): {f['profile']}: "
                            f"{f['error']}")
    if best is None:
        result.notes.append(f"no candidate on the Pareto front is within {max_accuracy_drop:g} pp of the float "
                            f"model's {metric}")
    unmeasured = [r["candidate"] for r in rows if not r["bench_valid"]]
    if unmeasured:
        result.notes.append(f"not measured (bench failed): {', '.join(unmeasured)}")
    return result


def build_cells(req: BuildRequest, runner: CellRunner,
                progress: MatrixProgress | None) -> tuple[list[BuildResult], list[dict[str, str]], int]:
    """The candidates as matrix cells (one per profile, ``<out>/<target>/<profile>``, the plain build's layout
    and content keys; cached cells are answered before anything is sent). Returns the built ones in the
    candidates' order, the failed ones with their line, and how many cells were handed out; every candidate
    failing is an error."""
    outcomes = run_matrix(single_model_cells(req), progress, runner)
    built = [o.result for o in outcomes if o.result is not None]
    failed = [{"profile": o.cell.profile.name, "error": o.error or "failed"} for o in outcomes if o.result is None]
    if not built:
        raise ConversionError(f"no search candidate could be built ({len(failed)} failed; "
                              f"{failed[0]['profile']}: {failed[0]['error']})",
                              "fix it and rerun; a cell that builds is kept and cached")
    return built, failed, sum(o.sent for o in outcomes)
