"""The processes of a running emulated device: the ones whose root directory is its root filesystem (its sshd,
the login sessions and whatever they run). Found by pid and ended by pid, nothing else."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def pids_in(root: Path) -> list[int]:
    """Processes whose ``/proc/<pid>/root`` is ``root``."""
    base = str(Path(root).resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "root") == base:
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our child (no zombie left); otherwise nothing."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_pids(pids: list[int], grace: float = 5.0) -> list[int]:
    """SIGTERM each, wait up to ``grace`` seconds, SIGKILL what is left. Returns the pids signalled."""
    signalled = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for pid in signalled:
            reap(pid)
        if not any(alive(p) for p in signalled):
            break
        time.sleep(0.1)
    for pid in signalled:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for pid in signalled:
        for _ in range(50):
            reap(pid)
            if not alive(pid):
                break
            time.sleep(0.1)
    return signalled


def stop_root(root: Path, first: int | None = None, grace: float = 5.0) -> list[int]:
    """End every process of the device in ``root``; ``first`` (its sshd) goes first so no new session starts."""
    stopped: list[int] = []
    if first is not None and first in pids_in(root):
        stopped += stop_pids([first], grace)
    for _ in range(3):  # sessions may fork while we look
        left = pids_in(root)
        if not left:
            break
        stopped += stop_pids(left, grace)
    return stopped
