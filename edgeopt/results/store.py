"""Results history: SQLite (stdlib ``sqlite3``) plus one JSON file per result.

Embedded default: ``./results/edgeopt.sqlite``; each result is also written (atomically) as
``results/<run_id>/<result_id>.json`` and the run as ``results/<run_id>/run.json``, so a run can be read, copied
or archived without SQLite.

Tables (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`):

``runs``     run_id (primary key), created_at, finished_at, status, command, targets (JSON), doc (JSON)
``results``  result_id (primary key), run_id, created_at, target, profile, format, sha256, p50_ms, valid,
             error, doc (the full result JSON); indexed on run_id, (target, profile, format), sha256, created_at

Thread-safe: one connection guarded by a lock (bench writes from one worker thread per device).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from edgeopt.artifacts.files import atomic_write_json
from edgeopt.errors import OutputError, StoreError

SCHEMA_VERSION = 1
DEFAULT_RESULTS_DIR = Path("results")
DB_NAME = "edgeopt.sqlite"

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


def safe_name(text: str) -> str:
    """A file-name-safe rendering of ``text`` (result JSON names): letters, digits, ``._-`` only."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
    return cleaned[:120]


class Store:
    """``Store(db_path, json_dir)``: ``json_dir`` (default: the database's directory) receives the JSON copies."""

    def __init__(self, db_path: str | Path, json_dir: str | Path | None = None, *, create: bool = True) -> None:
        self.path = Path(db_path)
        self.json_dir = Path(json_dir) if json_dir is not None else self.path.parent
        if not create and not self.path.is_file():
            raise StoreError(
                f"no results store at {self.path}",
                "run `edgeopt bench` first, or point --results/--store at the directory/file it wrote",
            )
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"results store {self.path} has schema {version}, newer than this edgeopt ({SCHEMA_VERSION})",
                    "upgrade edgeopt, or use another --store",
                )
            if create:
                try:
                    self._db.execute("PRAGMA journal_mode=WAL")
                except sqlite3.OperationalError:  # e.g. a file system without shared memory: keep the default
                    pass
                self._db.executescript(_DDL)
                if version < SCHEMA_VERSION:
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open results store {self.path}: {exc}",
                             "is it an edgeopt results database? move it away to start a new one") from exc
        except OSError as exc:
            raise OutputError(f"cannot create results directory {self.path.parent}: {exc.strerror or exc}",
                              "choose a writable --results directory") from exc
        self._lock = threading.Lock()

    # -- writing -----------------------------------------------------------------------------------------------
    def begin_run(self, doc: dict[str, Any]) -> None:
        """Record a new run (``doc`` has ``run_id``, ``created_at``, optional ``command`` and ``targets``)."""
        with self._lock, self._tx():
            self._db.execute(
                "INSERT INTO runs (run_id, created_at, status, command, targets, doc) VALUES (?, ?, ?, ?, ?, ?)",
                (doc["run_id"], doc["created_at"], doc.get("status", "running"), doc.get("command"),
                 json.dumps(doc.get("targets", [])), json.dumps(doc)),
            )
        self._write_json(self.run_dir(doc["run_id"]) / "run.json", doc)

    def add_result(self, doc: dict[str, Any]) -> Path:
        """Store one result document; returns the path of its JSON copy."""
        error = doc.get("error")
        error_text = None
        if error:
            error_text = error.get("message") if isinstance(error, dict) else str(error)
        p50 = ((doc.get("agent") or {}).get("latency_ms") or {}).get("p50")
        path = self.run_dir(doc["run_id"]) / f"{safe_name(doc['result_id'])}.json"
        self._write_json(path, doc)
        with self._lock, self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO results (result_id, run_id, created_at, target, profile, format, sha256, "
                "p50_ms, valid, error, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (doc["result_id"], doc["run_id"], doc["created_at"], doc["target"], doc.get("profile"),
                 doc.get("format"), (doc.get("artifact") or {}).get("sha256"),
                 float(p50) if isinstance(p50, (int, float)) else None, 1 if doc.get("valid") else 0,
                 error_text, json.dumps(doc)),
            )
        return path

    def finish_run(self, run_id: str, finished_at: str, status: str, summary: dict[str, Any] | None = None) -> None:
        with self._lock, self._tx():
            row = self._db.execute("SELECT doc FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"unknown run {run_id}")
            doc = json.loads(row["doc"])
            doc.update({"finished_at": finished_at, "status": status})
            if summary is not None:
                doc["summary"] = summary
            self._db.execute("UPDATE runs SET finished_at = ?, status = ?, doc = ? WHERE run_id = ?",
                             (finished_at, status, json.dumps(doc), run_id))
        self._write_json(self.run_dir(run_id) / "run.json", doc)

    def update_run(self, run_id: str, updates: dict[str, Any]) -> dict[str, Any]:
        """Merge ``updates`` into a run's document (e.g. ``edgeopt ci`` records its verdict); returns the doc."""
        with self._lock, self._tx():
            row = self._db.execute("SELECT doc FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"unknown run {run_id}")
            doc = json.loads(row["doc"])
            doc.update(updates)
            self._db.execute("UPDATE runs SET doc = ? WHERE run_id = ?", (json.dumps(doc), run_id))
        self._write_json(self.run_dir(run_id) / "run.json", doc)
        return doc

    def tag_run(self, run_id: str, tag: str) -> None:
        """Add ``tag`` (e.g. a branch name) to a run; :meth:`find_run` with that tag returns the newest run
        carrying it, so a tag moves forward like a branch."""
        doc = self.run(run_id)
        tags = [t for t in doc.get("tags") or [] if t != tag] + [tag]
        self.update_run(doc["run_id"], {"tags": tags})

    def find_run(self, *, tag: str | None = None, passing: bool = False, exclude: str | None = None,
                 limit: int = 5000) -> dict[str, Any] | None:
        """The newest run with ``tag`` and/or (``passing``) a ``ci.verdict`` of ``pass``; None if there is none."""
        with self._lock:
            rows = self._db.execute("SELECT doc FROM runs ORDER BY created_at DESC, rowid DESC LIMIT ?",
                                    (limit,)).fetchall()
        for row in rows:
            doc = json.loads(row["doc"])
            if exclude and doc.get("run_id") == exclude:
                continue
            if tag is not None and tag not in (doc.get("tags") or []):
                continue
            if passing and (doc.get("ci") or {}).get("verdict") != "pass":
                continue
            return doc
        return None

    # -- reading -------------------------------------------------------------------------------------------------
    def latest_run_id(self) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT run_id FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
        return row["run_id"] if row else None

    def run(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT doc FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                # a unique prefix is enough, as with git hashes
                rows = self._db.execute("SELECT doc FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY created_at",
                                        (len(run_id), run_id)).fetchall()
                if len(rows) == 1:
                    row = rows[0]
        if row is None:
            known = ", ".join(r["run_id"] for r in self.runs(limit=5)) or "none"
            raise StoreError(f"no run {run_id!r} in {self.path} (latest: {known})", "see `edgeopt report --list`")
        return json.loads(row["doc"])

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT r.run_id, r.created_at, r.finished_at, r.status, r.targets, "
                "(SELECT COUNT(*) FROM results x WHERE x.run_id = r.run_id) AS results, "
                "(SELECT COUNT(*) FROM results x WHERE x.run_id = r.run_id AND x.valid = 1) AS valid "
                "FROM runs r ORDER BY r.created_at DESC, r.rowid DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "targets": json.loads(r["targets"] or "[]")} for r in rows]

    def results(self, run_id: str) -> list[dict[str, Any]]:
        """Full result documents of a run, ordered by result id (target name, then the order they ran in)."""
        with self._lock:
            rows = self._db.execute("SELECT doc FROM results WHERE run_id = ? ORDER BY result_id",
                                    (run_id,)).fetchall()
        return [json.loads(r["doc"]) for r in rows]

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
            rows = self._db.execute(
                "SELECT result_id, run_id, created_at, target, profile, format, sha256, p50_ms, valid, error "
                f"FROM results {where} ORDER BY created_at DESC, rowid DESC LIMIT ?", (*params, limit)).fetchall()
        return [dict(r) for r in rows]

    # -- helpers -----------------------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.json_dir / safe_name(run_id)

    def _write_json(self, path: Path, doc: dict[str, Any]) -> None:
        atomic_write_json(path, doc)

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


def open_store(results_dir: str | Path | None = None, store: str | Path | None = None, *,
               create: bool = True) -> Store:
    """The store for ``--results DIR`` (default ``./results``) / ``--store FILE`` (default ``DIR/edgeopt.sqlite``)."""
    directory = Path(results_dir) if results_dir is not None else DEFAULT_RESULTS_DIR
    db = Path(store) if store is not None else directory / DB_NAME
    return Store(db, directory, create=create)
