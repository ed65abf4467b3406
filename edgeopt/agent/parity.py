"""Output parity: the device's outputs against the host reference (top-1 agreement, absolute differences, SQNR),
per output; the headline figures are those of the worst output."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import AgentFailure


def compare(device: Any, reference: Any, key: str) -> Dict[str, object]:
    """``device`` and ``reference`` are (N, ...) float arrays with the same number of values per sample.
    Top-1 is the argmax over each sample's flattened values (None when a sample has a single value).
    ``sqnr_db``: 10 log10(sum ref^2 / sum (dev - ref)^2) (None when they are identical or ref is all zero)."""
    n = device.shape[0]
    ref = np.asarray(reference)
    if ref.ndim < 1 or ref.shape[0] < n or ref[:n].size != device.size:
        raise AgentFailure("bad_reference", "reference %r has shape %s; the device outputs have shape %s"
                           % (key, list(ref.shape), list(device.shape)),
                           "the reference.npz does not belong to this model")
    dev = device.reshape(n, -1).astype(np.float64)
    ref = ref[:n].reshape(n, -1).astype(np.float64)
    diff = np.abs(dev - ref)
    finite = bool(np.all(np.isfinite(dev)))
    top1: Optional[float] = None
    if dev.shape[1] > 1:
        top1 = float(np.mean(np.argmax(dev, axis=1) == np.argmax(ref, axis=1)))
    noise = float(np.sum(diff ** 2)) if finite else math.inf
    signal = float(np.sum(ref ** 2))
    sqnr = 10.0 * math.log10(signal / noise) if noise > 0 and signal > 0 and math.isfinite(noise) else None
    return {
        "key": key,
        "top1_agreement": top1,
        "max_abs_diff": float(np.max(diff)) if diff.size else 0.0,
        "mean_abs_diff": float(np.mean(diff)) if diff.size else 0.0,
        "sqnr_db": sqnr,
        "all_finite": finite,
    }


def accuracy(device: Any, labels: Any) -> Optional[float]:
    n = device.shape[0]
    flat = device.reshape(n, -1)
    labels = np.asarray(labels).reshape(-1)
    if flat.shape[1] < 2 or labels.shape[0] < n:
        return None
    return float(np.mean(np.argmax(flat, axis=1) == labels[:n].astype(np.int64)))


def output_keys(reference: Dict[str, Any], fmt: str, count: int) -> List[Tuple[Optional[str], Optional[str]]]:
    """Per output k: the reference key of the artifact's host output (``y_FMT:k``; ``y_FMT`` for a single
    output) and of the float model's (``y_float_FMT:k``; ``y_float``), None where the reference has none."""
    keys: List[Tuple[Optional[str], Optional[str]]] = []
    for k in range(count):
        same = ["y_%s:%d" % (fmt, k)] + (["y_" + fmt] if count == 1 else [])
        flt = ["y_float_%s:%d" % (fmt, k)] + (["y_float"] if count == 1 else [])
        keys.append((next((s for s in same if s in reference), None), next((f for f in flt if f in reference), None)))
    return keys


def _badness(row: Dict[str, Any]) -> Tuple[bool, float, float]:
    """Sort key: the worst output first (non-finite, then lowest top-1 agreement, then largest difference)."""
    figures = row["artifact"] or row["float"] or {}
    top1 = figures.get("top1_agreement")
    return (bool(figures.get("all_finite", True)), 1.0 if top1 is None else float(top1),
            -float(figures.get("max_abs_diff") or 0.0))


def parity_block(outputs: Sequence[Any], names: Sequence[str], reference: Dict[str, Any], fmt: str,
                 warnings: List[str]) -> Dict[str, object]:
    """``outputs[k]``: output k of every sample, stacked (N, ...), dequantised. Compares each output with the
    host's outputs; top-level ``artifact``/``float``/``top1_agreement``/``max_abs_diff`` are the worst output's."""
    rows: List[Dict[str, Any]] = []
    for k, ((same_key, float_key), out) in enumerate(zip(output_keys(reference, fmt, len(outputs)), outputs)):
        if same_key is None:
            warnings.append("reference has no y_%s%s: parity of output %s against the host run of this artifact "
                            "is missing" % (fmt, ":%d" % k if len(outputs) > 1 else "", names[k]))
        rows.append({"index": k, "name": names[k],
                     "artifact": compare(out, reference[same_key], same_key) if same_key else None,
                     "float": compare(out, reference[float_key], float_key) if float_key else None})
    worst = min(rows, key=_badness)
    artifact = worst["artifact"]
    block: Dict[str, object] = {"samples": int(outputs[0].shape[0]) if outputs else 0, "output": worst["name"],
                                "worst_output": worst["index"], "outputs": rows, "artifact": artifact,
                                "float": worst["float"]}
    if "labels" in reference and outputs:
        key = "labels_output_%s" % fmt  # which output the labels are for (the build's classifier output)
        index = int(reference[key]) if key in reference else 0
        block["accuracy"] = accuracy(outputs[min(index, len(outputs) - 1)], reference["labels"])
        block["accuracy_output"] = names[min(index, len(outputs) - 1)]
    # Flat copies of the headline figures, for a gate that reads one level deep.
    block["top1_agreement"] = artifact["top1_agreement"] if artifact else None
    block["max_abs_diff"] = artifact["max_abs_diff"] if artifact else None
    return block
