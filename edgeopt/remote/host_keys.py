"""Host-key trust for SSH: fingerprints, the known_hosts files, and the accept-new policy.

Like OpenSSH ``StrictHostKeyChecking=accept-new``: known hosts come from every known_hosts file (plain, hashed
and wildcard host names). A key listed under ``@revoked`` is always refused. An UNKNOWN key is refused unless
``accept_new_host_key`` is set, which records it in the first file (atomic rewrite). A CHANGED key is always
refused. ``@cert-authority`` lines are skipped (host certificates are not supported: such a host is unknown).
Failures are :class:`~edgeopt.errors.HostKeyError`; key contents never appear in messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import paramiko
from paramiko.hostkeys import HostKeys

from edgeopt.errors import HostKeyError

ACCEPT_FLAG = "--accept-new-host-key"
ACCEPT_HINT = "--accept-new-host-key (edgeopt ci: accept_new_host_key: true on the lab's device)"

_known_hosts_lock = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style fingerprint: ``SHA256:<base64 without padding>``."""
    return fingerprint_blob(key.asbytes())


def fingerprint_blob(blob: bytes) -> str:
    """The fingerprint of a public key given as its wire bytes (a known_hosts line's base64, decoded)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def host_key_name(hostname: str, port: int) -> str:
    """The name a host is stored under in known_hosts: ``host`` on port 22, else ``[host]:port``."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


# ------------------------------------------------------------------------------------------------------------
# known_hosts
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KnownHostLine:
    """One key line of a known_hosts file. ``marker``: ``@revoked``, ``@cert-authority`` or ``None``;
    ``blob``: the public key bytes (``None`` when the base64 is broken)."""

    path: Path
    number: int
    marker: str | None
    names: str
    key_type: str
    blob: bytes | None

    @property
    def where(self) -> str:
        return f"{self.path} line {self.number}"

    @property
    def fingerprint(self) -> str:
        return fingerprint_blob(self.blob or b"")


def read_known_hosts(path: Path) -> list[KnownHostLine]:
    """The key lines of one known_hosts file (missing file: none). Comments, blank lines, lines with too few
    fields and unknown markers are skipped, as OpenSSH does."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HostKeyError(f"cannot read known_hosts file {path}: {exc.strerror or exc}",
                           "check the file's permissions") from exc
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = None
        if fields[0].startswith("@"):
            marker = fields.pop(0)
            if marker not in ("@revoked", "@cert-authority"):
                continue
        if len(fields) < 3:
            continue
        try:
            blob: bytes | None = base64.b64decode(fields[2], validate=True)
        except (binascii.Error, ValueError):
            blob = None
        found.append(KnownHostLine(path, number, marker, fields[0], fields[1], blob))
    return found


@dataclass(frozen=True)
class KnownHosts:
    """Every key line of the known_hosts files (``UserKnownHostsFile`` may list several)."""

    files: tuple[Path, ...]
    lines: tuple[KnownHostLine, ...]

    @classmethod
    def read(cls, files: Sequence[Path]) -> KnownHosts:
        return cls(tuple(files), tuple(line for path in files for line in read_known_hosts(path)))

    def keys_for(self, name: str) -> list[KnownHostLine]:
        """The plain (unmarked) lines holding a key for ``name``; a broken one is an error."""
        listed = [line for line in self.lines if line.marker is None and names_match(line.names, name)]
        for line in listed:
            if line.blob is None:
                raise HostKeyError(f"cannot read known_hosts file {line.where}: the key of {name} is not valid "
                                   f"base64", "fix or remove the broken line")
        return listed

    def revoked(self, blob: bytes) -> KnownHostLine | None:
        """The ``@revoked`` line listing this key, for any host (stricter than OpenSSH: a revoked key is never
        accepted, whatever host offers it). A revocation that cannot be read is an error, never skipped."""
        for line in self.lines:
            if line.marker != "@revoked":
                continue
            if line.blob is None:
                raise HostKeyError(f"cannot read known_hosts file {line.where}: the @revoked key is not valid "
                                   f"base64", "fix the line — edgeopt does not connect while a revocation it "
                                   "cannot read is listed")
            if line.blob == blob:
                return line
        return None

    def cert_authorities_for(self, name: str) -> list[KnownHostLine]:
        return [line for line in self.lines if line.marker == "@cert-authority" and names_match(line.names, name)]

    def key_types_for(self, name: str) -> list[str]:
        types: list[str] = []
        for line in self.keys_for(name):
            if line.key_type not in types:
                types.append(line.key_type)
        return types

    def describe(self) -> str:
        return ", ".join(str(f) for f in self.files) or "no known_hosts file (UserKnownHostsFile none)"


def names_match(entry_names: str, name: str) -> bool:
    """Does the host field of a known_hosts line (``a,b``, hashed ``|1|salt|hash``, wildcards ``*``/``?``,
    negations ``!pattern``) cover ``name``?"""
    matched = False
    for item in entry_names.split(","):
        if item.startswith("|1|"):
            try:
                if HostKeys.hash_host(name, item) == item:
                    matched = True
            except Exception:  # malformed hash: not ours
                continue
        elif item.startswith("!"):
            if _glob(item[1:], name):
                return False
        elif _glob(item, name):
            matched = True
    return matched


def _glob(pattern: str, name: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.fullmatch(regex, name.lower()) is not None


def record_host_key(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append ``name key`` to the known_hosts file ``path`` with an atomic rewrite (temp file + rename),
    keeping the file's mode (0600 for a new file). Safe against concurrent callers in this process and
    (via ``flock``) other processes."""
    real = Path(os.path.realpath(path))
    real.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    if real.exists() and not real.is_file():  # /dev/null (throw-away devices): append as OpenSSH does, never
        with open(real, "ab") as fh:          # replace it with a regular file or put a lock file beside it
            fh.write(line.encode())
        return
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
# Policy: revoked keys and changed keys (always refused), unknown keys (accept-new)
# ------------------------------------------------------------------------------------------------------------
class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Every host key is checked here: the client is given no known keys, so paramiko hands each server key
    to :meth:`missing_host_key`. A key listed as ``@revoked`` is refused; a key listed for the host is
    accepted; a host listed with other keys only has a CHANGED key (refused, even with accept-new); an
    unknown host is refused unless ``accept_new_host_key``, which records its key in the first known_hosts
    file and remembers its fingerprint in :attr:`recorded`."""

    def __init__(self, known: KnownHosts, accept_new_host_key: bool) -> None:
        self.known = known
        self.accept_new_host_key = accept_new_host_key
        self.recorded: str | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        blob = key.asbytes()
        fp = fingerprint(key)
        revoked = self.known.revoked(blob)
        if revoked is not None:
            raise HostKeyError(
                f"host key of {hostname} ({key.get_name()} {fp}) is REVOKED in {revoked.where}; refusing to connect",
                "the key was revoked on purpose: give the device a new host key, verify its fingerprint on the "
                f"device and record it ({ACCEPT_HINT}); never remove the @revoked line to get past this",
            )
        listed = self.known.keys_for(hostname)
        if any(line.blob == blob for line in listed):
            return
        if listed:
            raise changed_host_key_error(hostname, key, listed)
        if not self.accept_new_host_key:
            authorities = self.known.cert_authorities_for(hostname)
            note = (f"; {authorities[0].where} trusts it through @cert-authority, which edgeopt does not support"
                    if authorities else "")
            raise HostKeyError(
                f"host key of {hostname} is unknown ({key.get_name()} {fp}; not in {self.known.describe()}{note})",
                f"verify this fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_{_short(key)}_key.pub), "
                f"then run again with {ACCEPT_HINT} to record it",
            )
        target = self.known.files[0] if self.known.files else None
        if target is None:
            raise HostKeyError(f"cannot record the host key of {hostname}: UserKnownHostsFile is none",
                               "name a known_hosts file (--known-hosts or UserKnownHostsFile)")
        try:
            record_host_key(target, hostname, key)
        except OSError as exc:
            raise HostKeyError(
                f"cannot record the host key of {hostname} in {target}: {exc.strerror or exc}",
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


def changed_host_key_error(name: str, key: paramiko.PKey, listed: Sequence[KnownHostLine]) -> HostKeyError:
    """The loud refusal for a host (stored as ``name``) whose key differs from every key known for it."""
    files = list(dict.fromkeys(line.path for line in listed))
    where = "; ".join(
        f"{path} line {', '.join(str(line.number) for line in listed if line.path == path)}" for path in files)
    has = ", ".join(dict.fromkeys(f"{line.key_type} {line.fingerprint}" for line in listed))
    remove = "; ".join(f"ssh-keygen -f '{path}' -R '{name}'" for path in files)
    return HostKeyError(
        f"WARNING: HOST KEY OF {name} HAS CHANGED — someone may be doing something nasty "
        f"(a man-in-the-middle attack), or the device was reinstalled. Offered {key.get_name()} "
        f"{fingerprint(key)}, but {where} has {has}. "
        f"Refusing to connect ({ACCEPT_FLAG} does not apply to changed keys)",
        f"only if you have verified the new fingerprint on the device, remove the old entry with "
        f"{remove} and connect again with {ACCEPT_HINT}",
    )
