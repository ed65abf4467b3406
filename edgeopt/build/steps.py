"""The conversion chain of each format for one profile: convert, quantise (optionally mixed precision), and ask
the int8 debugger where int8 loses accuracy. Returns the facts the manifest records under ``conversion``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgeopt.build.judge import Judge
from edgeopt.config import Profile
from edgeopt.inputs.model import SourceModel
from edgeopt.inputs.tensors import Feeds

DEBUG_SAMPLES = 8  # calibration samples the int8 debuggers run (they run every layer twice)
DEBUG_TOP = 10
Timed = Callable[[str, Callable[[], Any]], Any]


@dataclass
class StepContext:
    static_batch: bool
    calib: Feeds | None
    n_cal: int
    tmp: Path
    timed: Timed
    note: Callable[[str], None]
    judge: Judge
    label: str  # the user's model file, for messages


def debug_or_error(fn: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The int8 debugger's worst tensors; a debugger that fails is recorded, never fails the build (the
    artifact and its quality verdict stand on their own)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - ConversionError or whatever the debugger raised
        return [{"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}]


def tflite_step(ctx: StepContext, src: SourceModel, profile: Profile, out: Path) -> dict[str, Any]:
    from edgeopt.convert.tflite import convert_tflite

    def convert(layers: list[str], path: Path) -> dict[str, Any]:
        facts: dict[str, Any] = convert_tflite(src, profile.tflite, path, calibration=ctx.calib,
                                               calibration_samples=ctx.n_cal, static_batch=ctx.static_batch,
                                               denylisted_nodes=layers)
        return facts

    def worst(layers: list[str], top: int) -> list[dict[str, Any]]:
        from edgeopt.convert.tflite_debug import layer_errors

        assert ctx.calib is not None
        return layer_errors(src, profile.tflite, ctx.calib, samples=min(DEBUG_SAMPLES, ctx.n_cal), top=top,
                            denylisted_nodes=layers)

    facts: dict[str, Any] = {}
    mp = profile.mixed_precision
    if mp is not None and ctx.calib is not None:
        from edgeopt.build.mixed_precision import search

        facts["mixed_precision"] = ctx.timed("tflite-int8-auto", lambda: search(
            convert, lambda p: ctx.judge.quality(p, "tflite", profile),
            lambda layers: [r["tensor"] for r in worst(layers, mp.candidates) if r.get("tensor")],
            out, ctx.tmp, target=mp.target, max_float=mp.max_float_layers, note=ctx.note))
    else:
        facts.update(ctx.timed("tflite", lambda: convert([], out)) or {})
    if profile.tflite.representative_dataset and ctx.calib is not None:
        kept = facts.get("mixed_precision", {}).get("float_layers", [])
        facts["worst_tensors"] = ctx.timed("tflite-int8-debug", lambda: debug_or_error(
            lambda: worst(kept, DEBUG_TOP)))
    facts.pop("path", None)
    return facts


def onnx_step(ctx: StepContext, src: SourceModel, profile: Profile, out: Path) -> dict[str, Any]:
    from edgeopt.convert.simplify import simplify_onnx

    if src.kind == "onnx":
        raw = src.path
    else:
        from edgeopt.convert.onnx_export import export_onnx

        raw = ctx.timed("onnx-export", lambda: export_onnx(src, ctx.tmp / f"{profile.name}-raw.onnx",
                                                           static_batch=ctx.static_batch))
    quantised = profile.onnx.quantization != "none"
    simplified = out if not quantised else ctx.tmp / f"{profile.name}-simplified.onnx"
    ctx.timed("onnx-simplify", lambda: simplify_onnx(raw, simplified,
                                                     static_batch=ctx.static_batch and src.kind == "onnx",
                                                     inputs=src.inputs))
    if not quantised:
        return {}
    from edgeopt.convert.onnx_quantize import quantize_onnx

    made: dict[tuple[str, ...], Path] = {}

    def convert(layers: list[str], path: Path) -> dict[str, Any]:
        facts: dict[str, Any] = quantize_onnx(simplified, profile.onnx, path, calibration=ctx.calib,
                                              calibration_samples=ctx.n_cal, nodes_to_exclude=layers,
                                              model_label=ctx.label)
        made[tuple(layers)] = path
        return facts

    def worst(layers: list[str], top: int) -> list[dict[str, Any]]:
        from edgeopt.convert.onnx_debug import tensor_errors

        assert ctx.calib is not None
        return tensor_errors(simplified, made[tuple(layers)], ctx.calib, samples=min(DEBUG_SAMPLES, ctx.n_cal),
                             top=top, model_label=ctx.label)

    debuggable = profile.onnx.quantization == "static" and profile.onnx.quant_format == "QDQ" and ctx.calib is not None
    mp = profile.mixed_precision
    facts: dict[str, Any] = {}
    if mp is not None and debuggable:
        from edgeopt.build.mixed_precision import search

        facts["mixed_precision"] = ctx.timed(f"onnx-{profile.onnx.quantization}-auto", lambda: search(
            convert, lambda p: ctx.judge.quality(p, "onnx", profile),
            lambda layers: [r["node"]["name"] for r in worst(layers, mp.candidates) if r.get("node")],
            out, ctx.tmp, target=mp.target, max_float=mp.max_float_layers, note=ctx.note))
        made[tuple(facts["mixed_precision"]["float_layers"])] = out
    else:
        facts.update(ctx.timed(f"onnx-{profile.onnx.quantization}", lambda: convert([], out)))
    if debuggable:
        kept = facts.get("mixed_precision", {}).get("float_layers", [])
        facts["worst_tensors"] = ctx.timed("onnx-int8-debug", lambda: debug_or_error(lambda: worst(kept, DEBUG_TOP)))
    return facts
