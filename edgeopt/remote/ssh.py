"""SSHTransport: run commands and move files over one SSH connection (paramiko).

What a device *is* (:class:`~edgeopt.remote.ssh_config.ConnectionSpec`: address, user, key, policy) is kept
apart from *how* we talk to it (:class:`SSHTransport`). The pieces live in their own modules and are
re-exported here, so ``from edgeopt.remote.ssh import ...`` keeps working:

- :mod:`edgeopt.remote.ssh_config`: ``ConnectionSpec`` and its resolution through ``~/.ssh/config``
  (``Include``, ``ProxyJump``; command line > config > a target's defaults);
- :mod:`edgeopt.remote.host_keys`: known_hosts, fingerprints, and the accept-new host-key policy;
- :mod:`edgeopt.remote.ssh_connect`: opening the connection and ``describe_connect_error``.

Commands time out (:class:`~edgeopt.errors.RemoteTimeout`) and are then killed with their whole process group;
every other failure is one line: :class:`~edgeopt.errors.RemoteError` with a hint.
"""

from __future__ import annotations

import os
import select
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

import paramiko
from paramiko.ssh_exception import SSHException

from edgeopt.errors import RemoteError, RemoteTimeout
from edgeopt.remote.host_keys import (
    ACCEPT_FLAG,
    KnownHosts,
    fingerprint,
    host_key_name,
    record_host_key,
)
from edgeopt.remote.ssh_config import DEFAULT_KNOWN_HOSTS, DEFAULT_SSH_CONFIG, ConnectionSpec, ResolvedConnection
from edgeopt.remote.ssh_connect import describe_connect_error, link_gone, open_client
from edgeopt.remote.transport import (
    CHUNK,
    TERM_GRACE,
    ClosingTransport,
    MarkedCapture,
    ProgressCallback,
    Result,
    check_cancel,
    copy_chunks,
    quote_argv,
    upload_size,
)

_PID_MARK = "edgeopt-pid:"


class SSHTransport(ClosingTransport):
    """One authenticated SSH connection to a device: run commands (argv, quoted), move files (SFTP).

    Connects on construction; use as a context manager (or call :meth:`close`).
    """

    def __init__(self, spec: ConnectionSpec | str, **overrides: object) -> None:
        if isinstance(spec, str):
            spec = ConnectionSpec(host=spec, **overrides)  # type: ignore[arg-type]
        elif overrides:
            raise TypeError("pass overrides only with a host name")
        self.spec = spec
        self.conn = spec.resolve()
        self.description = self.conn.description
        self.bytes_sent = 0
        self.recorded_host_key: str | None = None  # fingerprint, when accept-new recorded a key
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._lock = threading.Lock()
        self._opened = open_client(self.conn)
        self._client = self._opened.client
        self.recorded_host_key = self._opened.recorded_host_key

    # -- the connection --------------------------------------------------------------------------------------
    def _transport(self) -> paramiko.Transport:
        t = self._client.get_transport()
        if t is None or not t.is_active():
            raise RemoteError(f"connection to {self.description} is closed", "reconnect to the device")
        return t

    def _lost(self, what: str, exc: BaseException) -> RemoteError:
        detail = str(exc) or type(exc).__name__
        return RemoteError(
            f"connection to {self.description} lost while {what}: {detail}",
            "check the network and the device; run again to continue",
        )

    # -- commands ----------------------------------------------------------------------------------------------
    def run(self, argv: list[str], timeout: float | None = None, stdin: bytes | None = None) -> Result:
        """Run ``argv`` on the device. The remote login shell sees ``echo <mark>$$; <argv quoted>; exit $?``:
        the first stdout line (stripped from the result) is the shell's PID, which sshd made a session and
        process-group leader (setsid); on timeout, cancel, too much output or interruption the whole group is
        killed over a second channel (:meth:`_kill_group`), then the channel is closed. The shell stays (no
        ``exec``) so a command killed by signal N exits with status 128+N, as in a local shell."""
        command = f"echo {_PID_MARK}$$; {quote_argv(argv)}; exit $?"
        limit = self.conn.command_timeout if timeout is None else float(timeout)
        t = self._transport()
        try:
            chan = t.open_session(timeout=self.conn.connect_timeout)
        except (SSHException, EOFError, OSError) as exc:
            raise self._lost(f"opening a session for {argv[0]!r}", exc) from exc
        state: dict[str, int | None] = {"pid": None}
        finished = False
        try:
            result = self._run_on(chan, command, str(argv[0]), limit, stdin, state)
            finished = True
            return result
        finally:
            if not finished and state["pid"] and not chan.exit_status_ready():
                self._kill_group(state["pid"])
            chan.close()

    def _run_on(self, chan: paramiko.Channel, command: str, name: str, limit: float, stdin: bytes | None,
                state: dict[str, int | None]) -> Result:
        deadline = time.monotonic() + limit
        capture = MarkedCapture(_PID_MARK.encode(), name, self.description)

        def take_out(data: bytes) -> None:
            capture.take(data)
            state["pid"] = capture.pid

        try:
            self._exec(chan, command, name)
            pending = memoryview(stdin or b"")
            if not pending:
                chan.shutdown_write()
            fd = chan.fileno()
            while True:
                while chan.recv_ready():
                    take_out(chan.recv(CHUNK))
                while chan.recv_stderr_ready():
                    capture.add_err(chan.recv_stderr(CHUNK))
                check_cancel(self.cancel, name, self.description)
                if pending and chan.send_ready():
                    sent = chan.send(pending[:CHUNK])
                    pending = pending[sent:]
                    if not pending:
                        chan.shutdown_write()
                if chan.recv_ready() or chan.recv_stderr_ready():
                    continue
                if chan.closed or (chan.eof_received and chan.exit_status_ready()):
                    break
                transport = chan.get_transport()
                if transport is None or not transport.is_active():
                    raise EOFError("transport closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RemoteTimeout(
                        f"command {name!r} on {self.description} timed out after {limit:g} s (killed)",
                        "raise the command timeout or check why it hangs on the device",
                    )
                select.select([fd], [], [], min(remaining, 0.02 if pending else 0.1))
        except (SSHException, EOFError, OSError) as exc:
            raise self._lost(f"running {name!r}", exc) from exc
        # Data may still be buffered after the close; drain it.
        while chan.recv_ready():
            take_out(chan.recv(CHUNK))
        while chan.recv_stderr_ready():
            capture.add_err(chan.recv_stderr(CHUNK))
        capture.finish()
        if not chan.exit_status_ready():
            raise self._lost(f"running {name!r}", EOFError("no exit status"))
        status = chan.recv_exit_status()
        if status == -1 and link_gone(chan):  # paramiko's -1: no exit status came; the link died, not the shell
            raise self._lost(f"running {name!r}", EOFError("the connection closed before the command ended"))
        return capture.result(status)

    def _exec(self, chan: paramiko.Channel, command: str, name: str) -> None:
        """``chan.exec_command`` bounded in time: paramiko waits for the server's reply forever, so a watchdog
        closes the channel (which wakes it up) after ``connect_timeout``."""
        limit = max(5.0, self.conn.connect_timeout)
        watchdog = threading.Timer(limit, chan.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            chan.exec_command(command)
        except (SSHException, EOFError, OSError) as exc:
            if not watchdog.is_alive():
                raise RemoteError(f"{self.description} did not start {name!r} within {limit:g} s",
                                  "check the device's load and sshd (MaxSessions)") from exc
            raise
        finally:
            watchdog.cancel()

    def _kill_group(self, pid: int) -> None:
        """Kill the process group ``pid`` over a fresh channel (best effort, at most a few seconds): SIGTERM
        (the agent restores what it changed, e.g. the CPU governor), up to TERM_GRACE s for the group to go,
        then SIGKILL."""
        steps = int(TERM_GRACE * 10)
        script = (f"kill -TERM -{pid} 2>/dev/null || kill -TERM {pid} 2>/dev/null; i=0; "
                  f"while [ $i -lt {steps} ] && kill -0 -{pid} 2>/dev/null; do sleep 0.1; i=$((i+1)); done; "
                  f"kill -KILL -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null; true")
        try:
            chan = self._transport().open_session(timeout=min(5.0, self.conn.connect_timeout))
        except Exception:
            return
        try:
            self._exec(chan, script, "kill")
            chan.shutdown_write()
            deadline = time.monotonic() + TERM_GRACE + 3
            while not chan.exit_status_ready() and time.monotonic() < deadline:
                chan.status_event.wait(0.1)
        except Exception:
            pass
        finally:
            chan.close()

    # -- files ---------------------------------------------------------------------------------------------------
    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is None or self._sftp.sock.closed:
                try:
                    self._sftp = self._client.open_sftp()
                    # No single SFTP reply may take longer than this: a link that died silently fails instead
                    # of hanging the upload forever.
                    self._sftp.get_channel().settimeout(max(60.0, self.conn.connect_timeout))
                except (SSHException, EOFError, OSError) as exc:
                    raise RemoteError(
                        f"cannot open SFTP on {self.description}: {exc}",
                        "enable the sftp subsystem in the device's sshd_config (Subsystem sftp ...)",
                    ) from exc
            return self._sftp

    def put(
        self, local: Path, remote: str, progress: ProgressCallback | None = None, offset: int = 0
    ) -> int:
        local = Path(local)
        total = upload_size(local, offset)
        sftp = self._sftp_client()
        try:
            with open(local, "rb") as src, sftp.open(remote, "r+b" if offset else "wb") as dst:
                dst.set_pipelined(True)
                src.seek(offset)
                if offset:
                    dst.truncate(offset)
                    dst.seek(offset)
                sent = copy_chunks(src, dst, offset, total, progress, self.count_sent)
        except OSError as exc:
            if exc.errno is not None and self._alive():
                raise RemoteError(
                    f"cannot write {remote} on {self.description}: {exc.strerror or exc}",
                    "check free space and permissions on the device",
                ) from exc
            raise self._lost(f"uploading {local.name}", exc) from exc
        except (SSHException, EOFError) as exc:
            raise self._lost(f"uploading {local.name}", exc) from exc
        return sent

    def _alive(self) -> bool:
        t = self._client.get_transport()
        return t is not None and t.is_active()

    def get(self, remote: str, local: Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        os.close(fd)
        try:
            self._sftp_client().get(remote, tmp)
            os.replace(tmp, local)
        except FileNotFoundError as exc:
            raise RemoteError(f"{remote} does not exist on {self.description}") from exc
        except (OSError, SSHException, EOFError) as exc:
            if self._alive():
                raise RemoteError(f"cannot read {remote} on {self.description}: {exc}") from exc
            raise self._lost(f"downloading {remote}", exc) from exc
        finally:
            Path(tmp).unlink(missing_ok=True)

    def size(self, remote: str) -> int | None:
        try:
            st = self._sftp_client().stat(remote)
        except FileNotFoundError:
            return None
        except (OSError, SSHException, EOFError) as exc:
            raise self._lost(f"checking {remote}", exc) from exc
        return st.st_size

    def exists(self, remote: str) -> bool:
        try:
            self._sftp_client().lstat(remote)
        except FileNotFoundError:
            return False
        except (OSError, SSHException, EOFError) as exc:
            raise self._lost(f"checking {remote}", exc) from exc
        return True

    def mkdir(self, remote: str) -> None:
        sftp = self._sftp_client()
        parts = [p for p in remote.split("/") if p]
        path = "/" if remote.startswith("/") else ""
        for part in parts:
            path = f"{path.rstrip('/')}/{part}" if path else part
            try:
                if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                    continue
                raise RemoteError(f"cannot create directory {remote} on {self.description}: {path} is a file")
            except FileNotFoundError:
                pass
            try:
                sftp.mkdir(path)
            except OSError as exc:
                try:  # lost a race with another writer?
                    if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                        continue
                except OSError:
                    pass
                raise RemoteError(
                    f"cannot create directory {path} on {self.description}: {exc.strerror or exc}",
                    "check permissions and free space on the device",
                ) from exc

    def rename(self, src: str, dst: str) -> None:
        try:
            self._sftp_client().posix_rename(src, dst)  # atomic replace (posix-rename@openssh.com)
            return
        except OSError as exc:
            first: BaseException = exc
        except SSHException as exc:  # server without the extension
            first = exc
        result = self.run(["mv", "-f", src, dst], timeout=self.conn.connect_timeout + 30)
        if not result.ok:
            raise RemoteError(
                f"cannot rename {src} to {dst} on {self.description}: {result.last_error_line() or first}"
            )

    def remove(self, remote: str) -> None:
        try:
            self._sftp_client().remove(remote)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if not self._alive():
                raise self._lost(f"removing {remote}", exc) from exc
            raise RemoteError(f"cannot remove {remote} on {self.description}: {exc.strerror or exc}") from exc

    def home(self) -> str:
        if self._home is None:
            try:
                self._home = self._sftp_client().normalize(".")
            except (OSError, SSHException, EOFError) as exc:
                raise self._lost("looking up the home directory", exc) from exc
        return self._home

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def client(self) -> paramiko.SSHClient:
        """The underlying paramiko client (for what this transport does not wrap; it closes with the transport)."""
        return self._client

    def close(self) -> None:
        with self._lock:
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except Exception:
                    pass
                self._sftp = None
        self._opened.close()  # the device's connection, then its ProxyJump hops

    def __repr__(self) -> str:
        return f"SSHTransport({self.description})"


def connect(
    host: str,
    *,
    user: str | None = None,
    port: int | None = None,
    key_filename: str | os.PathLike[str] | None = None,
    **kwargs: object,
) -> SSHTransport:
    """Shorthand: ``connect("pi5", accept_new_host_key=True)``."""
    return SSHTransport(ConnectionSpec(host=host, user=user, port=port, key_filename=key_filename, **kwargs))  # type: ignore[arg-type]


__all__: Sequence[str] = (
    "ACCEPT_FLAG",
    "DEFAULT_KNOWN_HOSTS",
    "DEFAULT_SSH_CONFIG",
    "ConnectionSpec",
    "KnownHosts",
    "ResolvedConnection",
    "SSHTransport",
    "connect",
    "describe_connect_error",
    "fingerprint",
    "host_key_name",
    "record_host_key",
)
