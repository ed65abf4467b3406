"""Which stored run a CI run is compared with (edgeopt.ci.baseline), on a real SQLite store: a typo never passes
silently, another lab sharing the store and a device name is not the baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeopt.ci.baseline import resolve_baseline
from edgeopt.errors import ConfigError, StoreError
from edgeopt.results.store import open_store


def _run(store, run_id: str, hour: int, *, lab: str, models: list[str], tags: list[str] = ()) -> None:
    store.begin_run({"run_id": run_id, "created_at": f"2026-12-01T{hour:02d}:00:00+00:00", "targets": ["here"]})
    store.add_result({"schema": 1, "result_id": f"{run_id}-here-001", "run_id": run_id,
                      "created_at": f"2026-12-01T{hour:02d}:00:01+00:00", "target": "here", "profile": "fp32",
                      "format": "tflite", "valid": True, "error": None, "ci": {"device": "here", "model": models[0]}})
    store.finish_run(run_id, f"2026-12-01T{hour:02d}:30:00+00:00", "complete")
    store.update_run(run_id, {"ci": {"lab": lab, "verdict": "pass",
                                     "cells": [{"device": "here", "model": m} for m in models]}})
    for tag in tags:
        store.tag_run(run_id, tag)


@pytest.fixture()
def store(tmp_path: Path):
    with open_store(tmp_path / "results") as s:
        _run(s, "20261201T100000Z-aaaaaa", 10, lab="reg-lab", models=["net"], tags=["main"])
        _run(s, "20261201T110000Z-bbbbbb", 11, lab="other-lab", models=["mnist"])  # same device name, newer
        yield s


def test_another_lab_on_the_same_device_name_is_not_the_baseline(store) -> None:
    base = resolve_baseline("latest-passing", store, devices=["here"], models=["net"])
    assert base.run_id == "20261201T100000Z-aaaaaa" and [d["ci"]["model"] for d in base.docs] == ["net"]
    other = resolve_baseline("latest-passing", store, devices=["here"], models=["mnist"])
    assert other.run_id == "20261201T110000Z-bbbbbb"
    # a run of the same lab counts whatever its cells' model names (a renamed model keeps its history)
    same = resolve_baseline("latest-passing", store, devices=["here"], models=["net"], lab="other-lab")
    assert same.run_id == "20261201T110000Z-bbbbbb"


def test_a_typo_of_a_tag_is_refused_a_new_tag_passes_as_the_first_run(store) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_baseline("mian", store, devices=["here"], models=["net"])
    assert "--baseline 'mian': no run is tagged so" in info.value.one_line()
    assert "did you mean --baseline main?" in info.value.one_line()
    fresh = resolve_baseline("release-7", store, devices=["here"], models=["net"])
    assert fresh.source == "none" and "every cell is new" in (fresh.note or "")
    for typo in ("mainn", "Main", "man"):
        with pytest.raises(ConfigError) as info:
            resolve_baseline(typo, store, devices=["here"], models=["net"])
        assert "did you mean --baseline main?" in info.value.one_line(), typo
    store.tag_run("20261201T100000Z-aaaaaa", "release-1")
    store.tag_run("20261201T100000Z-aaaaaa", "pr-1")
    store.tag_run("20261201T100000Z-aaaaaa", "rc21")
    for new_tag in ("release-2", "mail", "feature-b", "pr-10", "release-10", "rc12"):  # tags of their own
        assert resolve_baseline(new_tag, store, devices=["here"], models=["net"]).source == "none", new_tag


def test_a_short_run_id_prefix_is_looked_up_not_taken_for_a_new_tag(store) -> None:
    assert resolve_baseline("20261201T10", store, devices=["here"]).run_id == "20261201T100000Z-aaaaaa"
    with pytest.raises(StoreError, match="ambiguous"):
        resolve_baseline("20261201", store, devices=["here"])
    with pytest.raises(StoreError, match="no run '20251201'"):
        resolve_baseline("20251201", store, devices=["here"])
    assert resolve_baseline("2025", store, devices=["here"]).source == "none"  # a numeric tag's first run


def test_report_judges_a_run_with_the_gates_it_was_judged_with(store) -> None:
    """``edgeopt report`` re-judged every run with the default gates: a lab's pass became a regression there."""
    from edgeopt.ci.compare import compare_runs
    from edgeopt.config.lab import Gates

    gates = Gates.model_validate({"latency": {"min_effect": 5.0}, "size": None})
    store.update_run("20261201T110000Z-bbbbbb", {"ci": {"lab": "other-lab", "verdict": "pass",
                                                        "gates": gates.model_dump()}})
    judged = compare_runs(store, "20261201T110000Z-bbbbbb", "main")
    assert judged.gates["latency"]["min_effect"] == 5.0 and judged.gates["size"] is None
    assert compare_runs(store, "20261201T100000Z-aaaaaa", None).gates == Gates().model_dump()  # none recorded
