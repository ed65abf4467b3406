"""`edgeopt build --search --ray local`: the candidates built as Ray tasks on a real local Ray (one progress line
per cell, a candidate that cannot be built failing alone with its line), benchmarked here as in a serial search,
in the same layout and under the same content keys, so a serial search afterwards finds every candidate cached."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_build_matrix import ray_processes, tiny_model

from edgeopt.paths import shipped

EDGEOPT = [sys.executable, "-m", "edgeopt.cli"]
CANDIDATES = ["fp32", "int8", "pruned-int8"]  # one of each kind: float, post-training int8, a training profile


def search(tmp: Path, profiles: list[str], *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGEOPT, "build", str(tmp / "tiny.keras"), "--data", "example:calibration", "--eval",
                           "example:eval", "--train", "example:train", "--search", "-p", ",".join(profiles),
                           "--max-accuracy-drop", "100", "--search-runs", "5", "--out", str(tmp / "out"),
                           "--results", str(tmp / "results"), "--json", *more],
                          capture_output=True, text=True, cwd=tmp, timeout=600)


@pytest.mark.slow
def test_search_on_ray_then_serial_search_finds_every_candidate_cached(tmp_path: Path) -> None:
    tiny_model(tmp_path / "tiny.keras", 3)
    # a candidate that cannot be built: the int8 recipe wanting more calibration samples than the data holds
    # (found by name in ./profiles); its cell fails in the Ray worker, alone
    greedy = yaml.safe_load((shipped("profiles") / "int8.yaml").read_text())
    greedy["calibration"] = {"samples": 200, "min_samples": 500}
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "int8-greedy.yaml").write_text(yaml.safe_dump(greedy))

    before = ray_processes()
    on_ray = search(tmp_path, [*CANDIDATES, "int8-greedy"], "--ray", "local")
    assert on_ray.returncode == 1, on_ray.stderr  # a candidate failed: the search went on, the exit says so
    assert ray_processes() - before == set(), "Ray processes left after the run"
    doc = json.loads(on_ray.stdout)
    err = on_ray.stderr
    # every candidate was one Ray task, with a progress line when it started and when it ended
    assert doc["build"]["runner"] == "cells" and doc["build"]["sent"] == 4 and doc["build"]["cached"] == 0
    assert "Ray: 4 cell(s) to build" in err
    for p in CANDIDATES:
        assert f"local/{p}: started (ray)" in err and f"local/{p}: finished in " in err, err
    assert "local/int8-greedy: started (ray)" in err and "local/int8-greedy: FAILED after" in err
    # the training candidate went out first (the longest expected: 2 slots, 4 cells, named in another order)
    assert err.index("local/pruned-int8: started (ray)") < err.index("local/fp32: started (ray)")
    # the failed candidate: its one line in the notes and on stderr, no row, no directory
    (failed,) = doc["build"]["failed"]
    assert failed["profile"] == "int8-greedy" and "at least 500 needed" in failed["error"]
    assert "\n" not in failed["error"]
    assert any(n.startswith("not built (its cell failed, the search went on without it): int8-greedy: ")
               for n in doc["notes"])
    assert "edgeopt: error: candidate int8-greedy failed to build: " in err
    assert not (tmp_path / "out" / "local" / "int8-greedy").exists()
    # the others: a row per profile and format, benchmarked here, on the front or not, and a recommendation
    want = {f"{p}/{f}" for p in CANDIDATES for f in ("tflite", "onnx")}
    assert {r["candidate"] for r in doc["rows"]} == want
    assert all(r["bench_valid"] and r["latency_p50_ms"] > 0 for r in doc["rows"]), [r["bench_error"] for r in doc["rows"]]
    assert doc["recommended"]["candidate"] in doc["pareto_front"]
    assert all(Path(r["directory"]) == tmp_path / "out" / "local" / r["profile"] for r in doc["rows"])
    pruned = next(r for r in doc["rows"] if r["candidate"] == "pruned-int8/tflite")
    assert pruned["transform"] == "prune" and pruned["weight_sparsity"] > 0.5  # trained in the worker
    manifests = {p: (tmp_path / "out" / "local" / p / "manifest.json").read_text() for p in CANDIDATES}

    # the serial search of the same candidates: every one answered from the cache (nothing built, nothing
    # rewritten), the same table and recommendation structure
    serial = search(tmp_path, CANDIDATES)
    assert serial.returncode == 0, serial.stderr
    again = json.loads(serial.stdout)
    assert again["build"] == {"runner": "in-process", "sent": 0, "cached": 3, "failed": []}
    assert {p: (tmp_path / "out" / "local" / p / "manifest.json").read_text() for p in CANDIDATES} == manifests
    assert "Ray" not in serial.stderr and "started" not in serial.stderr
    assert sorted(again) == sorted(doc)
    assert [r["candidate"] for r in again["rows"]] == [r["candidate"] for r in doc["rows"]]
    for a, b in zip(again["rows"], doc["rows"]):
        assert sorted(a) == sorted(b)
        for k in ("accuracy", "accuracy_drop_pp", "bytes", "bytes_gzip", "weight_sparsity", "params", "transform",
                  "directory"):
            assert a[k] == b[k], (a["candidate"], k)
    assert again["recommended"]["candidate"] in again["pareto_front"]
    assert sorted(again["recommended"]) == sorted(doc["recommended"])
    assert ray_processes() - before == set()


def test_search_with_matrix_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("models:\n  - {name: a, path: example}\n")
    both = subprocess.run([*EDGEOPT, "build", "--search", "--matrix", str(tmp_path / "m.yaml")], capture_output=True,
                          text=True, cwd=tmp_path)
    assert both.returncode == 2 and both.stderr.count("\n") == 1, both.stderr
    assert "--search cannot be combined with --matrix" in both.stderr and "--search --ray" in both.stderr
