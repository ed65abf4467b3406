"""Compile checks of the generated sources: ``model_data.cc`` cross-compiled for a hard-float Cortex-M7 with
``arm-none-eabi-g++`` (section sizes from ``arm-none-eabi-size``), and ``main.cc`` + ``op_resolver.h`` compiled
(``-fsyntax-only -Wall -Wextra``) against the real TFLM headers of the TFLM source (``target_src``) with TFLM's own
flags for the target. Without the cross-compiler the first is reported as not done; without a TFLM source, the
second (the target run, when there is one, links the harness for real: see ``target_run``)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from edgeopt.convert.tflm.target_lib import TflmFlags, first_line, flags, missing_tools
from edgeopt.convert.tflm.target_src import find_source, missing_reason
from edgeopt.errors import ConversionError

CM7_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16", "-Os", "-std=c++17",
             "-fno-exceptions", "-fno-rtti", "-ffunction-sections", "-fdata-sections"]
GXX_MISSING = "arm-none-eabi-g++ not found (Debian: apt-get install gcc-arm-none-eabi libstdc++-arm-none-eabi-newlib)"


def compile_check(out_dir: Path, tflm: TflmFlags | None = None) -> dict[str, Any]:
    """Compile model_data.cc for Cortex-M7; compile main.cc/op_resolver.h against the real TFLM headers
    (``tflm``: TFLM's flags; None: from the TFLM source found, if any)."""
    gxx, size = shutil.which("arm-none-eabi-g++"), shutil.which("arm-none-eabi-size")
    res: dict[str, Any] = {}
    if not gxx or not size:
        res["model_data"] = {"compiled": False, "reason": GXX_MISSING}
        res["harness"] = {"syntax_checked": False, "reason": GXX_MISSING}
        return res
    with tempfile.TemporaryDirectory(prefix="edgeopt-tflm-cc-") as tmp:
        obj = Path(tmp) / "model_data.o"
        proc = subprocess.run([gxx, *CM7_FLAGS, "-I", str(out_dir), "-c", str(out_dir / "model_data.cc"),
                               "-o", str(obj)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise ConversionError(f"arm-none-eabi-g++ failed on model_data.cc: "
                                  f"{(proc.stderr.strip().splitlines() or ['?'])[0][:300]}")
        sections = _size_sysv(subprocess.run([size, "-A", str(obj)], capture_output=True, text=True,
                                             check=True).stdout)
        berkeley = subprocess.run([size, str(obj)], capture_output=True, text=True, check=True).stdout
    nums = berkeley.strip().splitlines()[-1].split()
    compiler = first_line([gxx, "--version"])
    res["model_data"] = {
        "compiled": True, "compiler": compiler, "flags": CM7_FLAGS, "sections": sections,
        "text": int(nums[0]), "data": int(nums[1]), "bss": int(nums[2]), "flash_bytes": int(nums[0]) + int(nums[1]),
    }
    if tflm is None:
        src = find_source()
        if src is None or "make" in missing_tools():
            res["harness"] = {"syntax_checked": False, "reason": missing_reason() if src is None else "make not found"}
            return res
        tflm = flags(src)
    proc = subprocess.run([gxx, *tflm.cxxflags, "-fsyntax-only", "-Wall", "-Wextra", "-I", str(out_dir),
                           *tflm.includes, str(out_dir / "main.cc")], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln] or proc.stderr.strip().splitlines() or ["?"]
        raise ConversionError(f"generated main.cc/op_resolver.h do not compile against the TFLM headers: "
                              f"{errors[0][:300]}", "report the model: the generated harness is wrong")
    res["harness"] = {"syntax_checked": True, "compiler": compiler,
                      "against": f"the TFLM headers of {tflm.tree} with TFLM's flags for the target",
                      "warnings": proc.stderr.count("warning:")}
    return res


def _size_sysv(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit() and int(parts[1]) > 0:
            out[parts[0]] = int(parts[1])
    return out
