"""TensorFlow Lite Micro built for the Cortex-M7 target: ``libtensorflow-microlite.a`` and the flags to use it.

TFLM's own Makefile does the work (``TARGET=cortex_m_qemu TARGET_ARCH=cortex-m7 OPTIMIZED_KERNEL_DIR=cmsis_nn``,
Debian's ``arm-none-eabi-gcc``), in the cached copy of the source (``target_src.unpacked()``), with its output in
``cache_root()/tflm/lib-<key>/``; the key hashes the source's content, the make arguments and the compiler. A cold
build takes minutes (~460 s on 2 cores) and reports progress lines through the caller's ``progress`` callback
(the build pipeline's notes); it runs once per key, under a file lock,
staged in ``lib-<key>.partial/`` (an interrupted build resumes there) and renamed into place when complete.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.artifacts.files import atomic_write_bytes, file_lock
from edgeopt.convert.tflm.target_src import MAKEFILE, VECTORS, TflmSource, unpacked
from edgeopt.errors import FirmwareBuildError
from edgeopt.paths import cache_root

MAKE_ARGS = ("TARGET=cortex_m_qemu", "TARGET_ARCH=cortex-m7", "OPTIMIZED_KERNEL_DIR=cmsis_nn")
FLAG_VARS = ("CXXFLAGS", "CCFLAGS", "INCLUDES", "LDFLAGS", "MICROLITE_LIBS", "CORE_OPTIMIZATION_LEVEL", "GENDIR")
TOOLS = ("make", "arm-none-eabi-g++", "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
LAYOUT_VERSION = 1  # bump when what a lib-<key> directory holds changes
PROGRESS_EVERY_S = 20.0


@dataclass(frozen=True)
class TflmFlags:
    """How TFLM compiles for the target: flags from its Makefile, include paths made absolute."""

    key: str
    tree: Path
    vectors: Path
    cxxflags: tuple[str, ...]
    ccflags: tuple[str, ...]
    includes: tuple[str, ...]
    ldflags: tuple[str, ...]
    libs: tuple[str, ...]
    opt: str


@dataclass(frozen=True)
class TflmLibrary:
    """The built library with its flags; ``cached`` says whether this call found it built."""

    flags: TflmFlags
    archive: Path
    info: dict[str, Any]
    cached: bool
    seconds: float


def missing_tools() -> list[str]:
    """The tools of the target build that are not on PATH (scripts/system-deps.sh installs them)."""
    return [t for t in TOOLS if shutil.which(t) is None]


def make_env() -> dict[str, str]:
    """TFLM's Makefile runs ``python3`` with numpy and Pillow while parsing: this interpreter's bin goes first."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def build_key(src: TflmSource) -> str:
    facts = {"src": src.sha256, "make": MAKE_ARGS, "gcc": first_line(["arm-none-eabi-g++", "--version"]),
             "layout": LAYOUT_VERSION}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def first_line(cmd: list[str]) -> str:
    """The first line ``cmd`` prints (a tool's ``--version``), asked once per process."""
    return _first_line(tuple(cmd))


@functools.lru_cache(maxsize=32)
def _first_line(cmd: tuple[str, ...]) -> str:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return cmd[0]


def make_cmd(gendir_base: Path, *targets: str, jobs: int = 1) -> list[str]:
    return ["make", f"-j{jobs}", "-f", str(MAKEFILE), *MAKE_ARGS, f"BASE_GENDIR={gendir_base}", *targets]


def flags(src: TflmSource) -> TflmFlags:
    """TFLM's compile flags for the target (``make print-…``, ~3 s once, then read from the cache)."""
    root = unpacked(src)
    tree = root / "tflite-micro"
    key = build_key(src)
    cached = cache_root() / "tflm" / f"flags-{key}.json"
    if cached.is_file():
        raw = json.loads(cached.read_text())
    else:
        with _lock(key):
            scratch = cache_root() / "tflm" / f"flags-{key}.gen"
            proc = subprocess.run(make_cmd(scratch, *(f"print-{v}" for v in FLAG_VARS)), cwd=tree,
                                  capture_output=True, text=True, env=make_env(), timeout=600)
            shutil.rmtree(scratch, ignore_errors=True)
            raw = {line.split("=", 1)[0]: line.split("=", 1)[1].split() for line in proc.stdout.splitlines()
                   if "=" in line and line.split("=", 1)[0] in FLAG_VARS}
            if proc.returncode != 0 or "CXXFLAGS" not in raw:
                raise FirmwareBuildError(f"TFLM's Makefile did not report its flags: {_last_error(proc.stderr)}",
                                         "check the TFLM source and the toolchain (scripts/system-deps.sh)")
            raw["INCLUDES"] = [i for i in raw["INCLUDES"] if str(scratch) not in i]  # generated test data
            atomic_write_bytes(cached, json.dumps(raw, indent=1).encode())
    includes = tuple(f"-I{(tree / i[2:]).resolve()}" for i in raw["INCLUDES"] if i.startswith("-I"))
    return TflmFlags(key=key, tree=tree, vectors=root / VECTORS, cxxflags=tuple(raw["CXXFLAGS"]),
                     ccflags=tuple(raw["CCFLAGS"]), includes=includes, ldflags=tuple(raw["LDFLAGS"]),
                     libs=tuple(raw["MICROLITE_LIBS"]), opt=(raw.get("CORE_OPTIMIZATION_LEVEL") or ["-Os"])[0])


def library(src: TflmSource, progress: Callable[[str], None] | None = None) -> TflmLibrary:
    """``libtensorflow-microlite.a`` for the target, built on first use (minutes) and cached by content;
    ``progress`` gets the build's progress lines (default: none reported)."""
    say = progress or _quiet
    t0 = time.perf_counter()
    fl = flags(src)
    final = cache_root() / "tflm" / f"lib-{fl.key}"
    if not (final / "build.json").is_file():
        with _lock(fl.key):
            if not (final / "build.json").is_file():
                _build(fl, final, say)
            cached = False
    else:
        cached = True
    info = json.loads((final / "build.json").read_text())
    return TflmLibrary(fl, final / "libtensorflow-microlite.a", info, cached, time.perf_counter() - t0)


def _build(fl: TflmFlags, final: Path, say: Callable[[str], None]) -> None:
    partial = final.with_name(final.name + ".partial")  # fixed name: an interrupted build resumes here
    gen = partial / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    listing = subprocess.run(make_cmd(gen, "list_library_sources", "list_third_party_sources"), cwd=fl.tree,
                             capture_output=True, text=True, env=make_env(), timeout=600).stdout
    total = sum(1 for w in listing.split() if w.endswith((".cc", ".c", ".S")))
    jobs = os.cpu_count() or 1
    say(f"building TensorFlow Lite Micro for cortex-m7 (CMSIS-NN) with {jobs} jobs, once for this source: "
        f"~{total} files, several minutes; cached in {final}")
    t0 = time.perf_counter()
    log = partial / "build.log"
    with log.open("w") as out:
        proc = subprocess.Popen(make_cmd(gen, "microlite", jobs=jobs), cwd=fl.tree, stdout=out,
                                stderr=subprocess.STDOUT, env=make_env())
        while True:
            try:
                proc.wait(timeout=PROGRESS_EVERY_S)
                break
            except subprocess.TimeoutExpired:
                done = sum(1 for _ in gen.rglob("*.o"))
                say(f"building TFLM: {done}/{total} objects, {time.perf_counter() - t0:.0f} s")
    seconds = time.perf_counter() - t0
    archives = list(gen.rglob("libtensorflow-microlite.a"))
    if proc.returncode != 0 or not archives:
        raise FirmwareBuildError(f"building libtensorflow-microlite.a failed: {_last_error(log.read_text())} "
                                 f"(log: {log})", "check the toolchain (scripts/system-deps.sh) and the TFLM source")
    objects = sum(1 for _ in gen.rglob("*.o"))
    archives[0].rename(partial / "libtensorflow-microlite.a")
    shutil.rmtree(gen)
    info = {"make_args": list(MAKE_ARGS), "compiler": first_line(["arm-none-eabi-g++", "--version"]),
            "build_seconds": round(seconds, 1), "jobs": jobs, "objects": objects,
            "archive_bytes": (partial / "libtensorflow-microlite.a").stat().st_size,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_bytes(partial / "build.json", json.dumps(info, indent=1).encode())
    partial.rename(final)
    say(f"built TFLM in {seconds:.0f} s ({objects} objects): {final}")


@contextmanager
def _lock(key: str) -> Iterator[None]:
    with file_lock(cache_root() / "tflm" / f"lib-{key}.lock"):
        yield


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if "error" in ln.lower()]
    return ((errs or lines or ["no output"])[0])[:300]


def _quiet(message: str) -> None:
    """No progress reported: library code does not print (edgeopt.cli does, through the pipeline's notes)."""
