"""How a client reaches an emulated device: its own keys (made per device, never baked into the cached image),
the sshd configuration for the chosen port, a known_hosts file holding exactly the device's host key, and an
ssh_config Host alias. Nothing secret is printed: files are named by path only."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from edgeopt.emulate.host import run
from edgeopt.emulate.recipe import HOST_KEY, SSHD_CONFIG, Recipe, sshd_config

LOOPBACK = "127.0.0.1"


def no_load_limit() -> float:
    """``--max-other-load`` for an emulated device: more CPUs than the host has, i.e. the agent's "other load"
    check off. The device shares the host's CPUs (sshd, the qemu translator, the host's own work are all "other
    load" to it) and its latency is never judged: a run disturbed by the host is not worth an invalid CI cell."""
    return float((os.cpu_count() or 1) + 1)


@dataclass(frozen=True)
class Connection:
    """What ``edgeopt bench`` (or ssh) needs to reach a running emulated device."""

    device: str
    user: str
    port: int
    key: Path
    known_hosts: Path
    python: str
    ssh_config: Path
    alias: str
    host: str = LOOPBACK
    max_other_load: float = 0.0  # 0: set from the host (no_load_limit)

    def __post_init__(self) -> None:
        if not self.max_other_load:
            object.__setattr__(self, "max_other_load", no_load_limit())

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def bench_args(self) -> list[str]:
        """The options to add to ``edgeopt bench --target <device>``."""
        return ["--host", self.address, "--key", str(self.key), "--known-hosts", str(self.known_hosts),
                "--python", self.python, "--max-other-load", f"{self.max_other_load:g}"]

    def bench_command(self) -> str:
        return shlex.join(["edgeopt", "bench", "--target", self.device, *self.bench_args()])

    def ssh_command(self) -> str:
        return shlex.join(["ssh", "-F", str(self.ssh_config), self.alias])

    def lab_device(self, name: str | None = None) -> dict[str, object]:
        """A ``devices:`` entry of an ``edgeopt ci`` lab for this device (set ``bench.max_other_load`` too)."""
        return {"name": name or self.alias, "target": self.device, "host": self.address, "key": str(self.key),
                "known_hosts": str(self.known_hosts), "python": self.python}

    def to_json(self) -> dict[str, object]:
        return {"device": self.device, "host": self.host, "port": self.port, "user": self.user,
                "key": str(self.key), "known_hosts": str(self.known_hosts), "python": self.python,
                "ssh_config": str(self.ssh_config), "alias": self.alias, "max_other_load": self.max_other_load,
                "bench_args": self.bench_args(),
                "bench_command": self.bench_command(), "ssh_command": self.ssh_command(),
                "lab_device": self.lab_device()}


def keygen(path: Path, comment: str) -> None:
    """An ed25519 key pair at ``path`` / ``path.pub`` (made with the host's ssh-keygen), unless it exists."""
    if path.is_file() and path.with_name(path.name + ".pub").is_file():
        return
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], f"ssh-keygen {path.name}")
    os.chmod(path, 0o600)


def public_key(path: Path) -> str:
    """``type base64`` of the public key next to ``path``."""
    parts = path.with_name(path.name + ".pub").read_text().split()
    return " ".join(parts[:2])


def known_hosts_line(host: str, port: int, key: str) -> str:
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {key}\n"


def ssh_config_block(c: Connection) -> str:
    return "\n".join([
        f"Host {c.alias}", f"  HostName {c.host}", f"  Port {c.port}", f"  User {c.user}",
        f"  IdentityFile {c.key}", "  IdentitiesOnly yes", "  StrictHostKeyChecking yes",
        f"  UserKnownHostsFile {c.known_hosts}", "  LogLevel ERROR", ""])


def write_private(path: Path, text: str, mode: int = 0o600, owner: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    if owner is not None:
        os.chown(tmp, owner, owner)
    os.replace(tmp, path)


def set_up_access(r: Recipe, root: Path, workdir: Path, port: int) -> Connection:
    """Keys, sshd config, known_hosts and ssh_config for a device in ``root`` listening on ``port``."""
    user_key = workdir / f"id_{r.user}"
    keygen(user_key, f"{r.alias}-user")
    host_key = root / HOST_KEY.lstrip("/")
    keygen(host_key, f"{r.alias}-host")
    ssh_dir = root / r.home.lstrip("/") / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    os.chown(ssh_dir, r.uid, r.uid)
    write_private(ssh_dir / "authorized_keys", public_key(user_key) + "\n", owner=r.uid)
    write_private(root / SSHD_CONFIG.lstrip("/"), sshd_config(r, port), mode=0o644)
    (root / "run/sshd").mkdir(parents=True, exist_ok=True)
    conn = Connection(device=r.name, user=r.user, port=port, key=user_key, known_hosts=workdir / "known_hosts",
                      python=r.python, ssh_config=workdir / "ssh_config", alias=r.alias)
    write_private(conn.known_hosts, known_hosts_line(LOOPBACK, port, public_key(host_key)), mode=0o644)
    write_private(conn.ssh_config, ssh_config_block(conn), mode=0o644)
    return conn
