"""The exact tensor arena on the 32-bit target, by bisection over real boots of the firmware on QEMU.

Each probe boots the bundle's harness (linked for Cortex-M7 with TFLM + CMSIS-NN, ``tensor_arena`` sized to a
generous capacity) with ``arena=N`` as its argument: the harness constructs ``MicroInterpreter`` with the first
``N`` bytes, runs ``AllocateTensors()`` and ``Invoke()`` on the embedded sample and compares the output with the
host's. A fresh boot per size: no state carries over from one probe to the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edgeopt.convert.tflm.arena import align, smallest_working
from edgeopt.convert.tflm.qemu import Boot
from edgeopt.errors import FirmwareBootError

TARGET_EXACT_MEANS = ("smallest arena with which the bundle's harness, linked against TensorFlow Lite Micro built for "
                      "Cortex-M7 (32-bit, CMSIS-NN kernels), ran AllocateTensors() and Invoke() on the sample and "
                      "matched the host output, booted on qemu-system-arm -M mps2-an500")
SEARCH_METHOD = "one boot per size: from the host figure, doubling until it runs, then bisection; 1-byte resolution"
TOO_SMALL = {3: "AllocateTensors failed", 5: "Invoke failed"}  # harness return codes that mean "arena too small"
MIN_CAPACITY = 256 * 1024
MAX_CAPACITY = 2 * 1024 * 1024  # MPS2-AN500 SSRAM1 is 4 MiB and holds code, model, data, heap and stack too


def probe_capacity(host_exact: int) -> int:
    """The probe image's ``kTensorArenaSize``: room for four times the host figure (at least 256 KiB)."""
    return align(min(MAX_CAPACITY, max(MIN_CAPACITY, 4 * host_exact)))


def find_target_arena(probe: Callable[[int], Boot], start: int, capacity: int) -> tuple[int, dict[str, Any]]:
    """Smallest ``N`` for which ``probe(N)`` boots and runs; the boots it took (size, ok, what failed)."""
    t0 = time.perf_counter()
    boots: list[dict[str, Any]] = []

    def works(n: int) -> bool:
        b = probe(n)
        if b.rc == 0:
            boots.append({"arena": n, "ok": True, "used": b.used, "seconds": round(b.seconds, 3)})
            return True
        if b.rc in TOO_SMALL:
            boots.append({"arena": n, "ok": False, "failed": TOO_SMALL[b.rc], "seconds": round(b.seconds, 3)})
            return False
        raise FirmwareBootError(f"the firmware failed on the emulated Cortex-M7 with a {n}-byte arena "
                                f"(harness code {b.rc}, qemu exit {b.exit_code}): {b.tail()}",
                                "report the model: only a too-small arena may fail here")

    # each probe is a QEMU boot: the bisection starts from the last size that failed while doubling
    exact = smallest_working(works, max(16, min(int(start), capacity)), capacity)
    if exact is None:
        raise FirmwareBootError(f"the model does not run on the emulated Cortex-M7 even with a {capacity:,}-byte "
                                f"arena: {boots[-1]['failed']}", "use a smaller model or profile")
    used = next(b["used"] for b in boots if b["arena"] == exact and b["ok"])
    return exact, {"method": SEARCH_METHOD, "boots": len(boots), "seconds": round(time.perf_counter() - t0, 2),
                "below_exact_failed": any(b["arena"] == exact - 1 and not b["ok"] for b in boots),
                "arena_used_bytes_at_exact": used, "probes": boots}
