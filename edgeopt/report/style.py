"""What every plot of the reports shares: colour-blind-safe colours fixed per device (or per series), log axes where
a range spans more than ~10x, labels placed without overlap by adjustText, and the overlap count that checks it.

* Colours: the Okabe–Ito palette (Okabe & Ito 2008, "Color Universal Design"; distinguishable under the common
  colour-vision deficiencies), yellow last (poor contrast on white). Beyond eight series the marker shape changes
  too, so every (colour, marker) pair stays unique up to 64 devices. :func:`series_styles` gives the same style to
  the same name whatever subset a plot draws, as long as it is given the same names.
* :func:`wants_log`: a latency axis is logarithmic when max/min > ``LOG_RATIO`` (10): a 0.03 ms artifact next to a
  14 ms one stays visible.
* :func:`place_labels`: text labels next to their points, moved apart by ``adjustText`` (a fixed number of
  iterations: the same figure every time, whatever the machine's load), with thin leader lines.
* :func:`label_overlaps`: how many pairs of label bounding boxes (renderer extents, in pixels) intersect.
"""

from __future__ import annotations

import io
import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LOG_RATIO = 8.0  # "spans more than ~10x": 0.06 vs 0.57 ms (9.6x) is already unreadable on a linear axis
LABEL_GID = "edgeopt-label"  # the gid of every placed label (what label_overlaps counts)
FRONT_COLOR = "#000000"
ADJUST_ITERATIONS = 400
MIN_ARROW_PX = 8
ARROW = {"arrowstyle": "-", "color": "#555555", "lw": 0.5}
LABEL_BOX = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.7}


@dataclass(frozen=True)
class Style:
    color: str
    marker: str


def series_styles(names: Iterable[str]) -> dict[str, Style]:
    """A fixed style per name (sorted, so the same set of names always maps the same way)."""
    ordered = sorted(set(names))
    return {name: Style(OKABE_ITO[i % len(OKABE_ITO)], MARKERS[(i // len(OKABE_ITO)) % len(MARKERS)])
            for i, name in enumerate(ordered)}


def plt() -> Any:
    """matplotlib.pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as pyplot

    return pyplot


def png(fig: Any, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt().close(fig)
    return buf.getvalue()


def wants_log(values: Iterable[float | None]) -> bool:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and v > 0]
    return bool(finite) and max(finite) / min(finite) > LOG_RATIO


def set_latency_axis(ax: Any, values: Iterable[float | None], axis: str = "x",
                     label: str = "p50 latency per inference (ms)") -> bool:
    """Label a latency axis (units in the title) and make it logarithmic when the values span > 10x; says
    which, in the title, so nobody reads a log axis as linear."""
    log = wants_log(values)
    text = f"{label}, log scale" if log else label
    if axis == "x":
        ax.set_xlabel(text)
        if log:
            ax.set_xscale("log")
    else:
        ax.set_ylabel(text)
        if log:
            ax.set_yscale("log")
    if log:
        from matplotlib.ticker import FuncFormatter

        minor = FuncFormatter(lambda v, _: f"{v:g}" if round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else "")
        target = ax.xaxis if axis == "x" else ax.yaxis
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        target.set_minor_formatter(minor)
    return log


def pad_limits(ax: Any, xs: Sequence[float], ys: Sequence[float], log_x: bool, frac: float = 0.2) -> None:
    """Room around the points for their labels (multiplicative on a log axis)."""
    if not xs:
        return
    lo, hi = min(xs), max(xs)
    if log_x:
        span = (hi / lo) ** frac if hi > lo else 1.5
        ax.set_xlim(lo / span, hi * span)
    else:
        d = (hi - lo) * frac or abs(hi) * 0.1 or 1.0
        ax.set_xlim(lo - d, hi + d)
    ylo, yhi = min(ys), max(ys)
    dy = (yhi - ylo) * frac or abs(yhi) * 0.01 or 1.0
    ax.set_ylim(ylo - dy, yhi + dy * 1.5)


def marker_boxes(ax: Any, xs: Sequence[float], ys: Sequence[float], sizes: Sequence[float]) -> list[Any]:
    """The bounding box of each scatter marker (``s`` in points², as ``ax.scatter`` takes it) in data
    coordinates, for adjustText to keep labels off the markers, not only off their centres."""
    from matplotlib.transforms import Bbox

    to_px = ax.figure.dpi / 72.0
    inverse = ax.transData.inverted()
    boxes = []
    for x, y, s in zip(xs, ys, sizes):
        cx, cy = ax.transData.transform((x, y))
        r = 0.5 * math.sqrt(max(s, 1.0)) * to_px
        boxes.append(Bbox(inverse.transform([(cx - r, cy - r), (cx + r, cy + r)])))
    return boxes


def place_labels(ax: Any, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], *,
                 fontsize: float = 7, sizes: Sequence[float] | None = None, colors: Sequence[str] | None = None,
                 iterations: int = ADJUST_ITERATIONS, arrows: bool = True) -> list[Any]:
    """One text per point, then adjustText moves them apart (and off the markers: ``sizes`` as given to
    ``scatter``); call it after everything that changes the axes limits has been drawn. Returns the texts
    (gid ``LABEL_GID``)."""
    from adjustText import adjust_text

    colors = list(colors) if colors is not None else ["#212121"] * len(labels)
    texts = [ax.text(x, y, label, fontsize=fontsize, gid=LABEL_GID, zorder=5, color=readable(color),
                     bbox=LABEL_BOX)
             for x, y, label, color in zip(xs, ys, labels, colors)]
    if len(texts) > 0:
        ax.figure.canvas.draw()  # final limits and transforms before adjusting
        avoid = marker_boxes(ax, xs, ys, sizes) if sizes is not None else None
        adjust_text(texts, x=list(xs), y=list(ys), objects=avoid, ax=ax, iter_lim=iterations,
                    expand=(1.3, 1.6), force_text=(0.3, 0.5), force_static=(0.2, 0.4), min_arrow_len=MIN_ARROW_PX,
                    **({"arrowprops": ARROW} if arrows else {}))
    return texts


def place_labels_detached(ax: Any, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], *,
                          fontsize: float = 7, sizes: Sequence[float] | None = None,
                          colors: Sequence[str] | None = None, iterations: int = ADJUST_ITERATIONS) -> list[Any]:
    """:func:`place_labels` for one panel of a figure of many: adjustText runs on a scratch figure of the
    panel's exact pixel size, limits and scales (adjustText redraws the WHOLE figure it works on: 30 panels
    would cost 30 full redraws), and the labels land in the panel as annotations at the positions found.
    The caller draws the real figure once first (final panel sizes)."""
    fig = ax.figure
    box = ax.get_window_extent()
    scratch = plt().figure(figsize=(box.width / fig.dpi, box.height / fig.dpi), dpi=fig.dpi)
    try:
        sax = scratch.add_axes((0.0, 0.0, 1.0, 1.0))
        sax.set_xscale(ax.get_xscale())
        sax.set_yscale(ax.get_yscale())
        sax.set_xlim(ax.get_xlim())
        sax.set_ylim(ax.get_ylim())
        texts = place_labels(sax, xs, ys, labels, fontsize=fontsize, sizes=sizes, colors=colors,
                             iterations=iterations, arrows=False)
        found = [t.get_position() for t in texts]
        far = [math.dist(sax.transData.transform(pos), sax.transData.transform((x, y))) >= MIN_ARROW_PX
               for pos, x, y in zip(found, xs, ys)]
    finally:
        plt().close(scratch)
    colors = list(colors) if colors is not None else ["#212121"] * len(labels)
    return [ax.annotate(label, (x, y), xytext=pos, textcoords="data", fontsize=fontsize, gid=LABEL_GID, zorder=5,
                        color=readable(color), ha="center", va="center", bbox=LABEL_BOX,
                        arrowprops=ARROW if arrow else None)
            for label, x, y, pos, color, arrow in zip(labels, xs, ys, found, colors, far)]


def readable(color: str) -> str:
    """A colour for text on white: the palette's yellow is too pale, so text in it is drawn black."""
    return "#000000" if color.upper() == "#F0E442" else color


def figure_labels(fig: Any) -> list[Any]:
    """Every placed label of the figure (all axes)."""
    return [t for ax in fig.axes for t in ax.texts if t.get_gid() == LABEL_GID and t.get_text()]


def label_overlaps(fig: Any, texts: Sequence[Any] | None = None) -> int:
    """Number of pairs of labels whose rendered bounding boxes intersect (pixels, after a draw)."""
    texts = figure_labels(fig) if texts is None else list(texts)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    from matplotlib.text import Text

    # the text's own box (an Annotation's get_window_extent would include its leader line)
    boxes = [Text.get_window_extent(t, renderer) for t in texts if t.get_visible() and t.get_text()]
    return sum(1 for a, b in itertools.combinations(boxes, 2) if a.overlaps(b))


def legend_outside(ax: Any, n: int, fontsize: float = 7, title: str | None = None,
                   handles: Sequence[Any] | None = None, where: str = "right") -> None:
    """The legend outside the axes, never over the data: to the ``right`` (columns for many entries) or
    ``below`` (under the axis title); markers at one size."""
    if handles is None:
        handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    if where == "below":
        legend = ax.legend(handles=list(handles), fontsize=fontsize, title=title, title_fontsize=fontsize,
                           loc="upper center", bbox_to_anchor=(0.5, -0.13), borderaxespad=0.0,
                           ncol=max(1, min(4, n)), frameon=False)
    else:
        legend = ax.legend(handles=list(handles), fontsize=fontsize, title=title, title_fontsize=fontsize,
                           loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                           ncol=1 if n <= 16 else 2, frameon=False)
    for handle in getattr(legend, "legend_handles", []):
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([40.0])


def proxy(label: str, **kw: Any) -> Any:
    """A legend entry that looks like the data without being data (fixed marker size)."""
    from matplotlib.lines import Line2D

    return Line2D([], [], linestyle=kw.pop("linestyle", "none"), label=label, **kw)
