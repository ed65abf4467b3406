"""The mounts a running chroot needs (proc, the ARM cpuinfo over it, sysfs, /dev, /dev/pts), taking them down
again, and the one safe way to delete a root filesystem (never while anything is mounted below it: a bind-mounted
/dev would take the host's device nodes with it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from edgeopt.emulate.host import run, tail
from edgeopt.errors import EmulationError

PROC_MOUNTS = Path("/proc/self/mounts")


def unescape(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, in mount order."""
    base = str(Path(root).resolve())
    found = []
    for line in PROC_MOUNTS.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        point = unescape(parts[1])
        if point == base or point.startswith(base + "/"):
            found.append(point)
    return found


def mount_all(root: Path, cpuinfo: str) -> None:
    """proc, then the ARM cpuinfo bind-mounted over ``proc/cpuinfo`` (after proc, or it is hidden), sysfs, /dev
    and /dev/pts. On any failure what was mounted is taken down again."""
    root = Path(root).resolve()
    steps = [
        (["mount", "-t", "proc", "proc", str(root / "proc")], "proc"),
        (["mount", "--bind", str(root / cpuinfo.lstrip("/")), str(root / "proc/cpuinfo")], "proc/cpuinfo"),
        (["mount", "-t", "sysfs", "sys", str(root / "sys")], "sys"),
        (["mount", "--bind", "/dev", str(root / "dev")], "dev"),
        (["mount", "--bind", "/dev/pts", str(root / "dev/pts")], "dev/pts"),
    ]
    try:
        for argv, point in steps:
            if str(root / point) in mounts_under(root):
                continue
            if point != "proc/cpuinfo":
                (root / point).mkdir(parents=True, exist_ok=True)
            run(argv, f"mounting {point} in {root}")
    except BaseException:
        unmount_all(root)
        raise


def unmount_all(root: Path) -> list[str]:
    """Unmount everything at or below ``root`` (deepest first; a busy one lazily). Returns what was unmounted;
    raises when something is still mounted afterwards."""
    root = Path(root).resolve()
    done: list[str] = []
    last_error = ""
    for _ in range(3):
        points = mounts_under(root)
        if not points:
            return done
        for point in sorted(points, key=lambda p: (p.count("/"), points.index(p)), reverse=True):
            out = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                out = subprocess.run(["umount", "-l", point], capture_output=True, text=True, check=False)
            if out.returncode == 0:
                done.append(point)
            else:
                last_error = out.stderr
    left = mounts_under(root)
    if left:
        raise EmulationError(f"still mounted under {root}: {', '.join(left)} ({tail(last_error)})",
                             f"stop what uses them (fuser -vm {left[0]}), then run `edgeopt emulate … down` again")
    return done


def remove_tree(root: Path) -> None:
    """``rm -rf --one-file-system root``, only after checking nothing is mounted below it."""
    root = Path(root)
    if not root.exists():
        return
    left = mounts_under(root)
    if left:
        raise EmulationError(f"refusing to delete {root}: still mounted: {', '.join(left)}",
                             "run `edgeopt emulate … down` first")
    run(["rm", "-rf", "--one-file-system", str(root)], f"removing {root}")
