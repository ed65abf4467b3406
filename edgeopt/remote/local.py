"""LocalTransport: the ``local`` target. Runs commands with :mod:`subprocess` (never through a shell)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

from edgeopt.errors import RemoteError, RemoteTimeout
from edgeopt.remote.transport import CHUNK, ClosingTransport, ProgressCallback, Result, copy_chunks, upload_size


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
        try:
            out, err = proc.communicate(input=stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            raise RemoteTimeout(
                f"command {argv[0]!r} on local timed out after {timeout:g} s",
                "raise the command timeout or check why it hangs",
            ) from None
        except BaseException:
            self._kill(proc)
            raise
        return Result(proc.returncode, out, err)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.communicate()

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

