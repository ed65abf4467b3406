"""Read the arrays of a data source: an ``.npz``, an ``.npy``, a folder of ``.npy`` files or ``module:function``.

Every failure is a :class:`DataError` that names the file (and the array in it). Pickled objects are never loaded;
a file's NumPy header is checked against its size before anything is allocated, so a truncated or lying file is
refused instead of read past its end.
"""

from __future__ import annotations

import importlib
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import DataError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
SOURCE_HINT = "give an .npz with x (and y), a folder of .npy files, or module:function"


@dataclass
class RawData:
    """What a source held, unchecked: ``x`` and ``y`` as read, ``files`` when each sample came from its own file,
    ``inputs`` the arrays named after model inputs (an .npz or a dict with one key per input, no ``x``)."""

    x: Any
    y: Any
    files: list[str] | None = None
    inputs: dict[str, Any] | None = None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join((text[0] if text else type(exc).__name__).split())[:200]


def _magic(path: Path, label: str, n: int = 6) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise DataError(f"{label}: cannot read ({exc.strerror or exc})") from exc


def _read_array(f: Any, size: int, label: str) -> np.ndarray:
    """One ``.npy`` stream (a file or a zip member) of ``size`` bytes: header checked (no objects, data as long as
    declared), then read."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
    except Exception as exc:  # noqa: BLE001 - whatever a broken header raises, the file is not valid
        raise DataError(f"{label}: not a valid .npy array (bad header: {first_line(exc)})",
                        "re-create it with np.save / np.savez") from exc
    if dtype.hasobject:
        raise DataError(f"{label}: holds Python objects (dtype {dtype}); edgeopt never loads pickled data",
                        "save a numeric array, e.g. np.savez(path, x=x.astype('float32'))")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    available = size - f.tell()
    if declared != available:
        raise DataError(f"{label}: truncated or corrupt (the header declares {declared:,} bytes of data, the file "
                        f"holds {max(available, 0):,})", "re-create it with np.save / np.savez")
    try:
        buf = bytearray(declared)
        view, got = memoryview(buf), 0
        while got < declared:
            n = f.readinto(view[got:])
            if not n:
                raise EOFError(f"the data ends after {got:,} of {declared:,} bytes")
            got += n
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    except Exception as exc:  # noqa: BLE001 - zlib/CRC/EOF errors of a damaged member, a zero-size dtype
        raise DataError(f"{label}: cannot read the array ({first_line(exc)})",
                        "re-create it with np.save / np.savez") from exc


def read_npy(path: Path, label: str) -> np.ndarray:
    if _magic(path, label) != NPY_MAGIC:
        raise DataError(f"{label}: not a valid .npy file (no NumPy header)", "save the array with np.save(path, x)")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            return _read_array(f, size, label)
    except OSError as exc:
        raise DataError(f"{label}: cannot read ({exc.strerror or exc})") from exc


def read_npz(path: Path, spec: str) -> RawData:
    if _magic(path, spec, 4) not in ZIP_MAGICS:
        raise DataError(f"{spec}: not a valid .npz file (not a zip archive: empty, truncated or another format)",
                        "save the arrays with np.savez(path, x=inputs, y=labels)")
    try:
        with zipfile.ZipFile(path) as zf:
            members = {(n[:-4] if n.endswith(".npy") else n): zf.getinfo(n) for n in zf.namelist()}
            if "x" not in members and not set(members) - {"y"}:
                raise DataError(f"{spec}: no input arrays (found: {', '.join(sorted(members)) or 'none'})",
                                "save it with np.savez(path, x=inputs, y=labels) or one array per model input name")
            keys = ("x", "y") if "x" in members else sorted(members)
            arrays = {}
            for key in keys:
                if key in members:
                    with zf.open(members[key]) as f:
                        arrays[key] = _read_array(f, members[key].file_size, f"{spec}: array '{key}'")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - BadZipFile, zlib.error, NotImplementedError (compression), OSError
        raise DataError(f"{spec}: not a valid .npz file ({first_line(exc)})",
                        "save the arrays with np.savez(path, x=inputs, y=labels)") from exc
    if "x" in arrays:
        return RawData(arrays["x"], arrays.get("y"))
    return RawData(None, arrays.pop("y", None), inputs=arrays)


def read_folder(path: Path, spec: str) -> RawData:
    if (path / "x.npy").is_file():
        x = read_npy(path / "x.npy", str(path / "x.npy"))
        y = read_npy(path / "y.npy", str(path / "y.npy")) if (path / "y.npy").is_file() else None
        return RawData(x, y)
    files = sorted(p for p in path.glob("*.npy") if p.is_file())
    if not files:
        raise DataError(f"{spec}: folder holds no .npy files", "put x.npy (and y.npy) or one .npy per sample there")
    samples = [read_npy(f, str(f)) for f in files]
    shapes = {s.shape for s in samples}
    if len(shapes) != 1:
        first = {s.shape: f.name for s, f in zip(samples, files)}
        raise DataError(f"{spec}: the .npy samples have different shapes: "
                        + ", ".join(f"{shape} ({name})" for shape, name in sorted(first.items(), key=str)[:4]),
                        "every sample must have the shape the model input takes")
    dtypes = {s.dtype for s in samples}
    if len(dtypes) != 1:
        raise DataError(f"{spec}: the .npy samples have different dtypes: {', '.join(sorted(map(str, dtypes)))}")
    return RawData(np.stack(samples), None, [f.name for f in files])


def call_source(spec: str) -> RawData:
    """Call ``module:function`` (the working directory importable); its result is checked by the caller."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name or not all(p.isidentifier() for p in module_name.split(".")) \
            or not func_name.isidentifier():
        raise DataError(f"{spec}: not a data source (a file or folder that does not exist, or not module:function)",
                        SOURCE_HINT)
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything while importing
        raise DataError(f"{spec}: cannot import {module_name} ({type(exc).__name__}: {first_line(exc)})",
                        "make the module importable from the working directory") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise DataError(f"{spec}: {module_name} has no function {func_name}",
                        "name a function that returns x, (x, y) or {'x': ..., 'y': ...}")
    try:
        result = func()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's function failed: say so, in one line
        raise DataError(f"{spec}: the data function raised {type(exc).__name__}: {first_line(exc)}",
                        "fix the function; it must return x, (x, y) or {'x': ..., 'y': ...}") from exc
    if isinstance(result, dict):
        if "x" not in result:
            if not set(result) - {"y"}:
                raise DataError(f"{spec}: returned a dict without inputs (keys: {', '.join(map(str, result))[:120]})",
                                "return {'x': inputs, 'y': labels} or one key per model input name")
            return RawData(None, result.get("y"), inputs={str(k): v for k, v in result.items() if k != "y"})
        return RawData(result["x"], result.get("y"))
    if isinstance(result, tuple):
        if len(result) not in (1, 2):
            raise DataError(f"{spec}: returned a tuple of {len(result)} items", "return x or (x, y)")
        return RawData(result[0], result[1] if len(result) == 2 else None)
    if result is None:
        raise DataError(f"{spec}: returned None", "return x, (x, y) or {'x': ..., 'y': ...}")
    return RawData(result, None)
