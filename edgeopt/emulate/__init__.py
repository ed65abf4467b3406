"""Emulated devices: an aarch64 (Raspberry-Pi-like) root filesystem run through qemu-user with its own sshd.

``edgeopt emulate rpi4 build|up|down|status`` (docs/emulate.md). A qemu-user chroot, not a VM: the host's kernel,
network and CPUs, an aarch64 userland (Debian bookworm arm64, Python 3.11, numpy 1.26.4, tflite-runtime 2.14.0,
ai-edge-litert 2.3.0, onnxruntime 1.32.0) and the device's own aarch64 sshd on 127.0.0.1. Good for "it runs on
aarch64" and output parity; its latency is meaningless (20-340x slower than the host, nothing like a Pi), so the
root filesystem carries a marker (``/etc/edgeopt-emulated``) that the agent reports and ``edgeopt ci`` honours.

Modules: :mod:`.recipe` (what a device is made of, its cache key), :mod:`.host` (root, tools, binfmt_misc, port),
:mod:`.bootstrap` (debootstrap + wheels, once), :mod:`.image` (the cache of packed root filesystems),
:mod:`.mounts`, :mod:`.processes`, :mod:`.access` (keys, sshd config, known_hosts, ssh_config),
:mod:`.device` (build / up / down / status).
"""

from edgeopt.emulate.access import Connection
from edgeopt.emulate.device import BuildOutcome, EmulatedDevice
from edgeopt.emulate.image import image_file, image_info
from edgeopt.emulate.mounts import mounts_under
from edgeopt.emulate.recipe import MARKER, RECIPES, RPI4, Recipe, recipe

__all__ = ["MARKER", "RECIPES", "RPI4", "BuildOutcome", "Connection", "EmulatedDevice", "Recipe", "image_file",
           "image_info", "mounts_under", "recipe"]
