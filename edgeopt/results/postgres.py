"""The PostgreSQL results store (psycopg 3): one history shared by several runners and hosts.

``PostgresStore(url, json_dir)`` runs the same statements as the SQLite store (``edgeopt.results.sqlite``) over
one psycopg connection (``?`` becomes ``%s``); what differs is here: connecting, the versioned schema and its
migrations (:data:`MIGRATIONS`, applied in order under an advisory lock, recorded in ``edgeopt_schema``; a store
is never silently recreated), row locks (``SELECT … FOR UPDATE``) for run updates and tags, and errors. A server
that cannot be reached, or goes away mid-run, is :class:`~edgeopt.errors.StoreUnavailable` (exit 3); a half-done
transaction is rolled back by the server, so no result or run update is ever half-written. Passwords in the URL
never reach a message (:func:`~edgeopt.results.common.mask_url`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from edgeopt.errors import EdgeoptError, StoreError, StoreUnavailable
from edgeopt.results.common import COLUMNS, SCHEMA_VERSION, check_writable_dir, mask_url, scrub, url_secrets
from edgeopt.results.sqlite import UPSERT_RESULT, Store

log = logging.getLogger(__name__)
MIGRATION_LOCK = 0x6564_6765_6F70  # pg_advisory_xact_lock key: one migrator at a time ("edgeop")
MIGRATIONS: dict[int, list[str]] = {  # version -> statements taking the schema from version - 1 to it
    1: [
        "CREATE TABLE edgeopt_schema (version INTEGER NOT NULL)",
        "INSERT INTO edgeopt_schema (version) VALUES (0)",
        "CREATE TABLE runs (seq BIGSERIAL UNIQUE, run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, "
        "finished_at TEXT, status TEXT NOT NULL DEFAULT 'running', command TEXT, targets TEXT, doc TEXT NOT NULL)",
        "CREATE TABLE results (seq BIGSERIAL UNIQUE, result_id TEXT PRIMARY KEY, "
        "run_id TEXT NOT NULL REFERENCES runs(run_id), created_at TEXT NOT NULL, target TEXT NOT NULL, "
        "profile TEXT, format TEXT, sha256 TEXT, p50_ms DOUBLE PRECISION, valid INTEGER NOT NULL, error TEXT, "
        "doc TEXT NOT NULL)",
        "CREATE INDEX results_run ON results(run_id)",
        "CREATE INDEX results_key ON results(target, profile, format)",
        "CREATE INDEX results_sha ON results(sha256)",
        "CREATE INDEX results_created ON results(created_at)",
        "CREATE INDEX runs_created ON runs(created_at)",
    ],
}
CONNECT_TIMEOUT_S = 10
# a server host that vanishes (no answer at all, not even a reset) is given up on within about 30 s instead of
# the kernel's ~15 min of retransmissions: TCP keepalives while idle, a user timeout while data is unacknowledged
# (a URL's own settings win)
TCP_SETTINGS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                "tcp_user_timeout": 30_000}
# what opening a store can fail on that is the user's to fix (exit 2), not the server's absence (exit 3)
FIXABLE = [
    (re.compile(r"password authentication failed|no password supplied|role \S+ does not exist|pg_hba\.conf "
                r"rejects|authentication failed", re.IGNORECASE),
     "check the user and password (in the URL, ~/.pgpass or PGPASSWORD) and the server's pg_hba.conf"),
    (re.compile(r"database \S+ does not exist", re.IGNORECASE),
     "create it (createdb -h HOST -U USER NAME) or fix the database name in the URL"),
    (re.compile(r"invalid .*(value|option|token|URI|integer)|missing \"=\"|unterminated", re.IGNORECASE),
     "write postgresql://user:password@host:port/db (percent-encode @ / : in the password)"),
]
# the advisory lock a run's writer holds until it finishes the run
WRITER_KEY = "hashtextextended('edgeopt-run:' || ?::text, 0)"


class PostgresStore(Store):
    """``PostgresStore("postgresql://user@host:port/db", json_dir)``; the JSON copies go to ``json_dir``."""

    TIE = "seq"
    LOCK_ROW = " FOR UPDATE"
    UPSERT = UPSERT_RESULT + ", seq = DEFAULT"  # as SQLite's INSERT OR REPLACE: the row becomes the newest

    def __init__(self, url: str, json_dir: str | Path, *, create: bool = True) -> None:
        self.url = url
        self.where = mask_url(url)
        self.path = Path(self.where)  # for callers that print store.path; ``where`` keeps the ``//``
        self.json_dir = Path(json_dir)
        self._lock = threading.Lock()
        self._in_tx = False
        self._held: dict[str, int] = {}  # run_id -> 1: this session holds the run's advisory lock (no fd here)
        if create:
            check_writable_dir(self.json_dir)
        try:
            self._db = self._open_connection()
        except psycopg.Error as exc:
            raise self.error(exc, opening=True) from exc
        try:
            self._migrate(create)
        except BaseException:
            self._db.close()
            raise

    # -- schema ------------------------------------------------------------------------------------------------
    def _migrate(self, create: bool) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION`, one migration at a time, each in the transaction that
        records it; refuse a newer schema, and tables that are not ours."""
        with self._tx():
            self._run("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            tables = {r["table_name"] for r in self._run(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
            if "edgeopt_schema" not in tables:
                ours = sorted(set(COLUMNS) & tables)
                if ours:
                    raise StoreError(f"{self.where} is not an edgeopt results store (tables {', '.join(ours)} "
                                     "exist without edgeopt_schema)",
                                     "point --store at the database edgeopt wrote, or use an empty database")
                if not create:
                    raise StoreError(f"results store {self.where} holds no edgeopt results (an empty database)",
                                     "run `edgeopt bench` first, or point --store at the store it wrote")
                version = 0
            else:
                row = self._one("SELECT max(version) AS version FROM edgeopt_schema")
                version = int(row["version"] or 0) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"results store {self.where} has schema {version}, newer than this edgeopt ({SCHEMA_VERSION})",
                    "upgrade edgeopt, or use another --store")
            if version < SCHEMA_VERSION and not create:
                raise StoreError(f"results store {self.where} has schema {version}, older than this edgeopt's "
                                 f"({SCHEMA_VERSION})", "run `edgeopt bench` or `edgeopt ci` once to migrate it")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    self._run(statement)
                self._run("UPDATE edgeopt_schema SET version = ?", (step,))
            self._check_columns()

    def _check_columns(self) -> None:
        problems = []
        for table, wanted in sorted(COLUMNS.items()):
            have = {r["column_name"] for r in self._run(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = ?", (table,))}
            lacking = sorted(wanted - have)
            if not have:
                problems.append(f"no table {table}")
            elif lacking:
                problems.append(f"table {table} lacks {', '.join(lacking)}")
        if problems:
            raise StoreError(f"{self.where} is not an edgeopt results store ({'; '.join(problems)[:200]})",
                             "point --store at the database edgeopt wrote")

    def schema_version(self) -> int:
        row = self._one("SELECT max(version) AS version FROM edgeopt_schema")
        return int(row["version"]) if row else 0

    # -- primitives --------------------------------------------------------------------------------------------
    def _open_connection(self) -> psycopg.Connection[Any]:
        from psycopg.conninfo import conninfo_to_dict

        given = conninfo_to_dict(self.url)
        tcp: dict[str, Any] = {k: v for k, v in TCP_SETTINGS.items() if k not in given}
        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="edgeopt", **tcp)

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Execute a statement, fetch its rows. A connection found dead *between* transactions (the server was
        restarted while this run measured) is replaced once and the statement (a read, or ``BEGIN``) retried:
        nothing was in flight. Inside a transaction a lost connection is never retried: the server rolled it
        back, and it is :class:`~edgeopt.errors.StoreUnavailable`."""
        try:
            return self._execute(sql, params)
        except psycopg.OperationalError as exc:
            if self._in_tx or not (self._db.broken or self._db.closed):
                raise self.error(exc) from exc
            first = exc
        try:
            self._db.close()
            self._db = self._open_connection()
        except psycopg.Error as exc:
            raise self.error(exc) from exc
        log.warning("results store %s: reconnected (the connection was lost between two writes: %s)", self.where,
                    " ".join(str(first).split())[:120])
        try:  # the old session's writer locks went with it
            for run_id in self._held:
                self._execute(f"SELECT pg_advisory_lock({WRITER_KEY})", (run_id,))
        except psycopg.Error as exc:
            raise self.error(exc) from exc
        try:
            return self._execute(sql, params)
        except psycopg.Error as exc:
            raise self.error(exc) from exc

    def _execute(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        try:
            cursor = self._db.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description is not None else []
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            raise self.error(exc) from exc

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """``BEGIN`` … ``COMMIT`` (``ROLLBACK`` on error: when the connection is gone, the server rolls back)."""
        self._run("BEGIN")
        self._in_tx = True
        try:
            yield
            self._run("COMMIT")
        except BaseException:
            try:
                self._run("ROLLBACK")
            except EdgeoptError:
                pass
            raise
        finally:
            self._in_tx = False

    def close(self) -> None:
        with self._lock:
            self._held.clear()  # the server drops the session's writer locks with the connection
            self._db.close()

    # -- the writer's lock on an unfinished run: a session advisory lock, dropped by the server when the writer's
    #    connection ends (its process died, its host went away) -----------------------------------------------
    def _hold(self, run_id: str) -> None:
        with self._lock:
            self._run(f"SELECT pg_advisory_lock({WRITER_KEY})", (run_id,))
            self._held[run_id] = 1

    def _release(self, run_id: str) -> None:  # no lock file to remove here
        self._release_quietly(run_id)

    def _release_quietly(self, run_id: str) -> None:
        if self._held.pop(run_id, None) is None:
            return
        try:
            with self._lock:
                self._run(f"SELECT pg_advisory_unlock({WRITER_KEY})", (run_id,))
        except EdgeoptError as exc:  # the connection is gone: so is the lock
            log.debug("results store %s: writer lock of run %s not released: %s", self.where, run_id, exc)

    def writer_gone(self, run_id: str) -> bool:
        """No session holds the run's writer lock: its writer ended without finishing it (or it was written by
        an edgeopt from before writer locks)."""
        if run_id in self._held:
            return False
        with self._lock:
            row = self._one(f"SELECT pg_try_advisory_lock_shared({WRITER_KEY}) AS free", (run_id,))
            if not (row and row["free"]):
                return False
            self._run(f"SELECT pg_advisory_unlock_shared({WRITER_KEY})", (run_id,))
        return True

    def error(self, exc: psycopg.Error, opening: bool = False) -> EdgeoptError:
        """psycopg's error as one line naming the (masked) URL: a login the server refused, a database it lacks or a
        URL libpq cannot read is the user's to fix (exit 2); a lost or unreachable server is exit 3."""
        primary = getattr(getattr(exc, "diag", None), "message_primary", None)  # without psycopg's "LINE 1: …"
        text = " ".join(str(primary or exc).split())[:240]
        text = mask_url(scrub(text, url_secrets(self.url)))  # libpq may echo a password it could not parse
        if opening:
            fixable = next((hint for pattern, hint in FIXABLE if pattern.search(text)), None)
            if fixable:
                return StoreError(f"cannot open results store {self.where}: {text}", fixable)
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return StoreError(f"results store {self.where}: {text}",
                              "let the database's owner run edgeopt once (it creates the tables), or grant the role "
                              "CREATE on the schema and write on edgeopt's tables")
        if isinstance(exc, psycopg.OperationalError) or self._db_broken():
            verb = "cannot reach" if opening else "lost the connection to"
            return StoreUnavailable(f"{verb} results store {self.where} ({text})",
                                    "is the PostgreSQL server up and the URL right? nothing half-written was kept; "
                                    "re-run when it is back")
        if opening:
            return StoreError(f"cannot open results store {self.where}: {text}", "check --store / EDGEOPT_STORE")
        return StoreError(f"results store {self.where}: {text}")

    def _db_broken(self) -> bool:
        db = getattr(self, "_db", None)
        return bool(db is not None and db.broken)

    def __enter__(self) -> PostgresStore:
        return self
