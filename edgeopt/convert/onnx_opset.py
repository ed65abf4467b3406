"""Make an exported ONNX graph fit for ONNX Runtime quantisation: opset upgrade, node names, graph inputs.

ONNX Runtime's per-channel static QDQ needs opset >= 13 (``DequantizeLinear`` gains ``axis`` at 13); models
exported at opset 7-12 come out of its quantiser unloadable (``INVALID_GRAPH ... DequantizeLinear``). So the
default-domain opset is raised to ``TARGET_OPSET`` (13: the lowest that works, and the one every adapter of
``onnx.version_converter`` reaches most reliably; a model already at 13 or above is left as it is). The upgraded
graph is checked: it must load in ONNX Runtime and give the same outputs as the original on calibration samples.
"""

from __future__ import annotations

import re
import tempfile
from typing import Any, Iterable, Mapping

import numpy as np

from edgeopt.errors import ConversionError
from edgeopt.inputs.tensors import TensorSpec, one_sample, samples_in

TARGET_OPSET = 13
CHECK_SAMPLES = 4  # calibration samples the upgraded model is compared on
DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(proto: Any) -> int:
    """The model's opset of the default (``ai.onnx``) domain; 1 when the model does not declare one."""
    versions = [int(o.version) for o in proto.opset_import if o.domain in DEFAULT_DOMAINS]
    return max(versions) if versions else 1


def graph_inputs(proto: Any) -> list[TensorSpec]:
    """The inputs a caller feeds (initializers listed as inputs by old exporters are not), in graph order."""
    import onnx

    inits = {i.name for i in proto.graph.initializer}
    specs = []
    for value in proto.graph.input:
        if value.name in inits:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        specs.append(TensorSpec(value.name, dims, dtype))
    return specs


def name_nodes(proto: Any, tag: str = "") -> dict[str, str]:
    """Give every unnamed (or duplicate-named) node a unique name, ``<op_type><tag>_<index>``, in place.

    ONNX Runtime's quantiser selects nodes (``nodes_to_exclude``) by name, and exporters leave names empty.
    The names are a function of the graph alone, so two runs over the same model agree. Returns
    ``{new name: op_type}`` for the nodes it named.
    """
    taken = {n.name for n in proto.graph.node if n.name}
    seen: set[str] = set()
    named: dict[str, str] = {}
    for i, node in enumerate(proto.graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.op_type}{tag}_{i}"
        name, k = base, 1
        while name in taken or name in seen:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        seen.add(name)
        taken.add(name)
        named[name] = node.op_type
    return named


def drop_initializer_inputs(proto: Any) -> int:
    """Remove initializers listed as graph inputs (IR < 4 exporters): ORT would treat those weights as
    run-time inputs and neither fold nor quantise them. Returns how many were removed."""
    inits = {i.name for i in proto.graph.initializer}
    keep = [v for v in proto.graph.input if v.name not in inits]
    removed = len(proto.graph.input) - len(keep)
    if removed:
        proto.ir_version = max(int(proto.ir_version), 4)
        del proto.graph.input[:]
        proto.graph.input.extend(keep)
    return removed


def upgrade_opset(proto: Any, *, label: str, check: Mapping[str, np.ndarray] | None,
                  target: int = TARGET_OPSET) -> tuple[Any, dict[str, Any]]:
    """``proto`` at opset >= ``target`` (a new proto when converted) and the facts of what was done.

    ``check`` (calibration feeds) is used to compare outputs before and after; without it the upgraded model
    is only loaded. Raises ConversionError naming the opset and the op when the converter cannot do it.
    """
    from onnx import version_converter

    source = default_opset(proto)
    if source >= target:
        return proto, {"opset": source}
    try:
        upgraded = version_converter.convert_version(proto, target)
    except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError/InferenceError/ValidationError
        op = culprit_op(str(exc), {n.op_type for n in proto.graph.node})
        what = f"operator {op}" if op else "one of its operators"
        raise ConversionError(
            f"{label}: cannot upgrade the model from opset {source} to {target} for int8 quantisation: "
            f"onnx.version_converter has no conversion of {what}",
            f"re-export the model at opset {target} or later (torch.onnx.export(..., opset_version={target}), "
            f"python -m tf2onnx.convert --opset {target})"
            + (f", or replace {op} with standard operators" if op else "")) from exc
    upgraded.ir_version = max(int(upgraded.ir_version), int(proto.ir_version))
    facts: dict[str, Any] = {"opset_from": source, "opset_to": target}
    facts["opset_check"] = _same_outputs(proto, upgraded, label, source, target, check)
    return upgraded, facts


def culprit_op(message: str, op_types: set[str]) -> str | None:
    """The operator an ``onnx.version_converter`` error is about, from its text.

    Seen: ``No Adapter From Version $9 for ThresholdedRelu`` and ``Op '%s' has no registered schema; cannot
    convert it from version %lld to %lld.ImageScaler713`` (the arguments are appended, not formatted)."""
    m = re.search(r"for (\w+)\s*$", message.strip())
    if m and m.group(1) in op_types:
        return m.group(1)
    hits = [op for op in op_types if op in message]
    return max(hits, key=len) if hits else None


def _same_outputs(before: Any, after: Any, label: str, source: int, target: int,
                  check: Mapping[str, np.ndarray] | None) -> str:
    new = _session(after, label, f"the model upgraded from opset {source} to {target} does not load in ONNX Runtime",
                   f"re-export the model at opset {target} or later")
    if not check or samples_in(check) == 0:
        return "loads"
    try:
        old = _session(before, label, "", "")
    except ConversionError:
        return "loads (the original does not load in ONNX Runtime: outputs not compared)"
    specs = graph_inputs(after)
    n = min(CHECK_SAMPLES, samples_in(check))
    worst = 0.0
    for i in range(n):
        feed = one_sample(specs, check, i)
        for name, a, b in zip([o.name for o in new.get_outputs()], old.run(None, feed), new.run(None, feed)):
            a, b = np.asarray(a), np.asarray(b)
            scale = float(np.max(np.abs(a))) if a.size else 0.0
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1.0), equal_nan=True):
                diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.shape == b.shape else float("nan")
                raise ConversionError(
                    f"{label}: upgrading the model from opset {source} to {target} changed output '{name}' "
                    f"(max abs difference {diff:.3g} on calibration sample {i})",
                    f"re-export the model at opset {target} or later")
            if a.size and np.issubdtype(a.dtype, np.number):
                worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
    return f"same outputs on {n} calibration samples (max abs difference {worst:.3g})"


def _session(proto: Any, label: str, message: str, hint: str) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises Fail/InvalidGraph/NotImplemented
        raise ConversionError(f"{label}: {message} ({clean_message(exc, label)})", hint) from exc


def clean_message(exc: BaseException | str, label: str, paths: Iterable[str] = (), limit: int = 300) -> str:
    """The first line of an error with ``paths`` and every temporary path in it replaced by ``label``."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    for path in sorted(paths, key=len, reverse=True):
        first = first.replace(path, label)
    tmp = re.escape(tempfile.gettempdir().rstrip("/"))
    return re.sub(tmp + r"/[^\s'\"),:]+", label, first)[:limit]
