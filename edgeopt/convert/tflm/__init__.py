"""A .tflite model -> a TensorFlow Lite Micro firmware bundle with the exact tensor-arena size, proven on an
emulated Cortex-M7 when a TFLM source is at hand.

``build_firmware()`` is the pass the build pipeline calls for targets whose runtimes include ``tflite-micro``:

1. reads the flatbuffer, maps every op to its ``MicroMutableOpResolver::Add…()`` call (an op TFLM lacks is a
   ``ConversionError`` naming it; float16 weights or hybrid dynamic-range ops are a ``QuantizationError``);
2. finds the exact arena on the build host by bisection with the real TFLite Micro interpreter (``tflite-micro``
   package), reads its head/tail breakdown, puts the static estimate of ``edgeopt.analyze.memory_plan`` next to it,
   and compares TFLM with LiteRT on the eval inputs (within one quantisation step);
3. with a TFLM source (``$EDGEOPT_TFLM_SRC`` or the shared bundle) and the Arm toolchain + QEMU: builds TFLM for
   Cortex-M7 once (cached), finds the exact arena on the target by bisection over boots of the bundle's harness on
   ``qemu-system-arm -M mps2-an500``, boots the bundle with ``kTensorArenaSize`` = target exact + margin on the eval
   inputs and compares its outputs with the host's, and measures the image (``arm-none-eabi-size``);
4. checks the target's flash and RAM budgets (measured when linked, else with a stated code allowance;
   ``BudgetError`` says by how much);
5. writes ``model_data.h``, ``model_data.cc``, ``op_resolver.h``, ``main.cc``, ``README.md`` and ``manifest.json``
   (atomic writes) from the templates in ``firmware/tflm/``, then compile-checks them.

This module holds the orchestration (``analyse()``, ``build_firmware()``); each step lives in its own module:
``resolver``, ``model_io``, ``runtime`` (the host TFLM interpreter), ``arena`` (host arena, margin, estimate),
``parity``, ``target_src`` / ``target_lib`` / ``qemu`` / ``target_arena`` / ``target_run`` (the emulated target),
``budget``, ``codegen`` and ``compile``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeopt.artifacts.files import atomic_write_bytes, sha256_bytes
from edgeopt.config import Target
from edgeopt.convert.tflm.arena import (
    arena_section,
    estimate_vs_exact,
    find_exact_arena,
    host_arena,
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
from edgeopt.convert.tflm.target_run import not_run, run_on_target
from edgeopt.errors import BudgetError, QuantizationError

__all__ = ["BudgetError", "CM7_FLAGS", "CODE_SIZE_OVERHEAD_BYTES", "FILES", "RESOLVER_METHODS", "analyse",
           "build_firmware", "compile_check", "quantize_input", "run_tflm", "try_arena"]


def _no_note(message: str) -> None:
    """The default ``note``: progress lines go nowhere."""


def analyse(model: bytes, target: Target, sample_input: np.ndarray, eval_inputs: np.ndarray | None, *,
            code_overhead_bytes: int = CODE_SIZE_OVERHEAD_BYTES, emulate: bool = True,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Everything except writing files: ops, host and target arenas, estimate, parity, the target run, budgets.
    ``emulate=False`` skips the emulated target (host figures only); ``progress`` gets the progress lines of a
    TFLM library build. ``a["tflm_flags"]``: TFLM's flags for the target when it ran. Raises typed errors."""
    graph = read_graph(model)
    ops = resolver_ops(graph)
    check_quantization(graph)
    in_io, out_io = io_details(model)
    if in_io["dtype"] not in C_TYPES or out_io["dtype"] not in C_TYPES:
        raise QuantizationError(f"model input/output types {in_io['dtype']}/{out_io['dtype']} are not supported "
                                "by the firmware harness", "use --profile int8 (int8 input and output)")
    sample_q = quantize_input(sample_input, in_io)
    eval_q = (np.stack([quantize_input(x, in_io) for x in eval_inputs])
              if eval_inputs is not None and len(eval_inputs) else None)

    static = static_estimate(model)
    exact, search = find_exact_arena(model, sample_q, start=max(4096, 2 * static["total_bytes"]))
    outs, allocs = run_tflm(model, exact, sample_q[None], allocations=True)
    host = host_arena(exact, search, allocs)
    par, host_eval_outputs = check_parity(model, recommended_arena(exact), eval_q, out_io)
    a: dict[str, Any] = {
        "model": model, "graph": graph, "ops": ops, "in_io": in_io, "out_io": out_io, "sample_q": sample_q,
        "eval_q": eval_q, "expected": outs[0], "host_arena": host, "host_eval_outputs": host_eval_outputs,
        "tflm_flags": None,
        "summary": {
            "runtime": "tflite-micro", "tflm_version": tflm_version(),
            "model_bytes": len(model), "model_sha256": sha256_bytes(model),
            "input": in_io, "output": out_io,
            "ops": [{k: o[k] for k in ("op", "count", "method")} for o in ops],
        },
    }
    if emulate:
        tgt, run, a["tflm_flags"] = run_on_target(model, a, progress)
    else:
        tgt = run = not_run("not requested (emulate=False)")
    arena = arena_section(host, tgt)
    sample_bytes = int(sample_q.nbytes + outs[0].nbytes)
    budget = firmware_budget(target, len(model), sample_bytes, code_overhead_bytes, arena["recommended_bytes"],
                             measured=run.get("size"))
    a["summary"].update({
        "arena": arena, "static_estimate": estimate_vs_exact(static, host, tgt), "target_run": run,
        "budget": budget, "code_size_allowance_bytes": None if run.get("size") else code_overhead_bytes,
        "parity": par,
    })
    return a


def build_firmware(tflite_path: Path, target: Target, out_dir: Path, *, sample_input: np.ndarray,
                   eval_inputs: np.ndarray | None, code_overhead_bytes: int = CODE_SIZE_OVERHEAD_BYTES,
                   compile: bool = True, emulate: bool = True, note: Callable[[str], None] = _no_note
                   ) -> dict[str, Any]:
    """Write the TFLM firmware bundle for ``tflite_path`` into ``out_dir``; return the manifest's ``tflm`` section.

    ``sample_input``: one float sample (as the float model takes it; quantised here as the model input takes it).
    ``eval_inputs``: N float samples for the parity checks (host TFLM vs LiteRT; emulated target vs both), or None.
    ``emulate``: run the bundle on the emulated Cortex-M7 when a TFLM source and the tools are there.
    ``note``: gets progress lines (a TFLM library build takes minutes); nothing is printed here.
    """
    tflite_path, out_dir = Path(tflite_path), Path(out_dir)
    model = tflite_path.read_bytes()
    a = analyse(model, target, sample_input, eval_inputs, code_overhead_bytes=code_overhead_bytes, emulate=emulate,
                progress=note)
    s = a["summary"]
    files = render_sources(model, a, target)
    for name, text in files.items():
        atomic_write_bytes(out_dir / name, text.encode())
    s["compile"] = compile_check(out_dir, a["tflm_flags"]) if compile else {"skipped": "compile=False"}
    s["files"] = {name: {"sha256": sha256_bytes(text.encode()), "bytes": len(text.encode())}
                  for name, text in files.items()}
    atomic_write_bytes(out_dir / "manifest.json", (json.dumps({"schema": 1, "tflm": s}, indent=2) + "\n").encode())
    return s
