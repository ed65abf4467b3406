"""The bundle's sources from the templates in ``firmware/tflm/``: ``model_data.h``, ``model_data.cc`` (the model,
the sample input and its expected output as C arrays), ``op_resolver.h`` (the ``Add…()`` calls), ``main.cc`` (copied
as is) and ``README.md`` (the numbers of the manifest's ``tflm`` section in prose)."""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from edgeopt import __version__
from edgeopt.config import Target
from edgeopt.convert.tflm.arena import MARGIN_RULE
from edgeopt.paths import shipped

TEMPLATE_DIR = shipped("firmware") / "tflm"
FILES = ("model_data.h", "model_data.cc", "op_resolver.h", "main.cc", "README.md", "manifest.json")

# model input/output dtype -> the C type the harness declares for it
C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "float32": "float"}


def render_sources(model: bytes, analysis: dict[str, Any], target: Target) -> dict[str, str]:
    """File name -> text of every bundle file but ``manifest.json``, from the result of ``analyse()``."""
    files = render_code(model, analysis, analysis["summary"]["arena"])
    files["README.md"] = render_readme(analysis["summary"], target)
    return files


def render_code(model: bytes, analysis: dict[str, Any], arena: dict[str, Any]) -> dict[str, str]:
    """``model_data.h``, ``model_data.cc``, ``op_resolver.h`` and ``main.cc`` with ``kTensorArenaSize`` =
    ``arena["recommended_bytes"]`` (``exact_bytes``, ``basis``, ``exact_means`` and ``other`` go into comments)."""
    s = analysis["summary"]
    in_io, out_io = analysis["in_io"], analysis["out_io"]
    integer_out = np.dtype(out_io["dtype"]).kind in "iu"
    tol: float
    if integer_out:
        tol, tol_desc, scale = 1, "1 quantisation step: optimised kernels may round differently", 1
    else:
        tol = max(1e-5, 1e-4 * float(np.abs(analysis["expected"]).max()))
        tol_desc, scale = "1e-4 of the largest expected value", 1_000_000
    sha = s["model_sha256"]
    common = {"EDGEOPT_VERSION": __version__, "MODEL_SHA256": sha}
    return {
        "model_data.h": _render("model_data.h.in", {
            **common, "MARGIN_RULE": MARGIN_RULE, "ARENA_EXACT_MEANS": arena["exact_means"],
            "ARENA_OTHER_FIGURES": _other_figures(arena), "ARENA_BASIS": arena["basis"],
            "ARENA_EXACT": arena["exact_bytes"], "ARENA_RECOMMENDED": arena["recommended_bytes"],
            "MODEL_SHA256_PREFIX": sha[:12], "INPUT_DESC": _io_desc(in_io), "OUTPUT_DESC": _io_desc(out_io),
            "INPUT_CTYPE": C_TYPES[in_io["dtype"]], "OUTPUT_CTYPE": C_TYPES[out_io["dtype"]],
            "INPUT_ELEMENTS": int(analysis["sample_q"].size), "OUTPUT_ELEMENTS": int(analysis["expected"].size),
            "TOLERANCE_DESC": tol_desc, "OUTPUT_TOLERANCE": repr(float(tol)), "DIFF_PRINT_SCALE": scale}),
        "model_data.cc": _render("model_data.cc.in", {
            **common, "MODEL_LEN": len(model),
            "MODEL_BYTES": _c_array(np.frombuffer(model, dtype=np.uint8), 16, lambda v: f"0x{int(v):02x}"),
            "SAMPLE_INPUT": _c_array(analysis["sample_q"], 16, _fmt_value(in_io["dtype"])),
            "EXPECTED_OUTPUT": _c_array(analysis["expected"], 16, _fmt_value(out_io["dtype"]))}),
        "op_resolver.h": _render("op_resolver.h.in", {
            **common, "NUM_OPS": len(analysis["ops"]),
            "ADD_CALLS": "\n".join(f"  if (resolver.{o['method']}() != kTfLiteOk) return kTfLiteError;  "
                                   f"// {o['op']} x{o['count']}" for o in analysis["ops"])}),
        "main.cc": (TEMPLATE_DIR / "main.cc").read_text(encoding="utf-8"),
    }


def _other_figures(arena: dict[str, Any]) -> str:
    host, tgt = arena["host"], arena["target"]
    t = (f"{tgt['exact_bytes']} B on the emulated Cortex-M7 (TFLM + CMSIS-NN, 32-bit)" if tgt.get("measured")
         else "not measured on the target")
    return f"Exact arena: {t}; {host['exact_bytes']} B on the build host (64-bit, reference kernels)."


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


def render_readme(s: dict[str, Any], target: Target) -> str:
    """The bundle's README.md: the figures of the manifest's ``tflm`` section in prose."""
    ar, est, b = s["arena"], s["static_estimate"], s["budget"]
    host, tgt, run = ar["host"], ar["target"], s["target_run"]
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

    if tgt.get("measured"):
        ttext = (f"**{tgt['exact_bytes']:,} B exact** on the emulated Cortex-M7 ({tgt['search']['boots']} boots of "
                 f"this harness on QEMU, one arena size each; {tgt['exact_bytes'] - 1:,} B fails)")
        out = run["outputs"]
        vs_host, vs_lite = out["vs_host_tflm"], out["vs_litert"]
        lite_max = vs_lite.get("max_step_diff", vs_lite.get("max_abs_diff"))
        sz = run["size"]
        rtext = (f"booted on `qemu-system-arm -M mps2-an500`: {vs_host['samples']} eval inputs, "
                 f"{vs_host['output_dtype']} outputs "
                 f"{'bit-identical to' if vs_host['identical'] else 'NOT identical to'} host TFLM "
                 f"({vs_host['values_differing']} of {vs_host['values']} values differ); vs LiteRT "
                 f"{vs_lite['values_differing']} differ, max {lite_max}"
                 f". Image (arm-none-eabi-size, incl. edgeopt's QEMU driver and semihosting): text {sz['text']:,}, "
                 f"data {sz['data']:,}, bss {sz['bss']:,} B (arena {sz['arena_bytes']:,} of it). QEMU instruction "
                 f"count per inference ~{run['qemu_icount']['instructions_median']:,} (a relative cost, not cycles)")
    else:
        ttext = f"not measured ({tgt['reason']})"
        rtext = f"not run ({run['reason']})"
    return _render("README.md.in", {
        "EDGEOPT_VERSION": __version__, "MODEL_SHA256": s["model_sha256"], "TARGET": target.name,
        "TFLM_VERSION": s["tflm_version"], "MODEL_BYTES": f"{s['model_bytes']:,}",
        "ARENA_BASIS": "the target's" if ar["basis"] == "target" else "the build host's",
        "ARENA_EXACT": f"{ar['exact_bytes']:,}", "ARENA_RECOMMENDED": f"{ar['recommended_bytes']:,}",
        "ARENA_MARGIN": f"{ar['margin_bytes']:,}", "MARGIN_RULE": MARGIN_RULE, "TARGET_ARENA": ttext,
        "HOST_ARENA": f"{host['exact_bytes']:,}",
        "ARENA_HEAD": f"{host['head_bytes']:,}" if host["head_bytes"] is not None else "?",
        "ARENA_TAIL": f"{host['tail_bytes']:,}" if host["tail_bytes"] is not None else "?",
        "ESTIMATE": f"{est['total_bytes']:,}", "ESTIMATE_RATIO": f"{est['vs_exact']['total_ratio']:.3f}",
        "OPS": ", ".join(f"{o['op']} ({o['method']})" for o in s["ops"]), "NUM_OPS": len(s["ops"]),
        "INPUT": _io_desc(s["input"]), "OUTPUT": _io_desc(s["output"]), "TARGET_RUN": rtext,
        "FLASH_LINE": budget_line("flash"), "RAM_LINE": budget_line("ram"), "PARITY": ptext,
    })
