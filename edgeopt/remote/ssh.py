"""SSHTransport: run commands and move files over SSH (paramiko).

What a device *is* (:class:`ConnectionSpec`: address, user, key, policy) is kept apart from *how* we talk to it
(:class:`SSHTransport`).

- ``~/.ssh/config`` is honoured (path overridable): ``Host`` alias → ``HostName``, ``User``, ``Port``,
  ``IdentityFile``, ``IdentitiesOnly``, ``ProxyCommand``, ``UserKnownHostsFile``, ``ConnectTimeout``.
  Arguments given explicitly override the config.
- Authentication: ssh-agent and the usual key files (paramiko's ``allow_agent``/``look_for_keys``) plus an
  explicit key file. Passwords are never used.
- Host keys (like OpenSSH ``StrictHostKeyChecking=accept-new``): known hosts come from ``known_hosts``
  (default ``~/.ssh/known_hosts``). An UNKNOWN key is refused unless ``accept_new_host_key`` is set, which
  records it (atomic rewrite of the file). A CHANGED key is always refused.
- Every failure becomes one line: :class:`~edgeopt.errors.RemoteError` (with a hint) or
  :class:`~edgeopt.errors.HostKeyError`. Key contents and secrets never appear in messages.
"""

from __future__ import annotations

import base64
import errno
import getpass
import hashlib
import os
import select
import socket
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Sequence

import paramiko
from paramiko.hostkeys import HostKeys
from paramiko.ssh_exception import (
    AuthenticationException,
    BadAuthenticationType,
    BadHostKeyException,
    NoValidConnectionsError,
    PasswordRequiredException,
    SSHException,
)

from edgeopt.errors import HostKeyError, RemoteError, RemoteTimeout
from edgeopt.remote.transport import CHUNK, ProgressCallback, Result, copy_chunks, upload_size, quote_argv

DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
ACCEPT_FLAG = "--accept-new-host-key"
_PID_MARK = "edgeopt-pid:"

_known_hosts_lock = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style fingerprint: ``SHA256:<base64 without padding>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_key_name(hostname: str, port: int) -> str:
    """The name a host is stored under in known_hosts: ``host`` on port 22, else ``[host]:port``."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


# ------------------------------------------------------------------------------------------------------------
# What a device is
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectionSpec:
    """How to reach one device. ``None`` fields come from ``~/.ssh/config`` (for ``host`` as a ``Host``
    alias), then from OpenSSH defaults (current user, port 22)."""

    host: str
    user: str | None = None
    port: int | None = None
    key_filename: str | os.PathLike[str] | None = None
    connect_timeout: float | None = None  # default: ConnectTimeout from ssh config, else 10 s
    command_timeout: float = 600.0
    accept_new_host_key: bool = False
    known_hosts: str | os.PathLike[str] | None = None  # default: UserKnownHostsFile, else ~/.ssh/known_hosts
    ssh_config: str | os.PathLike[str] | None = None  # default: ~/.ssh/config if it exists
    use_ssh_config: bool = True
    allow_agent: bool = True
    look_for_keys: bool = True

    def resolve(self) -> "ResolvedConnection":
        """Merge this spec with the ssh config; explicit fields win."""
        options: dict[str, object] = {}
        config_path: Path | None = None
        if self.use_ssh_config:
            config_path = Path(os.path.expanduser(str(self.ssh_config or DEFAULT_SSH_CONFIG)))
            if config_path.is_file():
                try:
                    options = dict(paramiko.SSHConfig.from_path(str(config_path)).lookup(self.host))
                except Exception as exc:  # paramiko raises several kinds for a bad file
                    raise RemoteError(
                        f"cannot read SSH config {config_path}: {exc}", "fix or remove the offending line"
                    ) from exc
            elif self.ssh_config is not None:
                raise RemoteError(f"SSH config file {config_path} does not exist", "check the path")
            else:
                config_path = None

        hostname = str(options.get("hostname") or self.host)
        user = self.user or _opt_str(options, "user") or getpass.getuser()
        port_text = self.port if self.port is not None else options.get("port", 22)
        try:
            port = int(port_text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise RemoteError(f"invalid SSH port {port_text!r} for host {self.host}") from None
        if not 0 < port < 65536:
            raise RemoteError(f"invalid SSH port {port} for host {self.host}", "use a port between 1 and 65535")

        identities_only = _opt_str(options, "identitiesonly").lower() == "yes"
        if self.key_filename is not None:
            key_path = Path(os.path.expanduser(str(self.key_filename)))
            if not key_path.is_file():
                raise RemoteError(f"SSH key file {key_path} does not exist", "check the key_filename/--key path")
            keys: tuple[str, ...] = (str(key_path),)
        else:
            # Like OpenSSH, silently skip IdentityFile entries that do not exist.
            listed = options.get("identityfile") or []
            keys = tuple(
                p for p in (os.path.expanduser(str(x)) for x in listed) if os.path.isfile(p)  # type: ignore[union-attr]
            )

        if self.known_hosts is not None:
            known_hosts = Path(os.path.expanduser(str(self.known_hosts)))
        else:
            configured = _opt_str(options, "userknownhostsfile").split()
            known_hosts = Path(os.path.expanduser(configured[0] if configured else DEFAULT_KNOWN_HOSTS))

        if self.connect_timeout is not None:
            connect_timeout = float(self.connect_timeout)
        else:
            try:
                connect_timeout = float(_opt_str(options, "connecttimeout") or 10.0)
            except ValueError:
                connect_timeout = 10.0

        proxy = _opt_str(options, "proxycommand")
        return ResolvedConnection(
            alias=self.host,
            hostname=hostname,
            port=port,
            user=user,
            key_filenames=keys,
            known_hosts=known_hosts,
            proxy_command=proxy if proxy and proxy.lower() != "none" else None,
            allow_agent=self.allow_agent,
            look_for_keys=self.look_for_keys and not identities_only,
            connect_timeout=connect_timeout,
            command_timeout=float(self.command_timeout),
            accept_new_host_key=self.accept_new_host_key,
            ssh_config=config_path,
        )


def _opt_str(options: dict[str, object], key: str) -> str:
    value = options.get(key)
    if value is None:
        return ""
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value)


@dataclass(frozen=True)
class ResolvedConnection:
    """A :class:`ConnectionSpec` after the ssh config and defaults were applied."""

    alias: str
    hostname: str
    port: int
    user: str
    key_filenames: tuple[str, ...]
    known_hosts: Path
    proxy_command: str | None
    allow_agent: bool
    look_for_keys: bool
    connect_timeout: float
    command_timeout: float
    accept_new_host_key: bool
    ssh_config: Path | None = field(default=None)

    @property
    def description(self) -> str:
        where = f"{self.user}@{self.hostname}:{self.port}"
        return where if self.alias == self.hostname else f"{self.alias} ({where})"

    @property
    def host_key_name(self) -> str:
        return host_key_name(self.hostname, self.port)

    def auth_methods_tried(self) -> str:
        tried = [f"key {k}" for k in self.key_filenames]
        if self.allow_agent:
            tried.append("ssh-agent" if os.environ.get("SSH_AUTH_SOCK") else "ssh-agent (not running)")
        if self.look_for_keys:
            tried.append("default keys in ~/.ssh")
        return ", ".join(tried) if tried else "no keys at all"


# ------------------------------------------------------------------------------------------------------------
# known_hosts
# ------------------------------------------------------------------------------------------------------------
def _name_matches(entry_names: str, name: str) -> bool:
    for item in entry_names.split(","):
        if item.startswith("|1|"):
            try:
                if HostKeys.hash_host(name, item) == item:
                    return True
            except Exception:  # malformed hash: not ours
                continue
        elif item == name:
            return True
    return False


def known_hosts_lines(path: Path, name: str) -> list[int]:
    """1-based line numbers of ``path`` holding a key for ``name`` (plain or hashed entries)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if len(fields) >= 3 and not line.lstrip().startswith("#") and _name_matches(fields[0], name):
            found.append(number)
    return found


def record_host_key(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append ``name key`` to the known_hosts file ``path`` with an atomic rewrite (temp file + rename),
    keeping the file's mode (0600 for a new file). Safe against concurrent callers in this process and
    (via ``flock``) other processes."""
    real = Path(os.path.realpath(path))
    real.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    lock_path = real.with_name(real.name + ".lock")
    with _known_hosts_lock, open(lock_path, "a") as lock:
        try:
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        except (ImportError, OSError):  # pragma: no cover - non-POSIX or odd file systems
            pass
        try:
            old = real.read_bytes()
            mode = stat.S_IMODE(real.stat().st_mode)
        except FileNotFoundError:
            old, mode = b"", 0o600
        if line.encode() in old:  # recorded meanwhile by another process
            return
        if old and not old.endswith(b"\n"):
            old += b"\n"
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(old + line.encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, real)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for a host that has no key in known_hosts."""

    def __init__(self, conn: ResolvedConnection) -> None:
        self.conn = conn
        self.recorded: str | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        fp = fingerprint(key)
        if not self.conn.accept_new_host_key:
            raise HostKeyError(
                f"host key of {hostname} is unknown ({key.get_name()} {fp}; not in {self.conn.known_hosts})",
                f"verify this fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_{_short(key)}_key.pub), "
                f"then run again with {ACCEPT_FLAG} to record it",
            )
        try:
            record_host_key(self.conn.known_hosts, hostname, key)
        except OSError as exc:
            raise HostKeyError(
                f"cannot record the host key of {hostname} in {self.conn.known_hosts}: {exc.strerror or exc}",
                "check that the known_hosts file and its directory are writable",
            ) from exc
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.recorded = fp


def _short(key: paramiko.PKey) -> str:
    name = key.get_name()
    if "ed25519" in name:
        return "ed25519"
    if "ecdsa" in name:
        return "ecdsa"
    return "rsa"


def _changed_host_key_error(conn: ResolvedConnection, exc: BadHostKeyException) -> HostKeyError:
    name = conn.host_key_name
    lines = known_hosts_lines(conn.known_hosts, name)
    where = f"{conn.known_hosts}" + (f" line {', '.join(map(str, lines))}" if lines else "")
    return HostKeyError(
        f"WARNING: HOST KEY OF {name} HAS CHANGED — someone may be doing something nasty "
        f"(a man-in-the-middle attack), or the device was reinstalled. Offered {exc.key.get_name()} "
        f"{fingerprint(exc.key)}, but {where} has {exc.expected_key.get_name()} {fingerprint(exc.expected_key)}. "
        f"Refusing to connect ({ACCEPT_FLAG} does not apply to changed keys)",
        f"only if you have verified the new fingerprint on the device, remove the old entry with "
        f"ssh-keygen -f '{conn.known_hosts}' -R '{name}' and connect again with {ACCEPT_FLAG}",
    )


def describe_connect_error(conn: ResolvedConnection, exc: BaseException) -> RemoteError | None:
    """Turn a connection failure into a one-line typed error (``None``: not a connection failure)."""
    where = f"{conn.hostname}:{conn.port}"
    via = f" (alias {conn.alias!r})" if conn.alias != conn.hostname else ""
    if isinstance(exc, BadHostKeyException):
        return _changed_host_key_error(conn, exc)
    if isinstance(exc, UnicodeError):  # raised by the idna codec before any lookup
        return RemoteError(
            f"invalid host name {conn.hostname!r}{via}", "check the spelling and the HostName in your SSH config"
        )
    if isinstance(exc, socket.gaierror):
        return RemoteError(
            f"cannot resolve host name {conn.hostname!r}{via}: {exc.strerror or exc}",
            "check the spelling, the HostName in your SSH config, and DNS/mDNS on this network",
        )
    if isinstance(exc, NoValidConnectionsError):
        errnos = {getattr(e, "errno", None) for e in exc.errors.values()}
        if errno.ECONNREFUSED in errnos:
            return RemoteError(
                f"connection refused by {where}{via}",
                f"nothing listens on port {conn.port}: is sshd running on the device, and is the port right?",
            )
        return _unreachable(where, via)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return RemoteError(
            f"timed out connecting to {where}{via} after {conn.connect_timeout:g} s",
            "the host does not answer: check it is powered on, the address, and firewalls",
        )
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return RemoteError(
            f"connection refused by {where}{via}",
            f"nothing listens on port {conn.port}: is sshd running on the device, and is the port right?",
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
        return _unreachable(where, via)
    if isinstance(exc, PasswordRequiredException):
        return RemoteError(
            f"authentication failed for user {conn.user!r} on {where}{via}: a private key is passphrase-protected",
            "load it into ssh-agent (ssh-add) — edgeopt never asks for passphrases",
        )
    if isinstance(exc, BadAuthenticationType):
        allowed = ", ".join(exc.allowed_types) or "none"
        return RemoteError(
            f"authentication failed for user {conn.user!r} on {where}{via}: "
            f"the server does not accept keys (allows: {allowed})",
            "enable PubkeyAuthentication on the device and install your public key (ssh-copy-id)",
        )
    if isinstance(exc, AuthenticationException):
        return RemoteError(
            f"authentication failed for user {conn.user!r} on {where}{via} (tried: {conn.auth_methods_tried()})",
            "check the user name and that your public key is in ~/.ssh/authorized_keys on the device "
            "(ssh-copy-id); a passphrase-protected key must be loaded into ssh-agent",
        )
    if isinstance(exc, (SSHException, EOFError)):
        text = str(exc) or type(exc).__name__
        if "banner" in text.lower():
            return RemoteError(
                f"{where}{via} accepted the connection but sent no SSH banner within {conn.connect_timeout:g} s",
                "is an SSH server on that port? the device may be overloaded",
            )
        return RemoteError(f"SSH connection to {where}{via} failed: {text}", "check the device's sshd log")
    if isinstance(exc, OSError):
        return RemoteError(
            f"cannot connect to {where}{via}: {exc.strerror or exc}", "check the address and the network"
        )
    return None

def _unreachable(where: str, via: str) -> RemoteError:
    return RemoteError(
        f"host {where}{via} is unreachable",
        "check the device is powered on and on the same network (ping it)",
    )


# ------------------------------------------------------------------------------------------------------------
# How to talk to it
# ------------------------------------------------------------------------------------------------------------
class SSHTransport:
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
        self._client = self._connect()

    # -- connecting ------------------------------------------------------------------------------------------
    def _connect(self) -> paramiko.SSHClient:
        conn = self.conn
        client = paramiko.SSHClient()
        try:
            if conn.known_hosts.is_file():
                client.load_host_keys(str(conn.known_hosts))
        except (OSError, paramiko.hostkeys.InvalidHostKey, SSHException) as exc:
            client.close()
            raise HostKeyError(
                f"cannot read known_hosts file {conn.known_hosts}: {exc}", "fix or remove the broken line"
            ) from exc
        policy = _HostKeyPolicy(conn)
        client.set_missing_host_key_policy(policy)
        timeout = conn.connect_timeout
        # We open the TCP connection ourselves so that the connect timeout, the banner timeout and paramiko's
        # negotiation window are separate (paramiko uses one ``timeout`` for the socket and for start_client,
        # and start_client gives up silently, hiding the real cause).
        sock: socket.socket | paramiko.ProxyCommand
        try:
            if conn.proxy_command:
                sock = paramiko.ProxyCommand(conn.proxy_command)
            else:
                sock = socket.create_connection((conn.hostname, conn.port), timeout=timeout)
                # SFTP is many small request/response round trips: without this, delayed ACKs stall each ~40 ms
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, UnicodeError, SSHException) as exc:
            client.close()
            raise (describe_connect_error(conn, exc) or RemoteError(str(exc))) from exc
        try:
            client.connect(
                conn.hostname,
                port=conn.port,
                username=conn.user,
                key_filename=list(conn.key_filenames) or None,
                timeout=max(2 * timeout, timeout + 5),  # the whole key exchange
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                allow_agent=conn.allow_agent,
                look_for_keys=conn.look_for_keys,
                sock=sock,
            )
        except BaseException as exc:
            cause: BaseException = exc
            inner = client.get_transport()
            saved = inner.get_exception() if inner is not None else None
            if saved is not None and isinstance(exc, SSHException) and not isinstance(exc, AuthenticationException):
                cause = saved  # the transport thread's reason (e.g. no banner)
            elif isinstance(exc, SSHException) and "No existing session" in str(exc):
                cause = SSHException(f"SSH negotiation did not finish within {max(2 * timeout, timeout + 5):g} s")
            client.close()
            sock.close()
            if isinstance(exc, (HostKeyError, RemoteError)):
                raise
            mapped = describe_connect_error(conn, cause)
            if mapped is None:
                raise
            raise mapped from exc
        self.recorded_host_key = policy.recorded
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        return client

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
        process-group leader (setsid); on timeout or interruption the whole group is SIGKILLed over a second
        channel, then the channel is closed. The shell stays (no ``exec``) so a command killed by signal N exits
        with status 128+N, as in a local shell."""
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

    def _run_on(
        self,
        chan: paramiko.Channel,
        command: str,
        name: str,
        limit: float,
        stdin: bytes | None,
        state: dict[str, int | None],
    ) -> Result:
        deadline = time.monotonic() + limit
        out, err = bytearray(), bytearray()
        header_done = False

        def take_header() -> None:
            nonlocal header_done, out
            if header_done or b"\n" not in out:
                return
            first, _, rest = bytes(out).partition(b"\n")
            if first.startswith(_PID_MARK.encode()) and first[len(_PID_MARK) :].isdigit():
                state["pid"] = int(first[len(_PID_MARK) :])
                out = bytearray(rest)
            header_done = True

        try:
            chan.exec_command(command)
            pending = memoryview(stdin or b"")
            if not pending:
                chan.shutdown_write()
            fd = chan.fileno()
            while True:
                while chan.recv_ready():
                    out += chan.recv(CHUNK)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(CHUNK)
                take_header()
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
                select.select([fd], [], [], min(remaining, 0.02 if pending else 0.2))
        except RemoteError:
            raise
        except (SSHException, EOFError, OSError) as exc:
            raise self._lost(f"running {name!r}", exc) from exc
        # Data may still be buffered after the close; drain it.
        while chan.recv_ready():
            out += chan.recv(CHUNK)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(CHUNK)
        take_header()
        if not chan.exit_status_ready():
            raise self._lost(f"running {name!r}", EOFError("no exit status"))
        return Result(chan.recv_exit_status(), bytes(out), bytes(err))

    def _kill_group(self, pid: int) -> None:
        """SIGKILL the process group ``pid`` (best effort, over a fresh channel)."""
        try:
            chan = self._transport().open_session(timeout=self.conn.connect_timeout)
        except Exception:
            return
        try:
            chan.settimeout(5)
            chan.exec_command(f"kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null; true")
            chan.shutdown_write()
            chan.recv_exit_status()
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

    def _count(self, n: int) -> None:
        self.bytes_sent += n

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
                sent = copy_chunks(src, dst, offset, total, progress, self._count)
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
    def close(self) -> None:
        with self._lock:
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except Exception:
                    pass
                self._sftp = None
        self._client.close()

    def __enter__(self) -> "SSHTransport":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

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
    "ConnectionSpec",
    "ResolvedConnection",
    "SSHTransport",
    "connect",
    "describe_connect_error",
    "fingerprint",
    "host_key_name",
    "known_hosts_lines",
    "record_host_key",
)
