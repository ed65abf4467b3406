"""Output parity: the device's outputs against the host reference (top-1 agreement, absolute differences)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from .errors import AgentFailure


def compare(device: Any, reference: Any, key: str) -> Dict[str, object]:
    """``device`` and ``reference`` are (N, ...) float arrays with the same number of values per sample.
    Top-1 is the argmax over each sample's flattened values (None when a sample has a single value)."""
    n = device.shape[0]
    ref = np.asarray(reference)
    if ref.shape[0] < n or ref[:n].size != device.size:
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
    return {
        "key": key,
        "top1_agreement": top1,
        "max_abs_diff": float(np.max(diff)) if diff.size else 0.0,
        "mean_abs_diff": float(np.mean(diff)) if diff.size else 0.0,
        "all_finite": finite,
    }


def accuracy(device: Any, labels: Any) -> Optional[float]:
    n = device.shape[0]
    flat = device.reshape(n, -1)
    labels = np.asarray(labels).reshape(-1)
    if flat.shape[1] < 2 or labels.shape[0] < n:
        return None
    return float(np.mean(np.argmax(flat, axis=1) == labels[:n].astype(np.int64)))
