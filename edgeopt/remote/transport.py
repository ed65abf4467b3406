"""The transport protocol: run a command on a device and move files to and from it.

A transport knows how to run a command and move a file; it knows nothing about models, agents or
artifacts (that is :mod:`edgeopt.remote.session`).

Commands are always given as an argv list. Transports that go through a remote shell (SSH) quote every
argument with :func:`shlex.quote`, so a path or name containing spaces, quotes, ``;`` or ``$()`` arrives
literally and is never interpreted by the shell. Remote paths are POSIX strings; use absolute paths (build them
from :meth:`Transport.home`), because ``~`` is not expanded anywhere.
"""

from __future__ import annotations

import re
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Callable, Protocol, Sequence, TypeVar, runtime_checkable

from edgeopt.errors import DeviceOutputError, Interrupted

#: ``progress(done_bytes, total_bytes)``; called after each chunk of an upload (and once at the start).
ProgressCallback = Callable[[int, int], None]

#: Chunk size for uploads/downloads and local hashing.
CHUNK = 256 * 1024

#: A device's output is untrusted: at most this much stdout is read (beyond it the command is killed and
#: :class:`~edgeopt.errors.DeviceOutputError` raised) …
STDOUT_LIMIT = 16 * 1024 * 1024
#: … and only the last this-many bytes of stderr are kept (it is only ever shown as a tail).
STDERR_TAIL = 64 * 1024
#: After SIGTERM, how long a killed command's process group gets to clean up (restore a governor) before SIGKILL.
TERM_GRACE = 1.0


@dataclass(frozen=True)
class Result:
    """What a command did. ``exit_code`` is negative when the process was killed by a signal
    (``-signum`` when known, ``-1`` when the remote side did not say which)."""

    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (invalid bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def error_text(self) -> str:
        """stderr decoded as UTF-8 (invalid bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")

    def last_error_line(self, limit: int = 300) -> str:
        """The last non-empty stderr line (or stdout line if stderr is empty), for one-line errors; a runtime's
        start-up chatter (LiteRT's ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``) is no reason."""
        for stream in (self.error_text, self.text):
            lines = [line.strip() for line in stream.splitlines() if line.strip() and not CHATTER.match(line)]
            if lines:
                line = lines[-1]
                return line if len(line) <= limit else line[: limit - 1] + "…"
        return ""


CHATTER = re.compile(r"^\s*INFO: (Created TensorFlow Lite .*delegate|Initialized TensorFlow Lite runtime)")


class OutputCapture:
    """Collects a command's stdout (capped: :data:`STDOUT_LIMIT`) and the tail of its stderr
    (:data:`STDERR_TAIL`). ``add_out`` raises :class:`DeviceOutputError` past the cap; the caller kills the
    command."""

    def __init__(self, name: str, where: str, stdout_limit: int = STDOUT_LIMIT,
                 stderr_tail: int = STDERR_TAIL) -> None:
        self.name, self.where = name, where
        self.stdout_limit, self.stderr_tail = stdout_limit, stderr_tail
        self.out = bytearray()
        self.err = bytearray()

    def add_out(self, data: bytes) -> None:
        self.out += data
        if len(self.out) > self.stdout_limit:
            raise DeviceOutputError(
                f"{self.name} on {self.where} printed more than {self.stdout_limit:,} bytes on stdout (killed)",
                "the agent prints one JSON document; check what else writes to stdout on the device",
                stderr=self.err[-2000:].decode("utf-8", "replace"))

    def add_err(self, data: bytes) -> None:
        self.err += data
        if len(self.err) > 2 * self.stderr_tail:
            del self.err[: len(self.err) - self.stderr_tail]

    def result(self, exit_code: int) -> Result:
        return Result(exit_code, bytes(self.out), bytes(self.err[-self.stderr_tail:]))


class MarkedCapture(OutputCapture):
    """An :class:`OutputCapture` whose stdout may start with the line ``<mark><pid>`` (the SSH run wrapper's
    ``echo <mark>$$``): that line is taken out and ``pid`` set; anything else is output."""

    def __init__(self, mark: bytes, name: str, where: str) -> None:
        super().__init__(name, where)
        self.mark, self.pid, self.header, self.done = mark, 0, bytearray(), False

    def take(self, data: bytes) -> None:
        if self.done:
            self.add_out(data)
            return
        self.header += data
        if b"\n" in self.header or len(self.header) > 64:
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        first, newline, rest = bytes(self.header).partition(b"\n")
        digits = first[len(self.mark):]
        if newline and first.startswith(self.mark) and digits.isdigit():
            self.pid = int(digits)
            self.add_out(rest)
        else:
            self.add_out(bytes(self.header))


def check_cancel(cancel: threading.Event | None, name: str, where: str) -> None:
    """Raise :class:`Interrupted` when the run was cancelled (Ctrl-C); the caller kills the command."""
    if cancel is not None and cancel.is_set():
        raise Interrupted(f"command {name!r} on {where} interrupted (killed)", "the run was interrupted (Ctrl-C)")


def quote_argv(argv: Sequence[str]) -> str:
    """Turn an argv list into one POSIX shell command line, each argument quoted with :func:`shlex.quote`."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a list of arguments, not a string")
    if not argv:
        raise ValueError("argv must not be empty")
    return " ".join(shlex.quote(str(arg)) for arg in argv)

_T = TypeVar("_T", bound="ClosingTransport")


@runtime_checkable
class Transport(Protocol):
    """How to talk to one device. Implementations: :class:`~edgeopt.remote.local.LocalTransport`,
    :class:`~edgeopt.remote.ssh.SSHTransport`.

    Errors: infrastructure failures (cannot connect, connection dropped, timeout) raise
    :class:`edgeopt.errors.RemoteError`. A command that runs and exits non-zero is *not* an error at this level:
    ``run`` returns its :class:`Result`.
    """

    #: Human-readable name of the device for messages, e.g. ``pi@raspberrypi.local:22`` or ``local``.
    description: str
    #: Bytes written to the device by :meth:`put` over the transport's lifetime.
    bytes_sent: int
    #: Set (by the run) when the user interrupts: a running command is killed and raises ``Interrupted``.
    cancel: threading.Event | None

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> Result:
        """Run ``argv`` (no shell interpretation of arguments); kill it and raise ``RemoteError``
        ("... timed out after N s") if it runs longer than ``timeout`` seconds, ``DeviceOutputError`` if it
        prints more than :data:`STDOUT_LIMIT` on stdout, ``Interrupted`` when ``cancel`` is set. Killing is
        SIGTERM to its process group, :data:`TERM_GRACE` seconds, then SIGKILL."""
        ...

    def put(
        self, local: Path, remote: str, progress: ProgressCallback | None = None, offset: int = 0
    ) -> int:
        """Upload ``local`` to ``remote``. With ``offset`` > 0, keep the first ``offset`` bytes of the existing
        remote file and write ``local[offset:]`` after them (resume). Returns the number of bytes sent."""
        ...

    def get(self, remote: str, local: Path) -> None:
        """Download ``remote`` to ``local`` (atomically: a failed download leaves no file at ``local``)."""
        ...

    def size(self, remote: str) -> int | None:
        """Size in bytes of the regular file ``remote``, or ``None`` if it does not exist."""
        ...

    def exists(self, remote: str) -> bool: ...

    def mkdir(self, remote: str) -> None:
        """Create a directory and its parents (like ``mkdir -p``)."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst``, atomically replacing ``dst`` if it exists."""
        ...

    def remove(self, remote: str) -> None:
        """Delete a file; no error if it does not exist."""
        ...

    def home(self) -> str:
        """The absolute path of the login user's home directory on the device."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Transport: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def upload_size(local: Path, offset: int) -> int:
    """The size of the file to upload; an ``offset`` (resume point) outside it is a programming error."""
    total = Path(local).stat().st_size
    if not 0 <= offset <= total:
        raise ValueError(f"offset {offset} outside 0..{total}")
    return total


def copy_chunks(src: BinaryIO, dst: Any, done: int, total: int, progress: ProgressCallback | None,
                counted: Callable[[int], None]) -> int:
    """Copy ``src`` to ``dst`` in CHUNK blocks from byte ``done`` on: ``counted(n)`` after each block is written
    (a transport's ``bytes_sent``), ``progress(done, total)`` before the first and after each. Returns the bytes
    copied."""
    sent = 0
    if progress:
        progress(done, total)
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        sent += len(chunk)
        counted(len(chunk))
        done += len(chunk)
        if progress:
            progress(done, total)
    return sent


class ClosingTransport:
    """What every transport shares: the count of bytes it uploaded, and use as a context manager
    (``with SSHTransport(spec) as t: …`` closes it on the way out)."""

    bytes_sent: int = 0
    cancel: threading.Event | None = None

    def count_sent(self, n: int) -> None:
        """``on_sent`` for :func:`copy_chunks`; an upload stops here when the run is interrupted."""
        self.bytes_sent += n
        check_cancel(self.cancel, "upload", getattr(self, "description", "device"))

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
