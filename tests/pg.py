"""A real PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temp dir on 127.0.0.1, as the
``postgres`` user when we are root (the server refuses to run as root), stopped at the end even on failure.

``PgServer.start()`` / ``.stop()`` / ``.kill()``; ``.new_database()`` returns the URL of a fresh, empty database.
The server binaries come from Debian's ``postgresql`` package (``scripts/system-deps.sh``).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def skip_or_fail(reason: str) -> None:
    (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    USER = "edgeopt"

    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            skip_or_fail("PostgreSQL server binaries missing (Debian package postgresql: scripts/system-deps.sh)")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            skip_or_fail("psycopg is not installed (requirements.txt)")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="edgeopt-pg-"))  # /tmp: short socket paths, traversable
        self.data = self.dir / "data"
        self.port = free_port()
        self.names = itertools.count(1)
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            pwd.getpwnam("postgres")
            shutil.chown(self.dir, "postgres", "postgres")
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.run_as, *args], check=check, capture_output=True, text=True, timeout=timeout)

    def start(self) -> PgServer:
        if not self.data.exists():
            self._cmd(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.USER,
                      "--no-sync", "-E", "UTF8")
        started = self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                            "-o", f"-p {self.port} -k {self.dir} -h 127.0.0.1 -c fsync=off", "-w", "start",
                            check=False)
        if started.returncode != 0:
            log = (self.dir / "log").read_text(errors="replace")[-2000:] if (self.dir / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stdout}{started.stderr}\n{log}")
        self.running = True
        return self

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL the postmaster (and so every backend): the server dies mid-transaction, as in a crash."""
        pid = self.pid()
        children = [int(p) for p in subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                                                    text=True).stdout.split()]
        for victim in [pid, *children]:  # the backends too: one that outlives its postmaster still answers
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{p}").exists() for p in [pid, *children]) and time.monotonic() < deadline:
            time.sleep(0.02)  # reaped by init; until then the shared memory is still attached
        self.running = False

    def stop(self) -> None:
        if self.running or (self.data / "postmaster.pid").exists():
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop",
                      check=False)
        self.running = False

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def password_role(self, name: str, password: str) -> None:
        """A login role that must give its password (scram-sha-256 on 127.0.0.1; every other role stays trusted)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(name),
                                                                                 sql.Literal(password)))
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "reload")
        time.sleep(0.3)  # the postmaster re-reads pg_hba.conf on SIGHUP

    def new_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self.names)}"
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session", name="pg_server")
def pg_server_fixture() -> Iterator[PgServer]:
    """One real PostgreSQL server for the whole session, stopped at its end (even on failure)."""
    server = PgServer()
    try:
        yield server.start()
    finally:
        server.cleanup()
