"""The results store (SQLite + JSON copies): round trip, ordering, lookups, concurrent writers, bad files."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from edgeopt.results.store import SCHEMA_VERSION, Store, StoreError, open_store, safe_name


def result(run_id: str, n: int, *, target: str = "rpi4", profile: str | None = "int8", valid: bool = True,
           p50: float | None = 1.5) -> dict:
    """A result document of the shape edgeopt bench stores (docs/bench.md)."""
    return {
        "schema": 1, "result_id": f"{run_id}-{target}-{n:03d}", "run_id": run_id,
        "created_at": f"2026-11-28T10:00:{n:02d}.000+00:00", "target": target, "profile": profile,
        "format": "tflite", "artifact": {"file": "model.tflite", "sha256": f"{n:064x}", "bytes": 1000 + n},
        "transfer": {"agent": 0, "model": 0, "reference": 0, "total": 0}, "valid": valid,
        "error": None if valid else {"kind": "agent", "message": "runtime_missing: no runtime"},
        "agent": {"latency_ms": {"p50": p50, "p90": 2.0, "count": 5}} if valid else None,
    }


def begin(store: Store, run_id: str, created: str = "2026-11-28T10:00:00.000+00:00") -> None:
    store.begin_run({"run_id": run_id, "created_at": created, "targets": ["rpi4"], "command": "edgeopt bench"})


def test_round_trip_sqlite_and_json(tmp_path: Path):
    with open_store(tmp_path / "results") as store:
        begin(store, "run-a")
        docs = [result("run-a", 1), result("run-a", 2, valid=False), result("run-a", 3, profile=None)]
        paths = [store.add_result(d) for d in docs]
        store.finish_run("run-a", "2026-11-28T10:01:00+00:00", "failed", {"results": 3, "valid": 2})
    # a fresh connection reads back exactly what was written
    with open_store(tmp_path / "results", create=False) as store:
        assert store.latest_run_id() == "run-a"
        assert store.results("run-a") == docs
        run = store.run("run-a")
        assert run["status"] == "failed" and run["summary"] == {"results": 3, "valid": 2}
        assert run["finished_at"] == "2026-11-28T10:01:00+00:00"
        rows = store.query(target="rpi4", profile="int8")
        assert [r["result_id"] for r in rows] == ["run-a-rpi4-002", "run-a-rpi4-001"]  # newest first
        assert rows[1]["p50_ms"] == 1.5 and rows[1]["valid"] == 1 and rows[1]["error"] is None
        assert rows[0]["valid"] == 0 and rows[0]["error"] == "runtime_missing: no runtime"
        assert [r["result_id"] for r in store.query(valid_only=True)] == ["run-a-rpi4-003", "run-a-rpi4-001"]
        assert store.query(target="rpi5") == []
    # the JSON copies: one file per result plus run.json, complete, no temporary files left behind
    run_dir = tmp_path / "results" / "run-a"
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([*(p.name for p in paths), "run.json"])
    for doc, path in zip(docs, paths):
        assert json.loads(path.read_text()) == doc
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    db = sqlite3.connect(tmp_path / "results" / "edgeopt.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"results_run", "results_key", "results_sha", "results_created"} <= indexes
    columns = {r[1] for r in db.execute("PRAGMA table_info(results)")}
    assert {"run_id", "created_at", "target", "profile", "format", "sha256", "p50_ms", "valid", "error",
            "doc"} <= columns


def test_latest_run_and_lookup_by_prefix(tmp_path: Path):
    store = Store(tmp_path / "db.sqlite", tmp_path / "json")
    begin(store, "20261128T100000Z-aaaaaa", "2026-11-28T10:00:00.000+00:00")
    begin(store, "20261128T110000Z-bbbbbb", "2026-11-28T11:00:00.000+00:00")
    assert store.latest_run_id() == "20261128T110000Z-bbbbbb"
    assert store.run("20261128T10")["run_id"] == "20261128T100000Z-aaaaaa"
    with pytest.raises(StoreError) as info:
        store.run("2026")  # ambiguous prefix
    assert "latest: 20261128T110000Z-bbbbbb" in info.value.one_line()
    with pytest.raises(StoreError):
        store.run("nope")
    listed = store.runs()
    assert [r["run_id"] for r in listed] == ["20261128T110000Z-bbbbbb", "20261128T100000Z-aaaaaa"]
    assert listed[0]["targets"] == ["rpi4"] and listed[0]["results"] == 0
    store.close()


def test_concurrent_writers_lose_nothing(tmp_path: Path):
    store = open_store(tmp_path)
    begin(store, "run-p")
    errors: list[BaseException] = []

    def writer(target: str) -> None:
        try:
            for n in range(25):
                store.add_result(result("run-p", n, target=target))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"dev{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store.results("run-p")) == 100 and len(list((tmp_path / "run-p").glob("*.json"))) == 101
    store.close()


def test_missing_or_broken_store_is_a_clear_error(tmp_path: Path):
    with pytest.raises(StoreError) as info:
        open_store(tmp_path / "none", create=False)
    assert "run `edgeopt bench` first" in info.value.one_line()
    bad = tmp_path / "bad" / "edgeopt.sqlite"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open results store"):
        open_store(tmp_path / "bad")


def test_result_file_names_are_safe():
    assert safe_name("run-1 a/b;c'd") == "run-1_a_b_c_d"
    assert "/" not in safe_name("../../etc/passwd") and not safe_name("../x").startswith(".")


# -- issue 12: foreign, damaged and unwritable stores are one clear line -------------------------------------------
def _sqlite(path: Path, *sql: str) -> None:
    db = sqlite3.connect(path)
    for statement in sql:
        db.execute(statement)
    db.commit()
    db.close()


def test_foreign_schema_is_refused_and_left_untouched(tmp_path: Path):
    foreign = tmp_path / "foreign" / "edgeopt.sqlite"
    foreign.parent.mkdir()
    _sqlite(foreign, "CREATE TABLE runs (id INTEGER, name TEXT)", "INSERT INTO runs VALUES (1, 'x')")
    before = foreign.read_bytes()
    for create in (False, True):  # edgeopt report / edgeopt bench
        with pytest.raises(StoreError) as info:
            open_store(foreign.parent, create=create)
        line = info.value.one_line()
        assert f"{foreign} is not an edgeopt results store (no table results; table runs lacks" in line
        assert "run_id" in line and "move this file away" in line
    assert foreign.read_bytes() == before and sorted(p.name for p in foreign.parent.iterdir()) == ["edgeopt.sqlite"]
    other = tmp_path / "other.sqlite"
    _sqlite(other, "CREATE TABLE notes (a)")
    with pytest.raises(StoreError, match="no table results; no table runs"):
        Store(other, tmp_path / "json")
    empty = tmp_path / "empty" / "edgeopt.sqlite"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    with pytest.raises(StoreError, match="holds no edgeopt results"):
        open_store(empty.parent, create=False)
    with pytest.raises(StoreError, match="is a directory"):
        open_store(tmp_path, store=tmp_path)


def test_damaged_documents_never_crash_a_reader(tmp_path: Path):
    with open_store(tmp_path) as store:
        begin(store, "run-d")
        store.add_result(result("run-d", 1))
        store.add_result(result("run-d", 2))
    _sqlite(tmp_path / "edgeopt.sqlite", "UPDATE results SET doc = '{broken' WHERE result_id = 'run-d-rpi4-002'",
            "UPDATE runs SET targets = 'nope'")
    with open_store(tmp_path, create=False) as store:
        docs = store.results("run-d")
        assert docs[0] == result("run-d", 1)
        assert docs[1]["valid"] is False and docs[1]["result_id"] == "run-d-rpi4-002"
        assert "damaged" in docs[1]["error"]["message"]
        assert store.runs()[0]["targets"] == []
    _sqlite(tmp_path / "edgeopt.sqlite", "UPDATE runs SET doc = '[1, 2]'")
    with open_store(tmp_path, create=False) as store, pytest.raises(StoreError, match="run run-d is damaged"):
        store.run("run-d")


def _mount_tmpfs(where: Path) -> None:
    import os
    import subprocess

    if os.geteuid() != 0:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], check=True)


def test_read_only_results_dir_says_not_writable_and_still_reads(tmp_path: Path):
    import subprocess

    from edgeopt.errors import OutputError

    ro = tmp_path / "ro"
    _mount_tmpfs(ro)
    try:
        with open_store(ro / "results") as store:
            begin(store, "run-r")
            store.add_result(result("run-r", 1))
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        for where in (ro / "results", ro / "new"):  # an existing store (bench writes) and a new one
            with pytest.raises(OutputError) as info:
                open_store(where)
            line = info.value.one_line()
            assert "is not writable (read-only file system)" in line and "edgeopt database" not in line
            assert "writable --results" in line
        with open_store(ro / "results", create=False) as store:  # an archived store is still read (edgeopt report)
            assert [d["result_id"] for d in store.results("run-r")] == ["run-r-rpi4-001"]
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
