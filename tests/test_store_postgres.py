"""The PostgreSQL results store on a real server (tests/pg.py): chosen by URL (``--store``, ``EDGEOPT_STORE``),
versioned and migrated schema, foreign or newer databases refused untouched, an unreachable or killed server is
one infrastructure error (exit 3) with the password masked and no half-written run, and ``copy_history``.
The backend-neutral store tests run against PostgreSQL too: tests/test_store.py (``backend`` fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pg import PgServer, free_port, pg_server_fixture  # noqa: F401  (fixture pg_server)
from test_store import begin, result

from edgeopt.cli import main
from edgeopt.errors import ConfigError, StoreUnavailable
from edgeopt.results import postgres
from edgeopt.results.common import mask_url, scrub, url_secrets
from edgeopt.results.migrate import copy_history
from edgeopt.results.postgres import PostgresStore
from edgeopt.results.store import ENV_STORE, SCHEMA_VERSION, StoreError, open_store

ROOT = Path(__file__).resolve().parents[1]


def sql(url: str, *statements: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        rows: list[tuple] = []
        for statement in statements:
            cur = db.execute(statement)  # type: ignore[arg-type]
            rows = cur.fetchall() if cur.description else []
        return rows


def test_a_url_is_postgresql_never_a_local_directory(pg_server: PgServer, tmp_path: Path, monkeypatch):
    url = pg_server.new_database()
    monkeypatch.chdir(tmp_path)
    # as argparse's type=Path hands it over ("postgresql:/…"), as a str, and from the environment
    for where in (Path(url), url):
        with open_store(tmp_path / "results", where) as store:
            assert isinstance(store, PostgresStore) and store.where == url
            begin(store, f"run-{type(where).__name__}")
    with open_store(tmp_path / "results", create=False, default=url) as store:  # a lab's store:
        assert isinstance(store, PostgresStore) and len(store.runs()) == 2
    monkeypatch.setenv(ENV_STORE, url)  # the environment wins over a lab's store:, --store over both
    with open_store(tmp_path / "results", create=False, default=tmp_path / "lab.sqlite") as store:
        assert isinstance(store, PostgresStore) and len(store.runs()) == 2
    with open_store(tmp_path / "results", tmp_path / "cli.sqlite") as store:
        assert not isinstance(store, PostgresStore) and store.runs() == []
    assert not any(p.name.startswith("postgres") for p in tmp_path.rglob("*"))  # no "postgresql:" directory
    assert not (tmp_path / "lab.sqlite").exists()
    assert (tmp_path / "results" / "run-str" / "run.json").is_file()  # the JSON copies stay local


def test_schema_is_versioned_migrated_and_never_recreated(pg_server: PgServer, tmp_path: Path, monkeypatch):
    url = pg_server.new_database()
    with open_store(tmp_path, url) as store:
        begin(store, "run-1")
        store.add_result(result("run-1", 1))
        assert store.schema_version() == SCHEMA_VERSION == 1
    with open_store(tmp_path, url) as store:  # opening again keeps what is there
        assert [d["result_id"] for d in store.results("run-1")] == ["run-1-rpi4-001"]
    # a new edgeopt with schema 2 migrates the store in place, keeping the history
    monkeypatch.setitem(postgres.MIGRATIONS, 2, ["ALTER TABLE runs ADD COLUMN note TEXT"])
    monkeypatch.setattr(postgres, "SCHEMA_VERSION", 2)
    with pytest.raises(StoreError, match="older than this edgeopt"):
        open_store(tmp_path, url, create=False)  # a reader never migrates
    with open_store(tmp_path, url) as store:
        assert store.schema_version() == 2 and store.run("run-1")["run_id"] == "run-1"
    assert sql(url, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'runs' "
                    "AND column_name = 'note'") == [(1,)]
    monkeypatch.undo()
    # an older edgeopt refuses the newer store, and leaves it as it was
    with pytest.raises(StoreError) as info:
        open_store(tmp_path, url)
    assert "has schema 2, newer than this edgeopt (1)" in info.value.one_line()
    assert sql(url, "SELECT version FROM edgeopt_schema") == [(2,)]


def test_foreign_or_empty_database_is_refused_untouched(pg_server: PgServer, tmp_path: Path):
    url = pg_server.new_database()
    sql(url, "CREATE TABLE runs (id INTEGER, name TEXT)", "INSERT INTO runs VALUES (1, 'x')")
    for create in (False, True):
        with pytest.raises(StoreError, match="is not an edgeopt results store .tables runs exist"):
            open_store(tmp_path, url, create=create)
    assert sql(url, "SELECT * FROM runs") == [(1, "x")]
    with pytest.raises(StoreError, match="holds no edgeopt results"):
        open_store(tmp_path, pg_server.new_database(), create=False)


def test_unreachable_server_is_exit_3_with_the_password_masked(tmp_path: Path):
    url = f"postgresql://edgeopt:s3cret-pw@127.0.0.1:{free_port()}/edgeopt"
    with pytest.raises(StoreUnavailable) as info:
        open_store(tmp_path / "results", url)
    line = info.value.one_line()
    assert info.value.exit_code == 3 and "cannot reach results store postgresql://edgeopt:***@127.0.0.1" in line
    assert "s3cret" not in line and "\n" not in line
    # the command line: one line on stderr, exit 3, nothing named postgresql: created
    env = {**os.environ, ENV_STORE: url}
    proc = subprocess.run([str(ROOT / ".venv/bin/edgeopt"), "report", "--results", str(tmp_path / "r")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "cannot reach results store" in proc.stderr and "s3cret" not in proc.stderr + proc.stdout
    assert not any(p.name.startswith("postgres") for p in tmp_path.rglob("*"))
    # edgeopt ci cannot judge anything: exit 3, and its JUnit and summary files say why (a dashboard reads them)
    import xml.etree.ElementTree as ET

    ci = subprocess.run([str(ROOT / ".venv/bin/edgeopt"), "ci", "--lab", str(ROOT / "examples" / "lab.yaml"),
                         "--store", url, "--junit", str(tmp_path / "ci" / "junit.xml"), "--summary",
                         str(tmp_path / "ci" / "summary.md"), "--html", str(tmp_path / "ci" / "report.html")],
                        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ci.returncode == 3 and "cannot reach results store" in ci.stderr, ci.stderr
    suites = ET.parse(tmp_path / "ci" / "junit.xml").getroot()
    (error,) = suites.iter("error")
    assert suites.get("errors") == "1" and "cannot reach results store postgresql://edgeopt:***@" in error.get("message")
    summary = (tmp_path / "ci" / "summary.md").read_text()
    assert "not judged (exit 3)" in summary and "cannot reach results store" in summary
    assert not (tmp_path / "ci" / "report.html").exists()  # no verdict, no report pretending to be one
    assert "s3cret" not in (tmp_path / "ci" / "junit.xml").read_text() + summary + ci.stderr


def test_passwords_are_masked_however_they_are_written():
    for url, masked in [
        ("postgresql://alice:s3cret@127.0.0.1:5432/db", "postgresql://alice:***@127.0.0.1:5432/db"),
        ("postgresql://carol:pa#ss@h/db", "postgresql://carol:***@h/db"),  # libpq takes # and ? unencoded
        ("postgresql://carol:pa?ss:x@h:1/db?sslmode=require", "postgresql://carol:***@h:1/db?sslmode=require"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://alice@h/db?sslmode=disable&password=s3cret%zz", "postgresql://alice@h/db?sslmode=disable&password=***"),
        ("edgeopt ci --store=postgresql://a:s3cret@h/db --runs 3", "edgeopt ci --store=postgresql://a:***@h/db --runs 3"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),  # no password: as it was
        ("postgresql:///db?host=/run/pg&user=alice", "postgresql:///db?host=/run/pg&user=alice"),
    ]:
        assert mask_url(url) == masked
    assert url_secrets("postgresql://u:p%40ss@h/db?password=x") == ["p%40ss", "p@ss", "x"]
    # an unencoded '@' in the password: masked whole; libpq's reading of it (password "p", host "ss@h") too
    assert mask_url("postgresql://ciuser:p@ss@127.0.0.1/edge") == "postgresql://ciuser:***@127.0.0.1/edge"
    assert url_secrets("postgresql://u:p@ss@h/db") == ["p@ss", "p", "ss@"]
    assert scrub('could not translate host name "ss@h" to address', url_secrets("postgresql://u:p@ss@h/db")) == \
        'could not translate host name "***@h" to address'
    # a one-character password is not replaced in ordinary text: "c***nnecti***n" spelled it out
    assert scrub("connection to server failed", url_secrets("postgresql://u:o@h/db")) == "connection to server failed"
    assert scrub("bad token s3cret%zz", url_secrets("postgresql://u:s3cret%zz@h/db")) == "bad token ***"


def test_what_is_not_a_postgresql_url_is_refused_never_a_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spec in ("pg://alice@127.0.0.1/db", "postgresql:127.0.0.1/db", "postgresql@127.0.0.1/db",
                 "sqlite://results/x.sqlite", "postgres:alice:s3cret@h/db"):
        with pytest.raises(ConfigError) as info:
            open_store(tmp_path / "results", spec)
        assert "not a PostgreSQL URL, nor an existing SQLite file" in info.value.one_line()
        assert "s3cret" not in info.value.one_line() and info.value.exit_code == 2
    monkeypatch.setenv(ENV_STORE, "pg://alice@h/db")  # from the environment too
    with pytest.raises(ConfigError):
        open_store(tmp_path / "results")
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_a_unix_socket_url_reaches_the_database_it_names(pg_server: PgServer, tmp_path: Path):
    name = pg_server.new_database().rpartition("/")[2]
    url = f"postgresql:///{name}?host={pg_server.dir}&port={pg_server.port}&user={pg_server.USER}"
    with open_store(tmp_path, url) as store:
        assert isinstance(store, PostgresStore)
        begin(store, "by-socket")
    assert sql(pg_server.new_database().rpartition("/")[0] + f"/{name}", "SELECT run_id FROM runs") == [("by-socket",)]


def test_a_refused_login_a_missing_database_or_a_bad_url_is_the_users_to_fix(pg_server: PgServer,
                                                                             tmp_path: Path):
    pg_server.password_role("alice", "pa#ss")
    host = f"127.0.0.1:{pg_server.port}"
    theirs = pg_server.new_database()
    with pytest.raises(StoreError) as info:  # the tables cannot be created: whose to fix, without psycopg's SQL
        open_store(tmp_path, f"postgresql://alice:pa#ss@{host}/{theirs.rpartition('/')[2]}")
    assert info.value.exit_code == 2 and "permission denied for schema public" in info.value.one_line()
    assert "LINE 1" not in info.value.one_line() and "database's owner run edgeopt once" in info.value.one_line()
    database = pg_server.new_database().rpartition("/")[2]
    sql(pg_server.url, f"ALTER DATABASE {database} OWNER TO alice")
    with open_store(tmp_path, f"postgresql://alice:pa#ss@{host}/{database}") as store:  # a # unencoded: libpq's way
        assert store.where == f"postgresql://alice:***@{host}/{database}"
        begin(store, "with-password")
    for url, says, fix in [
        (f"postgresql://alice:wrong#pw@{host}/{database}", "password authentication failed", "~/.pgpass"),
        (f"postgresql://alice@{host}/{database}", "no password supplied", "PGPASSWORD"),
        (f"postgresql://nobody@{host}/{database}", 'role "nobody" does not exist', "user and password"),
        (f"postgresql://alice:pa#ss@{host}/nosuchdb", 'database "nosuchdb" does not exist', "createdb"),
        ("postgresql://alice:pa#ss@127.0.0.1:notaport/db", 'invalid integer value "notaport"', "host:port/db"),
        (f"postgresql://alice@{host}/db?password=pa%zz", "invalid percent-encoded token", "percent-encode"),
    ]:
        with pytest.raises(StoreError) as info:
            open_store(tmp_path, url)
        line = info.value.one_line()
        assert type(info.value) is StoreError and info.value.exit_code == 2, line  # not "server down" (3)
        assert says in line and fix in line and "\n" not in line, line
        assert "pa#ss" not in line and "wrong#pw" not in line and "pa%zz" not in line, line


KILLED_WRITER = textwrap.dedent("""
    import sys
    from edgeopt.errors import EdgeoptError
    from edgeopt.results.store import open_store

    store = open_store(sys.argv[1], sys.argv[2])
    store.begin_run({"run_id": "live", "created_at": "2026-12-01T00:00:00+00:00", "targets": ["d"]})
    n = 0
    try:
        while True:  # runs of 20 results, each imported in one transaction, until the server dies
            n += 1
            run = {"run_id": f"batch-{n:05d}", "created_at": f"2026-12-01T00:00:{n % 60:02d}+00:00"}
            docs = [{"schema": 1, "result_id": f"batch-{n:05d}-{k:02d}", "run_id": run["run_id"],
                     "created_at": run["created_at"], "target": "d", "valid": True, "error": None,
                     "agent": {"latency_ms": {"p50": 1.0}}} for k in range(20)]
            store.import_run(run, docs)
            store.add_result({**docs[0], "result_id": f"live-{n:05d}", "run_id": "live"})
            print(n, flush=True)
    except EdgeoptError as exc:
        print(exc.one_line(), file=sys.stderr)
        sys.exit(exc.exit_code)
""")


def test_server_killed_mid_run_is_exit_3_and_nothing_half_written(tmp_path: Path):
    server = PgServer()
    try:
        server.start()
        url = server.new_database()
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "results"), url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for _ in range(30):  # let it write a while, then kill the server mid-transaction
            assert proc.stdout.readline()
        server.kill()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 3, err
        assert "lost the connection to results store" in err and len(err.strip().splitlines()) == 1
        time.sleep(0.2)
        server.start()  # crash recovery: what was committed is there, what was not is gone entirely
        with open_store(tmp_path / "results", url, create=False) as store:
            batches = [r for r in store.runs(limit=100_000) if r["run_id"].startswith("batch-")]
            assert len(batches) >= 30
            assert all(r["results"] == 20 for r in batches)  # no run with part of its results
            live = store.results("live")
            assert len(live) >= 29 and all(d["valid"] and d["run_id"] == "live" for d in live)
            copies = {p.stem for p in (tmp_path / "results" / "live").glob("*.json") if p.name != "run.json"}
            assert copies <= {d["result_id"] for d in live}  # no JSON copy of a result the store never got
            status = {r["run_id"]: r["status"] for r in store.runs(limit=100_000)}
            assert status["live"] == "abandoned"  # never marked complete by the dead writer, and it is gone
    finally:
        server.cleanup()


def test_copy_history_sqlite_to_postgresql(pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch):
    sqlite_file = tmp_path / "results" / "edgeopt.sqlite"
    with open_store(tmp_path / "results") as store:
        for i, run_id in enumerate(("old", "mid", "new")):
            begin(store, run_id, f"2026-11-2{i}T10:00:00+00:00")
            store.add_result(result(run_id, 1))
            store.add_result(result(run_id, 2, valid=False))
            store.finish_run(run_id, f"2026-11-2{i}T10:05:00+00:00", "complete", {"results": 2})
        store.tag_run("mid", "main")
        store.update_run("mid", {"ci": {"verdict": "pass"}})
    url = pg_server.new_database()
    report = copy_history(sqlite_file, url)
    assert (report.runs, report.results, report.skipped) == (3, 6, 0) and report.copied == ["old", "mid", "new"]
    with open_store(tmp_path / "results", create=False) as src, open_store(tmp_path / "x", url) as dst:
        assert dst.runs() == src.runs()
        for run_id in ("old", "mid", "new"):
            assert dst.run(run_id) == src.run(run_id) and dst.results(run_id) == src.results(run_id)
        assert dst.find_run(tag="main", passing=True)["run_id"] == "mid"
        assert dst.query(valid_only=True) == src.query(valid_only=True)
        begin(dst, "only-in-pg", "2026-11-30T00:00:00+00:00")
    # idempotent: an interrupted copy is finished by running it again — here through the command line
    assert main(["store", "migrate", "--from", str(sqlite_file), "--to", url]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "copied 0 runs (0 results); 3 already there, skipped"
    with open_store(tmp_path / "x", url) as dst:
        assert len(dst.runs()) == 4 and len(dst.query(limit=100)) == 6
    # back into a SQLite file elsewhere, from another directory: no ./results made where the command ran
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["store", "migrate", "--from", url, "--to", str(tmp_path / "back" / "copy.sqlite")]) == 0
    assert capsys.readouterr().out.strip() == "copied 4 runs (6 results); 0 already there, skipped"
    assert list(elsewhere.iterdir()) == []
    assert main(["store", "migrate", "--from", "nope.sqlite", "--to", url]) == 2  # named as the command names it
    err = capsys.readouterr().err
    assert err.startswith("edgeopt: error: --from: ") and "give the store to copy from" in err and "--store" not in err


def test_a_run_copied_while_it_was_written_is_brought_up_to_date_later(pg_server: PgServer, tmp_path: Path):
    url = pg_server.new_database()
    writer = open_store(tmp_path / "results")  # a bench still writing into the runner's SQLite file
    try:
        begin(writer, "live")
        writer.add_result(result("live", 1))
        writer.add_result(result("live", 2))
        report = copy_history(tmp_path / "results" / "edgeopt.sqlite", url)
        assert (report.runs, report.results, report.running) == (1, 2, ["live"])
        assert "1 still being written in the source (live): copied as they are, migrate again" in report.one_line()
        again = copy_history(tmp_path / "results" / "edgeopt.sqlite", url)  # nothing new yet: nothing written
        assert (again.runs, again.updated, again.skipped) == (0, 0, 1)
        writer.add_result(result("live", 3))
        writer.finish_run("live", "2026-11-28T10:05:00+00:00", "complete", {"results": 3})
    finally:
        writer.close()
    report = copy_history(tmp_path / "results" / "edgeopt.sqlite", url)
    assert (report.runs, report.updated, report.results, report.running) == (0, 1, 3, [])
    assert "1 brought up to date (unfinished when last copied)" in report.one_line()
    with open_store(tmp_path / "results", create=False) as src, open_store(tmp_path / "x", url) as dst:
        assert dst.run("live") == src.run("live") and dst.status(dst.run("live")) == "complete"
        assert dst.results("live") == src.results("live") and len(dst.results("live")) == 3
    final = copy_history(tmp_path / "results" / "edgeopt.sqlite", url)  # finished on both sides: left alone
    assert (final.runs, final.updated, final.skipped) == (0, 0, 1)


def test_runners_opening_a_new_database_at_once_migrate_it_once(pg_server: PgServer, tmp_path: Path):
    url = pg_server.new_database()
    code = ("import sys; from edgeopt.results.store import open_store; "
            "s = open_store(sys.argv[1], sys.argv[2]); print(s.schema_version()); s.close()")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"r{i}"), url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert [o.strip() for o, _ in outs] == [str(SCHEMA_VERSION)] * 4
    assert sql(url, "SELECT version FROM edgeopt_schema") == [(SCHEMA_VERSION,)]


def test_a_connection_lost_between_transactions_is_replaced_once_never_inside_one(tmp_path: Path):
    server = PgServer()
    try:
        server.start()
        url = server.new_database()
        with open_store(tmp_path / "results", url) as store:
            begin(store, "run-1")
            server.stop()
            server.start()  # restarted while the store was idle: the next write reconnects and goes through
            store.add_result(result("run-1", 1))
            assert store.runs()[0]["results"] == 1

            def restart_mid_transaction(doc: dict) -> None:
                doc["note"] = "never stored"
                server.stop()
                server.start()

            # a connection lost inside a transaction is never retried (the server rolled it back): exit 3,
            # although the server is back
            with pytest.raises(StoreUnavailable) as info:
                store.modify_run("run-1", restart_mid_transaction)
            assert info.value.exit_code == 3 and "lost the connection to results store" in info.value.one_line()
            assert "note" not in store.run("run-1")  # the next call reconnects; the change was not kept
            server.kill()  # and a server that is gone stays exit 3
            with pytest.raises(StoreUnavailable, match="lost the connection to results store"):
                store.add_result(result("run-1", 2))
        server.start()
        with open_store(tmp_path / "results", url, create=False) as store:
            assert [d["result_id"] for d in store.results("run-1")] == ["run-1-rpi4-001"]
    finally:
        server.cleanup()
