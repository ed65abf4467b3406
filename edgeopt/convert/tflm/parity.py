"""TFLM vs LiteRT on the same model and eval inputs: integer outputs must agree within one quantisation step,
float outputs within 1e-4 of the largest value; a disagreement beyond that is a ``ConversionError``.
``compare()`` also sets the emulated target's outputs against the host's."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.convert.tflm.runtime import run_tflm
from edgeopt.errors import ConversionError


def litert_outputs(model: bytes, inputs_q: np.ndarray) -> np.ndarray:
    """LiteRT's output for each (quantised, batch-1) input, stacked."""
    from edgeopt.analyze.tflite import interpreter

    it = interpreter(model)
    it.allocate_tensors()
    idx_in, idx_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    outs = []
    for x in inputs_q:
        it.set_tensor(idx_in, x)
        it.invoke()
        outs.append(it.get_tensor(idx_out).copy())
    return np.stack(outs)


def compare(got: np.ndarray, ref: np.ndarray, out_dtype: str, against: str) -> dict[str, Any]:
    """``got`` vs ``ref`` (N samples each). Integer outputs: in quantisation steps (tolerance 1)."""
    n = len(ref)
    a, b = np.asarray(got).astype(np.float64).reshape(n, -1), np.asarray(ref).astype(np.float64).reshape(n, -1)
    diff = np.abs(a - b)
    res: dict[str, Any] = {"samples": int(n), "compared_with": against, "values": int(diff.size),
                           "output_dtype": out_dtype, "identical": bool((diff == 0).all())}
    if np.dtype(out_dtype).kind in "iu":
        res.update({"unit": "quantisation steps", "tolerance_steps": 1,
                    "max_step_diff": int(diff.max()) if diff.size else 0,
                    "values_differing": int((diff > 0).sum()),
                    "values_beyond_tolerance": int((diff > 1).sum()),
                    "samples_differing": int((diff > 0).any(axis=1).sum()),
                    "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))) if n else 1.0})
    else:
        tol = 1e-4 * max(1.0, float(np.abs(b).max()) if b.size else 1.0)
        res.update({"unit": "float", "tolerance": tol, "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                    "values_differing": int((diff > 0).sum()),
                    "values_beyond_tolerance": int((diff > tol).sum())})
    res["ok"] = res["values_beyond_tolerance"] == 0
    return res


def check_parity(model: bytes, arena: int, eval_q: np.ndarray | None, out_io: dict[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """The manifest's ``parity`` section (not checked without eval inputs); disagreement -> ``ConversionError``.
    With it the host outputs on ``eval_q`` (``{"tflm", "litert"}``, stacked; None without eval inputs), which the
    target run compares its own with."""
    outputs = None
    if eval_q is not None and len(eval_q):
        tflm_out, _ = run_tflm(model, arena, eval_q)
        outputs = {"tflm": np.stack(tflm_out), "litert": litert_outputs(model, eval_q)}
        par = compare(outputs["tflm"], outputs["litert"], out_io["dtype"], "litert")
    else:
        par = {"samples": 0, "ok": None, "reason": "no eval inputs given"}
    if par.get("ok") is False:
        worst = par.get("max_step_diff", par.get("max_abs_diff"))
        raise ConversionError(f"TensorFlow Lite Micro and LiteRT disagree on {par['values_beyond_tolerance']} output "
                              f"values of {par['samples']} samples (max difference {worst} {par['unit']})",
                              "report the model: a kernel differs beyond one quantisation step")
    return par, outputs
