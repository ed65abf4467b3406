"""TFLM vs LiteRT on the same model and eval inputs: integer outputs must agree within one quantisation step,
float outputs within 1e-4 of the largest value; a disagreement beyond that is a ``ConversionError``."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.convert.tflm.model_io import quantize_input
from edgeopt.convert.tflm.runtime import run_tflm
from edgeopt.errors import ConversionError


def compare_with_litert(model: bytes, arena: int, inputs: np.ndarray, in_io: dict[str, Any],
                        out_io: dict[str, Any]) -> dict[str, Any]:
    """TFLM vs LiteRT on the same model and inputs. Integer outputs: in quantisation steps (goal: <= 1)."""
    from edgeopt.analyze.tflite import interpreter

    xq = np.stack([quantize_input(x, in_io) for x in inputs])
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


def check_parity(model: bytes, arena: int, eval_inputs: np.ndarray | None, in_io: dict[str, Any],
                 out_io: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``parity`` section (not checked without eval inputs); disagreement -> ``ConversionError``."""
    if eval_inputs is not None and len(eval_inputs):
        par = compare_with_litert(model, arena, eval_inputs, in_io, out_io)
    else:
        par = {"samples": 0, "ok": None, "reason": "no eval inputs given"}
    if par.get("ok") is False:
        worst = par.get("max_step_diff", par.get("max_abs_diff"))
        raise ConversionError(f"TensorFlow Lite Micro and LiteRT disagree on {par['values_beyond_tolerance']} output "
                              f"values of {par['samples']} samples (max difference {worst} {par['unit']})",
                              "report the model: a kernel differs beyond one quantisation step")
    return par
