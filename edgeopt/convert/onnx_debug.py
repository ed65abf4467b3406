"""Where int8 loses it: per-tensor error of a QDQ model against its float model, with ONNX Runtime's own tools.

``onnxruntime.quantization.qdq_loss_debug`` saves every float tensor of both models
(``modify_model_output_intermediate_tensors``), runs them on the same samples (``collect_activations``), pairs
each tensor before/after its QuantizeLinear/DequantizeLinear and with the float model's
(``create_activation_matching``) and gives SQNR figures in dB (``compute_activation_error``): ``xmodel_err``
(float model vs the int8 model's dequantised tensor: everything lost up to here) and ``qdq_err`` (this tensor's
own rounding). Higher is better.

A whole-tensor SQNR hides the detector trap: a Concat joining 0-640 px boxes with 0-1 scores scores ~37 dB
although every score collapsed to one value (the boxes carry the norm). So each tensor also gets its worst
slice: the SQNR (same formula as ORT's) of each index along axis 1 and along the last axis (slices of at least
16 elements per sample), the lowest one reported with its distinct value counts (float vs int8). Slices that
are exactly zero in float are skipped. Tensors are ranked by the lower of the whole-tensor ``xmodel_err`` and
the worst slice, worst first.
Shapes for the slices come from ONNX shape inference with the inputs fixed to the sample's shapes.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgeopt.convert.onnx_opset import clean_message, graph_inputs
from edgeopt.convert.onnx_quantize import CalibrationReader, prepare_onnx
from edgeopt.errors import ConversionError, EdgeoptError
from edgeopt.inputs.tensors import checked_feeds, head, one_sample, samples_in

EPS = float(np.finfo(float).eps)  # ORT's floor for both norms
MIN_SLICE = 16  # elements per sample a slice needs for its SQNR to mean something (not one logit near 0)


def tensor_errors(float_model: Path, qdq_model: Path, calibration: Mapping[str, np.ndarray] | np.ndarray,
                  samples: int, top: int = 10, *, model_label: str | None = None) -> list[dict[str, Any]]:
    """The ``top`` tensors of ``qdq_model`` (a QDQ-format output of ``quantize_onnx`` for ``float_model``) that
    lose the most, worst first, over the first ``samples`` calibration samples. JSON-safe dicts:
    ``tensor``, ``node`` ({name, op_type} of the producer in the prepared float graph, None for a graph input),
    ``xmodel_err_db``, ``qdq_err_db``, ``worst_slice`` ({axis, index, sqnr_db, distinct_float,
    distinct_int8} or None), ``rank_db``. Node names are those ``quantize_onnx(nodes_to_exclude=...)`` takes."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    label = model_label or float_model.name
    with tempfile.TemporaryDirectory(prefix="edgeopt-onnxdbg-") as tmpdir:
        tmp = Path(tmpdir)
        feeds = head(checked_feeds(calibration, graph_inputs(onnx.load(str(float_model))), label), samples)
        if samples_in(feeds) == 0:
            raise ConversionError(f"{label}: tensor_errors needs at least one calibration sample", "pass samples >= 1")
        qdq = onnx.load(str(qdq_model))
        ops = {n.op_type for n in qdq.graph.node}
        qoperator = sorted(o for o in ops if o.startswith("QLinear") or o.endswith("Integer"))
        if "DequantizeLinear" not in ops or qoperator:
            what = f"is in QOperator format ({', '.join(qoperator[:3])})" if qoperator else \
                "has no QuantizeLinear/DequantizeLinear nodes"
            raise ConversionError(f"{label}: the quantised model {what}: tensor errors need a QDQ model",
                                  "quantise with quant_format: QDQ to see where int8 loses accuracy")
        try:
            # the float graph exactly as quantize_onnx quantised it: same opset, node names and fusions
            prepared = prepare_onnx(float_model, tmp / "float.onnx", label=label, calibration=None)
            dbg.modify_model_output_intermediate_tensors(str(prepared.path), str(tmp / "float-aug.onnx"))
            dbg.modify_model_output_intermediate_tensors(str(qdq_model), str(tmp / "qdq-aug.onnx"))
            reader = CalibrationReader(prepared.specs, feeds)
            float_acts = dbg.collect_activations(str(tmp / "float-aug.onnx"), reader)
            reader.rewind()
            qdq_acts = dbg.collect_activations(str(tmp / "qdq-aug.onnx"), reader)
        except EdgeoptError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT raises anything
            raise ConversionError(f"{label}: cannot run the models to compare their tensors "
                                  f"({clean_message(exc, label, [str(float_model), str(qdq_model), tmpdir])})",
                                  "check that the quantised model was made from this float model") from exc
        matching = {k: v for k, v in dbg.create_activation_matching(qdq_acts, float_acts).items() if "float" in v}
        errors = dbg.compute_activation_error(matching)
        float_graph = onnx.load(str(prepared.path))
    producer = {o: {"name": n.name, "op_type": n.op_type} for n in float_graph.graph.node for o in n.output}
    shapes = _shapes(float_graph, one_sample(prepared.specs, feeds, 0))
    rows = []
    for name, err in errors.items():
        worst = _worst_slice(matching[name]["float"], matching[name]["post_qdq"], shapes.get(name))
        xmodel = _db(err.get("xmodel_err"))
        ranks = [v for v in (xmodel, worst["sqnr_db"] if worst else None) if v is not None]
        rows.append({"tensor": name, "node": producer.get(name), "xmodel_err_db": xmodel,
                     "qdq_err_db": _db(err.get("qdq_err")), "worst_slice": worst,
                     "rank_db": min(ranks) if ranks else None})
    rows.sort(key=lambda r: (r["rank_db"] is None, r["rank_db"] if r["rank_db"] is not None else 0.0))
    return rows[:top]


def _db(value: Any) -> float | None:
    return round(float(value), 3) if value is not None and math.isfinite(float(value)) else None


def _shapes(proto: Any, sample: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of the graph's tensors for one sample (inputs fixed to its shapes)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for value in model.graph.input:
        if value.name in sample:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for d in np.shape(sample[value.name]):
                dims.add().dim_value = int(d)
    del model.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference is best effort: slices are skipped without shapes
        return {}
    shapes = {}
    for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _worst_slice(float_runs: Any, qdq_runs: Any, shape: tuple[int, ...] | None) -> dict[str, Any] | None:
    """The lowest-SQNR index along axis 1 and along the last axis (see the module docstring)."""
    if shape is None or len(shape) < 2 or any(np.size(a) != math.prod(shape) for a in [*float_runs, *qdq_runs]):
        return None
    f = np.stack([np.reshape(a, shape) for a in float_runs]).astype(np.float64)  # (samples, *shape)
    q = np.stack([np.reshape(a, shape) for a in qdq_runs]).astype(np.float64)
    best: dict[str, Any] | None = None
    for axis in sorted({1, len(shape) - 1}):
        if math.prod(shape) // shape[axis] < MIN_SLICE:
            continue
        fs = np.moveaxis(f, axis + 1, 0).reshape(shape[axis], -1)
        qs = np.moveaxis(q, axis + 1, 0).reshape(shape[axis], -1)
        norm = np.linalg.norm(fs, axis=1)
        sqnr = 20 * np.log10(np.maximum(norm, EPS) / np.maximum(np.linalg.norm(fs - qs, axis=1), EPS))
        sqnr[norm == 0] = np.inf
        i = int(np.argmin(sqnr))
        if math.isfinite(sqnr[i]) and (best is None or sqnr[i] < best["sqnr_db"]):
            best = {"axis": axis, "index": i, "sqnr_db": round(float(sqnr[i]), 3),
                    "distinct_float": int(np.unique(fs[i]).size), "distinct_int8": int(np.unique(qs[i]).size)}
    return best
