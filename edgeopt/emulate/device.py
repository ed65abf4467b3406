"""One emulated device on this host: ``build`` (cached image, else debootstrap; then a fresh root filesystem),
``up`` (binfmt, mounts, its own aarch64 sshd on 127.0.0.1), ``down`` (its processes ended by pid, everything
unmounted) and ``status``. Its files live in one directory (default ``<cache_root>/emulate/<device>/device``):
``rootfs/``, the user key, ``known_hosts``, ``ssh_config``, ``state.json`` while it runs."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeopt.emulate.access import Connection, set_up_access
from edgeopt.emulate.bootstrap import bootstrap, guest_env, host_env, write_device_files
from edgeopt.emulate.host import (
    Progress,
    ensure_binfmt,
    no_progress,
    require_free_port,
    require_root,
    require_tools,
    run,
    ssh_banner,
    tail,
)
from edgeopt.emulate.image import emulate_root, image_file, image_info, images_dir, locked, pack, restore
from edgeopt.emulate.mounts import mount_all, mounts_under, remove_tree, unmount_all
from edgeopt.emulate.processes import alive, pids_in, stop_root
from edgeopt.emulate.recipe import CPUINFO, SSHD_CONFIG, SSHD_LOG, Recipe
from edgeopt.errors import EmulationError

BUILD_TOOLS = ("debootstrap", "qemu-aarch64-static", "update-binfmts", "zstd", "chroot", "mount", "ssh-keygen")
UP_TOOLS = ("qemu-aarch64-static", "zstd", "chroot", "mount", "ssh-keygen")
START_TIMEOUT = 90.0  # emulated sshd start + first login


@dataclass
class BuildOutcome:
    action: str  # "built" (debootstrap, minutes) | "restored" (from the cached image, seconds)
    seconds: float
    key: str
    image: Path
    image_bytes: int


class EmulatedDevice:
    """An emulated device of kind ``recipe`` whose files live in ``workdir``; sshd on 127.0.0.1:``port``."""

    def __init__(self, recipe: Recipe, workdir: Path | None = None, port: int | None = None) -> None:
        self.recipe = recipe
        self.workdir = Path(workdir or emulate_root() / recipe.name / "device").resolve()
        self.port = port or recipe.default_port
        self.proc: subprocess.Popen[bytes] | None = None  # sshd, when this process started it

    # ---- paths and state
    @property
    def rootfs(self) -> Path:
        return self.workdir / "rootfs"

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    @property
    def instance_file(self) -> Path:
        return self.workdir / "rootfs.json"

    def state(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
            return data
        except (OSError, ValueError):
            return None

    def running_pid(self) -> int | None:
        """The device's sshd pid when it is up (alive, and its root is our root filesystem)."""
        st = self.state()
        pid = st.get("pid") if st else None
        if isinstance(pid, int) and alive(pid) and pid in pids_in(self.rootfs):
            return pid
        return None

    def rootfs_key(self) -> str | None:
        try:
            return str(json.loads(self.instance_file.read_text()).get("key"))
        except (OSError, ValueError, AttributeError):
            return None

    def connection(self, port: int | None = None) -> Connection:
        st = self.state() or {}
        port = port or int(st.get("port") or self.port)
        r = self.recipe
        return Connection(device=r.name, user=r.user, port=port, key=self.workdir / f"id_{r.user}",
                          known_hosts=self.workdir / "known_hosts", python=r.python,
                          ssh_config=self.workdir / "ssh_config", alias=r.alias)

    # ---- build
    def build(self, force: bool = False, progress: Progress = no_progress) -> BuildOutcome:
        """A fresh root filesystem for this device: unpacked from the cached image, or built (and cached)
        first when there is none for this recipe (or ``force``)."""
        require_root(f"edgeopt emulate {self.recipe.name} build")
        require_tools(BUILD_TOOLS if force or image_info(self.recipe) is None else UP_TOOLS)
        with locked(self.workdir / ".lock", progress, f"using {self.workdir}"):
            return self.build_locked(force, progress)

    def build_locked(self, force: bool, progress: Progress) -> BuildOutcome:
        r = self.recipe
        if self.running_pid() is not None:
            raise EmulationError(f"emulated {r.name} is up (pid {self.running_pid()}): its root filesystem is in use",
                                 f"run `edgeopt emulate {r.name} down` first")
        unmount_all(self.rootfs)  # leftovers of a crashed run
        started = time.monotonic()
        action = "restored"
        with locked(images_dir(r) / ".lock", progress, "building the same image"):
            if force or image_info(r) is None:
                require_tools(BUILD_TOOLS)
                self.build_image(progress)
                action = "built"
        if action == "restored":
            restore(r, self.rootfs, progress)
        self.instance_file.write_text(json.dumps({"key": r.key(), "image": str(image_file(r)), "action": action,
                                                  "at": datetime.now(UTC).isoformat(timespec="seconds")}) + "\n")
        seconds = round(time.monotonic() - started, 1)
        progress(f"{r.name} root filesystem {action} in {seconds:.0f} s ({self.rootfs})")
        return BuildOutcome(action, seconds, r.key(), image_file(r), image_file(r).stat().st_size)

    def build_image(self, progress: Progress) -> None:
        """debootstrap + wheels into a staging directory, pack it into the cache, then use it as the rootfs."""
        r = self.recipe
        ensure_binfmt(r.binfmt, progress)
        staging = self.workdir / ".build-rootfs"
        log = images_dir(r) / f"{r.key()}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        unmount_all(staging)
        remove_tree(staging)
        started = time.monotonic()
        progress(f"building the {r.name} image {r.key()} (once; about 5-6 min on 2 cores; log: {log})")
        try:
            facts = bootstrap(r, staging, r.key(), log, progress)
            build_seconds = round(time.monotonic() - started, 1)
            pack(staging, r, {"build_seconds": build_seconds, "device": facts}, progress)
            unmount_all(self.rootfs)
            remove_tree(self.rootfs)
            staging.rename(self.rootfs)
        finally:
            unmount_all(staging)
            remove_tree(staging)

    # ---- up / down / status
    def up(self, progress: Progress = no_progress) -> Connection:
        """Start the device (building or restoring its root filesystem when needed). Already up: its
        connection. On any failure everything started or mounted is taken down again."""
        r = self.recipe
        require_root(f"edgeopt emulate {r.name} up")
        require_tools(UP_TOOLS)
        with locked(self.workdir / ".lock", progress, f"using {self.workdir}"):
            if self.running_pid() is not None:
                progress(f"emulated {r.name} is already up")
                return self.connection()
            require_free_port(self.port)
            if not self.rootfs.is_dir() or self.rootfs_key() != r.key():
                self.build_locked(False, progress)
            try:
                return self.start(progress)
            except BaseException:
                self.stop(progress)
                raise

    def start(self, progress: Progress) -> Connection:
        r = self.recipe
        started = time.monotonic()
        unmount_all(self.rootfs)
        ensure_binfmt(r.binfmt, progress)
        conn = set_up_access(r, self.rootfs, self.workdir, self.port)
        write_device_files(self.rootfs, r, self.rootfs_key() or r.key())
        mount_all(self.rootfs, CPUINFO)
        log = self.rootfs / SSHD_LOG.lstrip("/")
        log.write_text("")
        progress(f"starting the device's aarch64 sshd on 127.0.0.1:{self.port} (emulated)")
        argv = ["chroot", str(self.rootfs), *guest_env(r, user=False), "/usr/sbin/sshd", "-D", "-f", SSHD_CONFIG,
                "-E", SSHD_LOG]
        self.proc = subprocess.Popen(argv, env=host_env(r), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.write_state({"pid": self.proc.pid, "port": self.port, "key": self.rootfs_key(),
                          "rootfs": str(self.rootfs), "started_at": datetime.now(UTC).isoformat(timespec="seconds")})
        deadline = time.monotonic() + START_TIMEOUT
        while ssh_banner(self.port, timeout=2.0) is None:
            if self.proc.poll() is not None:
                raise EmulationError(f"the device's sshd exited with status {self.proc.returncode}: "
                                     f"{tail(log.read_text(errors='replace'))}", f"full log: {log}")
            if time.monotonic() > deadline:
                raise EmulationError(f"the device's sshd did not answer on 127.0.0.1:{self.port} within "
                                     f"{START_TIMEOUT:.0f} s", f"see {log}")
            time.sleep(0.3)
        self.check_login(conn)
        progress(f"emulated {r.name} is up in {time.monotonic() - started:.1f} s")
        return conn

    def check_login(self, conn: Connection) -> None:
        """A real login with the device's key and host key: the venv's python must say it runs on aarch64, on
        the recipe's CPU."""
        r = self.recipe
        probe = "import os, platform; print(platform.machine(), os.environ.get('QEMU_CPU'))"
        remote = shlex.join([conn.python, "-c", probe])
        out = run(["ssh", "-F", str(conn.ssh_config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=60", conn.alias,
                   remote], f"logging in to the emulated {r.name}", timeout=START_TIMEOUT)
        said = out.strip().splitlines()[-1] if out.strip() else ""
        if said != f"{r.machine} {r.qemu_cpu}":
            raise EmulationError(f"the emulated {r.name} says {said or 'nothing'!r}, not '{r.machine} {r.qemu_cpu}'",
                                 f"check the binfmt_misc entry {r.binfmt} and {SSHD_CONFIG} in the device")

    def write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state) + "\n")
        tmp.replace(self.state_file)

    def down(self, progress: Progress = no_progress) -> dict[str, Any]:
        """Stop the device: its processes (sshd first) ended by pid, everything below the rootfs unmounted.
        Safe to run when it is not up (or after a failed ``up``): it then only cleans up."""
        require_root(f"edgeopt emulate {self.recipe.name} down")
        with locked(self.workdir / ".lock", progress, f"using {self.workdir}"):
            return self.stop(progress)

    def stop(self, progress: Progress) -> dict[str, Any]:
        st = self.state() or {}
        pid = st.get("pid") if isinstance(st.get("pid"), int) else None
        was_up = pid is not None and self.running_pid() is not None
        stopped = stop_root(self.rootfs, first=pid) if self.rootfs.is_dir() else []
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        unmounted = unmount_all(self.rootfs) if self.workdir.is_dir() else []
        self.state_file.unlink(missing_ok=True)
        if stopped or unmounted:
            progress(f"stopped {len(stopped)} process(es), unmounted {len(unmounted)} mount(s)")
        return {"was_up": was_up, "stopped_pids": stopped, "unmounted": unmounted,
                "mounts_left": mounts_under(self.rootfs)}

    def status(self) -> dict[str, Any]:
        """What there is: the cached image, the root filesystem, whether it runs and where."""
        r = self.recipe
        info = image_info(r)
        pid = self.running_pid()
        st = self.state() or {}
        out: dict[str, Any] = {
            "device": r.name, "recipe_key": r.key(), "workdir": str(self.workdir),
            "image": str(image_file(r)) if info else None, "image_bytes": (info or {}).get("bytes"),
            "image_build_seconds": (info or {}).get("build_seconds"),
            "rootfs": str(self.rootfs) if self.rootfs.is_dir() else None,
            "rootfs_current": self.rootfs_key() == r.key(),
            "up": pid is not None, "pid": pid, "port": st.get("port") if pid else None,
            "mounts": mounts_under(self.rootfs),
        }
        if pid is not None:
            out["connection"] = self.connection().to_json()
        return out
