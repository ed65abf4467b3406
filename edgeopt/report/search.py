"""The search's pictures: accuracy vs latency plot (PNG) and the table + plot as one self-contained HTML file.

The plot stays readable from 2 to 30+ candidates: log latency axis when p50s span > 10x, candidate names placed
by adjustText (no two overlap), one colour and marker per format (colour-blind safe), the Pareto front ringed, the
candidates the recommendation found tied on latency with the fastest (the gate's test on raw samples) shaded,
the recommendation starred."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.build.search import SearchResult
from edgeopt.report import style
from edgeopt.report.html import search_report_html


def _data(result: SearchResult | dict[str, Any]) -> dict[str, Any]:
    return result.to_json() if isinstance(result, SearchResult) else result


def search_figure(result: SearchResult | dict[str, Any]) -> Any:
    """The accuracy-vs-latency figure (matplotlib Figure) of a search result or its JSON."""
    data = _data(result)
    rows = [r for r in data["rows"] if r["accuracy"] is not None and r["latency_p50_ms"] is not None]
    metric = "top-1 agreement with the float model" if data.get("metric") == "top1_agreement" else "accuracy"
    fig, ax = style.plt().subplots(figsize=(9, 5.5))
    styles = style.series_styles(r["format"] for r in data["rows"])
    biggest = max((r["bytes"] for r in rows), default=1) or 1
    xs = [float(r["latency_p50_ms"]) for r in rows]
    ys = [100 * float(r["accuracy"]) for r in rows]
    sizes = [30 + 300 * r["bytes"] / biggest for r in rows]
    legend = []
    for fmt, st in styles.items():
        idx = [i for i, r in enumerate(rows) if r["format"] == fmt]
        if idx:
            ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], s=[sizes[i] for i in idx], color=st.color,
                       marker=st.marker, alpha=0.75, edgecolors="black", linewidths=0.5, zorder=3)
            legend.append(style.proxy(fmt, marker=st.marker, color=st.color, markeredgecolor="black", ms=7))
    front = [i for i, r in enumerate(rows) if r.get("pareto")]
    if front:
        ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=[sizes[i] * 1.9 for i in front],
                   facecolors="none", edgecolors="black", linewidths=1.0, zorder=4)
        legend.append(style.proxy("ringed: Pareto front (accuracy, latency, bytes, gzip bytes)", marker="o",
                                  markerfacecolor="none", markeredgecolor="black", ms=10))
    rec = data.get("recommended") or {}
    tie = rec.get("tie") or {}
    if tie.get("called"):
        tied = {tie.get("fastest"), *tie.get("with", [])}
        lat = [r["latency_p50_ms"] for r in rows if r["candidate"] in tied]
        if lat:
            ax.axvspan(min(lat) * 0.995, max(lat) * 1.005, color="#56B4E9", alpha=0.18, zorder=1)
            legend.append(style.proxy("shaded: tied on latency with the fastest (the gate's test, raw samples)",
                                      marker="s", color="#56B4E9", alpha=0.4, ms=10))
    best = next((i for i, r in enumerate(rows) if r["candidate"] == rec.get("candidate")), None)
    if best is not None:
        ax.scatter([xs[best]], [ys[best]], s=420, marker="*", facecolors="none", edgecolors="black",
                   linewidths=1.4, zorder=6)
        legend.append(style.proxy(f"star: recommended ({rows[best]['candidate']})", marker="*",
                                  markerfacecolor="none", markeredgecolor="black", ms=12))
    log = style.set_latency_axis(ax, xs)
    style.pad_limits(ax, xs, ys, log)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{data['target']}: {metric} vs p50 latency (marker area ∝ model bytes)", fontsize=10)
    ax.grid(which="both", alpha=0.25)
    style.legend_outside(ax, 2, handles=legend, where="below")
    fig.tight_layout()
    style.place_labels(ax, xs, ys, [r["candidate"] for r in rows], sizes=[s * 1.9 for s in sizes])
    return fig


def plot_pareto(result: SearchResult | dict[str, Any], path: Path) -> Path:
    """The accuracy-vs-latency plot as a PNG file (written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, style.png(search_figure(result), dpi=110))
    return path


def write_search_html(result: SearchResult, path: Path) -> Path:
    """The search table and plot as one self-contained HTML file (written atomically)."""
    with tempfile.TemporaryDirectory(prefix="edgeopt-search-") as tmp:
        png = plot_pareto(result, Path(tmp) / "pareto.png").read_bytes()
    atomic_write_bytes(Path(path), search_report_html(result, png).encode())
    return Path(path)
