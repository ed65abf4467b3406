"""A .tflite model -> a TensorFlow Lite Micro firmware bundle with the exact tensor-arena size.

``build_firmware()`` is the pass the build pipeline calls for targets whose runtimes include ``tflite-micro``:

1. reads the flatbuffer, maps every op to its ``MicroMutableOpResolver::Add…()`` call (an op TFLM lacks is a
   ``ConversionError`` naming it; float16 weights or hybrid dynamic-range ops are a ``QuantizationError``);
2. finds the exact arena by bisection with the real TFLite Micro interpreter (``tflite-micro`` package): the smallest
   size with which ``AllocateTensors()`` and ``Invoke()`` on the sample both succeed; reads the head/tail breakdown
   from ``print_allocations()``; adds a stated margin; puts the static estimate of
   ``edgeopt.analyze.memory_plan`` next to it;
3. checks the target's flash (model + sample arrays + a stated code-size allowance) and RAM (arena +
   ``runtime_overhead_bytes``) budgets (``BudgetError`` says by how much);
4. compares TFLM with LiteRT on the eval inputs (within one quantisation step);
5. writes ``model_data.h``, ``model_data.cc``, ``op_resolver.h``, ``main.cc``, ``README.md`` and ``manifest.json``
   (atomic writes) from the templates in ``firmware/tflm/``;
6. where ``arm-none-eabi-g++`` exists, compiles ``model_data.cc`` for Cortex-M7 and reports its section sizes, and
   syntax-checks ``main.cc`` + ``op_resolver.h`` against stub declarations of the TFLM API.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgeopt import __version__
from edgeopt.analyze import memory_plan
from edgeopt.artifacts.files import atomic_write_bytes, sha256_bytes
from edgeopt.config import Target
from edgeopt.paths import shipped
from edgeopt.errors import BudgetError, ConversionError, EdgeoptError, QuantizationError

TEMPLATE_DIR = shipped("firmware") / "tflm"
STUB_DIR = TEMPLATE_DIR / "stubs"
FILES = ("model_data.h", "model_data.cc", "op_resolver.h", "main.cc", "README.md", "manifest.json")

# Stated allowances (documented in docs/tflm.md and in the bundle's README).
CODE_SIZE_OVERHEAD_BYTES = 128 * 1024  # flash for TFLM interpreter + kernels + harness (-Os), not measured here
MARGIN_FRACTION = 0.10
MARGIN_MIN_BYTES = 1024
MARGIN_RULE = f"max({int(MARGIN_FRACTION * 100)}% of exact, {MARGIN_MIN_BYTES} B), rounded up to 16 B"
MAX_ARENA_BYTES = 256 * 1024 * 1024
CM7_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16", "-Os", "-std=c++17",
             "-fno-exceptions", "-fno-rtti", "-ffunction-sections", "-fdata-sections"]

# TFLite builtin operator name -> tflite::MicroMutableOpResolver method (upstream micro_mutable_op_resolver.h).
RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce", "CAST": "AddCast", "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D", "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "ELU": "AddElu", "EQUAL": "AddEqual", "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D", "MIRROR_PAD": "AddMirrorPad", "MEAN": "AddMean", "MINIMUM": "AddMinimum",
    "MUL": "AddMul", "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad",
    "PADV2": "AddPadV2", "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable",
    "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu", "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound",
    "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub",
    "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE_CONV": "AddTransposeConv",
    "TRANSPOSE": "AddTranspose", "UNPACK": "AddUnpack",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
    # custom ops TFLM registers under a name
    "CUSTOM:TFLite_Detection_PostProcess": "AddDetectionPostprocess", "CUSTOM:CIRCULAR_BUFFER": "AddCircularBuffer",
    "CUSTOM:ethos-u": "AddEthosU",
}

_CTYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "float32": "float"}


# ------------------------------------------------------------------------------------------------------------
# ops


def resolver_ops(graph: memory_plan.Graph) -> list[dict[str, Any]]:
    """The model's distinct ops in first-use order with their resolver method; unsupported -> ConversionError."""
    counts: dict[str, int] = {}
    for op in graph.ops:
        counts[op.name] = counts.get(op.name, 0) + 1
    missing = [name for name in counts if name not in RESOLVER_METHODS]
    if missing:
        names = ", ".join(m.removeprefix("CUSTOM:") + (" (custom op)" if m.startswith("CUSTOM:") else "")
                          for m in missing)
        raise ConversionError(
            f"TensorFlow Lite Micro has no kernel for {names}: MicroMutableOpResolver cannot register "
            f"{'it' if len(missing) == 1 else 'them'}",
            "replace the layer with one TFLM supports (see docs/tflm.md for the op list) or target a Linux device")
    return [{"op": name, "method": RESOLVER_METHODS[name], "count": n} for name, n in counts.items()]


def check_quantization(graph: memory_plan.Graph) -> None:
    """TFLM runs int8/int16 and float32 models; not float16 weights, not hybrid (dynamic-range) ops."""
    for t in graph.tensors:
        if t.dtype == "float16":
            raise QuantizationError(f"tensor '{t.name}' is float16: TensorFlow Lite Micro has no float16 kernels",
                                    "use --profile int8 (or fp32) for a microcontroller target")
    weighted = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL",
                "UNIDIRECTIONAL_SEQUENCE_LSTM", "SVDF", "EMBEDDING_LOOKUP"}
    for op in graph.ops:
        ins = [graph.tensors[i] for i in op.inputs if i >= 0]
        if op.name in weighted and ins and ins[0].dtype == "float32" and any(
                t.constant and t.dtype in ("int8", "uint8", "int4") for t in ins[1:]):
            raise QuantizationError(
                f"op {op.index} ({op.name}) is hybrid (float activations, int8 weights): TensorFlow Lite Micro "
                "does not run dynamic-range models", "use --profile int8 (full integer) for a microcontroller target")


# ------------------------------------------------------------------------------------------------------------
# the real TFLM interpreter


@contextlib.contextmanager
def capture_native_output() -> Iterator[list[str]]:
    """Capture what C/C++ code writes to fds 1 and 2 (TFLM's MicroPrintf) into ``box[0]`` after the block."""
    libc = ctypes.CDLL(None)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    libc.fflush(None)
    saved = (os.dup(1), os.dup(2))
    box: list[str] = []
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield box
        finally:
            libc.fflush(None)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            box.append(sink.read().decode("utf-8", "replace"))


def tflm_version() -> str:
    try:
        return md.version("tflite-micro")
    except md.PackageNotFoundError:
        return "missing"


def _interpreter(model: bytes, arena: int) -> Any:
    try:
        from tflite_micro import runtime
    except ImportError as exc:  # pragma: no cover - the package is pinned in requirements.txt
        raise ConversionError("the tflite-micro package is not installed",
                              "pip install tflite-micro (pinned in requirements.txt)") from exc
    return runtime.Interpreter.from_bytes(model, arena_size=arena)


def try_arena(model: bytes, arena: int, sample_q: np.ndarray) -> tuple[bool, str]:
    """Does the real TFLM interpreter allocate AND run the model with an ``arena``-byte arena? (ok, TFLM's log)"""
    with capture_native_output() as log:
        try:
            it = _interpreter(model, arena)
            it.set_input(sample_q, 0)
            it.invoke()
            ok = True
        except (RuntimeError, ValueError):
            ok = False
    return ok, log[0] if log else ""


def find_exact_arena(model: bytes, sample_q: np.ndarray, start: int = 4096) -> tuple[int, dict[str, Any]]:
    """Smallest arena (bytes) that allocates and runs: doubling, then bisection on [fails, works]."""
    hi, probes = max(int(start), 64), 0
    while True:
        ok, log = try_arena(model, hi, sample_q)
        probes += 1
        if ok:
            break
        if hi >= MAX_ARENA_BYTES:
            raise ConversionError(f"TensorFlow Lite Micro cannot run the model even with a {hi >> 20} MiB arena: "
                                  f"{_first_tflm_error(log)}", "check the model's ops and types in docs/tflm.md")
        hi = min(hi * 2, MAX_ARENA_BYTES)
    lo = 0  # assumed to fail
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, _ = try_arena(model, mid, sample_q)
        probes += 1
        if ok:
            hi = mid
        else:
            lo = mid
    return hi, {"probes": probes}


def _first_tflm_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in lines:
        if "Didn't find op" in ln or "not supported" in ln.lower() or "failed" in ln.lower():
            return ln[:300]
    return (lines[0][:300] if lines else "no message from TFLM")


_ALLOC_RE = re.compile(r"\[RecordingMicroAllocator\] Arena allocation (total|head|tail) (\d+) bytes")
_CAT_RE = re.compile(r"\[RecordingMicroAllocator\] '([^']+)' used (\d+) bytes with alignment overhead "
                     r"\(requested (\d+) bytes for (\d+) ")


def parse_allocations(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, n in _ALLOC_RE.findall(text):
        out[f"{kind}_bytes"] = int(n)
    cats = {name: {"bytes": int(used), "requested": int(req), "count": int(cnt)}
            for name, used, req, cnt in _CAT_RE.findall(text)}
    if cats:
        out["tail_categories"] = cats
    return out


def run_tflm(model: bytes, arena: int, inputs_q: np.ndarray, *, allocations: bool = False
             ) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Outputs of the real TFLM interpreter for each input (batch-1 samples), and optionally its allocations."""
    outs: list[np.ndarray] = []
    with capture_native_output() as log:
        try:
            it = _interpreter(model, arena)
            for x in inputs_q:
                it.set_input(np.ascontiguousarray(x), 0)
                it.invoke()
                outs.append(np.array(it.get_output(0)))
            if allocations:
                it.print_allocations()
        except (RuntimeError, ValueError) as exc:
            err: Exception | None = exc
        else:
            err = None
    text = log[0] if log else ""
    if err is not None:
        raise ConversionError(f"TensorFlow Lite Micro failed to run the model with a {arena}-byte arena: "
                              f"{_first_tflm_error(text) if text.strip() else err}")
    return outs, (parse_allocations(text) if allocations else {})


# ------------------------------------------------------------------------------------------------------------
# helpers


def _align(n: int, a: int = 16) -> int:
    return (int(n) + a - 1) // a * a


def margin_for(exact: int) -> int:
    return _align(max(MARGIN_MIN_BYTES, int(np.ceil(MARGIN_FRACTION * exact))))


def _io_details(graph: memory_plan.Graph, model: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    from edgeopt.analyze.tflite import interpreter, tensor_io

    it = interpreter(model)
    ins, outs = it.get_input_details(), it.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise ConversionError(f"the TFLM harness handles models with one input and one output; this one has "
                              f"{len(ins)} inputs and {len(outs)} outputs",
                              "export a single-input, single-output model for the microcontroller build")
    return tensor_io(ins[0]), tensor_io(outs[0])


def _quantize(x: np.ndarray, io: dict[str, Any]) -> np.ndarray:
    from edgeopt.analyze.evaluate import quantize

    shape = io["shape"]
    arr = np.asarray(x)
    if arr.size != int(np.prod(shape)):
        raise ConversionError(f"sample input has {arr.size} values, the model input {shape} takes "
                              f"{int(np.prod(shape))}", "pass one sample shaped like the model input")
    return quantize(arr.reshape(shape).astype(np.float32) if arr.dtype.kind == "f" else arr.reshape(shape),
                    io["dtype"], io["quantization"])


def _c_array(values: np.ndarray, per_line: int, fmt: Callable[[Any], str]) -> str:
    flat = list(values.reshape(-1))
    lines = []
    for i in range(0, len(flat), per_line):
        lines.append("  " + ", ".join(fmt(v) for v in flat[i:i + per_line]) + ",")
    return "\n".join(lines)


def _fmt_value(dtype: str) -> Callable[[Any], str]:
    if dtype == "float32":
        return lambda v: f"{float(v)!r}f" if np.isfinite(v) else "0.0f"
    return lambda v: str(int(v))


def _render(name: str, values: dict[str, Any]) -> str:
    text = (TEMPLATE_DIR / name).read_text(encoding="utf-8")
    for key, val in values.items():
        text = text.replace("{{" + key + "}}", str(val))
    left = re.findall(r"\{\{([A-Z0-9_]+)\}\}", text)
    if left:  # a template/code mismatch is a bug here, not a user error
        raise RuntimeError(f"{name}: unfilled template fields {left}")
    return text


def _io_desc(io: dict[str, Any]) -> str:
    q = io.get("quantization")
    qtext = f", scale {q['scale'][0]:.9g}, zero point {q['zero_point'][0]}" if q and q.get("scale") else ""
    return f"{io['dtype']} {io['shape']}{qtext}"


# ------------------------------------------------------------------------------------------------------------
# parity


def parity(model: bytes, arena: int, inputs: np.ndarray, in_io: dict[str, Any], out_io: dict[str, Any]
           ) -> dict[str, Any]:
    """TFLM vs LiteRT on the same model and inputs. Integer outputs: in quantisation steps (goal: <= 1)."""
    from edgeopt.analyze.tflite import interpreter

    xq = np.stack([_quantize(x, in_io) for x in inputs])
    tflm_out, _ = run_tflm(model, arena, xq)
    it = interpreter(model)
    it.allocate_tensors()
    idx_in, idx_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    lite_out = []
    for x in xq:
        it.set_tensor(idx_in, x)
        it.invoke()
        lite_out.append(it.get_tensor(idx_out).copy())
    a = np.stack(tflm_out).astype(np.float64)
    b = np.stack(lite_out).astype(np.float64)
    diff = np.abs(a - b)
    integer = np.dtype(out_io["dtype"]).kind in "iu"
    res: dict[str, Any] = {"samples": int(len(inputs)), "compared_with": "litert", "values": int(diff.size),
                           "output_dtype": out_io["dtype"]}
    if integer:
        res.update({"unit": "quantisation steps", "tolerance_steps": 1,
                    "max_step_diff": int(diff.max()) if diff.size else 0,
                    "values_differing": int((diff > 0).sum()),
                    "values_beyond_tolerance": int((diff > 1).sum()),
                    "samples_differing": int((diff.reshape(len(inputs), -1) > 0).any(axis=1).sum()),
                    "top1_agreement": float(np.mean(a.reshape(len(inputs), -1).argmax(1)
                                                    == b.reshape(len(inputs), -1).argmax(1)))})
        res["ok"] = res["values_beyond_tolerance"] == 0
    else:
        tol = 1e-4 * max(1.0, float(np.abs(b).max()) if b.size else 1.0)
        res.update({"unit": "float", "tolerance": tol, "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                    "values_beyond_tolerance": int((diff > tol).sum())})
        res["ok"] = res["values_beyond_tolerance"] == 0
    return res


# ------------------------------------------------------------------------------------------------------------
# compile checks


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
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit() and int(parts[1]) > 0:
            out[parts[0]] = int(parts[1])
    return out


# ------------------------------------------------------------------------------------------------------------
# the pass


def check_budget(target: Target, flash_needed: int, flash_detail: str, ram_needed: int, ram_detail: str
                 ) -> dict[str, Any]:
    mem = target.memory
    res: dict[str, Any] = {
        "flash": {"needed_bytes": flash_needed, "budget_bytes": mem.flash_bytes, "detail": flash_detail},
        "ram": {"needed_bytes": ram_needed, "budget_bytes": mem.ram_bytes, "detail": ram_detail},
    }
    for kind in ("flash", "ram"):
        budget = res[kind]["budget_bytes"]
        res[kind]["headroom_bytes"] = None if budget is None else budget - res[kind]["needed_bytes"]
        res[kind]["ok"] = budget is None or res[kind]["needed_bytes"] <= budget
    for kind in ("flash", "ram"):
        r = res[kind]
        if not r["ok"]:
            over = r["needed_bytes"] - r["budget_bytes"]
            label = "RAM" if kind == "ram" else "flash"
            raise BudgetError(
                f"{target.name}: the firmware needs {r['needed_bytes']:,} B of {label} "
                f"({r['detail']}) but the target has {r['budget_bytes']:,} B: {over:,} B ({over / 1024:.1f} KiB) "
                "over budget",
                "use a smaller profile (e.g. int8 instead of fp32), a smaller model, or a target with more memory")
    return res


def analyse(model: bytes, target: Target, sample_input: np.ndarray, eval_inputs: np.ndarray | None, *,
            code_overhead_bytes: int = CODE_SIZE_OVERHEAD_BYTES) -> dict[str, Any]:
    """Everything except writing files: ops, exact arena, estimate, budgets, parity. Raises typed errors."""
    try:
        graph = memory_plan.read_graph(model)
    except Exception as exc:  # noqa: BLE001 - a broken flatbuffer
        raise ConversionError(f"cannot read the TFLite flatbuffer: {exc}") from exc
    ops = resolver_ops(graph)
    check_quantization(graph)
    in_io, out_io = _io_details(graph, model)
    if in_io["dtype"] not in _CTYPES or out_io["dtype"] not in _CTYPES:
        raise QuantizationError(f"model input/output types {in_io['dtype']}/{out_io['dtype']} are not supported "
                                "by the firmware harness", "use --profile int8 (int8 input and output)")
    sample_q = _quantize(sample_input, in_io)

    static = memory_plan.estimate(model)
    exact, search = find_exact_arena(model, sample_q, start=max(4096, 2 * static["total_bytes"]))
    outs, allocs = run_tflm(model, exact, sample_q[None], allocations=True)
    expected = outs[0]
    recommended = _align(exact + margin_for(exact))
    margin = recommended - exact

    sample_bytes = int(sample_q.nbytes + expected.nbytes)
    flash_needed = len(model) + sample_bytes + code_overhead_bytes
    ram_needed = recommended + target.memory.runtime_overhead_bytes
    budget = check_budget(
        target, flash_needed,
        f"model {len(model):,} + sample arrays {sample_bytes:,} + TFLM code allowance {code_overhead_bytes:,}",
        ram_needed, f"arena {recommended:,} + runtime overhead {target.memory.runtime_overhead_bytes:,}")

    par = parity(model, recommended, eval_inputs, in_io, out_io) if eval_inputs is not None and len(eval_inputs) \
        else {"samples": 0, "ok": None, "reason": "no eval inputs given"}
    if par.get("ok") is False:
        worst = par.get("max_step_diff", par.get("max_abs_diff"))
        raise ConversionError(f"TensorFlow Lite Micro and LiteRT disagree on {par['values_beyond_tolerance']} output "
                              f"values of {par['samples']} samples (max difference {worst} {par['unit']})",
                              "report the model: a kernel differs beyond one quantisation step")

    exact_head = allocs.get("head_bytes")
    exact_total = allocs.get("total_bytes")
    est = dict(static)
    est["vs_exact"] = {
        "total_diff_bytes": static["total_bytes"] - exact,
        "total_ratio": round(static["total_bytes"] / exact, 4),
        "head_diff_bytes": None if exact_head is None else static["head_bytes"] - exact_head,
        "head_ratio": None if not exact_head else round(static["head_bytes"] / exact_head, 4),
    }
    return {
        "graph": graph, "ops": ops, "in_io": in_io, "out_io": out_io, "sample_q": sample_q, "expected": expected,
        "summary": {
            "runtime": "tflite-micro", "tflm_version": tflm_version(),
            "model_bytes": len(model), "model_sha256": sha256_bytes(model),
            "input": in_io, "output": out_io,
            "ops": [{k: o[k] for k in ("op", "count", "method")} for o in ops],
            "arena": {
                "exact_bytes": exact,
                "exact_means": "smallest arena with which the real TFLite Micro interpreter (64-bit host build, "
                               "reference kernels) ran AllocateTensors() and Invoke() on the sample",
                "search": {"method": "doubling then bisection, 1-byte resolution", **search},
                "margin_bytes": margin, "margin_rule": MARGIN_RULE, "recommended_bytes": recommended,
                "head_bytes": exact_head, "tail_bytes": allocs.get("tail_bytes"),
                "recorded_total_bytes": exact_total,
                "tail_categories": allocs.get("tail_categories", {}),
            },
            "static_estimate": est,
            "budget": budget,
            "code_size_allowance_bytes": code_overhead_bytes,
            "parity": par,
        },
    }


def build_firmware(tflite_path: Path, target: Target, out_dir: Path, *, sample_input: np.ndarray,
                   eval_inputs: np.ndarray | None, code_overhead_bytes: int = CODE_SIZE_OVERHEAD_BYTES,
                   compile: bool = True) -> dict[str, Any]:
    """Write the TFLM firmware bundle for ``tflite_path`` into ``out_dir``; return the manifest's ``tflm`` section.

    ``sample_input``: one float sample (as the float model takes it; quantised here as the model input takes it).
    ``eval_inputs``: N float samples for the TFLM-vs-LiteRT parity check, or None.
    """
    tflite_path, out_dir = Path(tflite_path), Path(out_dir)
    model = tflite_path.read_bytes()
    a = analyse(model, target, sample_input, eval_inputs, code_overhead_bytes=code_overhead_bytes)
    s = a["summary"]
    in_io, out_io = a["in_io"], a["out_io"]
    integer_out = np.dtype(out_io["dtype"]).kind in "iu"
    if integer_out:
        tol, tol_desc, scale = 1, "1 quantisation step: optimised kernels may round differently", 1
    else:
        tol = max(1e-5, 1e-4 * float(np.abs(a["expected"]).max()))
        tol_desc, scale = "1e-4 of the largest expected value", 1_000_000
    sha = s["model_sha256"]
    common = {"EDGEOPT_VERSION": __version__, "MODEL_SHA256": sha}
    files: dict[str, str] = {
        "model_data.h": _render("model_data.h.in", {
            **common, "TFLM_VERSION": f"tflite-micro {s['tflm_version']}", "MARGIN_RULE": MARGIN_RULE,
            "ARENA_EXACT": s["arena"]["exact_bytes"], "ARENA_RECOMMENDED": s["arena"]["recommended_bytes"],
            "MODEL_SHA256_PREFIX": sha[:12], "INPUT_DESC": _io_desc(in_io), "OUTPUT_DESC": _io_desc(out_io),
            "INPUT_CTYPE": _CTYPES[in_io["dtype"]], "OUTPUT_CTYPE": _CTYPES[out_io["dtype"]],
            "INPUT_ELEMENTS": int(a["sample_q"].size), "OUTPUT_ELEMENTS": int(a["expected"].size),
            "TOLERANCE_DESC": tol_desc, "OUTPUT_TOLERANCE": repr(float(tol)), "DIFF_PRINT_SCALE": scale}),
        "model_data.cc": _render("model_data.cc.in", {
            **common, "MODEL_LEN": len(model),
            "MODEL_BYTES": _c_array(np.frombuffer(model, dtype=np.uint8), 16, lambda v: f"0x{int(v):02x}"),
            "SAMPLE_INPUT": _c_array(a["sample_q"], 16, _fmt_value(in_io["dtype"])),
            "EXPECTED_OUTPUT": _c_array(a["expected"], 16, _fmt_value(out_io["dtype"]))}),
        "op_resolver.h": _render("op_resolver.h.in", {
            **common, "NUM_OPS": len(a["ops"]),
            "ADD_CALLS": "\n".join(f"  if (resolver.{o['method']}() != kTfLiteOk) return kTfLiteError;  "
                                   f"// {o['op']} x{o['count']}" for o in a["ops"])}),
        "main.cc": (TEMPLATE_DIR / "main.cc").read_text(encoding="utf-8"),
    }
    files["README.md"] = _render("README.md.in", _readme_values(s, target, common))
    for name, text in files.items():
        atomic_write_bytes(out_dir / name, text.encode())
    s["compile"] = compile_check(out_dir) if compile else {"skipped": "compile=False"}
    s["files"] = {name: {"sha256": sha256_bytes(text.encode()), "bytes": len(text.encode())}
                  for name, text in files.items()}
    atomic_write_bytes(out_dir / "manifest.json", (json.dumps({"schema": 1, "tflm": s}, indent=2) + "\n").encode())
    return s


def _readme_values(s: dict[str, Any], target: Target, common: dict[str, Any]) -> dict[str, Any]:
    ar, est, b = s["arena"], s["static_estimate"], s["budget"]
    par = s["parity"]
    if par.get("samples"):
        if par["unit"] == "quantisation steps":
            ptext = (f"{par['samples']} eval samples: {par['values_differing']} of {par['values']} output values "
                     f"differ from LiteRT, max {par['max_step_diff']} step(s) (tolerance 1)")
        else:
            ptext = f"{par['samples']} eval samples: max |TFLM - LiteRT| = {par['max_abs_diff']:.3g}"
    else:
        ptext = "not checked (no eval inputs)"

    def budget_line(kind: str) -> str:
        r = b[kind]
        if r["budget_bytes"] is None:
            return f"{r['needed_bytes']:,} B needed ({r['detail']}); the target states no {kind} budget"
        return f"{r['needed_bytes']:,} of {r['budget_bytes']:,} B ({r['detail']}); headroom {r['headroom_bytes']:,} B"

    return {
        **common, "TARGET": target.name, "TFLM_VERSION": s["tflm_version"], "MODEL_BYTES": f"{s['model_bytes']:,}",
        "ARENA_EXACT": f"{ar['exact_bytes']:,}", "ARENA_RECOMMENDED": f"{ar['recommended_bytes']:,}",
        "ARENA_MARGIN": f"{ar['margin_bytes']:,}", "MARGIN_RULE": MARGIN_RULE,
        "ARENA_HEAD": f"{ar['head_bytes']:,}" if ar["head_bytes"] is not None else "?",
        "ARENA_TAIL": f"{ar['tail_bytes']:,}" if ar["tail_bytes"] is not None else "?",
        "ESTIMATE": f"{est['total_bytes']:,}", "ESTIMATE_RATIO": f"{est['vs_exact']['total_ratio']:.3f}",
        "OPS": ", ".join(f"{o['op']} ({o['method']})" for o in s["ops"]), "NUM_OPS": len(s["ops"]),
        "INPUT": _io_desc(s["input"]), "OUTPUT": _io_desc(s["output"]),
        "FLASH_LINE": budget_line("flash"), "RAM_LINE": budget_line("ram"), "PARITY": ptext,
        "CODE_ALLOWANCE": f"{s['code_size_allowance_bytes']:,}",
    }
