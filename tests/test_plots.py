"""The report plots read at a glance at 2 and at 30 candidates / devices (edgeopt/report/plots.py, search.py,
style.py): no two labels overlap (rendered bounding boxes, counted after drawing), log latency axes where the range
spans more than ~10x, one Pareto front per device, the same colour-blind-safe colour for a device in every plot,
units in every axis title. Synthetic inputs shaped like real ones (tests/report_data.py)."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.colors import to_hex
from report_data import ci_result, search_data

from edgeopt.report import plots, style
from edgeopt.report.search import search_figure

CI_PLOTS = ("latency_distributions", "pareto", "per_device", "baseline_vs_current")


def ci_figures(devices: int) -> dict:
    result = ci_result(devices)
    figs = {name: getattr(plots, f"{name}_figure")(result.cells) for name in CI_PLOTS[:3]}
    figs["baseline_vs_current"] = plots.baseline_vs_current_figure(result.cells, 0.05)
    return figs


@pytest.fixture(scope="module")
def ci30() -> dict:
    return ci_figures(30)


@pytest.fixture(scope="module")
def ci2() -> dict:
    return ci_figures(2)


def naive_overlaps(data: dict) -> int:
    """The old placement (each label at a fixed 4-point offset from its point) on the same figure."""
    from matplotlib.patches import FancyArrowPatch

    fig = search_figure(data)
    ax = fig.axes[0]
    for arrow in [p for p in ax.patches if isinstance(p, FancyArrowPatch)]:  # adjustText's leader lines
        arrow.remove()
    for t in style.figure_labels(fig):
        t.remove()
    texts = [ax.annotate(r["candidate"], (r["latency_p50_ms"], 100 * r["accuracy"]), xytext=(4, 4),
                         textcoords="offset points", fontsize=7) for r in data["rows"]]
    return style.label_overlaps(fig, texts)


@pytest.mark.parametrize("n", [2, 30])
def test_search_labels_never_overlap(n: int) -> None:
    data = search_data(n)
    fig = search_figure(data)
    labels = style.figure_labels(fig)
    assert sorted(t.get_text() for t in labels) == sorted(r["candidate"] for r in data["rows"])
    count = style.label_overlaps(fig)
    print(f"search plot, {n} candidates: {count} overlapping label pairs (fixed offsets: {naive_overlaps(data)})")
    assert count == 0
    if n == 30:  # the counter sees overlaps where they are: the old placement piles the int8 cluster up
        assert naive_overlaps(data) >= 10


def test_search_axis_is_log_when_the_range_spans_more_than_10x() -> None:
    wide = search_figure(search_data(30))  # 0.03 ms cluster and one 0.54 ms candidate
    ax = wide.axes[0]
    assert ax.get_xscale() == "log" and "(ms)" in ax.get_xlabel() and "log" in ax.get_xlabel()
    assert "(%)" in ax.get_ylabel()
    narrow = search_data(2)
    for r in narrow["rows"]:
        r["latency_p50_ms"] = 0.03 + 0.01 * (r["format"] == "onnx")
    ax = search_figure(narrow).axes[0]
    assert ax.get_xscale() == "linear" and "log" not in ax.get_xlabel()


@pytest.mark.parametrize("devices", [2, 30])
def test_ci_pareto_labels_never_overlap_and_one_front_per_device(devices: int, ci2: dict, ci30: dict) -> None:
    fig = (ci2 if devices == 2 else ci30)["pareto"]
    count = style.label_overlaps(fig)
    print(f"CI accuracy-vs-latency plot, {devices} devices: {count} overlapping label pairs")
    assert count == 0
    assert len(style.figure_labels(fig)) == devices * 4
    fronts = [line for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(fronts) == devices  # one front per device, never one across devices
    # each front's points are one device's: its colour is that device's
    colours = {to_hex(line.get_color()) for line in fronts}
    assert len(colours) == min(devices, len(style.OKABE_ITO))


def device_colours(fig, kind: str) -> dict[str, set[str]]:
    """device -> colours its artists use in one figure."""
    out: dict[str, set[str]] = {}
    for ax in fig.axes:
        if kind == "scatter":
            for coll in ax.collections:
                if coll.get_label() and not coll.get_label().startswith("_"):
                    out.setdefault(coll.get_label(), set()).add(to_hex(coll.get_facecolor()[0], keep_alpha=False))
        elif kind == "errorbar":
            for cont in ax.containers:
                label = cont.get_label()
                if label and not label.startswith("_"):
                    out.setdefault(label, set()).add(to_hex(cont.lines[0].get_color()))
        if kind == "scatter" and len(fig.axes) > 1 and ax.get_title():  # panels: the title names the device
            out.setdefault(ax.get_title(), set())
    return out


def test_a_device_has_one_colour_in_every_plot(ci2: dict) -> None:
    scatter = device_colours(ci2["pareto"], "scatter")
    bars = device_colours(ci2["per_device"], "errorbar")
    assert set(scatter) == set(bars) == {"dev-00", "dev-01"}
    for device in scatter:
        assert scatter[device] == bars[device] and len(scatter[device]) == 1
        assert scatter[device] <= {c.lower() for c in style.OKABE_ITO}  # the colour-blind-safe palette
    assert scatter["dev-00"] != scatter["dev-01"]
    styles = style.series_styles(f"dev-{i:02d}" for i in range(30))
    assert len({(s.color, s.marker) for s in styles.values()}) == 30  # colour x marker: all 30 distinguishable


@pytest.mark.parametrize("devices", [2, 30])
def test_latency_axes_are_log_and_every_axis_has_units(devices: int, ci2: dict, ci30: dict) -> None:
    figs = ci2 if devices == 2 else ci30  # 0.03 ms .. 14 ms devices: log, or the fast one is invisible
    for name in ("latency_distributions", "per_device"):
        ax = figs[name].axes[0]
        assert ax.get_xscale() == "log", name
        assert "(ms" in ax.get_xlabel() and "log" in ax.get_xlabel(), name
    assert "(%)" in figs["baseline_vs_current"].axes[0].get_xlabel()
    for ax in figs["pareto"].axes:
        if ax.get_visible():
            assert "(ms)" in ax.get_xlabel(), ax.get_title()
    pareto = figs["pareto"]
    ylabels = [ax.get_ylabel() for ax in pareto.axes] + [pareto.get_supylabel()]
    assert any("(%)" in y for y in ylabels)


@pytest.mark.parametrize("devices", [2, 30])
def test_row_labels_never_overlap(devices: int, ci2: dict, ci30: dict) -> None:
    figs = ci2 if devices == 2 else ci30
    for name in ("latency_distributions", "per_device", "baseline_vs_current"):
        fig = figs[name]
        ticks = [t for t in fig.axes[0].get_yticklabels() if t.get_text()]
        assert len(ticks) == devices * 4, name
        assert style.label_overlaps(fig, ticks) == 0, name


def test_overlap_counter_counts_pairs() -> None:
    fig, ax = style.plt().subplots()
    texts = [ax.text(0.5, 0.5, "same place") for _ in range(3)] + [ax.text(0.05, 0.05, "alone")]
    assert style.label_overlaps(fig, texts) == 3  # the three piled labels: 3 pairs
    assert list(itertools.combinations(range(3), 2)) and style.label_overlaps(fig, texts[-1:]) == 0
    style.plt().close(fig)


def test_nothing_to_plot_is_none() -> None:
    assert plots.pareto([]) is None and plots.per_device([]) is None
    assert plots.latency_distributions([]) is None and plots.baseline_vs_current([]) is None
