"""Checks on data values that the converters and the metrics would otherwise get wrong without a word.

* Non-finite values (NaN, ±Inf): the TFLite calibrator crashes the process on an Inf, a NaN calibrates int8
  silently into garbage. They are refused, naming the file, the array and how many values; with
  ``--drop-non-finite`` the samples holding them are dropped and counted (the count goes into the manifest).
* Labels: class indices must lie in ``0..classes-1`` of the model's output; otherwise the accuracy is a number that
  means nothing (a label 42 of a 10-class model is never predicted: "accuracy 0.0000").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeopt.errors import DataError

DROP_HINT = "fix the data, or pass --drop-non-finite to drop those samples (the count is recorded in the manifest)"


@dataclass(frozen=True)
class NonFinite:
    """What :func:`finite_rows` found: per-sample mask of bad rows, and the counts for the message."""

    bad_rows: np.ndarray  # bool, one per sample
    values: dict[str, int]  # array key -> non-finite values in it
    nan: int
    inf: int

    @property
    def samples(self) -> int:
        return int(self.bad_rows.sum())

    @property
    def total(self) -> int:
        return sum(self.values.values())


def finite_rows(arrays: dict[str, np.ndarray | None]) -> NonFinite:
    """Count NaN/Inf per array (``x``, ``y``) and mark each sample holding one; integer arrays are always finite."""
    n = next(len(a) for a in arrays.values() if a is not None)
    bad = np.zeros(n, dtype=bool)
    values: dict[str, int] = {}
    nan = inf = 0
    for key, a in arrays.items():
        if a is None or a.dtype.kind not in "fc" or a.size == 0:
            continue
        mask = ~np.isfinite(a)
        count = int(mask.sum())
        if count:
            values[key] = count
            n_nan = int(np.isnan(a).sum())
            nan, inf = nan + n_nan, inf + count - n_nan
            bad |= mask.reshape(len(a), -1).any(axis=1)
    return NonFinite(bad, values, nan, inf)


def refuse_or_drop_non_finite(arrays: dict[str, np.ndarray], y: np.ndarray | None, spec: str,
                              files: list[str] | None, drop: bool
                              ) -> tuple[dict[str, np.ndarray], np.ndarray | None, NonFinite]:
    """Refuse data holding NaN/Inf (one line: file, array, counts), or with ``drop`` remove those samples from
    every array (inputs and labels alike)."""
    found = finite_rows({**arrays, "y": y})
    if found.total == 0:
        return arrays, y, found
    held = " and ".join(f"{key} holds {n:,}" for key, n in found.values.items()) + \
        (" non-finite value" if found.total == 1 else " non-finite values")
    where = f"; first in {files[int(np.argmax(found.bad_rows))]}" if files else \
        f"; first at sample {int(np.argmax(found.bad_rows))}"
    what = (f"{spec}: {held} (NaN: {found.nan:,}, Inf: {found.inf:,}) in {found.samples:,} of "
            f"{len(found.bad_rows):,} samples{where}")
    if not drop:
        raise DataError(what, DROP_HINT)
    keep = ~found.bad_rows
    if not keep.any():
        raise DataError(f"{what}: --drop-non-finite leaves no samples", "fix the data")
    return {k: a[keep] for k, a in arrays.items()}, (None if y is None else y[keep]), found


def output_classes(output_shape: tuple[int | None, ...]) -> int | None:
    """The number of classes a model's output (without the batch axis) scores, or None when a dim is unknown."""
    if any(d is None for d in output_shape):
        return None
    return int(np.prod([d for d in output_shape if d is not None], dtype=np.int64)) if output_shape else 1


def check_label_range(y: np.ndarray, classes: int, what: str, one_hot_width: int | None = None) -> None:
    """Labels must be class indices ``0..classes-1`` (one-hot rows exactly ``classes`` wide)."""
    if one_hot_width is not None and one_hot_width != classes:
        raise DataError(f"{what}: y is one-hot with {one_hot_width} columns but the model has {classes} output "
                        "classes", "give labels for the model's classes (indices 0..n-1 or one-hot rows of width n)")
    outside = (y < 0) | (y >= classes)
    if outside.any():
        bad = y[outside]
        raise DataError(f"{what}: {int(outside.sum()):,} of {len(y):,} labels are outside 0..{classes - 1} "
                        f"(e.g. {int(bad[0])}; range {int(bad.min())}..{int(bad.max())}) but the model has "
                        f"{classes} output classes",
                        "labels must be class indices of the model's output (0..n-1) or one-hot rows of width n")
