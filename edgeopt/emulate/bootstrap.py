"""Build an emulated device's root filesystem from nothing (once; minutes): debootstrap of the Debian arm64
userland through qemu-user, the host's CA certificates (pip needs them behind an intercepting proxy), the login
user, the aarch64 wheels in the user's venv, a check that every runtime imports, then clean-up. Host keys and the
user's key are NOT baked in: each device gets its own when it is set up (:mod:`edgeopt.emulate.device`)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from edgeopt.emulate.host import Progress, apt_mirror, no_progress, qemu_version, run, tail
from edgeopt.emulate.mounts import mount_all, unmount_all
from edgeopt.emulate.recipe import CPUINFO, MARKER, Recipe, fake_cpuinfo
from edgeopt.errors import EmulationError

HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GUEST_PATH = "/usr/local/bin:/usr/bin:/bin"
GUEST_ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CA_DIR = Path("/usr/local/share/ca-certificates")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

VERIFY = """
import json, platform, sys
import numpy, onnxruntime, ai_edge_litert.interpreter, tflite_runtime.interpreter
from importlib.metadata import version
names = ["numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime"]
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "packages": {n: version(n) for n in names}}))
"""


def host_env(r: Recipe | None = None) -> dict[str, str]:
    """A clean environment for host tools (a plain chroot would inherit PIP_* and the like); with a recipe, the
    CPU qemu emulates for the aarch64 binaries started from it (QEMU_CPU)."""
    env = {"PATH": HOST_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
           "HOME": "/root"}
    return {**env, "QEMU_CPU": r.qemu_cpu} if r is not None else env


def guest_env(r: Recipe, user: bool) -> list[str]:
    """``env -i …`` inside the chroot: a clean environment, the recipe's CPU, root's or the user's PATH/HOME."""
    env = ["/usr/bin/env", "-i", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", f"QEMU_CPU={r.qemu_cpu}"]
    if user:
        return env + [f"PATH={GUEST_PATH}", f"HOME={r.home}", f"USER={r.user}", f"LOGNAME={r.user}"]
    return env + [f"PATH={GUEST_ROOT_PATH}", "HOME=/root", "DEBIAN_FRONTEND=noninteractive"]


def in_root(root: Path, r: Recipe, argv: list[str], what: str, as_user: bool = False,
            timeout: float = 1800.0) -> str:
    """Run ``argv`` inside the chroot (emulated), as root or as the recipe's user, with a clean environment."""
    prefix = ["chroot", f"--userspec={r.uid}:{r.uid}", str(root)] if as_user else ["chroot", str(root)]
    return run(prefix + guest_env(r, as_user) + argv, what, env=host_env(r), timeout=timeout)


def debootstrap(r: Recipe, root: Path, log: Path, progress: Progress) -> None:
    """debootstrap with its output in ``log`` and one progress line per stage (retrieving, unpacking,
    configuring …); the configure stage runs emulated and takes most of the time."""
    mirror = apt_mirror()
    argv = ["debootstrap", f"--arch={r.debian_arch}", f"--variant={r.variant}", f"--include={','.join(r.include)}",
            r.suite, str(root), mirror]
    progress(f"debootstrap {r.suite} {r.debian_arch} from {mirror} (about 4 min: the configure stage is emulated)")
    started = time.monotonic()
    seen: set[str] = set()
    with open(log, "a", encoding="utf-8") as out:
        out.write("$ " + shlex.join(argv) + "\n")
        out.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=host_env(r), stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            out.write(line)
            lines = (lines + [line])[-5:]
            words = line.split()
            verb = words[1] if len(words) > 1 and words[0] in ("I:", "W:", "E:") else ""
            if verb in ("Retrieving", "Validating", "Extracting", "Installing", "Unpacking", "Configuring",
                        "Base") and verb not in seen:
                seen.add(verb)
                progress(f"debootstrap: {verb.lower()} … ({time.monotonic() - started:.0f} s)")
        status = proc.wait()
    if status != 0:
        raise EmulationError(f"debootstrap failed (exit {status}): {tail(''.join(lines))}",
                             f"full log: {log}; check the mirror ({mirror}) is reachable")
    progress(f"debootstrap done in {time.monotonic() - started:.0f} s")


def copy_host_files(root: Path) -> None:
    """DNS for pip, and the host's extra CA certificates (without them pip only says 'No matching
    distribution found' behind an intercepting proxy)."""
    resolv = Path("/etc/resolv.conf")
    target = root / "etc/resolv.conf"
    if resolv.is_file():
        if target.is_symlink() or target.exists():
            target.unlink()
        shutil.copyfile(resolv, target)
    dest = root / CA_DIR.relative_to("/")
    dest.mkdir(parents=True, exist_ok=True)
    for crt in sorted(CA_DIR.glob("*.crt")) if CA_DIR.is_dir() else []:
        shutil.copyfile(crt, dest / crt.name)


def write_device_files(root: Path, r: Recipe, image_key: str) -> None:
    """The ARM cpuinfo (one processor per host CPU) and the marker that says this device is emulated."""
    cpuinfo = root / CPUINFO.lstrip("/")
    cpuinfo.parent.mkdir(parents=True, exist_ok=True)
    cpuinfo.write_text(fake_cpuinfo(r, os.cpu_count() or 1))
    marker = {"emulator": "qemu-user", "emulator_version": qemu_version(r.qemu), "binfmt": r.binfmt,
              "cpu": r.qemu_cpu,
              "host_arch": platform.machine(), "host_kernel": platform.release(), "device": r.name,
              "image": image_key, "note": "a qemu-user chroot on the host's kernel: latency is not hardware latency"}
    (root / MARKER.lstrip("/")).write_text(json.dumps(marker, indent=1) + "\n")


def add_user(root: Path, r: Recipe) -> None:
    in_root(root, r, ["useradd", "-m", "-u", str(r.uid), "-s", "/bin/bash", r.user], f"useradd {r.user}")
    # '*': no password, but NOT locked (useradd leaves '!', and with UsePAM no sshd then refuses even keys)
    in_root(root, r, ["usermod", "-p", "*", r.user], f"usermod -p '*' {r.user}")


def install_wheels(root: Path, r: Recipe, progress: Progress) -> dict[str, Any]:
    """The user's venv with the recipe's aarch64 wheels (binary only: nothing compiles under emulation); then
    every runtime is imported once, emulated, so a broken image is never cached."""
    started = time.monotonic()
    progress(f"python venv in {r.venv} (emulated, about 30 s)")
    in_root(root, r, ["/usr/bin/python3", "-m", "venv", r.venv], "creating the venv", as_user=True)
    progress(f"pip install {' '.join(r.wheels)} (emulated, about 1.5 min)")
    in_root(root, r, [r.python, "-m", "pip", "install", "--no-cache-dir", "--only-binary=:all:",
                      "--disable-pip-version-check", "--no-input", "-q", "--timeout", "180", "--cert", CA_BUNDLE,
                      *r.wheels], "pip install of the aarch64 wheels", as_user=True)
    progress("checking numpy, ai-edge-litert, tflite-runtime and onnxruntime import on the device")
    out = in_root(root, r, [r.python, "-c", VERIFY], "importing the runtimes on the device", as_user=True,
                  timeout=600)
    try:
        facts: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise EmulationError(f"the runtime check on the device printed no JSON: {tail(out)}") from exc
    if facts.get("machine") != r.machine:
        raise EmulationError(f"the device says it is {facts.get('machine')}, not {r.machine}",
                             f"check the binfmt_misc entry {r.binfmt}")
    progress(f"wheels installed and imported in {time.monotonic() - started:.0f} s: "
             + ", ".join(f"{k} {v}" for k, v in facts["packages"].items()))
    return facts


def clean(root: Path, r: Recipe) -> None:
    in_root(root, r, ["apt-get", "clean"], "apt-get clean")
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "root/.cache", "tmp/*"):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for key in (root / "etc/ssh").glob("ssh_host_*"):  # each device makes its own
        key.unlink()


def bootstrap(r: Recipe, root: Path, image_key: str, log: Path, progress: Progress = no_progress) -> dict[str, Any]:
    """Build the root filesystem of ``r`` into ``root`` (an empty or missing directory). Returns what the
    device reported (machine, python, package versions). Everything mounted is taken down, also on failure."""
    root.mkdir(parents=True, exist_ok=True)
    debootstrap(r, root, log, progress)
    copy_host_files(root)
    progress("CA certificates, user, device files")
    in_root(root, r, ["update-ca-certificates"], "update-ca-certificates")
    add_user(root, r)
    write_device_files(root, r, image_key)
    mount_all(root, CPUINFO)
    try:
        facts = install_wheels(root, r, progress)
    finally:
        unmount_all(root)
    clean(root, r)
    return facts
