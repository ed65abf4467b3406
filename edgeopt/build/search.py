"""The best profile for a target, from measured numbers: ``edgeopt build --target T --search``.

1. build every candidate profile (the target's default profiles plus the compression profiles; cached builds are
   reused) — accuracy and sizes come from the build's own evaluation (manifest);
2. benchmark every artifact on the target through ``edgeopt.bench`` (the agent on the device; ``local`` runs here)
   — p50 latency, and energy per inference where the target measures it;
3. one row per (profile, format): accuracy, accuracy drop (pp) against the float source model, bytes, gzip bytes,
   p50 latency, energy; the Pareto front over (accuracy up, latency down, bytes down, gzip bytes down, energy down
   when every row has it: raw bytes are what flash/RAM hold, gzip bytes what a download or OTA update costs — where
   pruning pays); the recommendation = among rows on the front within ``--max-accuracy-drop``, the best by
   ``--objective`` (ties: higher accuracy, then smaller).

Without labels in the eval data the "accuracy" is top-1 agreement with the float model (the drop is then the
disagreement, in pp); the table says which.

CLI hooks (``edgeopt/cli.py`` owns the parser): :func:`add_arguments` adds ``--search``, ``--max-accuracy-drop``,
``--objective`` (and the search's bench knobs) to the ``build`` sub-parser; :func:`run_from_args` runs it and prints.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from edgeopt.errors import ConfigError

COMPRESSION_PROFILES = ["pruned-int8", "distilled-int8", "qat-int8"]
OBJECTIVES = ("latency", "size", "download", "energy", "accuracy")
_OBJECTIVE_KEY = {"latency": "latency_p50_ms", "size": "bytes", "download": "bytes_gzip",
                  "energy": "energy_per_inference_j"}


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

    @property
    def front(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["pareto"]]

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "objective": self.objective, "max_accuracy_drop_pp": self.max_accuracy_drop,
                "metric": self.metric, "energy_measured": self.energy_measured, "bench_run_id": self.run_id,
                "rows": self.rows, "pareto_front": [r["candidate"] for r in self.front],
                "recommended": self.recommended, "notes": self.notes}


def candidate_profiles(target: Any, extra: Sequence[str] | None = None) -> list[str]:
    """The target's default profiles and the compression profiles (unique, in that order)."""
    from edgeopt.config import available

    known = available("profiles")
    names = list(dict.fromkeys([*target.default_profiles, *COMPRESSION_PROFILES, *(extra or [])]))
    return [n for n in names if n in known]


def _energy(agent: dict[str, Any] | None) -> float | None:
    """Energy per inference (J) from an agent document, wherever the agent put it; None when not measured."""
    if not isinstance(agent, dict):
        return None
    stack: list[Any] = [agent.get("energy")]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            for key in ("energy_per_inference_above_idle_j", "energy_per_inference_j"):
                v = cur.get(key)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    return float(v)
            stack.extend(v for v in cur.values() if isinstance(v, dict))
    return None


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
                "energy_per_inference_j": _energy(doc.get("agent")) if doc.get("valid") else None,
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


def recommend(rows: list[dict[str, Any]], objective: str, max_drop: float) -> dict[str, Any] | None:
    ok = [r for r in rows if r["pareto"] and r["accuracy_drop_pp"] is not None and r["accuracy_drop_pp"] <= max_drop]
    for r in rows:
        r["within_budget"] = r["accuracy_drop_pp"] is not None and r["accuracy_drop_pp"] <= max_drop
    if not ok:
        return None
    if objective == "accuracy":
        key = lambda r: (-r["accuracy"], r["latency_p50_ms"], r["bytes"])  # noqa: E731
    else:
        k = _OBJECTIVE_KEY[objective]
        key = lambda r: (r[k], -r["accuracy"], r["bytes"], r["latency_p50_ms"])  # noqa: E731
    best = min(ok, key=key)
    return {"candidate": best["candidate"], "profile": best.get("profile"), "format": best.get("format"),
            "why": f"on the Pareto front, accuracy drop {best['accuracy_drop_pp']:.2f} pp <= {max_drop:g} pp, "
                   f"best {objective}"}


def run_search(target: str | Any = "local", *, model: str | None = None, data: str | None = None,
               eval: str | None = None, train: str | None = None, out: Path = Path("artifacts"),
               results: Path = Path("results"), profiles: Sequence[str] | None = None,
               max_accuracy_drop: float = 1.0, objective: str = "latency", runs: int = 50, warmup: int = 5,
               force: bool = False, reporter: Any = None, bench_progress: Any = None,
               connection: dict[str, Any] | None = None) -> SearchResult:
    """Build the candidates, benchmark them on the target, and pick. ``connection``: BenchOptions overrides
    (host, user, port, key, python, accept_new_host_key, known_hosts, ssh_config)."""
    from edgeopt.bench.run import BenchOptions, bench
    from edgeopt.build.pipeline import BuildRequest, build
    from edgeopt.config import load_profile, load_target

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
    built = build(req, reporter)
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
    best = recommend(rows, objective, max_accuracy_drop)
    result = SearchResult(tgt.name, objective, max_accuracy_drop, rows, best, metric, energy, run.run_id)
    if best is None:
        result.notes.append(f"no candidate on the Pareto front is within {max_accuracy_drop:g} pp of the float "
                            f"model's {metric}")
    failed = [r["candidate"] for r in rows if not r["bench_valid"]]
    if failed:
        result.notes.append(f"not measured (bench failed): {', '.join(failed)}")
    return result


# -- output -------------------------------------------------------------------------------------------------
def print_search(result: SearchResult, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    table = Table(title=f"edgeopt search — target {result.target}, objective {result.objective}, "
                        f"max accuracy drop {result.max_accuracy_drop:g} pp", title_justify="left")
    cols = ["candidate", result.metric, "drop pp", "bytes", "gzip bytes", "sparsity", "p50 ms"]
    if result.energy_measured:
        cols.append("mJ/inference")
    cols += ["front", ""]
    for c in cols:
        table.add_column(c, justify="left" if c in ("candidate", "front", "") else "right")
    best = (result.recommended or {}).get("candidate")
    for r in sorted(result.rows, key=lambda r: (not r["pareto"], r["candidate"])):
        cells = [r["candidate"], _f(r["accuracy"], "{:.4f}"), _f(r["accuracy_drop_pp"], "{:+.2f}"),
                 f"{r['bytes']:,}", _f(r["bytes_gzip"], "{:,}"), _f(r["weight_sparsity"], "{:.1%}"),
                 _f(r["latency_p50_ms"], "{:.3f}")]
        if result.energy_measured:
            cells.append(_f(r["energy_per_inference_j"] and r["energy_per_inference_j"] * 1e3, "{:.4f}"))
        cells += ["*" if r["pareto"] else "", "recommended" if r["candidate"] == best else
                  ("over budget" if not r.get("within_budget") else "")]
        table.add_row(*cells)
    console.print(table)
    if result.recommended:
        console.print(f"recommended: {result.recommended['candidate']} ({result.recommended['why']})")
    for n in result.notes:
        console.print(f"note: {n}")


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def plot_pareto(result: SearchResult | dict[str, Any], path: Path) -> Path:
    """Accuracy vs p50 latency (marker area ~ bytes), the front joined, the recommendation circled: a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = result.to_json() if isinstance(result, SearchResult) else result
    rows = [r for r in data["rows"] if r["accuracy"] is not None and r["latency_p50_ms"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    biggest = max((r["bytes"] for r in rows), default=1)
    for r in rows:
        ax.scatter(r["latency_p50_ms"], 100 * r["accuracy"], s=30 + 400 * r["bytes"] / biggest,
                   alpha=0.6, color="tab:blue" if r["pareto"] else "tab:gray", edgecolors="black", linewidths=0.5)
        ax.annotate(r["candidate"], (r["latency_p50_ms"], 100 * r["accuracy"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["latency_p50_ms"])
    if front:
        ax.plot([r["latency_p50_ms"] for r in front], [100 * r["accuracy"] for r in front], "--",
                color="tab:blue", linewidth=0.8, label="Pareto front (accuracy, latency, size)")
    best = (data.get("recommended") or {}).get("candidate")
    for r in rows:
        if r["candidate"] == best:
            ax.scatter(r["latency_p50_ms"], 100 * r["accuracy"], s=600, facecolors="none", edgecolors="tab:red",
                       linewidths=1.5, label=f"recommended: {best}")
    ax.set_xlabel("p50 latency (ms)")
    ax.set_ylabel(f"{data.get('metric', 'accuracy')} (%)")
    ax.set_title(f"{data['target']}: accuracy vs latency (marker area ~ model bytes)", fontsize=9)
    ax.grid(alpha=0.3)
    if front or best:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_search_html(result: SearchResult, path: Path) -> Path:
    """The search table and plot as one self-contained HTML file (written atomically)."""
    import tempfile

    from edgeopt.artifacts.files import atomic_write_bytes
    from edgeopt.report.html import search_report_html

    with tempfile.TemporaryDirectory(prefix="edgeopt-search-") as tmp:
        png = plot_pareto(result, Path(tmp) / "pareto.png").read_bytes()
    atomic_write_bytes(Path(path), search_report_html(result, png).encode())
    return Path(path)


# -- CLI hooks ----------------------------------------------------------------------------------------------
def add_arguments(build_parser: argparse.ArgumentParser) -> None:
    """The ``edgeopt build`` options of the search (``--train`` is a plain build option, see build.py)."""
    g = build_parser.add_argument_group("search (pick the best profile for the target from measured numbers)")
    g.add_argument("--search", action="store_true",
                   help="build the candidate profiles (the target's defaults + pruned/distilled/qat int8, or "
                        "--profile), benchmark each on the target, print the Pareto front and the recommendation")
    g.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="PP",
                   help="accuracy budget in percentage points below the float model (default 1.0)")
    g.add_argument("--objective", choices=[o for o in OBJECTIVES], default="latency",
                   help="what the recommendation optimises among the front candidates within budget: latency (p50), "
                        "size (bytes), download (gzip bytes), energy (per inference), accuracy (default latency)")
    g.add_argument("--search-runs", type=int, default=50, metavar="N", help="timed runs per candidate (default 50)")
    g.add_argument("--results", default="results", metavar="DIR", help="results directory for the search's "
                   "benchmark (default ./results)")
    g.add_argument("--plot", metavar="PNG", help="write the accuracy/latency/size plot here")
    g.add_argument("--html", metavar="FILE", help="write the table and the plot as one self-contained HTML file")


def run_from_args(args: argparse.Namespace, reporter: Any = None) -> int:
    """``edgeopt build --search``: the lead's cmd_build calls this when ``args.search``."""
    profiles = [n for p in (getattr(args, "profile", None) or []) for n in p.split(",") if n] or None
    result = run_search(args.target, model=args.model, data=args.data, eval=args.eval,
                        train=getattr(args, "train", None), out=Path(args.out), results=Path(args.results),
                        profiles=profiles, max_accuracy_drop=args.max_accuracy_drop, objective=args.objective,
                        runs=args.search_runs, force=args.force, reporter=reporter)
    if args.plot:
        plot_pareto(result, Path(args.plot))
    if getattr(args, "html", None):
        write_search_html(result, Path(args.html))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        from rich.console import Console

        print_search(result, Console(highlight=False, width=200))
        if args.plot:
            print(f"plot: {args.plot}")
        if getattr(args, "html", None):
            print(f"report: {args.html}")
    return 0 if result.recommended else 1
