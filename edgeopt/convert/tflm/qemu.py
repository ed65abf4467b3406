"""The generated firmware on an emulated Cortex-M7: link it against the target TFLM library, boot it on
``qemu-system-arm -M mps2-an500`` with semihosting, read what it prints; and its ``arm-none-eabi-size`` figures.

The image is the bundle's own ``main.cc`` (``-DEDGEOPT_NO_MAIN``), ``model_data.cc`` and ``op_resolver.h``, plus the
driver ``firmware/tflm/qemu_main.cc`` (arguments through semihosting, timer-0 ticks, outputs as hex lines) and
the source's ``extras/mps2_an500_vectors.S`` (vector table at 0x0, reset to newlib/rdimon ``_start``, faults exit
QEMU), compiled with TFLM's own flags for the target and linked with ``libtensorflow-microlite.a``.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.convert.tflm.codegen import TEMPLATE_DIR
from edgeopt.convert.tflm.target_lib import TflmLibrary
from edgeopt.errors import FirmwareBootError, FirmwareBuildError

DRIVER = TEMPLATE_DIR / "qemu_main.cc"
MACHINE = "mps2-an500"
PLATFORM = ("qemu-system-arm -M mps2-an500 (Cortex-M7, soft-float ABI as TFLM's cortex_m_qemu target builds it), "
            "TFLM with CMSIS-NN kernels")
ICOUNT_SHIFT = 0  # 2**0 ns of virtual time per instruction
TIMER_HZ = 25_000_000  # MPS2 APB timer clock
INSTRUCTIONS_PER_TICK = 1e9 / TIMER_HZ / 2 ** ICOUNT_SHIFT
BOOT_TIMEOUT_S = 60.0
_RC_RE = re.compile(r"^EDGEOPT rc=(-?\d+) arena=(\d+) used=(\d+)")
_OUT_RE = re.compile(r"^EDGEOPT out (\d+) (\d+) ([0-9a-f]*)$")
_SECTION_RE = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+[0-9a-f]+\s+(\S+)")


@dataclass
class Boot:
    """One boot: QEMU's exit code, the harness's return code and arena use, outputs and timer ticks per input."""

    exit_code: int
    rc: int | None
    arena: int | None
    used: int | None
    outputs: list[bytes] = field(default_factory=list)
    ticks: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def tail(self, n: int = 3) -> str:
        return " | ".join(ln for ln in self.lines[-n:] if ln.strip())[:400]


def link(lib: TflmLibrary, sources: Path, elf: Path) -> Path:
    """Compile the bundle in ``sources`` + the QEMU driver + the vector table and link ``elf`` against ``lib``."""
    fl = lib.flags
    gxx = ["arm-none-eabi-g++", *fl.cxxflags, fl.opt, *fl.includes, f"-I{sources}"]
    with tempfile.TemporaryDirectory(prefix="edgeopt-fw-") as tmp:
        objs: list[str] = []
        units: list[tuple[list[str], Path]] = [
            ([*gxx, "-DEDGEOPT_NO_MAIN"], sources / "main.cc"), (gxx, sources / "model_data.cc"), (gxx, DRIVER),
            (["arm-none-eabi-gcc", *fl.ccflags], fl.vectors)]
        for cmd, src in units:
            obj = Path(tmp) / (src.stem + ".o")
            _run([*cmd, "-c", str(src), "-o", str(obj)], f"compiling {src.name}")
            objs.append(str(obj))
        elf.parent.mkdir(parents=True, exist_ok=True)
        part = elf.with_name(elf.name + ".part")
        _run(["arm-none-eabi-g++", *fl.cxxflags, "-o", str(part), *objs, str(lib.archive), *fl.ldflags, *fl.libs,
              "-Wl,--section-start=.vectors=0x0", "-Wl,-u,__vectors"], "linking the firmware")
        part.replace(elf)
    return elf


def boot(elf: Path, args: list[str] | None = None, *, cwd: Path | None = None, icount: bool = False,
         timeout: float = BOOT_TIMEOUT_S) -> Boot:
    """Boot ``elf`` on MPS2-AN500 with ``args`` as its argv (semihosting); parse the driver's lines."""
    argv = ",".join("arg=" + a.replace(",", ",,") for a in ["firmware", *(args or [])])
    cmd = ["qemu-system-arm", "-M", MACHINE, "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", f"enable=on,target=native,{argv}", "-kernel", str(elf)]
    if icount:
        cmd[1:1] = ["-icount", f"shift={ICOUNT_SHIFT},align=off,sleep=off"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise FirmwareBootError(f"the firmware did not finish within {timeout:.0f} s on qemu-system-arm -M {MACHINE}",
                                "report the model: TFLM hung on the emulated Cortex-M7") from exc
    text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    b = Boot(exit_code=proc.returncode, rc=None, arena=None, used=None, lines=text.splitlines(),
             seconds=time.perf_counter() - t0)
    for line in b.lines:
        if m := _RC_RE.match(line):
            b.rc, b.arena, b.used = int(m[1]), int(m[2]), int(m[3])
        elif m := _OUT_RE.match(line):
            b.ticks.append(int(m[2]))
            b.outputs.append(bytes.fromhex(m[3]))
    return b


def elf_size(elf: Path, arena_bytes: int) -> dict[str, Any]:
    """``arm-none-eabi-size`` of the linked image: flash = text + data, RAM = data + bss (the arena is in bss)."""
    berkeley = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(v) for v in berkeley.strip().splitlines()[-1].split()[:3])
    return {"tool": "arm-none-eabi-size", "text": text, "data": data, "bss": bss,
            "flash_bytes": text + data, "ram_bytes": data + bss, "arena_bytes": arena_bytes,
            "ram_without_arena_bytes": data + bss - arena_bytes,
            "includes": "the bundle's main.cc, model_data.cc, op_resolver.h kernels, TFLM, newlib + semihosting "
                        "(rdimon) and edgeopt's QEMU driver; not stack or heap"}


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()] or proc.stderr.splitlines() or ["?"]
        raise FirmwareBuildError(f"{what} for the Cortex-M7 target failed: {lines[0].strip()[:300]}",
                                 "report the model: the generated sources do not build against TFLM")
