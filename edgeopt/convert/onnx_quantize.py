"""ONNX -> quantised ONNX with ONNX Runtime: static (QDQ/QOperator, calibrated), dynamic, or float16.

Before static or dynamic quantisation the model is prepared (``prepare_onnx``): initializers listed as graph
inputs are dropped, the opset is raised to 13 when lower (``onnx_opset.upgrade_opset``, checked against the
original on calibration samples), unnamed nodes get stable names, and ONNX Runtime's ``quant_pre_process``
runs (shape inference + basic graph optimisations). That optimiser fuses nodes: a fused node keeps the name of
the first node of the chain (Conv+BatchNormalization keeps the Conv's name) and the fused-away nodes vanish.
``nodes_to_exclude`` names are therefore mapped onto the prepared graph: a name still there is kept; a name that
vanished maps to the node that now produces its output tensor (BatchNormalization -> the Conv it was folded
into); a name whose output vanished too (Identity, Dropout, a mid-chain Add) had nothing left to keep in float
and is reported in the facts as ``nodes_exclude_dropped``. Names ``onnx_debug.tensor_errors`` returns are
names of the prepared graph and pass through unchanged.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.config import ONNXOptions
from edgeopt.convert.onnx_opset import clean_message, drop_initializer_inputs, graph_inputs, name_nodes, upgrade_opset
from edgeopt.errors import ConversionError, DataError, EdgeoptError, ModelError
from edgeopt.inputs.tensors import Feeds, TensorSpec, checked_feeds, head, one_sample, samples_in


class CalibrationReader:
    """ONNX Runtime CalibrationDataReader over Feeds: one sample per call, every graph input
    (batch 1 for batched inputs, a 0-d array for scalars: works for dynamic batch and dynamic H/W)."""

    def __init__(self, specs: list[TensorSpec], feeds: Mapping[str, np.ndarray]) -> None:
        self.specs, self.feeds, self.i = specs, feeds, 0
        self.n = samples_in(feeds)

    def get_next(self) -> Feeds | None:
        if self.i >= self.n:
            return None
        self.i += 1
        return one_sample(self.specs, self.feeds, self.i - 1)

    def rewind(self) -> None:
        self.i = 0

    def __iter__(self) -> CalibrationReader:
        return self

    def __next__(self) -> Feeds:
        sample = self.get_next()
        if sample is None:
            raise StopIteration
        return sample


@dataclass
class Prepared:
    """A model made ready for ORT quantisation: ``path`` (the prepared file), ``source`` (the named, upgraded
    proto before ORT's optimiser: for name mapping), ``specs`` (its inputs) and the facts of what was done."""

    path: Path
    source: Any
    specs: list[TensorSpec]
    facts: dict[str, Any] = field(default_factory=dict)


def prepare_onnx(src: Path, dst: Path, *, label: str, calibration: Mapping[str, np.ndarray] | None) -> Prepared:
    """Upgrade the opset, name nodes and run ``quant_pre_process`` into ``dst`` (see the module docstring)."""
    import onnx
    from onnxruntime.quantization import quant_pre_process

    try:
        proto = onnx.load(str(src))
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError, OSError
        raise ModelError(f"{label}: not a readable ONNX model ({clean_message(exc, label, [str(src)])})",
                         "re-export the model to ONNX") from exc
    facts: dict[str, Any] = {}
    dropped = drop_initializer_inputs(proto)
    if dropped:
        facts["initializer_inputs_dropped"] = dropped
    proto, opset_facts = upgrade_opset(proto, label=label, check=calibration)
    facts.update(opset_facts)
    named = name_nodes(proto)
    if named:
        facts["nodes_named"] = len(named)
    staged = dst.with_name(dst.stem + "-upgraded.onnx")
    onnx.save(proto, str(staged))
    quant_pre_process(str(staged), str(dst), skip_symbolic_shape=True)
    pre = onnx.load(str(dst))
    if name_nodes(pre, tag="_pre"):
        onnx.save(pre, str(dst))
    return Prepared(dst, proto, graph_inputs(pre), facts)


def map_excluded(names: Sequence[str], prepared: Prepared, label: str) -> tuple[list[str], dict[str, Any]]:
    """``names`` (of the user's graph or of the prepared one) as names of the prepared graph, and the facts."""
    import onnx

    pre = onnx.load(str(prepared.path))
    pre_names = {n.name for n in pre.graph.node}
    producer = {out: n.name for n in pre.graph.node for out in n.output}
    source = {n.name: list(n.output) for n in prepared.source.graph.node}
    unknown = [n for n in names if n not in pre_names and n not in source]
    if unknown:
        some = ", ".join(sorted(source)[:5])
        raise ConversionError(f"{label}: nodes_to_exclude names nodes the model does not have: "
                              f"{', '.join(unknown[:5])}",
                              f"use node names of the ONNX graph (e.g. {some})")
    kept: list[str] = []
    mapped: dict[str, str] = {}
    dropped: list[str] = []
    for name in names:
        target = name if name in pre_names else next((producer[o] for o in source[name] if o in producer), None)
        if target is None:
            dropped.append(name)
            continue
        if target != name:
            mapped[name] = target
        if target not in kept:
            kept.append(target)
    facts: dict[str, Any] = {"nodes_excluded": kept} if kept else {}
    if mapped:
        facts["nodes_exclude_mapped"] = mapped
    if dropped:
        facts["nodes_exclude_dropped"] = dropped
    return kept, facts


def quantize_onnx(src: Path, opts: ONNXOptions, out: Path, *,
                  calibration: Mapping[str, np.ndarray] | np.ndarray | None, calibration_samples: int,
                  nodes_to_exclude: Sequence[str] = (), model_label: str | None = None) -> dict[str, Any]:
    """Quantise ``src`` into ``out`` as ``opts`` says; returns facts for the manifest (opset change, node
    names mapped or excluded, calibration samples used). Errors name ``model_label`` (default: src's name)."""
    label = model_label or src.name
    facts: dict[str, Any] = {"quantization": opts.quantization}
    with tempfile.TemporaryDirectory(prefix="edgeopt-onnxq-") as tmp:
        dst = Path(tmp) / "model.onnx"
        try:
            if opts.quantization == "float16":
                _float16(src, dst)
            elif opts.quantization in ("static", "dynamic"):
                if opts.quantization == "static" and calibration is None:
                    raise ConversionError(f"{label}: static ONNX quantisation needs calibration data",
                                          "pass --data calib.npz")
                facts.update(_quantize(src, opts, dst, Path(tmp), label, calibration, calibration_samples,
                                       nodes_to_exclude))
            else:
                raise ValueError(opts.quantization)
        except EdgeoptError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT and onnx raise anything
            raise ConversionError(
                f"{label}: ONNX Runtime {opts.quantization} quantisation failed: "
                f"{clean_message(exc, label, [str(src), tmp])}",
                "keep the failing nodes in float (nodes_to_exclude) or build a float16 profile") from exc
        atomic_write_bytes(out, dst.read_bytes())
    return facts


def _quantize(src: Path, opts: ONNXOptions, dst: Path, tmp: Path, label: str,
              calibration: Mapping[str, np.ndarray] | np.ndarray | None, samples: int,
              exclude: Sequence[str]) -> dict[str, Any]:
    import onnx
    from onnxruntime import quantization as q

    feeds = None
    if calibration is not None:
        feeds = head(checked_feeds(calibration, graph_inputs(onnx.load(str(src))), label), samples)
        if samples_in(feeds) == 0:
            raise DataError(f"{label}: the calibration data has no samples", "give at least one sample")
    prepared = prepare_onnx(src, tmp / "pre.onnx", label=label, calibration=feeds)
    excluded, exclude_facts = map_excluded(list(exclude), prepared, label)
    facts = {**prepared.facts, **exclude_facts}
    qtype = {"int8": q.QuantType.QInt8, "uint8": q.QuantType.QUInt8}
    if opts.quantization == "dynamic":
        q.quantize_dynamic(str(prepared.path), str(dst), weight_type=qtype[opts.weight_type],
                           per_channel=opts.per_channel, reduce_range=opts.reduce_range,
                           nodes_to_exclude=excluded)
    else:
        assert feeds is not None
        q.quantize_static(
            str(prepared.path), str(dst), CalibrationReader(prepared.specs, feeds),
            quant_format=getattr(q.QuantFormat, opts.quant_format),
            per_channel=opts.per_channel, reduce_range=opts.reduce_range,
            activation_type=qtype[opts.activation_type], weight_type=qtype[opts.weight_type],
            calibrate_method=getattr(q.CalibrationMethod, opts.calibrate_method),
            nodes_to_exclude=excluded,
        )
        facts["calibration_samples"] = samples_in(feeds)
    _check_loads(dst, prepared.specs, feeds, label)
    facts["inputs"] = [s.describe() for s in prepared.specs]
    return facts


def _check_loads(path: Path, specs: list[TensorSpec], feeds: Feeds | None, label: str) -> None:
    """The quantised model must load in ONNX Runtime and run a calibration sample."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        if feeds:
            session.run(None, one_sample(specs, feeds, 0))
    except Exception as exc:  # noqa: BLE001 - InvalidGraph, Fail, NotImplemented
        raise ConversionError(f"{label}: the quantised model does not run in ONNX Runtime "
                              f"({clean_message(exc, label, [str(path)])})",
                              "keep the failing nodes in float (nodes_to_exclude) or build a float16 profile") from exc


def _float16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model: Any = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
