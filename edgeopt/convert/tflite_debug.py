"""Where int8 loses it: per-tensor quantisation error from TensorFlow's own QuantizationDebugger.

The debugger builds an int8 model with a ``NumericVerify`` op after every quantised op: the op is also run in
float on the same (dequantised) input, so each figure is the error that op alone adds. ``layer_errors`` runs it
on a few samples and ranks the tensors.

Figures per tensor. ``tensor`` is the name of the op's output tensor in the calibrated float TFLite model: the
form ``convert_tflite(..., denylisted_nodes=[...])`` takes (the debugger's own names carry a uniqueness counter,
``x:0`` -> ``x:02``, and are given as ``debug_tensor``; ``tensor`` is None if no op of the float model matches).
``op`` is the TFLite op that produces it (the form ``denylisted_ops`` takes: ``CONCATENATION``, ``MEAN``).

- ``rmse/scale``: root mean squared error over the quantisation step, the TF guide's figure: ~0.29 (1/sqrt(12))
  is plain rounding; much more means the op loses more than its step (a range clipped, a kernel's limits).
- ``sqnr_db``: signal-to-quantisation-noise ratio of that tensor, 10*log10(mean(f^2) / mean((f - q)^2)). It
  catches what rmse/scale cannot: a tensor whose scale is far too coarse for its values (class scores 0..1
  sharing a 0..640 px scale collapse to one value: error below one step, SQNR near 0 dB).
- ``under_one_step``: the share of non-zero float values smaller than one step (they round to 0 or +-1 step).
- ``mean_squared_error``, ``max_abs_error``, ``mean_error``, ``stddev``, ``num_elements`` (TF's defaults), and
  the tensor's ``scale`` and ``zero_point``.

Rows are sorted worst first: tensors with ``under_one_step >= 0.5`` (collapsed: most values below one step),
then by ``sqnr_db`` ascending (``sort_by="rmse/scale"`` etc. sort by that figure, descending).
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from edgeopt.config import TFLiteOptions
from edgeopt.convert.tflite import SIGNATURE, calibration_feeds, is_node_name, make_converter, representative
from edgeopt.errors import ConversionError
from edgeopt.inputs.model import SourceModel
from edgeopt.inputs.tensors import Feeds
from edgeopt.tf_env import native_stderr_silenced, quiet_tensorflow

SORT_KEYS = ("sqnr_db", "rmse/scale", "mean_squared_error", "under_one_step")
COLLAPSED = 0.5  # under_one_step from which a tensor counts as collapsed
_SQNR_CAP_DB = 200.0  # an exact tensor (no error at all) reports this rather than infinity


def _dequantised(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float64) - zero_point) * scale


def _signal(f: np.ndarray, q: np.ndarray, scale: float, zp: int) -> float:
    return float(np.mean(np.square(f.astype(np.float64))))


def _noise(f: np.ndarray, q: np.ndarray, scale: float, zp: int) -> float:
    return float(np.mean(np.square(f.astype(np.float64) - _dequantised(q, scale, zp))))


def _under_one_step(f: np.ndarray, q: np.ndarray, scale: float, zp: int) -> float:
    a = np.abs(f[f != 0])
    return float(np.mean(a < scale)) if a.size else 0.0


DIRECT_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, float, int], float]] = {
    "signal_power": _signal, "noise_power": _noise, "under_one_step": _under_one_step}


def layer_errors(src: SourceModel, opts: TFLiteOptions, calibration: Feeds | np.ndarray, samples: int,
                 top: int = 10, *, static_batch: bool = True, sort_by: str = "sqnr_db",
                 denylisted_nodes: Sequence[str] = (), denylisted_ops: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The ``top`` tensors that lose most under int8, worst first (JSON-safe dicts, see the module doc).

    Calibrates on the first ``samples`` samples of ``calibration`` and measures on the same samples. With a
    denylist, those nodes/ops stay float (as ``convert_tflite`` would leave them) and the rest is measured: what
    to keep in float next. Same-scale ops (RESHAPE, TRANSPOSE, CONCATENATION) pass a coarse scale on, so a
    collapse moves one node along the chain per round until the chain is float."""
    if sort_by not in SORT_KEYS:
        raise ValueError(f"sort_by must be one of {SORT_KEYS}")
    tf = quiet_tensorflow()
    feeds = calibration_feeds(src, calibration)
    quant_opts = opts.model_copy(update={"optimizations": ["default"], "representative_dataset": True})
    with native_stderr_silenced():
        converter = make_converter(src, quant_opts, calibration=feeds, calibration_samples=samples,
                                   static_batch=static_batch, io_types=False)
        try:
            denylist = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=list(denylisted_nodes) or None, denylisted_ops=list(denylisted_ops) or None)
            first = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_options=denylist)
            debug_model = first.get_debug_quantized_model()
            order = _input_order(first.calibrated_model)
            nodes = _nodes(first.calibrated_model)
        except Exception as exc:  # noqa: BLE001 - ConverterError, ValueError ...
            raise ConversionError(f"the quantisation debugger failed: {str(exc).strip().splitlines()[0][:300]}",
                                  "check the model converts with --profile int8-float-io") from exc

        def dataset() -> Iterator[list[np.ndarray]]:
            for sample in representative(src, feeds, samples):
                yield [sample[n] for n in order]

        options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics=DIRECT_METRICS)
        debugger = tf.lite.experimental.QuantizationDebugger(  # from the model: it keeps every tensor readable
            quant_debug_model_content=debug_model, debug_dataset=dataset, debug_options=options)
        debugger.run()
        text = io.StringIO()
        debugger.layer_statistics_dump(text)
    names = _tensor_names(debug_model)
    rows = [_row(r, names, nodes) for r in csv.DictReader(io.StringIO(text.getvalue()))]
    if sort_by == "sqnr_db":  # collapsed tensors first: a mixed tensor (boxes + scores) hides them in its SQNR
        rows.sort(key=lambda r: (r["under_one_step"] < COLLAPSED, r["sqnr_db"]))
    else:
        rows.sort(key=lambda r: -r[sort_by])
    return rows[:top]


def _node_name(debug_name: str, op: str, nodes: list[tuple[str, str]]) -> str | None:
    """The name of the op's output in the calibrated (float) model: the name the denylist matches. The debug
    model's names are those plus a counter that keeps them unique (``x:0`` -> ``x:02``)."""
    found = [name for kind, name in nodes if kind == op and is_node_name(name, debug_name)]
    return max(found, key=len) if found else None


def _nodes(calibrated: bytes) -> list[tuple[str, str]]:
    """(op name, output tensor name) of every op of the calibrated float model."""
    from edgeopt.analyze.tflite import graph

    _, ops, tensors = graph(calibrated)
    return [(op["op_name"], tensors[i]["name"]) for op in ops for i in op["outputs"] if i in tensors]


def _row(r: dict[str, str], names: list[str], nodes: list[tuple[str, str]]) -> dict[str, Any]:
    idx = int(r["tensor_idx"])
    scale, signal, noise = float(r["scale"]), float(r["signal_power"]), float(r["noise_power"])
    sqnr = _SQNR_CAP_DB if noise <= 0 else min(_SQNR_CAP_DB, 10 * math.log10(max(signal, 1e-30) / noise))
    mse = float(r["mean_squared_error"])
    out: dict[str, Any] = {"tensor": _node_name(names[idx], r["op_name"], nodes), "op": r["op_name"],
                           "debug_tensor": names[idx],
                           "rmse/scale": math.sqrt(mse) / scale if scale > 0 else float("inf"),
                           "sqnr_db": round(sqnr, 3), "under_one_step": float(r["under_one_step"]),
                           "mean_squared_error": mse, "max_abs_error": float(r["max_abs_error"]),
                           "mean_error": float(r["mean_error"]), "stddev": float(r["stddev"]),
                           "num_elements": int(float(r["num_elements"])), "scale": scale,
                           "zero_point": int(float(r["zero_point"]))}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def _tensor_names(model: bytes) -> list[str]:
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(model)).subgraphs[0]
    return [t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in graph.tensors]


def _input_order(calibrated: bytes) -> list[str]:
    """The signature input names in the order the model's input tensors come (the debugger feeds a list)."""
    from edgeopt.analyze.tflite import interpreter

    it = interpreter(calibrated)
    by_index = {int(d["index"]): name for name, d in
                it.get_signature_runner(SIGNATURE).get_input_details().items()}
    return [by_index[int(d["index"])] for d in it.get_input_details()]

