"""The plots of the CI HTML report (matplotlib, Agg backend), each a ``*_figure`` builder (a Figure, for tests
that measure it) and a PNG twin (what the report embeds). Readable at 2 and at 30 devices: one colour and marker
per device in every plot (:func:`edgeopt.report.style.series_styles`, colour-blind safe), log latency axes where
a range spans > 10x, units in every axis title, labels placed without overlap (adjustText).

* :func:`latency_distributions` — box plots of the raw samples of every artifact on every device (the
  baseline's grey beside it);
* :func:`pareto` — accuracy vs p50 latency, marker area ∝ artifact size, **one Pareto front per device** (a
  model runs on one device: a front across devices is no choice anyone has); beyond four devices one panel each;
* :func:`per_device` — p50 per artifact and device with p10–p90 whiskers (a dot plot: a 0.03 ms device stays
  visible beside a 14 ms one on the log axis);
* :func:`baseline_vs_current` — median ratio current / baseline with its bootstrap CI, the min-effect line.

Each returns ``None`` when there is nothing to draw (e.g. no baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgeopt.report import style
from edgeopt.results.reader import get, samples

BASELINE_GREY = "#bdbdbd"
PANEL_ABOVE = 4  # more devices than this: one Pareto panel per device


@dataclass
class Point:
    cell: Any
    device: str
    artifact: str
    samples: list[float]


def _artifact(cell: Any, with_model: bool) -> str:
    base = f"{cell.profile or '-'}/{cell.format}"
    return f"{cell.model}/{base}" if with_model else base


def _points(cells: Sequence[Any]) -> list[Point]:
    measured = [c for c in cells if samples(c.current)]
    with_model = len({c.model for c in cells}) > 1
    return [Point(c, c.device, _artifact(c, with_model), samples(c.current)) for c in measured]


def _styles(cells: Sequence[Any]) -> dict[str, style.Style]:
    """Styles over EVERY cell's device (measured or not), so each plot of one report colours a device alike."""
    return style.series_styles(c.device for c in cells)


def _grouped(points: list[Point]) -> list[tuple[str, list[Point]]]:
    """Points grouped by artifact (sorted), devices sorted within."""
    groups: dict[str, list[Point]] = {}
    for p in points:
        groups.setdefault(p.artifact, []).append(p)
    return [(a, sorted(ps, key=lambda p: p.device)) for a, ps in sorted(groups.items())]


def _rows_layout(ax: Any, groups: list[tuple[str, list[Point]]], step: float = 1.0, gap: float = 1.2
                 ) -> list[tuple[float, Point]]:
    """y positions from the top, a gap and a bold artifact title between groups; ticks name the devices."""
    y = 0.0
    placed: list[tuple[float, Point]] = []
    titles: list[tuple[float, str]] = []
    for artifact, pts in groups:
        titles.append((y, artifact))
        y -= gap
        for p in pts:
            placed.append((y, p))
            y -= step
    ax.set_yticks([yy for yy, _ in placed])
    ax.set_yticklabels([p.device for _, p in placed], fontsize=7)
    for yy, artifact in titles:
        ax.text(0.0, yy - 0.2, artifact, transform=ax.get_yaxis_transform(), fontsize=8, fontweight="bold",
                ha="left", va="center")
    ax.set_ylim(y + 0.3, 0.6)
    return placed


def _height(groups: list[tuple[str, list[Point]]], per_row: float = 0.26) -> float:
    return 1.6 + per_row * sum(len(ps) + 1.2 for _, ps in groups)


def latency_distributions_figure(cells: Sequence[Any]) -> Any | None:
    points = _points(cells)
    if not points:
        return None
    styles = _styles(cells)
    groups = _grouped(points)
    with_base = [p for p in points if samples(p.cell.baseline)]
    fig, ax = style.plt().subplots(figsize=(9, _height(groups, 0.34 if with_base else 0.26)))
    placed = _rows_layout(ax, groups)
    everything = [v for p in points for v in p.samples] + [v for p in with_base for v in samples(p.cell.baseline)]
    for y, p in placed:
        base = samples(p.cell.baseline)
        if base:
            b = ax.boxplot([base], positions=[y + 0.22], orientation="horizontal", widths=0.36, patch_artist=True,
                           showfliers=False, manage_ticks=False)
            b["boxes"][0].set_facecolor(BASELINE_GREY)
            for med in b["medians"]:
                med.set_color("#616161")
        c = ax.boxplot([p.samples], positions=[y - (0.18 if base else 0)], orientation="horizontal",
                       widths=0.36 if base else 0.6, patch_artist=True, manage_ticks=False,
                       flierprops={"markersize": 2, "alpha": 0.4, "markeredgecolor": styles[p.device].color})
        c["boxes"][0].set_facecolor(styles[p.device].color)
        c["boxes"][0].set_alpha(0.75)
        for med in c["medians"]:
            med.set_color("black")
    style.set_latency_axis(ax, everything, label="latency per inference (ms), raw samples")
    ax.set_title("Latency distribution per artifact and device" + (" (grey: baseline)" if with_base else ""),
                 fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.25)
    return fig


def latency_distributions(cells: Sequence[Any]) -> bytes | None:
    fig = latency_distributions_figure(cells)
    return style.png(fig) if fig is not None else None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower latency (x) and higher-or-equal accuracy (y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def _accuracy(cell: Any) -> float | None:
    acc = get(cell.current, "artifact", "metrics", "accuracy")
    if acc is None:
        acc = get(cell.current, "agent", "parity", "accuracy")
    return float(acc) if isinstance(acc, (int, float)) and math.isfinite(acc) else None


def pareto_figure(cells: Sequence[Any]) -> Any | None:
    rows = []
    for p in _points(cells):
        p50 = get(p.cell.current, "agent", "latency_ms", "p50")
        acc = _accuracy(p.cell)
        if isinstance(p50, (int, float)) and p50 > 0 and acc is not None:
            rows.append((p, float(p50), 100.0 * acc, float(get(p.cell.current, "artifact", "bytes") or 0)))
    if not rows:
        return None
    styles = _styles(cells)
    devices = sorted({r[0].device for r in rows})
    panels = len(devices) > PANEL_ABOVE
    plt = style.plt()
    if panels:
        ncols = min(5, len(devices))
        nrows = math.ceil(len(devices) / ncols)
        fig, grid = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows + 0.8), sharey=True,
                                 squeeze=False)
        axes = {d: grid.flat[i] for i, d in enumerate(devices)}
        for extra in list(grid.flat)[len(devices):]:
            extra.set_visible(False)
    else:
        fig, ax = plt.subplots(figsize=(9, 5.5))
        axes = {d: ax for d in devices}
    biggest = max(r[3] for r in rows) or 1.0
    by_axes: dict[int, list[tuple[float, float, str, str, float]]] = {}
    for device in devices:
        ax = axes[device]
        mine = [r for r in rows if r[0].device == device]
        st = styles[device]
        ax.scatter([r[1] for r in mine], [r[2] for r in mine], s=[30 + 300 * r[3] / biggest for r in mine],
                   color=st.color, marker=st.marker, alpha=0.7, edgecolors="black", linewidths=0.5, label=device,
                   zorder=3)
        front = sorted(pareto_front([(r[1], r[2]) for r in mine]), key=lambda i: mine[i][1])
        ax.step([mine[i][1] for i in front], [mine[i][2] for i in front], where="post", color=st.color, lw=1.4,
                ls="--", zorder=2, label=f"{device}: Pareto front" if not panels else None)
        by_axes.setdefault(id(ax), []).extend((r[1], r[2], r[0].artifact, st.color, 30 + 300 * r[3] / biggest)
                                              for r in mine)
        if panels:
            ax.set_title(device, fontsize=8, color=style.readable(st.color))
    all_y = [r[2] for r in rows]
    for ax in dict.fromkeys(axes.values()):
        pts = by_axes[id(ax)]
        ax.grid(which="both", alpha=0.25)
        ax.tick_params(labelsize=7 if panels else 9)
        # panels: each device its own latency range (a model runs on one device); accuracy shared
        log = style.set_latency_axis(ax, [p[0] for p in pts], label="p50 (ms)" if panels else
                                     "p50 latency per inference (ms)")
        if panels:
            ax.xaxis.label.set_fontsize(7)
        style.pad_limits(ax, [p[0] for p in pts], all_y if panels else [p[1] for p in pts], log)
    if panels:
        fig.supylabel("accuracy (%)", fontsize=9)
        fig.suptitle("Accuracy vs p50 latency, one panel and one Pareto front (dashed) per device; marker area ∝ "
                     "artifact bytes", fontsize=10)
        fig.tight_layout()
    else:
        ax = next(iter(axes.values()))
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Accuracy vs latency — dashed: each device's Pareto front; marker area ∝ artifact bytes",
                     fontsize=10)
        style.legend_outside(ax, 2 * len(devices), title="device")
        fig.tight_layout()
    if panels:
        fig.canvas.draw()  # final panel sizes, once: each panel's labels are then placed on a scratch figure
    for ax in dict.fromkeys(axes.values()):
        pts = by_axes[id(ax)]
        place = style.place_labels_detached if panels else style.place_labels
        place(ax, [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts], sizes=[p[4] for p in pts],
              colors=[p[3] for p in pts])
    return fig


def pareto(cells: Sequence[Any]) -> bytes | None:
    fig = pareto_figure(cells)
    return style.png(fig) if fig is not None else None


def per_device_figure(cells: Sequence[Any]) -> Any | None:
    points = _points(cells)
    if not points:
        return None
    styles = _styles(cells)
    groups = _grouped(points)
    fig, ax = style.plt().subplots(figsize=(9, _height(groups)))
    placed = _rows_layout(ax, groups)
    shown: set[str] = set()
    values: list[float] = []
    for y, p in placed:
        s = np.asarray(p.samples)
        med, lo, hi = float(np.median(s)), float(np.percentile(s, 10)), float(np.percentile(s, 90))
        values += [lo, hi]
        st = styles[p.device]
        ax.errorbar([med], [y], xerr=[[med - lo], [hi - med]], fmt=st.marker, color=st.color, ms=6, capsize=3,
                    mec="black", mew=0.5, label=p.device if p.device not in shown else None)
        ax.annotate(f"{med:.3g}", (med, y), xytext=(0, 5), textcoords="offset points", fontsize=6, ha="center")
        shown.add(p.device)
    style.set_latency_axis(ax, values, label="p50 latency per inference (ms), whiskers p10–p90")
    ax.set_title("Per-device comparison (each device one colour and marker)", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.25)
    if 1 < len(shown) <= 16:
        style.legend_outside(ax, len(shown), title="device")
    return fig


def per_device(cells: Sequence[Any]) -> bytes | None:
    fig = per_device_figure(cells)
    return style.png(fig) if fig is not None else None


def baseline_vs_current_figure(cells: Sequence[Any], min_effect: float | None = None) -> Any | None:
    rows = []
    with_model = len({c.model for c in cells}) > 1
    for cell in cells:
        lat = cell.check("latency") if hasattr(cell, "check") else None
        d = (lat.details if lat else {}) or {}
        if d.get("ratio"):
            rows.append((cell, d["ratio"], d.get("ci_low") or d["ratio"], d.get("ci_high") or d["ratio"]))
    if not rows:
        return None
    styles = _styles(cells)
    fig, ax = style.plt().subplots(figsize=(9, 0.3 * len(rows) + 1.6))
    ys = np.arange(len(rows))[::-1]
    for y, (cell, ratio, low, high) in zip(ys, rows):
        st = styles[cell.device]
        ax.errorbar([(ratio - 1) * 100], [y], xerr=[[(ratio - low) * 100], [(high - ratio) * 100]], fmt=st.marker,
                    color=st.color, mec="black", mew=0.5, capsize=4)
    ax.axvline(0, color="black", lw=0.8)
    if min_effect is not None:
        ax.axvline(min_effect * 100, color="black", ls="--", lw=1, label=f"min effect +{min_effect * 100:.0f}%")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(ys)
    labels = ax.set_yticklabels([f"{r[0].device}: {_artifact(r[0], with_model)} — {r[0].status}" for r in rows],
                                fontsize=7)
    for text, r in zip(labels, rows):
        if r[0].status == "regression":
            text.set_fontweight("bold")
    ax.set_xlabel("median latency change vs baseline (%), bootstrap CI")
    ax.set_title("Baseline vs current (bold: regression)", fontsize=10)
    ax.grid(axis="x", alpha=0.25)
    return fig


def baseline_vs_current(cells: Sequence[Any], min_effect: float | None = None) -> bytes | None:
    fig = baseline_vs_current_figure(cells, min_effect)
    return style.png(fig) if fig is not None else None
