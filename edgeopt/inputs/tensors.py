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

Feeds = dict[str, np.ndarray]


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
