"""What the host must offer an emulated device: root, the tools (debootstrap, qemu-user-static, binfmt-support,
zstd, ssh-keygen), binfmt_misc with the qemu entry registered, the Debian mirror apt uses, a free port; and one
way to run a host command that turns a failure into a one-line :class:`EmulationError`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Callable, Sequence

from edgeopt.errors import EmulationError

Progress = Callable[[str], None]

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
SYSTEM_DEPS = "scripts/system-deps.sh"

# tool -> Debian package that ships it
TOOLS = {
    "debootstrap": "debootstrap",
    "qemu-aarch64-static": "qemu-user-static",
    "update-binfmts": "binfmt-support",
    "zstd": "zstd",
    "ssh-keygen": "openssh-client",
    "chroot": "coreutils",
    "mount": "mount",
}
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def no_progress(line: str) -> None:
    """The default progress sink: say nothing."""


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EmulationError(f"{what} needs root (mounts, chroot, binfmt_misc); running as uid {os.geteuid()}",
                             "run it as root (e.g. sudo .venv/bin/edgeopt emulate …)")


def which(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    for directory in SBIN:  # a non-login root shell may lack /usr/sbin on PATH
        candidate = Path(directory) / tool
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_tools(tools: Sequence[str]) -> dict[str, str]:
    """tool -> absolute path; a missing one is an error naming the apt packages to install."""
    paths = {t: which(t) for t in tools}
    missing = [t for t, p in paths.items() if p is None]
    if missing:
        packages = sorted({TOOLS.get(t, t) for t in missing})
        raise EmulationError(f"missing {', '.join(missing)} on this host",
                             f"install them: apt-get install -y {' '.join(packages)} (or run bash {SYSTEM_DEPS})")
    return {t: str(p) for t, p in paths.items()}


def run(argv: Sequence[str], what: str, *, env: dict[str, str] | None = None, timeout: float = 1800.0,
        input_text: str | None = None) -> str:
    """Run a host command; return its stdout. Failure: an EmulationError with ``what`` and the last lines of
    its output."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout, check=False,
                             input=input_text, stdin=None if input_text is not None else subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise EmulationError(f"{what}: {exc.filename} not found", f"run bash {SYSTEM_DEPS}") from exc
    except subprocess.TimeoutExpired as exc:
        raise EmulationError(f"{what}: no result after {timeout:.0f} s") from exc
    if out.returncode != 0:
        raise EmulationError(f"{what} failed (exit {out.returncode}): {tail(out.stderr or out.stdout)}")
    return out.stdout


def tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in (text or "").strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "no output"


def binfmt_entry(name: str) -> Path:
    return BINFMT_DIR / name


def ensure_binfmt(name: str, progress: Progress = no_progress) -> None:
    """binfmt_misc mounted, ``name`` (qemu-aarch64) registered and enabled with the F (fix-binary) flag, so the
    kernel runs aarch64 binaries through the host's qemu and no qemu copy is needed in the root filesystem.
    Host-wide and left in place (``update-binfmts --disable qemu-aarch64`` removes it)."""
    if not (BINFMT_DIR / "register").exists():
        progress("mounting binfmt_misc on /proc/sys/fs/binfmt_misc")
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], "mounting binfmt_misc")
    entry = binfmt_entry(name)
    if not entry.exists():
        progress(f"registering {name} with binfmt_misc")
        tool = which("update-binfmts")
        try:
            if tool is None:
                raise EmulationError("update-binfmts missing")
            run([tool, "--enable", name], f"update-binfmts --enable {name}")
        except EmulationError:
            conf = Path(f"/usr/lib/binfmt.d/{name}.conf")
            if not conf.is_file():
                raise EmulationError(f"cannot register {name} with binfmt_misc: no {conf}",
                                     "install it: apt-get install -y qemu-user-static binfmt-support") from None
            try:
                (BINFMT_DIR / "register").write_text(conf.read_text().strip() + "\n")
            except OSError as exc:
                raise EmulationError(f"cannot register {name} with binfmt_misc: {exc}") from exc
    text = entry.read_text() if entry.exists() else ""
    if text.splitlines()[:1] != ["enabled"]:
        entry.write_text("1")
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        raise EmulationError(f"binfmt_misc entry {name} lacks the F (fix-binary) flag (flags: {flags or 'none'})",
                             f"re-register it: update-binfmts --disable {name} && update-binfmts --enable {name}")


def qemu_version(qemu: str) -> str | None:
    path = which(qemu)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    first = (out.stdout or "").strip().splitlines()[:1]
    return first[0].split("version", 1)[-1].strip() if first else None


def apt_mirror() -> str:
    """The Debian mirror apt uses on this host (deb822 ``URIs:`` first, else a one-line ``deb`` source)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        for line in sources.read_text(errors="replace").splitlines():
            if line.strip().startswith("URIs:") and "security" not in line:
                return line.split(":", 1)[1].split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in line:
                return next(p for p in parts[1:] if not p.startswith("["))
    return "http://deb.debian.org/debian"


def require_free_port(port: int) -> None:
    """Nothing listens on 127.0.0.1:port (checked by binding it, then letting go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise EmulationError(f"port {port} on 127.0.0.1 is busy ({exc.strerror})",
                                 "pass another one with --port, or stop what listens there") from None


def listening(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def ssh_banner(port: int, timeout: float = 5.0) -> str | None:
    """The SSH banner on 127.0.0.1:port, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(256)
    except OSError:
        return None
    text = data.decode("ascii", "replace").strip()
    return text if text.startswith("SSH-") else None
