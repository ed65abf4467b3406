"""The plots of the HTML report, made with matplotlib's Agg backend (no display), returned as PNG bytes.

* :func:`latency_distributions` — box plots of the raw samples of every artifact (current, and the baseline's
  beside it);
* :func:`pareto` — accuracy vs latency, marker area ∝ artifact size, the Pareto front (faster AND at least as
  accurate) marked;
* :func:`per_device` — p50 per artifact, one bar per device (p10–p90 whiskers);
* :func:`baseline_vs_current` — median ratio current / baseline with its bootstrap CI, the min-effect line.

Each returns ``None`` when there is nothing to draw (e.g. no baseline).
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np

from edgeopt.results.reader import get, samples

COLORS = {"pass": "#2e7d32", "improved": "#1565c0", "new": "#6a1b9a", "regression": "#c62828",
          "error": "#757575", "invalid": "#ef6c00"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _measured(cells: Sequence[Any]) -> list[Any]:
    return [c for c in cells if samples(c.current)]


def _label(cell: Any, device: bool = True) -> str:
    base = f"{cell.model}/{cell.profile or '-'}/{cell.format}"
    return f"{cell.device}: {base}" if device else base


def latency_distributions(cells: Sequence[Any]) -> bytes | None:
    cells = _measured(cells)
    if not cells:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(cells) * 2 + 1.2))
    data, labels, colors, positions = [], [], [], []
    pos = 0.0
    for cell in reversed(cells):
        base = samples(cell.baseline)
        if base:
            data.append(base)
            labels.append(f"{_label(cell)} (baseline)")
            colors.append("#bdbdbd")
            positions.append(pos)
            pos += 1
        data.append(samples(cell.current))
        labels.append(_label(cell))
        colors.append(COLORS.get(cell.status, "#1976d2"))
        positions.append(pos)
        pos += 1.5
    box = ax.boxplot(data, positions=positions, vert=False, widths=0.7, patch_artist=True, showfliers=True,
                     flierprops={"markersize": 2, "alpha": 0.4})
    for patch, color in zip(box["boxes"], colors):
        patch.set_facecolor(color)
        patch.set_alpha(0.6)
    ax.set_yticks(positions)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("latency per inference (ms), raw samples")
    ax.set_title("Latency distribution per artifact (grey: baseline)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower latency (x) and higher-or-equal accuracy (y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def pareto(cells: Sequence[Any]) -> bytes | None:
    rows = []
    for cell in _measured(cells):
        p50 = get(cell.current, "agent", "latency_ms", "p50")
        acc = get(cell.current, "artifact", "metrics", "accuracy")
        if acc is None:
            acc = get(cell.current, "agent", "parity", "accuracy")
        size = get(cell.current, "artifact", "bytes") or 0
        if isinstance(p50, (int, float)) and isinstance(acc, (int, float)):
            rows.append((cell, float(p50), float(acc), float(size)))
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    sizes = np.array([r[3] for r in rows])
    area = 40 + 400 * sizes / max(sizes.max(), 1.0)
    devices = sorted({r[0].device for r in rows})
    cmap = plt.get_cmap("tab10")
    for k, device in enumerate(devices):
        idx = [i for i, r in enumerate(rows) if r[0].device == device]
        ax.scatter([rows[i][1] for i in idx], [rows[i][2] for i in idx], s=area[idx], alpha=0.55,
                   color=cmap(k % 10), label=device, edgecolors="black", linewidths=0.5)
    for cell, x, y, size in rows:
        ax.annotate(f"{cell.profile or '-'}/{cell.format}\n{size / 1024:.1f} KiB", (x, y), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    front = sorted(pareto_front([(r[1], r[2]) for r in rows]), key=lambda i: rows[i][1])
    ax.step([rows[i][1] for i in front], [rows[i][2] for i in front], where="post", color="#c62828", lw=1.5,
            label="Pareto front")
    ax.scatter([rows[i][1] for i in front], [rows[i][2] for i in front], s=area[front] * 1.6,
               facecolors="none", edgecolors="#c62828", linewidths=1.5)
    ax.set_xlabel("p50 latency (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs latency (marker area ∝ size; red: Pareto front)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def per_device(cells: Sequence[Any]) -> bytes | None:
    cells = _measured(cells)
    if not cells:
        return None
    plt = _plt()
    artifacts = sorted({_label(c, device=False) for c in cells})
    devices = sorted({c.device for c in cells})
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(artifacts) * max(1, len(devices)) / 2 + 3), 4.5))
    width = 0.8 / len(devices)
    cmap = plt.get_cmap("tab10")
    for k, device in enumerate(devices):
        xs, p50, lo, hi = [], [], [], []
        for i, art in enumerate(artifacts):
            cell = next((c for c in cells if c.device == device and _label(c, device=False) == art), None)
            if cell is None:
                continue
            s = np.asarray(samples(cell.current))
            xs.append(i + (k - (len(devices) - 1) / 2) * width)
            med = float(np.median(s))
            p50.append(med)
            lo.append(med - float(np.percentile(s, 10)))
            hi.append(float(np.percentile(s, 90)) - med)
        ax.bar(xs, p50, width=width, yerr=[lo, hi], capsize=3, color=cmap(k % 10), alpha=0.8, label=device)
    ax.set_xticks(range(len(artifacts)))
    ax.set_xticklabels(artifacts, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("p50 latency (ms), whiskers p10–p90")
    ax.set_title("Per-device comparison")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def baseline_vs_current(cells: Sequence[Any], min_effect: float | None = None) -> bytes | None:
    rows = []
    for cell in cells:
        lat = cell.check("latency") if hasattr(cell, "check") else None
        d = (lat.details if lat else {}) or {}
        if d.get("ratio"):
            rows.append((cell, d["ratio"], d.get("ci_low") or d["ratio"], d.get("ci_high") or d["ratio"]))
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    ys = np.arange(len(rows))[::-1]
    for y, (cell, ratio, low, high) in zip(ys, rows):
        ax.errorbar([(ratio - 1) * 100], [y], xerr=[[(ratio - low) * 100], [(high - ratio) * 100]], fmt="o",
                    color=COLORS.get(cell.status, "#1976d2"), capsize=4)
    ax.axvline(0, color="black", lw=0.8)
    if min_effect is not None:
        ax.axvline(min_effect * 100, color="#c62828", ls="--", lw=1, label=f"min effect +{min_effect * 100:.0f}%")
        ax.legend(fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([_label(r[0]) for r in rows], fontsize=8)
    ax.set_xlabel("median latency change vs baseline (%), bootstrap CI")
    ax.set_title("Baseline vs current")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)
