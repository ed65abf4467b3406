"""Host-key trust for SSH: fingerprints, the known_hosts file, and the accept-new policy.

Like OpenSSH ``StrictHostKeyChecking=accept-new``: known hosts come from ``known_hosts``. An UNKNOWN key is
refused unless ``accept_new_host_key`` is set, which records it (atomic rewrite of the file). A CHANGED key is
always refused. Failures are :class:`~edgeopt.errors.HostKeyError`; key contents never appear in messages.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import tempfile
import threading
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeys
from paramiko.ssh_exception import BadHostKeyException

from edgeopt.errors import HostKeyError

ACCEPT_FLAG = "--accept-new-host-key"

_known_hosts_lock = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style fingerprint: ``SHA256:<base64 without padding>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_key_name(hostname: str, port: int) -> str:
    """The name a host is stored under in known_hosts: ``host`` on port 22, else ``[host]:port``."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


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


# ------------------------------------------------------------------------------------------------------------
# Policy: unknown keys (accept-new) and changed keys (always refused)
# ------------------------------------------------------------------------------------------------------------
class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for a host that has no key in known_hosts: refuse it, or (with
    ``accept_new_host_key``) record it in ``known_hosts`` and remember its fingerprint in :attr:`recorded`."""

    def __init__(self, known_hosts: Path, accept_new_host_key: bool) -> None:
        self.known_hosts = known_hosts
        self.accept_new_host_key = accept_new_host_key
        self.recorded: str | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        fp = fingerprint(key)
        if not self.accept_new_host_key:
            raise HostKeyError(
                f"host key of {hostname} is unknown ({key.get_name()} {fp}; not in {self.known_hosts})",
                f"verify this fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_{_short(key)}_key.pub), "
                f"then run again with {ACCEPT_FLAG} to record it",
            )
        try:
            record_host_key(self.known_hosts, hostname, key)
        except OSError as exc:
            raise HostKeyError(
                f"cannot record the host key of {hostname} in {self.known_hosts}: {exc.strerror or exc}",
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


def changed_host_key_error(known_hosts: Path, name: str, exc: BadHostKeyException) -> HostKeyError:
    """The loud refusal for a host (stored as ``name``) whose key differs from the one in ``known_hosts``."""
    lines = known_hosts_lines(known_hosts, name)
    where = f"{known_hosts}" + (f" line {', '.join(map(str, lines))}" if lines else "")
    return HostKeyError(
        f"WARNING: HOST KEY OF {name} HAS CHANGED — someone may be doing something nasty "
        f"(a man-in-the-middle attack), or the device was reinstalled. Offered {exc.key.get_name()} "
        f"{fingerprint(exc.key)}, but {where} has {exc.expected_key.get_name()} {fingerprint(exc.expected_key)}. "
        f"Refusing to connect ({ACCEPT_FLAG} does not apply to changed keys)",
        f"only if you have verified the new fingerprint on the device, remove the old entry with "
        f"ssh-keygen -f '{known_hosts}' -R '{name}' and connect again with {ACCEPT_FLAG}",
    )
