"""Compile checks of the generated sources: ``model_data.cc`` cross-compiled for Cortex-M7 with
``arm-none-eabi-g++`` (section sizes from ``arm-none-eabi-size``), and ``main.cc`` + ``op_resolver.h``
syntax-checked against stub declarations of the TFLM API (``firmware/tflm/stubs``). Without the cross-compiler
the first is reported as not done; without any C++ compiler, the second."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from edgeopt.convert.tflm.codegen import TEMPLATE_DIR
from edgeopt.errors import ConversionError

STUB_DIR = TEMPLATE_DIR / "stubs"
CM7_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16", "-Os", "-std=c++17",
             "-fno-exceptions", "-fno-rtti", "-ffunction-sections", "-fdata-sections"]


def compile_check(out_dir: Path) -> dict[str, Any]:
    """Compile model_data.cc for Cortex-M7 and syntax-check main.cc/op_resolver.h against the TFLM stubs."""
    gxx, size = shutil.which("arm-none-eabi-g++"), shutil.which("arm-none-eabi-size")
    res: dict[str, Any] = {}
    if not gxx or not size:
        res["model_data"] = {"compiled": False,
                             "reason": "arm-none-eabi-g++ not found (Debian: apt-get install gcc-arm-none-eabi "
                                       "libstdc++-arm-none-eabi-newlib)"}
    else:
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
            res["model_data"] = {
                "compiled": True, "compiler": _first_line([gxx, "--version"]), "flags": CM7_FLAGS,
                "sections": sections,
                "text": int(nums[0]), "data": int(nums[1]), "bss": int(nums[2]),
                "flash_bytes": int(nums[0]) + int(nums[1]),
            }
    cxx = gxx or shutil.which("g++")
    if cxx:
        flags = CM7_FLAGS if cxx == gxx else ["-std=c++17", "-fno-exceptions", "-fno-rtti"]
        proc = subprocess.run([cxx, *flags, "-fsyntax-only", "-Wall", "-Wextra", "-I", str(out_dir),
                               "-I", str(STUB_DIR), str(out_dir / "main.cc")], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise ConversionError(f"generated main.cc/op_resolver.h do not compile: "
                                  f"{(proc.stderr.strip().splitlines() or ['?'])[0][:300]}")
        res["harness"] = {"syntax_checked": True, "compiler": _first_line([cxx, "--version"]),
                          "against": "edgeopt stub declarations of the TFLM API (firmware/tflm/stubs), "
                                     "not the TFLM sources: not linked", "warnings": proc.stderr.count("warning:")}
    else:
        res["harness"] = {"syntax_checked": False, "reason": "no C++ compiler found"}
    return res


def _first_line(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return cmd[0]


def _size_sysv(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit() and int(parts[1]) > 0:
            out[parts[0]] = int(parts[1])
    return out

