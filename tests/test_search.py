"""`edgeopt build --search`: candidates built (cache hits from test_compress's session build), measured on the
local target by the real agent, the Pareto front and the recommendation checked against the budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_compress import PROFILES, build_compression

from edgeopt.build.recommend import recommend
from edgeopt.build.search import SearchResult, pareto, run_search
from edgeopt.errors import ConfigError
from edgeopt.report.search import plot_pareto

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(example_model: Path, tmp_path_factory: pytest.TempPathFactory) -> SearchResult:
    built = build_compression(tmp_path_factory)  # trains only if test_compress did not run in this session
    return run_search("local", out=built["out"], results=tmp_path_factory.mktemp("search-results"),
                      profiles=PROFILES, max_accuracy_drop=1.0, objective="latency", runs=20, warmup=3)


def _dominates(a: dict, b: dict) -> bool:
    pa = (-a["accuracy"], a["latency_p50_ms"], a["bytes"], a["bytes_gzip"])
    pb = (-b["accuracy"], b["latency_p50_ms"], b["bytes"], b["bytes_gzip"])
    return pa != pb and all(x <= y for x, y in zip(pa, pb))


def test_search_recommends_a_front_profile_within_budget(searched: SearchResult) -> None:
    rows = searched.rows
    assert {r["candidate"] for r in rows} == {f"{p}/{f}" for p in PROFILES for f in ("tflite", "onnx")}
    assert all(r["bench_valid"] and r["latency_p50_ms"] > 0 for r in rows), [r["bench_error"] for r in rows]
    for r in rows:  # the front is exactly the non-dominated rows
        assert r["pareto"] == (not any(_dominates(o, r) for o in rows)), r["candidate"]
    best = next(r for r in rows if r["candidate"] == searched.recommended["candidate"])
    assert best["pareto"] and best["accuracy_drop_pp"] <= 1.0
    within = [r for r in rows if r["pareto"] and r["accuracy_drop_pp"] <= 1.0]
    # the fastest, or a candidate whose latency the gate's test cannot tell from the fastest's (a tie)
    tie = searched.recommended["tie"]
    assert best["candidate"] in {tie["fastest"], *tie["with"]} if tie["called"] \
        else best["latency_p50_ms"] == min(r["latency_p50_ms"] for r in within)
    assert all(r["bytes_gzip"] and r["bytes_gzip"] > 0 for r in rows)
    doc = searched.to_json()
    assert doc["recommended"]["candidate"] in doc["pareto_front"]
    import json

    json.dumps(doc)  # JSON-able as is


def test_budget_and_objective_change_the_pick(searched: SearchResult) -> None:
    rows = [dict(r) for r in searched.rows]
    by_size = recommend(rows, "size", 1.0)
    within = [r for r in rows if r["pareto"] and r["accuracy_drop_pp"] <= 1.0]
    assert by_size["candidate"] == min(within, key=lambda r: (r["bytes"], -r["accuracy"]))["candidate"]
    by_download = recommend(rows, "download", 1.0)
    assert by_download["candidate"] == min(within, key=lambda r: (r["bytes_gzip"], -r["accuracy"]))["candidate"]
    pruned = next(r for r in rows if r["candidate"] == "pruned-int8/tflite")
    assert pruned["pareto"]  # its zeros make it the smallest download among the full-size int8 models
    # a budget nothing meets: no recommendation rather than a wrong one
    best_drop = min(r["accuracy_drop_pp"] for r in rows)
    assert recommend(rows, "latency", best_drop - 0.05) is None
    # a generous budget admits the most compressed (lowest-accuracy) candidate for size
    loose = recommend(rows, "size", 100.0)
    assert loose["candidate"] == min((r for r in rows if r["pareto"]), key=lambda r: r["bytes"])["candidate"]


def test_pareto_on_known_points() -> None:
    rows = [
        {"candidate": "a", "accuracy": 0.99, "latency_p50_ms": 2.0, "bytes": 100, "accuracy_drop_pp": 0.0},
        {"candidate": "b", "accuracy": 0.98, "latency_p50_ms": 1.0, "bytes": 100, "accuracy_drop_pp": 1.0},
        {"candidate": "c", "accuracy": 0.97, "latency_p50_ms": 1.5, "bytes": 200, "accuracy_drop_pp": 2.0},  # < b
        {"candidate": "d", "accuracy": 0.90, "latency_p50_ms": 3.0, "bytes": 10, "accuracy_drop_pp": 9.0},
        {"candidate": "e", "accuracy": None, "latency_p50_ms": 0.1, "bytes": 1, "accuracy_drop_pp": None},
    ]
    pareto(rows, use_energy=False)
    assert [r["candidate"] for r in rows if r["pareto"]] == ["a", "b", "d"]
    assert recommend(rows, "latency", 1.0)["candidate"] == "b"
    assert recommend(rows, "latency", 0.5)["candidate"] == "a"
    assert recommend(rows, "size", 10.0)["candidate"] == "d"
    assert recommend(rows, "accuracy", 10.0)["candidate"] == "a"


def test_plot_writes_a_png(searched: SearchResult, tmp_path: Path) -> None:
    path = plot_pareto(searched, tmp_path / "pareto.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_bad_search_options(searched: SearchResult, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        run_search("local", objective="speed", out=tmp_path)
    assert "--objective 'speed'" in e.value.one_line()
    with pytest.raises(ConfigError) as e:
        run_search("local", max_accuracy_drop=-1, out=tmp_path)
    assert "--max-accuracy-drop" in e.value.one_line()
    with pytest.raises(ConfigError) as e:
        run_search("cortex-m7", out=tmp_path)
    assert "nothing can be measured" in e.value.one_line()
    if not searched.energy_measured:  # this machine has no energy interface (FACTS.md): said, not faked
        out = Path(searched.rows[0]["directory"]).parent.parent
        with pytest.raises(ConfigError) as e:
            run_search("local", out=out, results=tmp_path, profiles=["int8"], objective="energy", runs=3, warmup=1)
        assert "no energy was measured" in e.value.one_line()


def test_html_report_holds_the_table_and_the_plot(searched: SearchResult, tmp_path: Path) -> None:
    import base64
    import re

    from edgeopt.report.search import write_search_html

    page = write_search_html(searched, tmp_path / "search.html").read_text()
    for row in searched.rows:
        assert f"<td>{row['candidate']}</td>" in page
    assert page.count("<td>yes</td>") == len(searched.front)
    assert f"recommended: <b>{searched.recommended['candidate']}</b>" in page
    (png,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")
