"""Device session helpers on top of any :class:`~edgeopt.remote.transport.Transport`.

- :meth:`DeviceSession.ensure_file`: content-addressed push. A file lives on the device at
  ``<home>/.cache/edgeopt/blobs/<sha256>/<filename>``. If it is there and its hash (computed on the device)
  matches, nothing is sent. Otherwise it is uploaded to ``.<filename>.part`` in the same directory (resuming a
  partial upload left by a dropped connection), verified on the device, then renamed into place atomically: an
  interrupted transfer never leaves a file at the final name.
- :meth:`DeviceSession.run_json`: run a command that prints one JSON document (the agent) and parse it; an
  ``{"error": {"message": ..., "hint": ...}}`` document with a non-zero exit becomes :class:`AgentFailed`.

Hashing on the device uses its Python (configurable: a target's ``python: /path/to/python``), falling back to
``sha256sum``. Paths travel as argv, quoted: never spliced into code or a shell line.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

from edgeopt.artifacts.files import sha256_file
from edgeopt.errors import AgentError, AgentFailed, DeviceOutputError, RemoteError
from edgeopt.remote.agent_json import NO_JSON, NonFinite, parse_json, signal_name
from edgeopt.remote.transport import ProgressCallback, Transport

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Runs on the device with Python >= 3 (any version the agent supports); the path is sys.argv[1].
# Exit 2 = the file does not exist.
REMOTE_SHA256_CODE = (
    "import hashlib, sys\n"
    "h = hashlib.sha256()\n"
    "try:\n"
    "    f = open(sys.argv[1], 'rb')\n"
    "except FileNotFoundError:\n"
    "    sys.exit(2)\n"
    "with f:\n"
    "    for block in iter(lambda: f.read(1048576), b''):\n"
    "        h.update(block)\n"
    "print(h.hexdigest())\n"
)


# Makes the cache directories private, in one round trip (POSIX sh: dash, bash, busybox ash). argv: the part file
# to create 0600 ("" for none), then the directories from the cache root down. Each is created 0700 (the root with
# its parents, umask 077), and refused when it is a symbolic link, not a directory, or owned by another user;
# an existing one of ours is tightened to 0700. Exit 3 with the reason on stdout.
PREPARE_SCRIPT = """umask 077
part=$1; shift
first=1
for d do
  if [ ! -e "$d" ] && [ ! -L "$d" ]; then
    if [ $first = 1 ]; then mkdir -p "$d" 2>/dev/null; else mkdir "$d" 2>/dev/null; fi
  fi
  first=0
  if [ -L "$d" ]; then echo "$d is a symbolic link"; exit 3; fi
  if [ ! -d "$d" ]; then echo "$d is not a directory (or cannot be created)"; exit 3; fi
  if [ ! -O "$d" ]; then echo "$d belongs to another user"; exit 3; fi
  chmod 700 "$d" 2>/dev/null || { echo "cannot make $d private (chmod 700)"; exit 3; }
done
if [ -n "$part" ]; then
  if [ -L "$part" ]; then echo "$part is a symbolic link"; exit 3; fi
  { : >> "$part" && chmod 600 "$part"; } 2>/dev/null || { echo "cannot create $part"; exit 3; }
fi
"""


#: A partial upload untouched this long (seconds) was left by a session that is gone: adopted or removed.
STALE_PART_S = 60.0
# runs on the device (argv: directory, file name, this session's part, seconds): the other sessions' stale parts
_STALE_PARTS = """import json, os, re, stat, sys, time
d, name, mine, idle = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
head, out = "." + name + ".", []
for f in os.listdir(d):
    p = os.path.join(d, f)
    if f.startswith(head) and f.endswith(".part") and p != mine \
            and re.fullmatch(r"[0-9A-Za-z_-]{1,64}", f[len(head):-5]):
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode) and time.time() - st.st_mtime > idle:
            out.append([p, st.st_size])
print(json.dumps(out))
"""


class DeviceSession:
    """Helpers for one device reached through ``transport``.

    ``python``: the device's Python interpreter (argv[0]), used for hashing. ``cache_dir``: remote cache root
    (absolute), default ``<home>/.cache/edgeopt``. ``bytes_sent`` counts payload bytes uploaded by this session.
    ``upload_id`` names this session's partial uploads (``.<file>.<upload_id>.part``): two sessions never share
    one; pass a previous session's ``upload_id`` to resume its partial upload (after a dropped connection).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        python: str = "python3",
        cache_dir: str | None = None,
        hash_timeout: float = 600.0,
        upload_id: str | None = None,
    ) -> None:
        if upload_id is not None and not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", upload_id):
            raise ValueError(f"upload_id must be 1-64 letters, digits, _ or -: {upload_id!r}")
        self.upload_id = upload_id or secrets.token_hex(8)
        self._private: set[str] = set()  # directories made private (and checked) by this session
        self.transport = transport
        self.python = python
        self.hash_timeout = hash_timeout
        self._cache_dir = cache_dir.rstrip("/") if cache_dir else None
        self._hasher: str | None = None  # "python" | "sha256sum", found on first use
        self.bytes_sent = 0
        self.last_sent = 0

    # -- paths ---------------------------------------------------------------------------------------------
    @property
    def cache_dir(self) -> str:
        if self._cache_dir is None:
            self._cache_dir = f"{self.transport.home().rstrip('/')}/.cache/edgeopt"
        return self._cache_dir

    def blob_path(self, sha256: str, filename: str) -> str:
        return f"{self.cache_dir}/blobs/{sha256}/{filename}"

    def part_path(self, directory: str, filename: str) -> str:
        """Where this session uploads ``filename`` before it is verified and renamed into ``directory``."""
        return f"{directory}/.{filename}.{self.upload_id}.part"

    def prepare(self, directory: str, part: str | None = None) -> None:
        """Create ``directory`` (under the cache root) and the directories above it up to the root as private
        (0700) directories of the login user, refusing a symbolic link or another user's directory; with
        ``part``, also create that file 0600 (an upload then keeps the mode)."""
        root = self.cache_dir
        if not (directory == root or directory.startswith(root + "/")):
            raise ValueError(f"{directory} is not under the cache {root}")
        chain = [root]
        for name in directory[len(root):].strip("/").split("/"):
            if name:
                chain.append(f"{chain[-1]}/{name}")
        if root.rstrip("/") in ("", self.transport.home().rstrip("/")):
            chain = chain[1:]  # a workdir of "/" or the home directory itself is never chmod-ed
        todo = [d for d in chain if d not in self._private]
        if not chain or (not todo and part is None):
            return
        result = self.transport.run(["sh", "-c", PREPARE_SCRIPT, "sh", part or "", *(todo or chain[-1:])],
                                    timeout=self.hash_timeout)
        if result.exit_code != 0:
            why = result.text.strip().splitlines()[-1] if result.text.strip() else result.last_error_line()
            raise RemoteError(
                f"unsafe or unusable cache on {self.transport.description}: {why or f'exit {result.exit_code}'}",
                "remove it, or set the target's workdir: to a directory of your own",
            )
        self._private.update(chain)

    # -- hashing on the device -------------------------------------------------------------------------------
    @property
    def hasher(self) -> str | None:
        """How the device hashes files: ``"python"`` or ``"sha256sum"`` (``None`` until the first hash)."""
        return self._hasher

    def remote_sha256(self, path: str) -> str | None:
        """SHA-256 of ``path`` computed on the device, or ``None`` if the file does not exist."""
        if self._hasher != "sha256sum":
            result = self.transport.run([self.python, "-c", REMOTE_SHA256_CODE, path], timeout=self.hash_timeout)
            if result.exit_code in (0, 2):
                self._hasher = "python"
                return self._parse_digest(result.text, path) if result.exit_code == 0 else None
            if result.exit_code not in (126, 127) or self._hasher == "python":
                raise RemoteError(
                    f"cannot hash {path} on {self.transport.description} with {self.python}: "
                    f"{result.last_error_line() or f'exit status {result.exit_code}'}"
                )
        result = self.transport.run(["sha256sum", path], timeout=self.hash_timeout)
        if result.exit_code in (126, 127):
            raise RemoteError(
                f"cannot hash files on {self.transport.description}: neither {self.python!r} nor sha256sum runs there",
                "set the target's python: to the device's Python interpreter (e.g. /usr/bin/python3)",
            )
        self._hasher = "sha256sum"
        if result.exit_code != 0:
            if "No such file" in result.error_text:
                return None
            raise RemoteError(f"cannot hash {path} on {self.transport.description}: {result.last_error_line()}")
        return self._parse_digest(result.text.split()[0] if result.text.split() else "", path)

    def _parse_digest(self, text: str, path: str) -> str:
        digest = text.strip().lower()
        if not _SHA256.match(digest):
            raise RemoteError(f"unexpected hash output for {path} on {self.transport.description}: {text[:80]!r}")
        return digest

    # -- content-addressed push -----------------------------------------------------------------------------------
    def ensure_file(
        self, local_path: str | Path, sha256: str | None = None, progress: ProgressCallback | None = None
    ) -> str:
        """Make sure the device holds ``local_path`` (whose hash is ``sha256``; computed if not given) and
        return its remote path. Sends nothing if a verified copy is already there. ``last_sent`` says how many
        bytes this call uploaded."""
        self.last_sent = 0
        local = Path(local_path)
        if not local.is_file():
            raise AgentError(f"cannot push {local}: no such file", "build the artifact first")
        actual = sha256_file(local)
        if sha256 is not None:
            expected = sha256.lower()
            if not _SHA256.match(expected):
                raise AgentError(f"invalid sha256 {sha256!r} for {local.name}", "expected 64 hex digits")
            if actual != expected:
                raise AgentError(
                    f"{local} changed since it was built: sha256 {actual[:12]}… is not {expected[:12]}…",
                    "rebuild the artifact (edgeopt build) before benchmarking",
                )
        total = local.stat().st_size
        directory = f"{self.cache_dir}/blobs/{actual}"
        final = f"{directory}/{local.name}"
        part = self.part_path(directory, local.name)

        self.prepare(directory)  # private, ours, no symlinks: before anything in it is trusted
        if self.transport.size(final) == total and self.remote_sha256(final) == actual:
            return final

        partial = self.transport.size(part)
        if partial is None and self.adopt_stale_part(directory, local.name, part):
            partial = self.transport.size(part)
        if partial is None:
            self.prepare(directory, part)  # created 0600; the upload keeps the mode
        offset = partial if partial is not None and 0 < partial <= total else 0
        self._send(local, part, progress, offset)
        got = self.remote_sha256(part)
        if got != actual and offset:
            self._send(local, part, progress, 0)  # resuming went wrong: start over once
            got = self.remote_sha256(part)
        if got != actual:
            self.transport.remove(part)
            free = self.free_bytes(directory)
            if free is not None and free < total:  # SFTP's pipelined writes do not report ENOSPC one by one
                raise RemoteError(
                    f"upload of {local.name} to {self.transport.description} failed: the device's file system is "
                    f"full ({free:,} bytes free in {directory}, the file needs {total:,})",
                    "free space on the device, or set the target's workdir: to a larger file system",
                )
            raise RemoteError(
                f"upload of {local.name} to {self.transport.description} is corrupt: "
                f"sha256 on the device {str(got)[:12]}… is not {actual[:12]}…",
                "check the device's storage and free space, then run again",
            )
        self.transport.rename(part, final)
        return final

    def free_bytes(self, directory: str) -> int | None:
        """Bytes free for this user in ``directory``'s file system on the device (None: cannot tell)."""
        try:
            result = self.transport.run([self.python, "-c", "import os, sys; s = os.statvfs(sys.argv[1]); "
                                         "print(s.f_bavail * s.f_frsize)", directory], timeout=30)
            return int(result.text.strip()) if result.ok else None
        except (RemoteError, ValueError):
            return None

    def adopt_stale_part(self, directory: str, filename: str, part: str) -> bool:
        """Partial uploads of ``filename`` that other sessions left in ``directory`` (a run killed mid-upload),
        untouched for :data:`STALE_PART_S`: the largest becomes this session's ``part`` (the upload resumes from
        it: "run again to continue"), the others are removed (they filled small devices). A part still being
        written is younger and left alone; a wrong resume is caught by the hash check. False when there was
        none, or the device cannot tell (no Python: nothing is touched)."""
        try:
            listed = self.transport.run([self.python, "-c", _STALE_PARTS, directory, filename, part,
                                         str(STALE_PART_S)], timeout=30)
            found = json.loads(listed.text) if listed.ok else []
            stale = sorted(((str(path), int(size)) for path, size in found), key=lambda x: -x[1])
        except (RemoteError, ValueError, TypeError):  # no Python there, or a listing that is not [[path, size]]
            return False
        adopted = False
        for path, _size in stale:
            try:
                if adopted:
                    self.transport.remove(path)
                else:
                    self.transport.rename(path, part)
                    adopted = True
            except (RemoteError, OSError):
                continue  # taken or removed by another session meanwhile
        return adopted

    def _send(self, local: Path, remote: str, progress: ProgressCallback | None, offset: int) -> None:
        sent = self.transport.put(local, remote, progress=progress, offset=offset)
        self.last_sent += sent
        self.bytes_sent += sent

    # -- commands that answer in JSON -----------------------------------------------------------------------------
    def run_json(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> Any:
        """Run ``argv`` (expected to print one JSON document on stdout) and return the parsed document.

        Raises :class:`AgentFailed` when it exits non-zero (with the message/hint of its ``{"error": ...}``
        document if it printed one), was killed, or printed no valid JSON; the transport's ``RemoteError`` on
        timeout or a lost connection."""
        where = self.transport.description
        name = Path(str(argv[0])).name
        result = self.transport.run(argv, timeout=timeout, stdin=stdin)
        try:
            doc = parse_json(result.text)
        except NonFinite as exc:
            raise DeviceOutputError(
                f"{name} on {where} printed a non-finite number ({exc}) in its JSON",
                "JSON has no NaN/Infinity: the agent writes null; is the agent on the device edgeopt's?",
                status=result.exit_code, stderr=result.error_text[-2000:]) from None
        tail = result.last_error_line()
        if result.exit_code == 0:
            if doc is NO_JSON:
                shown = result.text.strip()[:120]
                raise AgentFailed(
                    f"{name} on {where} printed no valid JSON"
                    + (f" (stdout starts {shown!r})" if shown else " (empty stdout)"),
                    f"stderr: {tail}" if result.error_text.strip() else None,
                    status=0,
                    stderr=result.error_text[-2000:],
                )
            return doc
        if isinstance(doc, dict) and doc.get("error"):
            error = doc["error"]
            payload = error if isinstance(error, dict) else {"message": str(error)}
            message = str(payload.get("message") or payload.get("type") or "unknown error")
            kind = payload.get("type")
            text = f"{name} on {where} failed: " + (f"{kind}: {message}" if kind and kind != message else message)
            raise AgentFailed(
                text,
                payload.get("hint"),
                payload=payload,
                status=result.exit_code,
                stderr=result.error_text[-2000:],
            )
        killed = signal_name(result.exit_code)
        if killed:
            oom = " — out of memory?" if killed == "SIGKILL" else ""
            raise AgentFailed(
                f"{name} on {where} was killed by {killed}{oom}",
                ("check the device's memory (dmesg) or use a smaller model/batch" if killed == "SIGKILL"
                 else tail or None),
                status=result.exit_code,
                stderr=result.error_text[-2000:],
            )
        if result.exit_code == 127:
            raise AgentFailed(
                f"{argv[0]} not found on {where}",
                "set the target's python: to the device's interpreter, or install it",
                status=127,
                stderr=result.error_text[-2000:],
            )
        raise AgentFailed(
            f"{name} on {where} exited with status {result.exit_code}" + (f": {tail}" if tail else ""),
            None,
            status=result.exit_code,
            stderr=result.error_text[-2000:],
        )
