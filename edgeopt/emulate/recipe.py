"""What an emulated device is made of, as data: the Debian suite and packages, the aarch64 wheels, the login user,
the CPU it pretends to be. The cache key of a built root filesystem is a hash of this data (and of
``STEPS_VERSION``, bumped whenever the build steps in :mod:`edgeopt.emulate.bootstrap` change what they make)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from edgeopt.errors import ConfigError

STEPS_VERSION = 1  # bump when bootstrap.py changes what ends up in the root filesystem
RUNTIME_FIELDS = ("qemu_cpu",)  # how the image is run, not what is in it: not part of the cache key

MARKER = "/etc/edgeopt-emulated"  # JSON: emulator, host arch … (read by the agent: edgeopt/agent/sysinfo.py)
CPUINFO = "/usr/share/edgeopt-emulate/cpuinfo"  # the ARM /proc/cpuinfo bind-mounted over the chroot's /proc
SSHD_CONFIG = "/etc/ssh/sshd_emulated.conf"
SSHD_LOG = "/var/log/sshd-emulated.log"
SSHD_PID = "/run/sshd-emulated.pid"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"


@dataclass(frozen=True)
class Recipe:
    """One emulated device kind. Every field goes into the cache key."""

    name: str
    description: str
    suite: str  # Debian suite (glibc >= 2.34 for the tflite-runtime wheel: bookworm)
    debian_arch: str  # debootstrap --arch
    machine: str  # what platform.machine() says inside
    binfmt: str  # binfmt_misc entry (qemu-user-static's name)
    qemu: str  # the static qemu-user binary the entry runs
    variant: str
    include: tuple[str, ...]  # Debian packages beside the minimal base
    wheels: tuple[str, ...]  # pip requirements installed into the user's venv (binary wheels only)
    user: str
    uid: int
    cpu_part: str  # /proc/cpuinfo "CPU part" (0xd08 = Cortex-A72)
    cpu_features: str
    board_model: str  # /proc/cpuinfo "Model"
    board_hardware: str
    board_revision: str
    default_port: int
    # the CPU qemu emulates (QEMU_CPU in every process of the device). A Pi 4's own Cortex-A72 (Armv8.0: no
    # dotprod/i8mm/SVE), not qemu's default "max": under "max" LiteRT 2.3's int8 kernels give wrong outputs (top-1
    # 12.5 % vs the host on the example), with cortex-a72 they match the host bit for bit.
    qemu_cpu: str = "cortex-a72"

    @property
    def home(self) -> str:
        return f"/home/{self.user}"

    @property
    def venv(self) -> str:
        return f"{self.home}/venv"

    @property
    def python(self) -> str:
        """The interpreter on the device that has numpy and the runtimes (``--python`` for edgeopt bench)."""
        return f"{self.venv}/bin/python"

    @property
    def alias(self) -> str:
        return f"{self.name}-emulated"

    def key(self) -> str:
        """The cache key: a hash of every field that shapes the image and of the build steps' version."""
        fields = {k: v for k, v in asdict(self).items() if k not in RUNTIME_FIELDS}
        data = json.dumps({"steps": STEPS_VERSION, **fields}, sort_keys=True).encode()
        return hashlib.sha256(data).hexdigest()[:16]


RPI4 = Recipe(
    name="rpi4",
    description="Raspberry-Pi-4-like aarch64 device: Debian bookworm arm64 userland under qemu-user",
    suite="bookworm",
    debian_arch="arm64",
    machine="aarch64",
    binfmt="qemu-aarch64",
    qemu="qemu-aarch64-static",
    variant="minbase",
    include=("python3", "python3-venv", "python3-pip", "openssh-server", "ca-certificates"),
    wheels=("numpy==1.26.4", "tflite-runtime==2.14.0", "ai-edge-litert==2.3.0", "onnxruntime==1.32.0"),
    user="pi",
    uid=1000,
    cpu_part="0xd08",
    cpu_features="fp asimd evtstrm crc32 cpuid",
    board_model="Raspberry Pi 4 Model B Rev 1.1",
    board_hardware="BCM2835",
    board_revision="c03111",
    default_port=2322,
)

RECIPES = {RPI4.name: RPI4}


def recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"no emulated device {name!r}", f"available: {', '.join(sorted(RECIPES))}") from None


def fake_cpuinfo(r: Recipe, cpus: int) -> str:
    """An ARM ``/proc/cpuinfo`` with ``cpus`` processors. LiteRT 2.3 and ONNX Runtime 1.32 read it at import and
    segfault under qemu-user when they find the host's x86 one."""
    block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 3\n\n")
    text = "".join(block.format(i=i, features=r.cpu_features, part=r.cpu_part) for i in range(max(1, cpus)))
    return text + (f"Hardware\t: {r.board_hardware}\nRevision\t: {r.board_revision}\n"
                   f"Serial\t\t: 1000000000000000\nModel\t\t: {r.board_model}\n")


def sshd_config(r: Recipe, port: int) -> str:
    """The device's own sshd: loopback only, keys only, the one user."""
    lines = [f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {HOST_KEY}", "UsePAM no",
             "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
             "PermitRootLogin no", f"AllowUsers {r.user}", f"PidFile {SSHD_PID}", "Subsystem sftp internal-sftp",
             f"SetEnv QEMU_CPU={r.qemu_cpu}"]  # every login session (and what it starts) runs on the Pi's CPU
    return "\n".join(lines) + "\n"
