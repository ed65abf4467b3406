"""The bundle run on the emulated Cortex-M7: the target's exact arena, the outputs, the image size.

With a TFLM source (``target_src``) and the toolchain (``scripts/system-deps.sh``): build or reuse the target
library (``target_lib``), link the bundle's code with a large arena and find the exact arena by bisection over
boots (``target_arena``), link the bundle as it will be written (``kTensorArenaSize`` = target exact + margin),
boot it once as is (its own check on the embedded sample) and once on the eval inputs under ``-icount``, compare
those outputs with the host TFLM's and LiteRT's, and measure the image with ``arm-none-eabi-size``. Without a
source or tools, the sections say why nothing was measured and the build goes on with the host figures.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.convert.tflm.arena import arena_section
from edgeopt.convert.tflm.codegen import render_code
from edgeopt.convert.tflm.parity import compare, litert_outputs
from edgeopt.convert.tflm.qemu import ICOUNT_SHIFT, INSTRUCTIONS_PER_TICK, PLATFORM, Boot, boot, elf_size, link
from edgeopt.convert.tflm.runtime import run_tflm
from edgeopt.convert.tflm.target_arena import TARGET_EXACT_MEANS, find_target_arena, probe_capacity
from edgeopt.convert.tflm.target_lib import TflmFlags, TflmLibrary, library, missing_tools
from edgeopt.convert.tflm.target_src import find_source, missing_reason
from edgeopt.errors import FirmwareBootError

BOARD_RAM = 4 * 1024 * 1024  # MPS2-AN500 SSRAM1 at 0x0: the image, its data, heap and stack all live there
CODE_ROOM = 512 * 1024  # TFLM, newlib, the harness, heap and stack
ICOUNT_NOTE = ("QEMU -icount instruction count per Invoke(), read through the MPS2 APB timer: a relative cost "
               "between artifacts on this emulator, not cycles and not a latency")


def not_run(reason: str) -> dict[str, Any]:
    return {"measured": False, "reason": reason}


def run_on_target(model: bytes, analysis: dict[str, Any], progress: Callable[[str], None] | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any], TflmFlags | None]:
    """(the manifest's ``arena.target``, its ``target_run``, TFLM's flags for the target); the first two
    ``{"measured": False, "reason"}`` and no flags when skipped. ``progress`` gets the library build's progress
    lines. The host outputs on the eval inputs are ``analysis["host_eval_outputs"]`` when ``analyse()`` has them."""
    src = find_source()
    if src is None:
        return not_run(missing_reason()), not_run(missing_reason()), None
    missing = missing_tools()
    if missing:
        reason = f"{', '.join(missing)} not found: run scripts/system-deps.sh (Debian/Ubuntu)"
        return not_run(reason), not_run(reason), None
    host = analysis["host_arena"]
    capacity = probe_capacity(host["exact_bytes"])
    if len(model) + capacity + CODE_ROOM > BOARD_RAM:
        reason = (f"a {len(model):,}-byte model with its arena does not fit the emulated board's {BOARD_RAM >> 20} MiB "
                  "(MPS2-AN500 SSRAM1 holds code, model and RAM)")
        return not_run(reason), not_run(reason), None
    t0 = time.perf_counter()
    lib = library(src, progress)
    with tempfile.TemporaryDirectory(prefix="edgeopt-tflm-target-") as tmp:
        work = Path(tmp)
        probe_arena = {"basis": "probe", "exact_bytes": host["exact_bytes"], "recommended_bytes": capacity,
                       "exact_means": "(arena search image: sizes come from its arguments)", "host": host,
                       "target": not_run("being measured")}
        probe_elf = link(lib, write_code(work / "probe", render_code(model, analysis, probe_arena)),
                         work / "probe.elf")
        exact, search = find_target_arena(boot_with(probe_elf), host["exact_bytes"], capacity)
        target = {"measured": True, "exact_bytes": exact, "exact_means": TARGET_EXACT_MEANS, "search": search}
        arena = arena_section(host, target)
        code = render_code(model, analysis, arena)
        elf = link(lib, write_code(work / "final", code), work / "firmware.elf")
        own = boot(elf)
        if own.rc != 0:
            raise FirmwareBootError(f"the bundle's harness failed on the emulated Cortex-M7 with kTensorArenaSize "
                                    f"{arena['recommended_bytes']:,} (code {own.rc}): {own.tail()}",
                                    "report the model: the target arena search and the bundle disagree")
        outputs = eval_run(elf, work, analysis)
        size = elf_size(elf, arena["recommended_bytes"])
    run = {
        "measured": True, "platform": PLATFORM, "tflm_source": src.describe(), "library": describe(lib),
        "self_check": {"rc": own.rc, "arena_bytes": own.arena, "arena_used_bytes": own.used,
                       # the harness's board timings (allocate_us, invoke_us) mean nothing on an emulator: left out
                       "lines": [ln for ln in own.lines if ln.startswith("edgeopt:") and "_us=" not in ln]},
        **outputs, "size": size, "boots": search["boots"] + 2,
        "sources_sha256": {name: hashlib.sha256(text.encode()).hexdigest() for name, text in code.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return target, run, lib.flags


def write_code(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        atomic_write_bytes(directory / name, text.encode())
    return directory


def eval_run(elf: Path, work: Path, analysis: dict[str, Any]) -> dict[str, Any]:
    """Boot on the eval inputs (or the sample) under ``-icount``; compare with host TFLM and LiteRT (their outputs
    on the eval inputs from ``analysis["host_eval_outputs"]``, computed by the parity check, else computed here)."""
    model_inputs = analysis["eval_q"] if analysis.get("eval_q") is not None else analysis["sample_q"][None]
    known = analysis.get("host_eval_outputs") if analysis.get("eval_q") is not None else None
    xq = np.ascontiguousarray(model_inputs, dtype=analysis["in_io"]["dtype"])
    (work / "inputs.bin").write_bytes(xq.tobytes())
    b = boot(elf, ["inputs=inputs.bin", f"count={len(xq)}"], cwd=work, icount=True)
    if b.rc != 0 or len(b.outputs) != len(xq):
        raise FirmwareBootError(f"the firmware ran {len(b.outputs)} of {len(xq)} eval inputs on the emulated "
                                f"Cortex-M7 (code {b.rc}): {b.tail()}", "report the model")
    out_dtype = analysis["out_io"]["dtype"]
    got = np.stack([np.frombuffer(o, dtype=out_dtype) for o in b.outputs])
    if known is not None:
        host, litert = known["tflm"], known["litert"]
    else:
        host, litert = (np.stack(run_tflm(model_bytes(analysis), analysis["host_arena"]["exact_bytes"], xq)[0]),
                        litert_outputs(model_bytes(analysis), xq))
    vs_host = compare(got, host, out_dtype, "tflite-micro on the build host")
    if not vs_host["ok"]:
        raise FirmwareBootError(f"the emulated Cortex-M7 and host TFLM disagree on {vs_host['values_beyond_tolerance']}"
                                f" output values beyond tolerance", "report the model: a CMSIS-NN kernel differs")
    instructions = [t * INSTRUCTIONS_PER_TICK for t in b.ticks]
    return {
        "outputs": {"samples": len(xq), "vs_host_tflm": vs_host,
                    "vs_litert": compare(got, litert, out_dtype, "litert")},
        "qemu_icount": {"unit": "instructions", "icount_shift": ICOUNT_SHIFT,
                        "resolution_instructions": int(INSTRUCTIONS_PER_TICK),
                        "instructions_median": int(statistics.median(instructions)),
                        "instructions_min": int(min(instructions)), "instructions_max": int(max(instructions)),
                        "note": ICOUNT_NOTE},
        "eval_boot_seconds": round(b.seconds, 3),
    }


def model_bytes(analysis: dict[str, Any]) -> bytes:
    return bytes(analysis["model"])


def describe(lib: TflmLibrary) -> dict[str, Any]:
    return {"key": lib.flags.key, "archive": str(lib.archive), "archive_bytes": lib.info.get("archive_bytes"),
            "cached": lib.cached, "seconds": round(lib.seconds, 2), "cold_build_seconds": lib.info.get("build_seconds"),
            "make_args": lib.info.get("make_args"), "compiler": lib.info.get("compiler")}


def boot_with(elf: Path) -> Callable[[int], Boot]:
    """One boot of ``elf`` per arena size (its ``arena=N`` argument)."""
    return lambda n: boot(elf, [f"arena={n}"])
