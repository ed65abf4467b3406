"""The results store (SQLite or PostgreSQL + JSON copies): round trip, ordering, lookups, concurrent writers (threads
and processes), damaged documents, bad files. Backend-neutral tests run against both backends (``backend``
fixture): SQLite in a temp dir, and a fresh database on a real PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from pg import PgServer, pg_server_fixture  # noqa: F401  (the session's PostgreSQL server: pg_server)

from edgeopt.results.store import SCHEMA_VERSION, Store, StoreError, open_store, safe_name


class Backend:
    """Where a test's store lives: ``open()`` it (JSON copies under ``results``), ``sql()`` behind its back."""

    def __init__(self, name: str, results: Path, location: str) -> None:
        self.name, self.results, self.location = name, results, location

    def open(self, create: bool = True) -> Store:
        return open_store(self.results, self.location, create=create)

    def sql(self, *statements: str) -> None:
        if self.name == "sqlite":
            _sqlite(Path(self.location), *statements)
            return
        import psycopg

        with psycopg.connect(self.location, autocommit=True) as db:
            for statement in statements:
                db.execute(statement)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    results = tmp_path / "results"
    if request.param == "sqlite":
        return Backend("sqlite", results, str(results / "edgeopt.sqlite"))
    server: PgServer = request.getfixturevalue("pg_server")
    return Backend("postgres", results, server.new_database())


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


def test_round_trip_and_json(backend: Backend):
    tmp_path = backend.results.parent
    with backend.open() as store:
        begin(store, "run-a")
        docs = [result("run-a", 1), result("run-a", 2, valid=False), result("run-a", 3, profile=None)]
        paths = [store.add_result(d) for d in docs]
        store.finish_run("run-a", "2026-11-28T10:01:00+00:00", "failed", {"results": 3, "valid": 2})
    # a fresh connection reads back exactly what was written
    with backend.open(create=False) as store:
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


def test_sqlite_schema_version_and_indexes(tmp_path: Path):
    with open_store(tmp_path / "results") as store:
        begin(store, "run-a")
    db = sqlite3.connect(tmp_path / "results" / "edgeopt.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"results_run", "results_key", "results_sha", "results_created"} <= indexes
    columns = {r[1] for r in db.execute("PRAGMA table_info(results)")}
    assert {"run_id", "created_at", "target", "profile", "format", "sha256", "p50_ms", "valid", "error",
            "doc"} <= columns


def test_latest_run_and_lookup_by_prefix(backend: Backend):
    store = backend.open()
    begin(store, "20261128T100000Z-aaaaaa", "2026-11-28T10:00:00.000+00:00")
    begin(store, "20261128T110000Z-bbbbbb", "2026-11-28T11:00:00.000+00:00")
    assert store.latest_run_id() == "20261128T110000Z-bbbbbb"
    assert store.run("20261128T10")["run_id"] == "20261128T100000Z-aaaaaa"
    with pytest.raises(StoreError) as info:
        store.run("2026")  # ambiguous prefix: said so, not "no run"
    assert "prefix '2026' is ambiguous" in info.value.one_line() and "2 runs start with it" in info.value.one_line()
    assert "20261128T110000Z-bbbbbb" in info.value.one_line()
    with pytest.raises(StoreError) as info:
        store.run("nope")
    assert "latest: 20261128T110000Z-bbbbbb" in info.value.one_line()
    listed = store.runs()
    assert [r["run_id"] for r in listed] == ["20261128T110000Z-bbbbbb", "20261128T100000Z-aaaaaa"]
    assert listed[0]["targets"] == ["rpi4"] and listed[0]["results"] == 0
    store.close()


def test_concurrent_writers_lose_nothing(backend: Backend):
    tmp_path = backend.results
    store = backend.open()
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


def test_damaged_documents_never_crash_a_reader(backend: Backend):
    with backend.open() as store:
        begin(store, "run-d")
        store.add_result(result("run-d", 1))
        store.add_result(result("run-d", 2))
    backend.sql("UPDATE results SET doc = '{broken' WHERE result_id = 'run-d-rpi4-002'",
            "UPDATE runs SET targets = 'nope'")
    with backend.open(create=False) as store:
        docs = store.results("run-d")
        assert docs[0] == result("run-d", 1)
        assert docs[1]["valid"] is False and docs[1]["result_id"] == "run-d-rpi4-002"
        assert "damaged" in docs[1]["error"]["message"]
        assert store.runs()[0]["targets"] == []
    backend.sql("UPDATE runs SET doc = '[1, 2]'")
    with backend.open(create=False) as store, pytest.raises(StoreError, match="run run-d is damaged"):
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


# -- issue 14: the same history from several processes (CI runners): nothing lost or doubled, tags kept -----------
WRITER = textwrap.dedent("""
    import sys, time
    from datetime import datetime, timezone
    from pathlib import Path
    from edgeopt.results.store import open_store

    name, results, location, go, runs = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])
    store = open_store(results, location)
    while not go.exists():
        time.sleep(0.005)
    for j in range(60):  # both processes hammer one run's tags at the same moment: a lost update would show
        store.tag_run("shared", f"{name}-x{j}")
    for i in range(runs):
        run_id = f"{name}-{i:03d}"
        base = store.find_run(tag="main", passing=True)  # the baseline this run is judged against
        store.begin_run({"run_id": run_id, "created_at": datetime.now(timezone.utc).isoformat(), "targets": ["d"]})
        for n in range(5):
            store.add_result({"schema": 1, "result_id": f"{run_id}-d-{n:03d}", "run_id": run_id,
                              "created_at": datetime.now(timezone.utc).isoformat(), "target": "d",
                              "profile": "int8", "format": "tflite", "valid": True, "error": None,
                              "agent": {"latency_ms": {"p50": 1.0 + n}}})
        store.finish_run(run_id, datetime.now(timezone.utc).isoformat(), "complete")
        store.update_run(run_id, {"ci": {"verdict": "pass"}, "baseline": base and base["run_id"]})
        store.tag_run(run_id, "main")
        store.tag_run("shared", run_id)  # every process adds tags to one run at once: none may be lost
    store.close()
""")


def test_concurrent_processes_tag_and_compare_correctly(backend: Backend, tmp_path: Path):
    runs = 15
    with backend.open() as store:
        begin(store, "shared", "2000-01-01T00:00:00+00:00")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, name, str(backend.results), backend.location, str(go),
                               str(runs)], stderr=subprocess.PIPE, text=True) for name in ("hostA", "hostB")]
    go.write_text("go")
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with backend.open(create=False) as store:
        listed = store.runs(limit=1000)
        ids = [r["run_id"] for r in listed if r["run_id"] != "shared"]
        assert len(ids) == len(set(ids)) == 2 * runs
        assert all(r["results"] == r["valid"] == 5 for r in listed if r["run_id"] != "shared")
        assert len(store.query(limit=10_000)) == 2 * runs * 5  # nothing lost, nothing doubled
        extra = [f"{h}-x{j}" for h in ("hostA", "hostB") for j in range(60)]
        assert sorted(store.run("shared")["tags"]) == sorted(ids + extra)  # no tag lost to a concurrent update
        newest = max((store.run(i) for i in ids), key=lambda d: d["created_at"])
        assert store.find_run(tag="main")["run_id"] == newest["run_id"]  # the tag moved forward like a branch
        created = {i: store.run(i)["created_at"] for i in ids}
        for run_id in ids:  # each run was judged against a passing, tagged run that existed before it
            base = store.run(run_id)["baseline"]
            if base is not None:
                assert base in created and created[base] < created[run_id] and base != run_id
        assert sum(store.run(i)["baseline"] is None for i in ids) <= 2  # only the very first of each process


def test_a_result_stored_again_replaces_the_row_and_becomes_the_newest(backend: Backend):
    with backend.open() as store:
        begin(store, "run-s")
        first, second = result("run-s", 1), result("run-s", 2)
        first["created_at"] = second["created_at"]
        store.add_result(first)
        store.add_result(second)
        store.add_result({**first, "valid": False, "error": {"kind": "superseded", "message": "measured again"}})
        rows = store.query()
        assert [r["result_id"] for r in rows] == ["run-s-rpi4-001", "run-s-rpi4-002"]
        assert rows[0]["valid"] == 0 and rows[0]["error"] == "measured again" and len(store.results("run-s")) == 2


HOLDER = """
import sys, time
from edgeopt.results.store import open_store
with open_store(sys.argv[1], sys.argv[2]) as store:
    store.begin_run({"run_id": sys.argv[3], "created_at": "2026-11-28T11:00:00+00:00", "targets": ["rpi4"]})
    print("begun", flush=True)
    time.sleep(120)
"""


def test_a_run_whose_writer_died_is_listed_as_abandoned(backend: Backend):
    """A writer holds its unfinished run's lock (an flock / a PostgreSQL session advisory lock): while it lives the
    run is ``running`` to every reader; once its process is killed, ``abandoned``; a finished run keeps its status,
    and the stored row is never changed by a reader."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(backend.results), backend.location, "held"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "begun", proc.stderr
        with backend.open() as store:
            begin(store, "mine")  # this store's own unfinished run: running while the store is open
            begin(store, "done")
            store.finish_run("done", "2026-11-28T12:00:00+00:00", "complete")
            status = {r["run_id"]: r["status"] for r in store.runs()}
            assert status == {"held": "running", "mine": "running", "done": "complete"}, status
            proc.kill()
            proc.wait(timeout=30)
            for _ in range(50):  # the server notices the dead client's connection
                status = {r["run_id"]: r["status"] for r in store.runs()}
                if status["held"] != "running":
                    break
                time.sleep(0.1)
            assert status == {"held": "abandoned", "mine": "running", "done": "complete"}, status
            assert "status" not in store.run("held")  # the run as written (unfinished): a reader changes nothing
            assert store.status(store.run("held")) == "abandoned"
        with backend.open(create=False) as store:  # "mine" was left unfinished when its store closed
            status = {r["run_id"]: r["status"] for r in store.runs()}
            assert status == {"held": "abandoned", "mine": "abandoned", "done": "complete"}, status
            assert [r["run_id"] for r in store.find_runs() if r.get("status", "running") != "running"] == ["done"]
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_an_interrupted_or_failed_run_is_never_the_latest_passing(backend: Backend):
    """A run interrupted after its measurements (Ctrl-C, exit 130) was stored with verdict pass and became the
    next run's latest-passing baseline."""
    with backend.open() as store:
        for run_id, created, status in (("good", "10:00", "complete"), ("stopped", "11:00", "interrupted"),
                                        ("odd", "12:00", "failed")):
            begin(store, run_id, f"2026-11-28T{created}:00.000+00:00")
            store.finish_run(run_id, f"2026-11-28T{created}:30.000+00:00", status)
            store.update_run(run_id, {"ci": {"verdict": "pass"}})
        assert [r["run_id"] for r in store.find_runs(passing=True)] == ["good"]
        assert [r["run_id"] for r in store.find_runs()] == ["odd", "stopped", "good"]
