"""Model inputs and outputs as the rest of edgeopt sees them: named tensors, several of each.

A data set for a model is a ``Feeds`` mapping: input name -> array whose first axis counts samples
(``(N, *spec.sample_shape)``), in the source model's input order. An input of rank >= 1 has a batch axis first
(fixed 1, or dynamic); a rank-0 input (an int64 sample rate, a scalar threshold) has none: its data is ``(N,)``
and each sample is fed as a 0-d array. Models are fed one sample at a time (``one_sample``) unless every input
is batched with a dynamic batch axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edgeopt.errors import DataError

Feeds = dict[str, np.ndarray]


def is_classifier(shape: tuple[int | None, ...]) -> bool:
    """A classifier output is rank 2, (N, C) with C >= 2: class scores (logits or probabilities) per sample."""
    return len(shape) == 2 and (shape[1] or 0) >= 2


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]  # the full shape, batch axis included (None: dynamic); () for a scalar
    dtype: str  # numpy dtype name: float32, int64, ...

    @property
    def batched(self) -> bool:
        """Whether the first axis is a batch axis (every input of rank >= 1)."""
        return len(self.shape) > 0

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        """The shape of one sample: without the batch axis."""
        return self.shape[1:] if self.batched else ()

    @property
    def dynamic_batch(self) -> bool:
        return self.batched and self.shape[0] is None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "shape": [d if d is not None else -1 for d in self.shape], "dtype": self.dtype}


def one_sample(specs: list[TensorSpec], feeds: Mapping[str, np.ndarray], i: int) -> Feeds:
    """Sample ``i`` of ``feeds`` as the model takes it: batch 1 for batched inputs, a 0-d array for scalars."""
    out: Feeds = {}
    for spec in specs:
        a = feeds[spec.name]
        out[spec.name] = np.asarray(a[i:i + 1] if spec.batched else a[i], dtype=a.dtype)
    return out


def samples_in(feeds: Mapping[str, np.ndarray]) -> int:
    """The number of samples (every array has the same first axis: checked when the data is loaded)."""
    return int(next(iter(feeds.values())).shape[0]) if feeds else 0


def head(feeds: Mapping[str, np.ndarray], n: int) -> Feeds:
    return {k: v[:n] for k, v in feeds.items()}


def checked_feeds(calibration: Mapping[str, np.ndarray] | np.ndarray, specs: list[TensorSpec],
                  label: str) -> Feeds:
    """Calibration data checked against the model's inputs at a converter's door: every input present, ranks and
    fixed dims fit, dtypes castable (float64 -> float32, int32 -> int64), cast. A bare array is accepted for a
    one-input model. (The build checked its data already, inputs/data.check_against_model; a converter called
    on its own checks here, with the same words for the TFLite and the ONNX path.)"""
    if isinstance(calibration, np.ndarray):
        if len(specs) != 1:
            raise DataError(f"{label}: the model has {len(specs)} inputs but the calibration data is one array",
                            "give one array per input: " + ", ".join(s.name for s in specs))
        calibration = {specs[0].name: calibration}
    missing = [s.name for s in specs if s.name not in calibration]
    if missing:
        raise DataError(f"{label}: the calibration data has no array for input(s) {', '.join(missing)}",
                        "give one array per input: " + ", ".join(s.name for s in specs))
    feeds: Feeds = {}
    for spec in specs:
        a = np.asarray(calibration[spec.name])
        want = (None, *spec.sample_shape)
        if a.ndim != len(want) or any(w is not None and w != d for w, d in zip(want[1:], a.shape[1:])):
            raise DataError(f"{label}: calibration data for input '{spec.name}' has shape {list(a.shape)}, "
                            f"the model takes samples of shape {list(spec.sample_shape)}",
                            "give an array of shape (N, *sample shape) per input")
        if a.dtype != np.dtype(spec.dtype):
            if not np.can_cast(a.dtype, spec.dtype, "same_kind"):
                raise DataError(f"{label}: calibration data for input '{spec.name}' is {a.dtype}, "
                                f"the model takes {spec.dtype}", f"save the array as {spec.dtype}")
            a = a.astype(spec.dtype)
        feeds[spec.name] = a
    return feeds
