"""The SQLite results store (stdlib ``sqlite3``, the embedded default) plus one JSON file per result.

Embedded default: ``./results/edgeopt.sqlite``; each result is also written (atomically) as
``results/<run_id>/<result_id>.json`` and the run as ``results/<run_id>/run.json``, so a run can be read, copied
or archived without SQLite.

Tables (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`):

``runs``     run_id (primary key), created_at, finished_at, status, command, targets (JSON), doc (JSON)
``results``  result_id (primary key), run_id, created_at, target, profile, format, sha256, p50_ms, valid,
             error, doc (the full result JSON); indexed on run_id, (target, profile, format), sha256, created_at

The statements of the public methods are plain SQL both SQLite and PostgreSQL run (``?`` placeholders,
``ON CONFLICT``, ``RETURNING``); ``edgeopt.results.postgres.PostgresStore`` reuses them over its own connection.
Cohesive: one backend's whole store interface (schema, writes, reads, the writer's lock on unfinished runs), whose
SQL the PostgreSQL store inherits; split, the two backends would drift apart.
Thread-safe: one connection guarded by a lock (bench writes from one worker thread per device).

A run's writer holds a lock while the run is unfinished: here an ``flock`` on ``results/<run_id>/.writer.lock``
(PostgreSQL: a session advisory lock, ``PostgresStore``). The kernel (the server) drops it when the writer's
process (connection) ends, so :meth:`Store.runs` lists a run whose writer died before finishing it as
``abandoned``, not as ``running`` forever; the row itself is never changed by a reader.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

from edgeopt.artifacts.files import atomic_write_json
from edgeopt.errors import EdgeoptError, OutputError, StoreError
from edgeopt.results.common import (
    COLUMNS,
    SCHEMA_VERSION,
    check_writable_dir,
    parse_json,
    result_columns,
    result_doc,
    run_columns,
    safe_name,
)

log = logging.getLogger(__name__)

_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT NOT NULL DEFAULT 'running',
    command     TEXT,
    targets     TEXT,
    doc         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    result_id   TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    created_at  TEXT NOT NULL,
    target      TEXT NOT NULL,
    profile     TEXT,
    format      TEXT,
    sha256      TEXT,
    p50_ms      REAL,
    valid       INTEGER NOT NULL,
    error       TEXT,
    doc         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_run ON results(run_id);
CREATE INDEX IF NOT EXISTS results_key ON results(target, profile, format);
CREATE INDEX IF NOT EXISTS results_sha ON results(sha256);
CREATE INDEX IF NOT EXISTS results_created ON results(created_at);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
"""
RUN_COLUMNS = "run_id, created_at, finished_at, status, command, targets, doc"
RESULT_COLUMNS = "result_id, run_id, created_at, target, profile, format, sha256, p50_ms, valid, error, doc"
UPSERT_RESULT = (
    f"INSERT INTO results ({RESULT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (result_id) "
    "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in RESULT_COLUMNS.split(", ")[1:]))
REPLACE_RESULT = f"INSERT OR REPLACE INTO results ({RESULT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


class Store:
    """``Store(db_path, json_dir)``: ``json_dir`` (default: the database's directory) receives the JSON copies."""

    TIE = "rowid"  # the column that orders rows created in the same instant (insertion order)
    LOCK_ROW = ""  # what locks a row read for update (SQLite: the whole database, BEGIN IMMEDIATE)
    UPSERT = REPLACE_RESULT  # a result stored again (superseded, retried) replaces the row and becomes the newest
    _db: Any  # the backend's connection (sqlite3 here, psycopg in PostgresStore)

    def __init__(self, db_path: str | Path, json_dir: str | Path | None = None, *, create: bool = True) -> None:
        self.path = Path(db_path)
        self.json_dir = Path(json_dir) if json_dir is not None else self.path.parent
        self.where = str(self.path)  # what messages name: the file, or a URL with its password masked
        if self.path.is_dir():
            raise StoreError(f"results store {self.path} is a directory, not a database file",
                             "point --store at an edgeopt.sqlite file, or --results at the directory holding it")
        if not create and not self.path.is_file():
            raise StoreError(
                f"no results store at {self.path}",
                "run `edgeopt bench` first, or point --results/--store at the directory/file it wrote",
            )
        if create:
            for directory in dict.fromkeys([self.path.parent, self.json_dir]):
                check_writable_dir(directory)
        try:
            self._db = self._connect(create)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"results store {self.path} has schema {version}, newer than this edgeopt ({SCHEMA_VERSION})",
                    "upgrade edgeopt, or use another --store",
                )
            self._check_schema(create)
            if create:
                try:
                    self._db.execute("PRAGMA journal_mode=WAL")
                except sqlite3.OperationalError:  # e.g. a file system without shared memory: keep the default
                    pass
                self._db.executescript(_DDL)
                if version < SCHEMA_VERSION:
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException as exc:
            if hasattr(self, "_db"):  # no -wal/-shm left behind by a store we refuse
                self._db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise store_error(self.path, exc, opening=True) from exc
            raise
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # run_id -> the file descriptor holding the writer's lock

    def _connect(self, create: bool) -> sqlite3.Connection:
        """The connection; a store on a read-only file system (an archive) is opened read-only and immutable,
        as SQLite cannot create the lock files a WAL database needs there."""
        db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
        if not create and not os.access(self.path.parent, os.W_OK):
            try:
                db.execute("PRAGMA user_version").fetchone()
            except sqlite3.OperationalError:
                db.close()
                db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, timeout=30.0,
                                     check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    def _check_schema(self, create: bool) -> None:
        """Our tables with our columns, or none at all (a new store); anything else is not ours to touch."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if not str(r[0]).startswith("sqlite_")}
        if not tables:
            if not create:
                raise StoreError(f"results store {self.path} holds no edgeopt results (an empty database)",
                                 "run `edgeopt bench` first, or point --results/--store at the store it wrote")
            return
        problems = [f"no table {t}" for t in sorted(set(COLUMNS) - tables)]
        for table in sorted(set(COLUMNS) & tables):
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            lacking = sorted(COLUMNS[table] - have)
            if lacking:
                problems.append(f"table {table} lacks {', '.join(lacking)}")
        if problems:
            raise StoreError(f"{self.path} is not an edgeopt results store ({'; '.join(problems)[:200]})",
                             "point --results/--store at the store `edgeopt bench` wrote, or move this file away")

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Execute a statement, fetch its rows; SQLite's errors become one-line store errors naming the file."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise store_error(self.path, exc) from exc

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return next(iter(self._run(sql, params)), None)

    def _run_doc(self, text: Any, run_id: Any) -> dict[str, Any]:
        """A stored run document; a damaged one is a store error naming the run (it cannot be shown or updated)."""
        doc = parse_json(text, dict)
        if doc is None:
            raise StoreError(f"results store {self.where}: the document of run {run_id} is damaged (not a JSON object)",
                             "remove that run from the store, or move the store away")
        return doc

    # -- writing -----------------------------------------------------------------------------------------------
    def begin_run(self, doc: dict[str, Any]) -> None:
        """Record a new run (``doc`` has ``run_id``, ``created_at``, optional ``command`` and ``targets``)."""
        self._hold(doc["run_id"])  # before the row exists: a reader never sees the run without its writer's lock
        try:
            with self._lock, self._tx():
                self._run(f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", run_columns(doc))
        except BaseException:
            self._release(doc["run_id"])
            raise
        self._write_json(self.run_dir(doc["run_id"]) / "run.json", doc)

    def add_result(self, doc: dict[str, Any]) -> Path:
        """Store one result document (one transaction: the row is all there or not at all); returns the path of
        its JSON copy, written once the row is committed (never a copy of a result the store did not get)."""
        path = self.run_dir(doc["run_id"]) / f"{safe_name(doc['result_id'])}.json"
        with self._lock, self._tx():
            self._run(self.UPSERT, result_columns(doc))
        self._write_json(path, doc)
        return path

    def finish_run(self, run_id: str, finished_at: str, status: str, summary: dict[str, Any] | None = None) -> None:
        def finish(doc: dict[str, Any]) -> None:
            doc.update({"finished_at": finished_at, "status": status})
            if summary is not None:
                doc["summary"] = summary

        self.modify_run(run_id, finish)
        self._release(run_id)

    # -- the writer's lock on an unfinished run ------------------------------------------------------------------
    def _writer_lock(self, run_id: str) -> Path:
        return self.run_dir(run_id) / ".writer.lock"

    def _hold(self, run_id: str) -> None:
        """Take the writer's lock of a new run (held until :meth:`finish_run` or :meth:`close`, or this process
        ends). Best effort: where the file system has no locks, the run is just never called abandoned."""
        import fcntl

        try:
            self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
            fd = os.open(self._writer_lock(run_id), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        self._held[run_id] = fd

    def _release(self, run_id: str) -> None:
        """The run is finished: remove its lock file, then drop the lock."""
        if run_id in self._held:
            try:
                self._writer_lock(run_id).unlink()
            except OSError:
                pass
        self._release_quietly(run_id)

    def writer_gone(self, run_id: str) -> bool:
        """The unfinished run's writer has ended without finishing it (its lock is free). False while it runs,
        and when it cannot be told (a run written by an older edgeopt, no lock file, no locks here)."""
        import fcntl

        if run_id in self._held:
            return False
        try:
            fd = os.open(self._writer_lock(run_id), os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:  # held: the writer lives (any other error: cannot tell)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                log.debug("cannot test the writer lock of run %s: %s", run_id, exc)
            return False
        finally:
            os.close(fd)
        return True

    def status(self, run: dict[str, Any]) -> str:
        """A run's status as a reader should see it: ``abandoned`` for an unfinished run whose writer is gone."""
        status = str(run.get("status") or "running")
        if status == "running" and isinstance(run.get("run_id"), str) and self.writer_gone(run["run_id"]):
            return "abandoned"
        return status

    def update_run(self, run_id: str, updates: dict[str, Any]) -> dict[str, Any]:
        """Merge ``updates`` into a run's document (e.g. ``edgeopt ci`` records its verdict); returns the doc."""
        return self.modify_run(run_id, lambda doc: doc.update(updates))

    def modify_run(self, run_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read a run's document, ``change`` it in place and write it back, in one transaction with the row
        locked: concurrent writers (other threads, processes, hosts) never lose each other's changes."""
        with self._lock, self._tx():
            row = self._one(f"SELECT doc FROM runs WHERE run_id = ?{self.LOCK_ROW}", (run_id,))
            if row is None:
                raise StoreError(f"unknown run {run_id}")
            doc = self._run_doc(row["doc"], run_id)
            change(doc)
            self._run("UPDATE runs SET finished_at = ?, status = ?, doc = ? WHERE run_id = ?",
                      (doc.get("finished_at"), doc.get("status", "running"), json.dumps(doc), run_id))
        self._write_json(self.run_dir(run_id) / "run.json", doc)
        return doc

    def tag_run(self, run_id: str, tag: str) -> None:
        """Add ``tag`` (e.g. a branch name) to a run; :meth:`find_run` with that tag returns the newest run
        carrying it, so a tag moves forward like a branch. Decided in one transaction (see :meth:`modify_run`)."""
        def add_tag(doc: dict[str, Any]) -> None:
            doc["tags"] = [t for t in doc.get("tags") or [] if t != tag] + [tag]

        self.modify_run(self.run(run_id)["run_id"], add_tag)

    def import_run(self, run: dict[str, Any], results: list[dict[str, Any]]) -> str:
        """Copy a run and its results from another store in one transaction (``edgeopt store migrate``):
        ``copied``; ``updated`` when the run is here unfinished (copied while its writer was still at it) and the
        given copy is further along (finished, or more results): its row and results become the given ones; else
        ``skipped``, nothing written."""
        with self._lock, self._tx():
            if self._run(f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT (run_id) DO NOTHING RETURNING run_id", run_columns(run)):
                outcome = "copied"
            else:
                here = self._one(f"SELECT finished_at FROM runs WHERE run_id = ?{self.LOCK_ROW}", (run["run_id"],))
                count = self._one("SELECT count(*) AS n FROM results WHERE run_id = ?", (run["run_id"],))
                if here is None or here["finished_at"] is not None or not (
                        run.get("finished_at") or len(results) > int(count["n"])):
                    return "skipped"
                self._run("UPDATE runs SET created_at = ?, finished_at = ?, status = ?, command = ?, targets = ?, "
                          "doc = ? WHERE run_id = ?", (*run_columns(run)[1:], run["run_id"]))
                outcome = "updated"
            for doc in results:
                self._run(self.UPSERT, result_columns(doc))
        return outcome

    def find_run(self, *, tag: str | None = None, passing: bool = False, exclude: str | None = None,
                 limit: int = 5000) -> dict[str, Any] | None:
        """The newest run with ``tag`` and/or (``passing``) a ``ci.verdict`` of ``pass``; None if there is none."""
        return next(iter(self.find_runs(tag=tag, passing=passing, exclude=exclude, limit=limit)), None)

    def find_runs(self, *, tag: str | None = None, passing: bool = False, exclude: str | None = None,
                  limit: int = 5000) -> list[dict[str, Any]]:
        """Every run :meth:`find_run` could return, newest first (among the ``limit`` newest runs): a lab whose
        runners measure different devices takes each device's baseline from the newest run that measured it."""
        with self._lock:
            rows = self._run(f"SELECT doc FROM runs ORDER BY created_at DESC, {self.TIE} DESC LIMIT ?", (limit,))
        found = []
        for row in rows:
            doc = parse_json(row["doc"], dict)
            if doc is None:
                continue  # a damaged run is never a baseline
            if exclude and doc.get("run_id") == exclude:
                continue
            if tag is not None and tag not in (doc.get("tags") or []):
                continue
            if passing and ((doc.get("ci") or {}).get("verdict") != "pass" or doc.get("status") != "complete"):
                continue
            found.append(doc)
        return found

    # -- reading -------------------------------------------------------------------------------------------------
    def latest_run_id(self) -> str | None:
        with self._lock:
            row = self._one(f"SELECT run_id FROM runs ORDER BY created_at DESC, {self.TIE} DESC LIMIT 1")
        return row["run_id"] if row else None

    def run(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._one("SELECT doc FROM runs WHERE run_id = ?", (run_id,))
            if row is None:
                # a unique prefix is enough, as with git hashes
                rows = self._run("SELECT run_id, doc FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY created_at",
                                 (len(run_id), run_id))
                if len(rows) == 1:
                    row = rows[0]
                elif len(rows) > 1:
                    some = ", ".join(r["run_id"] for r in rows[-3:])
                    raise StoreError(f"run id prefix {run_id!r} is ambiguous in {self.where}: {len(rows)} runs "
                                     f"start with it ({some}, ...)", "give more of the run id")
        if row is None:
            known = ", ".join(r["run_id"] for r in self.runs(limit=5)) or "none"
            raise StoreError(f"no run {run_id!r} in {self.where} (latest: {known})", "see `edgeopt report --list`")
        return self._run_doc(row["doc"], run_id)

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._run(
                "SELECT r.run_id, r.created_at, r.finished_at, r.status, r.targets, "
                "(SELECT COUNT(*) FROM results x WHERE x.run_id = r.run_id) AS results, "
                "(SELECT COUNT(*) FROM results x WHERE x.run_id = r.run_id AND x.valid = 1) AS valid "
                f"FROM runs r ORDER BY r.created_at DESC, r.{self.TIE} DESC LIMIT ?", (limit,))
        listed = [{**dict(r), "targets": parse_json(r["targets"] or "[]", list) or []} for r in rows]
        for r in listed:
            r["status"] = self.status(r)
        return listed

    def results(self, run_id: str) -> list[dict[str, Any]]:
        """Full result documents of a run, ordered by result id (target name, then the order they ran in)."""
        with self._lock:
            rows = self._run("SELECT result_id, run_id, created_at, target, profile, format, doc FROM results "
                             "WHERE run_id = ? ORDER BY result_id", (run_id,))
        return [result_doc(r) for r in rows]

    def query(self, *, target: str | None = None, profile: str | None = None, fmt: str | None = None,
              valid_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Indexed columns of the newest results matching the filters (newest first)."""
        clauses, params = [], []
        for column, value in (("target", target), ("profile", profile), ("format", fmt)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if valid_only:
            clauses.append("valid = 1")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._run(
                "SELECT result_id, run_id, created_at, target, profile, format, sha256, p50_ms, valid, error "
                f"FROM results {where} ORDER BY created_at DESC, {self.TIE} DESC LIMIT ?", (*params, limit))
        return [dict(r) for r in rows]

    # -- helpers -----------------------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.json_dir / safe_name(run_id)

    def _write_json(self, path: Path, doc: dict[str, Any]) -> None:
        atomic_write_json(path, doc)

    def _tx(self) -> AbstractContextManager[None]:
        return _Transaction(self._db, self.path)

    def close(self) -> None:
        for run_id in list(self._held):  # an unfinished run of ours: abandoned from now on
            self._release_quietly(run_id)
        with self._lock:
            self._db.close()

    def _release_quietly(self, run_id: str) -> None:
        """Drop the writer's lock of a run left unfinished, keeping its lock file (the run is abandoned)."""
        fd = self._held.pop(run_id, None)
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db, self.path = db, path

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise store_error(self.path, exc) from exc

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        except sqlite3.DatabaseError as err:
            if exc_type is None:
                raise store_error(self.path, err) from err


def store_error(path: Path, exc: sqlite3.DatabaseError, opening: bool = False) -> EdgeoptError:
    """SQLite's error as one line that says what is wrong with the store and what to do."""
    text = " ".join(str(exc).split())[:200]
    low = text.lower()
    if "readonly" in low or "read-only" in low:
        return OutputError(f"results store {path} is not writable ({text})", "choose a writable --results directory")
    if "locked" in low or "busy" in low:
        return StoreError(f"results store {path} is locked by another process ({text})",
                          "retry when the other edgeopt run has finished")
    if "full" in low:
        return OutputError(f"results store {path}: {text}", "free space or choose another --results directory")
    if opening or "no such" in low or "malformed" in low or "not a database" in low:
        return StoreError(f"cannot open results store {path}: {text}",
                          "is it an edgeopt results database? move it away to start a new one")
    return StoreError(f"results store {path}: {text}")


