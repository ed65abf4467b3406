"""LocalTransport: the ``local`` target. Runs commands with :mod:`subprocess` (never through a shell)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from edgeopt.errors import RemoteError, RemoteTimeout
from edgeopt.remote.transport import (
    CHUNK,
    TERM_GRACE,
    ClosingTransport,
    OutputCapture,
    ProgressCallback,
    Result,
    check_cancel,
    copy_chunks,
    upload_size,
)


class LocalTransport(ClosingTransport):
    """Runs commands on this machine. Same contract as :class:`~edgeopt.remote.ssh.SSHTransport`."""

    description = "local"

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self._home = str(Path(home).resolve()) if home is not None else str(Path.home())
        self.bytes_sent = 0

    # -- commands ----------------------------------------------------------------------------------------
    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> Result:
        if isinstance(argv, (str, bytes)) or not argv:
            raise ValueError("argv must be a non-empty list of arguments")
        try:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # own process group: a timeout kills the whole tree
            )
        except FileNotFoundError:
            return Result(127, b"", f"{argv[0]}: command not found\n".encode())
        except PermissionError as exc:
            return Result(126, b"", f"{argv[0]}: {exc.strerror}\n".encode())
        capture = OutputCapture(str(argv[0]), self.description)
        try:
            self._pump(proc, capture, stdin, timeout, str(argv[0]))
        except BaseException:
            self._kill(proc)
            raise
        return capture.result(proc.returncode)

    def _pump(self, proc: subprocess.Popen[bytes], capture: OutputCapture, stdin: bytes | None, timeout: float,
              name: str) -> None:
        """Feed stdin, read stdout/stderr (capped) until the process exits; every 0.1 s check the deadline and
        the run's cancel event."""
        deadline = time.monotonic() + timeout
        pending = memoryview(stdin or b"")
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        for stream in (proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ)
        if proc.stdin is not None:
            if pending:
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        try:
            while sel.get_map():
                check_cancel(self.cancel, name, self.description)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RemoteTimeout(
                        f"command {name!r} on local timed out after {timeout:g} s",
                        "raise the command timeout or check why it hangs",
                    )
                for key, _ in sel.select(min(remaining, 0.1)):
                    source = key.fileobj
                    if source is proc.stdin and proc.stdin is not None:
                        try:
                            written = os.write(proc.stdin.fileno(), pending[:CHUNK])
                        except BrokenPipeError:
                            written = len(pending)
                        pending = pending[written:]
                        if not pending:
                            sel.unregister(proc.stdin)
                            proc.stdin.close()
                        continue
                    data = os.read(key.fd, CHUNK)
                    if not data:
                        sel.unregister(source)
                    elif source is proc.stdout:
                        capture.add_out(data)
                    else:
                        capture.add_err(data)
            while proc.poll() is None:
                check_cancel(self.cancel, name, self.description)
                if time.monotonic() > deadline:
                    raise RemoteTimeout(f"command {name!r} on local timed out after {timeout:g} s",
                                        "raise the command timeout or check why it hangs")
                time.sleep(0.02)
        finally:
            sel.close()

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the command's process group (the agent restores what it changed), then SIGKILL it."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                if proc.poll() is None:
                    proc.kill()
            if sig == signal.SIGTERM:
                try:
                    proc.wait(timeout=TERM_GRACE)
                except subprocess.TimeoutExpired:
                    pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    # -- files ---------------------------------------------------------------------------------------------
    def put(
        self, local: Path, remote: str, progress: ProgressCallback | None = None, offset: int = 0
    ) -> int:
        local = Path(local)
        total = upload_size(local, offset)
        try:
            with open(local, "rb") as src, open(remote, "r+b" if offset else "wb") as dst:
                src.seek(offset)
                dst.seek(offset)
                dst.truncate()
                sent = copy_chunks(src, dst, offset, total, progress, self.count_sent)
        except OSError as exc:
            raise RemoteError(f"cannot write {remote} on local: {exc.strerror or exc}") from exc
        return sent

    def get(self, remote: str, local: Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as dst, open(remote, "rb") as src:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
            os.replace(tmp, local)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise RemoteError(f"cannot read {remote} on local: {exc.strerror or exc}") from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def size(self, remote: str) -> int | None:
        try:
            st = os.stat(remote)
        except FileNotFoundError:
            return None
        return st.st_size

    def exists(self, remote: str) -> bool:
        return os.path.lexists(remote)

    def mkdir(self, remote: str) -> None:
        try:
            os.makedirs(remote, exist_ok=True)
        except OSError as exc:
            raise RemoteError(f"cannot create directory {remote} on local: {exc.strerror or exc}") from exc

    def rename(self, src: str, dst: str) -> None:
        try:
            os.replace(src, dst)
        except OSError as exc:
            raise RemoteError(f"cannot rename {src} to {dst} on local: {exc.strerror or exc}") from exc

    def remove(self, remote: str) -> None:
        try:
            os.unlink(remote)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RemoteError(f"cannot remove {remote} on local: {exc.strerror or exc}") from exc

    def home(self) -> str:
        return self._home

    # -- lifecycle -------------------------------------------------------------------------------------
    def close(self) -> None:
        pass

