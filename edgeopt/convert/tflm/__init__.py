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

This module holds the orchestration (``analyse()``, ``build_firmware()``); each step lives in its own module:
``resolver`` (ops -> resolver calls, supported types), ``model_io`` (graph, input/output, quantised samples),
``runtime`` (the real TFLM interpreter), ``arena`` (exact arena search, margin, static estimate), ``budget``
(flash/RAM budgets), ``parity`` (TFLM vs LiteRT), ``codegen`` (templates -> sources) and ``compile`` (compile checks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.artifacts.files import atomic_write_bytes, sha256_bytes
from edgeopt.config import Target
from edgeopt.convert.tflm.arena import (
    arena_summary,
    estimate_vs_exact,
    find_exact_arena,
    recommended_arena,
    static_estimate,
)
from edgeopt.convert.tflm.budget import CODE_SIZE_OVERHEAD_BYTES, firmware_budget
from edgeopt.convert.tflm.codegen import C_TYPES, FILES, render_sources
from edgeopt.convert.tflm.compile import CM7_FLAGS, compile_check
from edgeopt.convert.tflm.model_io import io_details, quantize_input, read_graph
from edgeopt.convert.tflm.parity import check_parity
from edgeopt.convert.tflm.resolver import RESOLVER_METHODS, check_quantization, resolver_ops
from edgeopt.convert.tflm.runtime import run_tflm, tflm_version, try_arena
from edgeopt.errors import BudgetError, QuantizationError

__all__ = ["BudgetError", "CM7_FLAGS", "CODE_SIZE_OVERHEAD_BYTES", "FILES", "RESOLVER_METHODS", "analyse",
           "build_firmware", "compile_check", "quantize_input", "run_tflm", "try_arena"]


def analyse(model: bytes, target: Target, sample_input: np.ndarray, eval_inputs: np.ndarray | None, *,
            code_overhead_bytes: int = CODE_SIZE_OVERHEAD_BYTES) -> dict[str, Any]:
    """Everything except writing files: ops, exact arena, estimate, budgets, parity. Raises typed errors."""
    graph = read_graph(model)
    ops = resolver_ops(graph)
    check_quantization(graph)
    in_io, out_io = io_details(model)
    if in_io["dtype"] not in C_TYPES or out_io["dtype"] not in C_TYPES:
        raise QuantizationError(f"model input/output types {in_io['dtype']}/{out_io['dtype']} are not supported "
                                "by the firmware harness", "use --profile int8 (int8 input and output)")
    sample_q = quantize_input(sample_input, in_io)

    static = static_estimate(model)
    exact, search = find_exact_arena(model, sample_q, start=max(4096, 2 * static["total_bytes"]))
    outs, allocs = run_tflm(model, exact, sample_q[None], allocations=True)
    expected = outs[0]
    recommended = recommended_arena(exact)

    sample_bytes = int(sample_q.nbytes + expected.nbytes)
    budget = firmware_budget(target, len(model), sample_bytes, code_overhead_bytes, recommended)
    par = check_parity(model, recommended, eval_inputs, in_io, out_io)
    return {
        "graph": graph, "ops": ops, "in_io": in_io, "out_io": out_io, "sample_q": sample_q, "expected": expected,
        "summary": {
            "runtime": "tflite-micro", "tflm_version": tflm_version(),
            "model_bytes": len(model), "model_sha256": sha256_bytes(model),
            "input": in_io, "output": out_io,
            "ops": [{k: o[k] for k in ("op", "count", "method")} for o in ops],
            "arena": arena_summary(exact, search, allocs),
            "static_estimate": estimate_vs_exact(static, exact, allocs),
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
    files = render_sources(model, a, target)
    for name, text in files.items():
        atomic_write_bytes(out_dir / name, text.encode())
    s["compile"] = compile_check(out_dir) if compile else {"skipped": "compile=False"}
    s["files"] = {name: {"sha256": sha256_bytes(text.encode()), "bytes": len(text.encode())}
                  for name, text in files.items()}
    atomic_write_bytes(out_dir / "manifest.json", (json.dumps({"schema": 1, "tflm": s}, indent=2) + "\n").encode())
    return s
