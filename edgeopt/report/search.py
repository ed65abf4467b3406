"""The search's pictures: accuracy vs latency plot (PNG) and the table + plot as one self-contained HTML file."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.build.search import SearchResult
from edgeopt.report.html import search_report_html


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
    with tempfile.TemporaryDirectory(prefix="edgeopt-search-") as tmp:
        png = plot_pareto(result, Path(tmp) / "pareto.png").read_bytes()
    atomic_write_bytes(Path(path), search_report_html(result, png).encode())
    return Path(path)
