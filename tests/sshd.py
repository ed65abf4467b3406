"""A real OpenSSH server on 127.0.0.1 for tests: a loopback "device".

Plain helpers plus pytest fixture factories (register them in conftest.py with
``from sshd import sshd_factory, sshd  # noqa: F401``).

Each :class:`SshServer` has its own temp directory, random free port, generated ed25519 host key and user key,
authorized_keys, and its own home directory (sessions get ``HOME=<root>/home``; SFTP starts there), so several
independent servers can run at once (a small lab). Works as root (logs in as root; ``/run/sshd`` is created) and
as a normal user (logs in as that user).

If sshd is not installed this FAILS loudly (:class:`SshdUnavailable`); it never skips: CI installs
``openssh-server``.
"""

from __future__ import annotations

import atexit
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")
INSTALL_HINT = "install it (Debian/Ubuntu: apt-get install -y openssh-server); the SSH tests need a real sshd"


class SshdUnavailable(RuntimeError):
    """sshd is missing or would not start. Never a reason to skip: fix the machine."""


def find_sshd() -> str:
    found = shutil.which("sshd") or next((p for p in SSHD_CANDIDATES if os.access(p, os.X_OK)), None)
    if not found:
        raise SshdUnavailable(f"OpenSSH server binary 'sshd' not found on PATH or in /usr/sbin — {INSTALL_HINT}")
    return os.path.abspath(found)


def sshd_version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stdout + out.stderr)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def generate_ed25519(path: Path, comment: str = "edgeopt-test") -> str:
    """Write an unencrypted OpenSSH ed25519 private key to ``path`` (0600) and ``path.pub``; return the
    public line ``ssh-ed25519 AAAA... comment``."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.write_bytes(private)
    os.chmod(path, 0o600)
    line = f"{public.decode()} {comment}"
    path.with_name(path.name + ".pub").write_text(line + "\n")
    return line


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(4).startswith(b"SSH-"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (the per-connection sshd processes of a server we started)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            kids.append(int(entry))
    return kids


@dataclass
class SshServer:
    """One running sshd. Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    root: Path
    port: int
    user: str
    home: Path
    client_key: Path
    client_pubkey: str
    host_key: Path
    host_pubkey: str  # "ssh-ed25519 AAAA... comment"
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    host: str = "127.0.0.1"

    # -- lifecycle -------------------------------------------------------------------------------------------
    @classmethod
    def start(cls, root: Path, *, timeout: float = 10.0, attempts: int = 3) -> SshServer:
        binary = find_sshd()
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation directory
        user = "root" if os.geteuid() == 0 else getpass.getuser()
        home = root / "home"
        home.mkdir(exist_ok=True)
        host_key = root / "ssh_host_ed25519_key"
        host_pub = generate_ed25519(host_key, "edgeopt-test-host")
        client_key = root / "id_ed25519"
        client_pub = generate_ed25519(client_key, "edgeopt-test-user")
        (root / "authorized_keys").write_text(client_pub + "\n")
        extra = ["PerSourcePenalties no"] if sshd_version(binary) >= (9, 8) else []
        log = root / "sshd.log"
        last_error = ""
        for _ in range(attempts):
            port = free_port()
            config = root / "sshd_config"
            config.write_text(
                "\n".join(
                    [
                        f"Port {port}",
                        "ListenAddress 127.0.0.1",
                        f"HostKey {host_key}",
                        f"AuthorizedKeysFile {root / 'authorized_keys'}",
                        f"PidFile {root / 'sshd.pid'}",
                        "UsePAM no",
                        "StrictModes no",
                        "PubkeyAuthentication yes",
                        "PasswordAuthentication no",
                        "KbdInteractiveAuthentication no",
                        "PermitRootLogin prohibit-password",
                        f"AllowUsers {user}",
                        f"Subsystem sftp internal-sftp -d {home}",
                        f"SetEnv HOME={home}",
                        "UseDNS no",
                        "PrintMotd no",
                        "PrintLastLog no",
                        "MaxStartups 100:30:200",
                        "MaxSessions 100",
                        "MaxAuthTries 20",
                        "LogLevel VERBOSE",
                        *extra,
                    ]
                )
                + "\n"
            )
            log.write_text("")
            proc = subprocess.Popen(
                [binary, "-D", "-f", str(config), "-E", str(log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if _wait_for_banner(port, proc, time.monotonic() + timeout):
                server = cls(root, port, user, home, client_key, client_pub, host_key, host_pub, config, log, proc)
                atexit.register(server.stop)  # no stray sshd if a caller forgets stop()
                return server
            stderr = b""
            if proc.poll() is None:
                proc.kill()
            try:
                _, stderr = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            last_error = (stderr.decode(errors="replace") + log.read_text(errors="replace")).strip()
            if "Address already in use" not in last_error:
                break
        raise SshdUnavailable(f"sshd ({binary}) did not start on 127.0.0.1: {last_error or 'no output'}")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        self.drop_connections()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> SshServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def drop_connections(self) -> int:
        """SIGKILL the per-connection sshd processes of this server (simulates a dropped link). Returns how
        many were killed. The listener keeps running."""
        if self.process is None:
            return 0
        killed = 0
        for pid in _children(self.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        return killed

    # -- what clients need ---------------------------------------------------------------------------------------
    @property
    def host_key_name(self) -> str:
        return f"[{self.host}]:{self.port}"

    @property
    def known_hosts_line(self) -> str:
        key_type, key_b64 = self.host_pubkey.split()[:2]
        return f"{self.host_key_name} {key_type} {key_b64}"

    def write_known_hosts(self, path: Path) -> Path:
        """Write (replace) a known_hosts file holding this server's host key; returns ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.known_hosts_line + "\n")
        return path

    def ssh_config_block(self, alias: str) -> str:
        return (
            f"Host {alias}\n"
            f"    HostName {self.host}\n"
            f"    Port {self.port}\n"
            f"    User {self.user}\n"
            f"    IdentityFile {self.client_key}\n"
            f"    IdentitiesOnly yes\n"
        )

    def connect_kwargs(self, known_hosts: Path | None = None, **overrides: object) -> dict[str, object]:
        """Keyword arguments for ``edgeopt.remote.ssh.ConnectionSpec`` that reach this server with nothing
        taken from the real ~/.ssh (no agent, no default keys, no user config)."""
        kwargs: dict[str, object] = dict(
            host=self.host,
            port=self.port,
            user=self.user,
            key_filename=str(self.client_key),
            known_hosts=str(known_hosts or self.write_known_hosts(self.root / "known_hosts")),
            use_ssh_config=False,
            allow_agent=False,
            look_for_keys=False,
            connect_timeout=5.0,
            command_timeout=30.0,
        )
        kwargs.update(overrides)
        return kwargs

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# ----------------------------------------------------------------------------------------------------------------
# pytest fixtures (import these names into conftest.py to register them)
# ----------------------------------------------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # pragma: no cover - the helper also works without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def sshd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SshServer]]:
        """``sshd_factory(name="dev") -> SshServer``: start an independent server; all stop at session end."""
        servers: list[SshServer] = []

        def make(name: str = "dev") -> SshServer:
            try:
                server = SshServer.start(tmp_path_factory.mktemp(f"sshd-{name}"))
            except SshdUnavailable as exc:
                pytest.fail(str(exc), pytrace=False)
            servers.append(server)
            return server

        yield make
        for server in servers:
            server.stop()

    @pytest.fixture(scope="session")
    def sshd(sshd_factory: Callable[..., SshServer]) -> SshServer:
        """One loopback SSH device shared by the session."""
        return sshd_factory("dev")
