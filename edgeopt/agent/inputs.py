"""Model inputs: from a reference.npz or a user's inputs file (docs/artifacts.md), or generated, in the shape, dtype
and range the model takes.

Quantisation convention (TFLite): ``real = scale * (q - zero_point)``; a float input is fed to an int8/uint8
tensor as ``q = clip(round(x / scale) + zero_point, dtype min, dtype max)``.

Arrays of a file hold ``(N, *sample_shape)`` per input (a scalar input: ``(N,)``); one sample is fed per call
(batch 1; a model with a fixed batch B > 1 takes B rows per call). Dynamic dimensions run with the shape the
arrays have, the one ``--shape`` gives, or a default: batch 1, any other dynamic dimension ``DEFAULT_DIM``.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import AgentFailure, usage_error
from .runtimes import Model, TensorInfo

RANDOM_SEED = 0
RANDOM_POOL = 1  # one generated input set, fed once: nothing but invoke() happens between timed calls
DEFAULT_BATCH = 1
DEFAULT_DIM = 224  # any other dynamic dimension without --shape (an image side, a sequence length)
FLOAT_RANGE = (0.0, 1.0)  # generated float inputs: uniform in [0, 1)
DEFAULT_INT_RANGE = (0, 127)  # generated (non-quantised) integer inputs, clipped to the dtype; --int-range LO:HI
FIX_HINT = ("give real inputs with --inputs FILE.npz, or fix dynamic dims with --shape NAME=1x3x224x224 "
            "(integer inputs: --int-range LO:HI)")


def load_npz(path: str, kind: str) -> Tuple[Dict[str, Any], str]:
    """The arrays of an .npz and the sha256 of exactly the bytes they were read from (read once: what is hashed
    is what is used). ``kind``: "reference" or "inputs" (the error type is ``bad_<kind>``)."""
    try:
        with open(path, "rb") as fh:
            content = fh.read()
        digest = hashlib.sha256(content).hexdigest()
        with np.load(io.BytesIO(content), allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise AgentFailure("%s_not_found" % kind, "%s file %s does not exist" % (kind, path),
                           "push it next to the model, or leave out --%s" % kind)
    except Exception as exc:  # noqa: BLE001 - a corrupt or non-npz file
        raise AgentFailure("bad_" + kind, "cannot read %s file %s: %s: %s" % (kind, path, type(exc).__name__, exc),
                           "it must be a numpy .npz archive (docs/artifacts.md)")
    return data, digest


def load_reference(path: str) -> Tuple[Dict[str, Any], str]:
    data, digest = load_npz(path, "reference")
    firsts = [k for k in data if k == "x" or (k.startswith("x_") and k.endswith(":0"))]
    if not firsts:
        raise AgentFailure("bad_reference", "reference file %s has no 'x' array (keys: %s)"
                           % (path, ", ".join(sorted(data)) or "none"),
                           "reference.npz holds x, y_float, y_tflite/y_onnx, or x_FMT:i, y_float_FMT:k, y_FMT:k "
                           "(docs/artifacts.md)")
    for key in firsts:
        if data[key].ndim < 1 or data[key].shape[0] < 1:
            raise AgentFailure("bad_reference", "reference %r in %s holds no samples" % (key, path), None)
    return data, digest


def signature(info: TensorInfo) -> List[int]:
    """The input's declared shape, -1 where a dimension is dynamic."""
    return list(info.shape_signature) if info.shape_signature is not None else list(info.shape)


def parse_shape(text: str) -> Tuple[Optional[str], List[int]]:
    """``NAME=1x3x224x224`` or ``1x3x224x224`` (single-input models); ``NAME=`` is a scalar."""
    name: Optional[str] = None
    dims = text
    if "=" in text:
        name, dims = text.rsplit("=", 1)
    try:
        shape = [int(d) for d in dims.lower().split("x")] if dims.strip() else []
    except ValueError:
        raise usage_error("--shape %r: expected NAME=1x3x224x224" % text)
    if any(d < 1 for d in shape):
        raise usage_error("--shape %r: every dimension must be >= 1" % text)
    return name, shape


def parse_int_range(text: str) -> Tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise usage_error("--int-range %r: expected LO:HI, e.g. 0:9" % text)
    if lo > hi:
        raise usage_error("--int-range %r: LO must be <= HI" % text)
    return lo, hi


def _check_fits(info: TensorInfo, shape: List[int], what: str, hint: str) -> None:
    sig = signature(info)
    fixed = len(sig) == len(shape) and all(s < 0 or s == d for s, d in zip(sig, shape))
    if not fixed:
        raise AgentFailure("bad_shape", "%s gives model input %r shape %s; the model takes %s (-1: dynamic)"
                           % (what, info.name, shape, sig), hint, exit_code=2)


def requested_shapes(infos: Sequence[TensorInfo], texts: Sequence[str]) -> Tuple[List[List[int]], List[str]]:
    """The shape each input runs with and where it comes from ("--shape", "model", "default")."""
    by_name: Dict[str, List[int]] = {}
    names = [i.name for i in infos]
    for text in texts:
        name, shape = parse_shape(text)
        if name is None:
            if len(infos) != 1:
                raise usage_error("--shape %r names no input, and the model has %d (%s)"
                                  % (text, len(infos), ", ".join(names)), "write --shape NAME=1x3x224x224")
            name = infos[0].name
        if name not in names:
            raise usage_error("--shape %r: the model has no input %r (inputs: %s)" % (text, name, ", ".join(names)))
        by_name[name] = shape
    shapes: List[List[int]] = []
    origins: List[str] = []
    for info in infos:
        sig = signature(info)
        if info.name in by_name:
            _check_fits(info, by_name[info.name], "--shape", "give one dimension per axis; fixed ones as the model has")
            shapes.append(by_name[info.name])
            origins.append("--shape")
        elif any(d < 0 for d in sig):
            shapes.append([d if d >= 0 else (DEFAULT_BATCH if axis == 0 else DEFAULT_DIM) for axis, d in enumerate(sig)])
            origins.append("default")
        else:
            shapes.append(sig)
            origins.append("model")
    return shapes, origins


def array_shapes(infos: Sequence[TensorInfo], arrays: Sequence[Any], keys: Sequence[str]) -> List[List[int]]:
    """The shape each input runs with, fed from ``arrays`` ((N, *sample) each): the arrays' own dims where the
    model's are dynamic (one sample per call); the model's shape when only the batch is dynamic (old references
    are reshaped by size)."""
    shapes: List[List[int]] = []
    for info, a, key in zip(infos, arrays, keys):
        sig = signature(info)
        if not sig or all(d >= 0 for d in sig[1:]):
            shapes.append([d if d >= 0 else DEFAULT_BATCH for d in sig])
            continue
        if a.ndim != len(sig):
            raise AgentFailure("bad_shape", "%r has shape %s but model input %r takes %s (-1: dynamic)"
                               % (key, list(a.shape), info.name, sig), "give (N, *sample) arrays", exit_code=2)
        shape = [sig[0] if sig[0] >= 0 else DEFAULT_BATCH] + [int(d) for d in a.shape[1:]]
        _check_fits(info, shape, repr(key), "the file does not belong to this model")
        shapes.append(shape)
    return shapes


def resize(model: Model, shapes: Sequence[Sequence[int]]) -> None:
    """Run the inputs with ``shapes``: LiteRT resizes its input tensors then allocates again; ONNX Runtime takes
    whatever shape it is fed."""
    changed = [(info, list(shape)) for info, shape in zip(model.inputs, shapes) if list(shape) != info.shape]
    if not changed:
        return
    interpreter = getattr(model, "interpreter", None)
    if interpreter is not None:
        try:
            for info, shape in changed:
                interpreter.resize_tensor_input(info.index, shape, strict=False)
            interpreter.allocate_tensors()
        except Exception as exc:  # noqa: BLE001 - the runtime refuses the shape
            raise rejected(model.inputs, shapes, "the shape", exc)
        details = {d["index"]: d for d in interpreter.get_input_details() + interpreter.get_output_details()}
        for info in list(model.inputs) + list(model.outputs):
            if info.index in details:
                info.shape = [int(d) for d in details[info.index]["shape"]]
    else:
        for info, shape in changed:
            info.shape = list(shape)


def rejected(infos: Sequence[TensorInfo], shapes: Sequence[Sequence[int]], what: str,
             exc: BaseException) -> AgentFailure:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    where = ", ".join("%s shape %s" % (i.name, list(s)) for i, s in zip(infos, shapes))
    hint = FIX_HINT if what.startswith(("generated", "the shape")) else \
        "check the file against the model's inputs (agent.io.inputs; docs/artifacts.md)"
    return AgentFailure("inputs_rejected", "the model rejected %s for %s: %s" % (what, where, text), hint)


def fit_shape(sample: Any, info: TensorInfo, what: str) -> Any:
    """One call's values reshaped to the tensor's shape; the sizes must agree."""
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
        return np.asarray(np.clip(q, limits.min, limits.max), dtype=dtype)  # 0-d stays an array, never a scalar
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        return np.asarray(np.clip(np.round(x), limits.min, limits.max), dtype=dtype)
    return np.asarray(x, dtype=dtype)


def dequantize(y: Any, info: TensorInfo) -> Any:
    """An output as float32, dequantised with its scale/zero-point when it is quantised."""
    if info.quantized:
        return (np.asarray(y, dtype=np.float32) - np.float32(info.zero_point)) * np.float32(info.scale)
    return np.asarray(y, dtype=np.float32)


def reference_arrays(reference: Dict[str, Any], infos: Sequence[TensorInfo], fmt: str) -> Tuple[List[Any], List[str]]:
    """The reference's input arrays in the artifact's input order: ``x_FMT:i`` (several inputs or outputs), or
    ``x`` (one input)."""
    keys = ["x_%s:%d" % (fmt, i) for i in range(len(infos))]
    if keys[0] not in reference:
        if len(infos) != 1:
            raise AgentFailure("bad_reference", "the model has %d inputs; the reference carries %s, not %s"
                               % (len(infos), ", ".join(sorted(k for k in reference if k.startswith("x"))),
                                  ", ".join(keys)), "rebuild the artifact (edgeopt build) to write a matching one")
        keys = ["x"]
    missing = [k for k in keys if k not in reference]
    if missing:
        raise AgentFailure("bad_reference", "the reference has no %s (the model has %d inputs)"
                           % (", ".join(missing), len(infos)), "rebuild the artifact (edgeopt build)")
    return [reference[k] for k in keys], keys


def user_arrays(data: Dict[str, Any], infos: Sequence[TensorInfo], path: str) -> Tuple[List[Any], List[str]]:
    """The arrays of an --inputs file, one per model input (its name; ``x`` for a single-input model), each as
    (N, *sample): one sample without the N axis gets it."""
    names = [i.name for i in infos]
    keys = [n if n in data or not (len(infos) == 1 and "x" in data) else "x" for n in names]
    missing = [n for n, k in zip(names, keys) if k not in data]
    extra = sorted(set(data) - set(keys))
    if missing or extra:
        raise AgentFailure("bad_inputs", "%s: %s" % (path, "; ".join(
            (["no array for input %s" % ", ".join(missing)] if missing else [])
            + (["%s names no model input" % ", ".join(extra)] if extra else []))),
            "keys are the model's input names: %s" % ", ".join(names), exit_code=2)
    arrays = []
    for info, key in zip(infos, keys):
        a = np.asarray(data[key])
        rank = len(signature(info))
        if a.ndim == max(rank - 1, 0):
            a = a[None]  # one sample without the N axis
        arrays.append(a)
    counts = {int(a.shape[0]) for a in arrays}
    if len(counts) != 1 or 0 in counts:
        raise AgentFailure("bad_inputs", "%s: the arrays hold different numbers of samples (%s)"
                           % (path, ", ".join("%s: %d" % (k, a.shape[0]) for k, a in zip(keys, arrays))),
                           "give every input the same N", exit_code=2)
    return arrays, keys


def array_pool(arrays: Sequence[Any], infos: Sequence[TensorInfo], keys: Sequence[str]) -> List[List[Any]]:
    """One input list per call: sample i of every array (B rows for a fixed batch B), shaped and typed."""
    per_call = [info.shape[0] if info.shape else 1 for info in infos]
    calls = min(int(a.shape[0]) // b for a, b in zip(arrays, per_call))
    pool: List[List[Any]] = []
    for i in range(calls):
        row = []
        for a, info, key, b in zip(arrays, infos, keys, per_call):
            sample = a[i * b:(i + 1) * b] if info.shape else a[i]
            row.append(to_input_dtype(fit_shape(np.asarray(sample), info, "%s[%d]" % (key, i)), info))
        pool.append(row)
    if not pool:
        raise AgentFailure("bad_inputs", "the inputs hold fewer samples than one call takes (%s)"
                           % ", ".join("%s: %d" % (k, a.shape[0]) for k, a in zip(keys, arrays)), None, exit_code=2)
    return pool


def generated_inputs(infos: Sequence[TensorInfo], int_range: Tuple[int, int] = DEFAULT_INT_RANGE,
                     count: int = RANDOM_POOL, seed: int = RANDOM_SEED) -> List[List[Any]]:
    """Generated inputs of the right dtype and range: float uniform in FLOAT_RANGE, quantised ints over the
    dtype's full range, other ints uniform in ``int_range`` clipped to the dtype, bool fair coin flips."""
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
                lo, hi = (int(limits.min), int(limits.max)) if info.quantized else int_range
                lo, hi = max(lo, int(limits.min)), min(hi, int(limits.max))
                arrays.append(rng.randint(lo, hi + 1, size=info.shape, dtype=np.int64).astype(dtype))
            else:
                lo_f, hi_f = FLOAT_RANGE
                arrays.append((lo_f + (hi_f - lo_f) * rng.random_sample(size=info.shape)).astype(dtype))
        pool.append(arrays)
    return pool


def describe(infos: Sequence[TensorInfo], origins: Optional[Sequence[str]] = None) -> List[Dict[str, object]]:
    """What each input ran with (the ``inputs.tensors`` list of the result)."""
    rows: List[Dict[str, object]] = []
    for k, info in enumerate(infos):
        row: Dict[str, object] = {"name": info.name, "shape": list(info.shape), "dtype": info.dtype.name,
                                  "signature": signature(info)}
        if origins is not None:
            row["shape_from"] = origins[k]
        rows.append(row)
    return rows


def distribution(int_range: Tuple[int, int]) -> str:
    return ("float: uniform [%g, %g); quantised int: full dtype range; other int: [%d, %d] clipped to the dtype; "
            "bool: 0/1" % (FLOAT_RANGE[0], FLOAT_RANGE[1], int_range[0], int_range[1]))


def input_pool(model: Model, fmt: str, source: Optional[str], data: Optional[Dict[str, Any]], path: Optional[str],
               sha256: Optional[str], shape_texts: Sequence[str],
               int_range: Tuple[int, int]) -> Tuple[List[List[Any]], Dict[str, object], str]:
    """The inputs of every call, with the model resized to their shapes, the result's ``inputs`` block, and what
    they are called in an error ("generated inputs" …). ``source``: "reference", "inputs" (a user's file) or
    None (generated)."""
    if source is None or data is None:
        shapes, origins = requested_shapes(model.inputs, shape_texts)
        resize(model, shapes)
        pool = generated_inputs(model.inputs, int_range)
        block: Dict[str, object] = {
            "source": "random", "generated": True, "seed": RANDOM_SEED, "samples": len(pool),
            "distribution": distribution(int_range), "int_range": list(int_range),
            "dynamic_dims": "from --shape, else batch %d and %d for any other dynamic dimension"
                            % (DEFAULT_BATCH, DEFAULT_DIM)}
        what = "generated inputs"
    else:
        if shape_texts:
            raise usage_error("--shape applies to generated inputs; with --%s the shapes come from the file" % source,
                              "leave out --shape")
        arrays, keys = reference_arrays(data, model.inputs, fmt) if source == "reference" else \
            user_arrays(data, model.inputs, path or source)
        resize(model, array_shapes(model.inputs, arrays, keys))
        pool = array_pool(arrays, model.inputs, keys)
        origins = ["file"] * len(model.inputs)
        block = {"source": source, "generated": False, "file": path, "sha256": sha256, "samples": len(pool),
                 "keys": list(keys)}
        what = "the reference inputs" if source == "reference" else "the inputs of %s" % path
    block["tensors"] = describe(model.inputs, origins)
    return pool, block, what
