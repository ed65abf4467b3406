"""Model inputs: from a reference.npz (docs/artifacts.md) or random, in the dtype and range the model takes.

Quantisation convention (TFLite): ``real = scale * (q - zero_point)``; a float input is fed to an int8/uint8
tensor as ``q = clip(round(x / scale) + zero_point, dtype min, dtype max)``.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from .errors import AgentFailure
from .runtimes import TensorInfo

RANDOM_SEED = 0
RANDOM_POOL = 1  # one random input set, fed once: nothing but invoke() happens between timed calls


def load_reference(path: str) -> Tuple[Dict[str, Any], str]:
    """The reference arrays and the sha256 of exactly the bytes they were read from (the file is read once:
    what is hashed is what is used)."""
    try:
        with open(path, "rb") as fh:
            content = fh.read()
        digest = hashlib.sha256(content).hexdigest()
        with np.load(io.BytesIO(content), allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise AgentFailure("reference_not_found", "reference file %s does not exist" % path,
                           "push reference.npz next to the model, or leave out --reference for random inputs")
    except Exception as exc:  # noqa: BLE001 - a corrupt or non-npz file
        raise AgentFailure("bad_reference", "cannot read reference file %s: %s: %s" % (path, type(exc).__name__, exc),
                           "reference.npz must be a numpy .npz archive (docs/artifacts.md)")
    if "x" not in data:
        raise AgentFailure("bad_reference", "reference file %s has no 'x' array (keys: %s)"
                           % (path, ", ".join(sorted(data)) or "none"),
                           "reference.npz holds x, y_float, y_tflite/y_onnx (docs/artifacts.md)")
    if data["x"].ndim < 1 or data["x"].shape[0] < 1:
        raise AgentFailure("bad_reference", "reference 'x' in %s holds no samples" % path, None)
    return data, digest


def fit_shape(sample: Any, info: TensorInfo, what: str) -> Any:
    """One sample reshaped to the tensor's shape (adds the batch dimension of 1); the sizes must agree."""
    size = int(np.prod(info.shape)) if info.shape else 1
    if sample.size != size:
        raise AgentFailure("bad_reference", "%s has shape %s (%d values) but model input %r takes %s (%d values)"
                           % (what, list(sample.shape), sample.size, info.name, info.shape, size),
                           "the reference.npz does not belong to this model")
    return sample.reshape(info.shape)


def to_input_dtype(x: Any, info: TensorInfo) -> Any:
    """A float array converted to what the tensor takes: quantised int, float16, float32 …"""
    dtype = info.dtype
    if info.quantized and dtype.kind in "iu":
        limits = np.iinfo(dtype)
        q = np.round(np.asarray(x, dtype=np.float32) / np.float32(info.scale)) + info.zero_point
        return np.clip(q, limits.min, limits.max).astype(dtype)
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        return np.clip(np.round(x), limits.min, limits.max).astype(dtype)
    return np.asarray(x).astype(dtype)


def dequantize(y: Any, info: TensorInfo) -> Any:
    """An output as float32, dequantised with its scale/zero-point when it is quantised."""
    if info.quantized:
        return (np.asarray(y, dtype=np.float32) - np.float32(info.zero_point)) * np.float32(info.scale)
    return np.asarray(y, dtype=np.float32)


def reference_inputs(reference: Dict[str, Any], infos: Sequence[TensorInfo]) -> List[List[Any]]:
    """One input list per reference sample (the model must have exactly one input)."""
    if len(infos) != 1:
        raise AgentFailure("bad_reference", "the model has %d inputs; reference.npz carries one ('x')" % len(infos),
                           "leave out --reference to run with random inputs")
    x = reference["x"]
    info = infos[0]
    return [[to_input_dtype(fit_shape(x[i], info, "reference sample x[%d]" % i), info)] for i in range(x.shape[0])]


def random_inputs(infos: Sequence[TensorInfo], count: int = RANDOM_POOL, seed: int = RANDOM_SEED) -> List[List[Any]]:
    """Random inputs of the right dtype and range: quantised/integer tensors over the dtype's full range,
    float tensors uniform in [0, 1), bool tensors fair coin flips."""
    rng = np.random.RandomState(seed)  # RandomState: same stream on numpy 1.x and 2.x
    pool: List[List[Any]] = []
    for _ in range(count):
        arrays = []
        for info in infos:
            dtype = info.dtype
            if dtype.kind == "b":
                arrays.append(rng.randint(0, 2, size=info.shape).astype(bool))
            elif dtype.kind in "iu":
                limits = np.iinfo(dtype)
                lo, hi = (int(limits.min), int(limits.max)) if info.quantized or limits.bits <= 16 else (0, 10)
                arrays.append(rng.randint(lo, hi + 1, size=info.shape, dtype=np.int64).astype(dtype))
            else:
                arrays.append(rng.random_sample(size=info.shape).astype(dtype))
        pool.append(arrays)
    return pool
