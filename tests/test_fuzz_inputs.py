"""Issue 12: bad input never crashes or lies (the build / data / config / store side).

A corpus of bad inputs, generated here, each run through the real CLI (``edgeopt.cli.main`` in this process, a
few through the installed ``edgeopt`` script in a subprocess): corrupt / truncated / empty model files of every
kind, broken data files (format, shape, dtype, non-finite values, labels), bad target / profile / lab YAML (typos,
wrong types, non-UTF-8, huge values), bad flags and flag combinations, hostile environments (unwritable out and
results dirs, foreign databases, ``EDGEOPT_CONFIG_DIR`` pointing at junk). Every case must give:

* a non-zero exit: 2 (a user error; nothing here is a device error);
* no traceback, and exactly one message line (argparse's own usage lines aside) naming the file / field / flag;
* nothing half-written (no ``*.staging``, ``*.part``, ``.old-*``, no new file anywhere), and the good build made
  once at the start byte-for-byte intact.

Then property-based tests (hypothesis) of the config and data parsers: whatever the bytes or values, the result is
a valid config / data set or one typed one-line error naming the file, never another exception.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeopt.cli import main
from edgeopt.config import Profile, Target, load_model_file
from edgeopt.config.lab import Lab
from edgeopt.errors import ConfigError, DataError, EdgeoptError
from edgeopt.inputs.data import check_against_model, load_dataset
from edgeopt.inputs.tensors import TensorSpec

EDGEOPT = str(Path(sys.executable).with_name("edgeopt"))
LEFTOVER_MARKS = (".staging", ".part", ".old-", ".edgeopt-probe-", ".probe-")
PROPERTY = settings(max_examples=100, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------------------------------------------
# the good state every case must leave alone
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Good:
    out: Path  # artifacts root holding a complete local/fp32 build of the bundled example
    model: Path  # the bundled example .keras
    onnx: Path  # a valid ONNX model (the fp32 build's)
    tflite: Path
    calib: Path  # valid calibration data (.npz, x only)
    store: Path  # a results directory with one run
    snapshot: dict[str, str] = field(default_factory=dict)


def tree(root: Path) -> dict[str, str]:
    """Every file and directory under ``root`` (``__pycache__`` aside) -> sha256 (``dir`` for directories)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if "__pycache__" in p.parts:
            continue
        rel = str(p.relative_to(root))
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            out[rel] = "special"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def good(example_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Good:
    from edgeopt.inputs.data import example_split
    from edgeopt.results.store import open_store

    root = tmp_path_factory.mktemp("fuzz-good")
    assert main(["build", "-p", "fp32", "--out", str(root / "artifacts")]) == 0
    fp32 = root / "artifacts" / "local" / "fp32"
    spare = root / "spare"
    spare.mkdir()
    shutil.copy(fp32 / "model.onnx", spare / "model.onnx")
    shutil.copy(fp32 / "model.tflite", spare / "model.tflite")
    np.savez(spare / "calib.npz", x=example_split("calibration").x)
    with open_store(root / "results") as store:
        store.begin_run({"run_id": "run-good", "created_at": "2026-11-28T10:00:00+00:00", "targets": ["local"]})
        store.finish_run("run-good", "2026-11-28T10:01:00+00:00", "finished", {"results": 0})
    g = Good(root / "artifacts", example_model, spare / "model.onnx", spare / "model.tflite", spare / "calib.npz",
             root / "results")
    g.snapshot = {**tree(g.out), **{f"results/{k}": v for k, v in tree(g.store).items()}}
    return g


# ---------------------------------------------------------------------------------------------------------------
# the corpus: each case makes its files in a fresh directory and returns the command line and what the message
# must name
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    good: Good
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Path] = field(default_factory=list)

    def file(self, name: str, data: bytes | str) -> str:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(p)

    def npz(self, name: str, **arrays: Any) -> str:
        p = self.tmp / name
        np.savez(p, **arrays)
        return str(p)

    def build(self, *args: str) -> list[str]:
        return ["build", *args, "--out", str(self.good.out)]

    def mount_ro(self, name: str, fill: Callable[[Path], None] | None = None) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a read-only mount needs root")
        where = self.tmp / name
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], check=True)
        self.mounts.append(where)
        if fill:
            fill(where)
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        return where


Make = Callable[[Ctx], tuple[list[str], list[str]]]
CASES: dict[str, Make] = {}
SUBPROCESS = set()  # run through the installed console script (crashes would show as a signal exit)


def case(name: str, subprocess_too: bool = False) -> Callable[[Make], Make]:
    def register(fn: Make) -> Make:
        assert name not in CASES, name
        CASES[name] = fn
        if subprocess_too:
            SUBPROCESS.add(name)
        return fn
    return register


def rnd(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def npy_bytes(a: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


CAL = np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32)  # enough samples for int8


def simple(name: str, argv: Callable[[Ctx], list[str]], *names: str, sub: bool = False) -> None:
    """A case whose message must name ``names`` (``{tmp}`` is replaced by the case directory)."""
    case(name, sub)(lambda c: (argv(c), [n.replace("{tmp}", str(c.tmp)) for n in names]))


# -- model files (edgeopt build MODEL -p fp32) -------------------------------------------------------------------
def _model_case(name: str, filename: str, data: Callable[[Ctx], bytes], *words: str, sub: bool = False) -> None:
    case(name, sub)(lambda c: (c.build(c.file(filename, data(c)), "-p", "fp32"), [filename, *words]))


def _half(p: Path) -> bytes:
    data = p.read_bytes()
    return data[: len(data) // 2]


def _flip_middle(p: Path) -> bytes:
    data = bytearray(p.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    return bytes(data)


_model_case("keras-empty", "m.keras", lambda c: b"", "empty")
_model_case("keras-truncated", "m.keras", lambda c: _half(c.good.model), "not a valid .keras file")
_model_case("keras-random", "m.keras", lambda c: rnd(1, 4096), "not a valid .keras file")
_model_case("keras-text", "m.keras", lambda c: "model = 'mine'\n", "not a valid .keras file")
_model_case("keras-zip-without-config", "m.keras", lambda c: zip_bytes({"hello.txt": b"hi"}), "no config.json")
_model_case("keras-zip-bad-config", "m.keras",
            lambda c: zip_bytes({"config.json": b"{not json", "metadata.json": b"{}"}), "cannot load Keras model")
_model_case("keras-damaged-member", "m.keras", lambda c: _flip_middle(c.good.model))
_model_case("h5-empty", "m.h5", lambda c: b"", "empty")
_model_case("h5-random", "m.h5", lambda c: rnd(2, 4096), "no HDF5 signature")
_model_case("h5-signature-then-garbage", "m.h5", lambda c: b"\x89HDF\r\n\x1a\n" + rnd(3, 4096), "cannot load")
_model_case("hdf5-text", "m.hdf5", lambda c: "not hdf5", "no HDF5 signature")
_model_case("onnx-empty", "m.onnx", lambda c: b"", "empty")
_model_case("onnx-random", "m.onnx", lambda c: rnd(4, 4096), "not a valid ONNX model")
_model_case("onnx-truncated", "m.onnx", lambda c: _half(c.good.onnx), "not a valid ONNX model")
_model_case("onnx-text", "m.onnx", lambda c: "ir_version: 8\n", "not a valid ONNX model")
_model_case("tflite-ready", "m.tflite", lambda c: c.good.tflite.read_bytes(), "edgeopt bench", sub=True)
_model_case("tflite-empty", "m.tflite", lambda c: b"", "edgeopt bench")
_model_case("pytorch-file", "m.pt", lambda c: rnd(5, 100), "unknown model format '.pt'")
_model_case("no-suffix", "model", lambda c: rnd(6, 100), "unknown model format")


def _onnx_model(c: Ctx, name: str, custom: bool = False, inputs: int = 1, elem: int = 1) -> str:
    import onnx
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(f"x{i}", elem, [None, 4]) for i in range(inputs)]
    if custom:
        nodes = [helper.make_node("MyOp", ["x0"], ["y"], domain="com.example")]
    elif inputs == 2:
        nodes = [helper.make_node("Add", ["x0", "x1"], ["y"])]
    else:
        nodes = [helper.make_node("Relu", ["x0"], ["y"])]
    graph = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if custom else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    path = c.tmp / name
    onnx.save(model, str(path))
    return str(path)


case("onnx-custom-op-domain", True)(lambda c: (c.build(_onnx_model(c, "custom.onnx", custom=True), "-p", "fp32"),
                                               ["custom.onnx", "com.example", "MyOp"]))
case("onnx-two-inputs-one-array")(lambda c: (c.build(_onnx_model(c, "two.onnx", inputs=2), "-p", "fp32", "--data",
                                                     c.npz("d.npz", x=np.ones((20, 4), np.float32))),
                                             ["d.npz", "one array 'x' but the model has 2 inputs (x0, x1)"]))
def _nan_weights_onnx(c: Ctx) -> str:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(c.good.onnx))
    init = max(model.graph.initializer, key=lambda i: int(np.prod(i.dims)))
    init.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(init).shape, np.nan, np.float32), init.name))
    onnx.save(model, str(c.tmp / "nan.onnx"))
    return str(c.tmp / "nan.onnx")


def _nan_weights_keras(c: Ctx) -> str:
    import keras

    model = keras.models.load_model(c.good.model, compile=False)
    dense = model.get_layer("logits")
    dense.set_weights([np.full_like(w, np.inf) for w in dense.get_weights()])
    model.save(c.tmp / "inf.keras")
    return str(c.tmp / "inf.keras")


case("onnx-nan-weights")(lambda c: (c.build(_nan_weights_onnx(c), "-p", "fp32"), ["nan.onnx", "NaN/Inf"]))
case("keras-inf-weights")(lambda c: (c.build(_nan_weights_keras(c), "-p", "int8", "--data", str(c.good.calib)),
                                     ["inf.keras", "NaN/Inf"]))
case("onnx-empty-graph")(lambda c: (c.build(c.file("g.onnx", b"\x08\x08"), "-p", "fp32"), ["g.onnx"]))
simple("model-missing", lambda c: c.build(str(c.tmp / "nope.keras")), "nope.keras", "no such file")
simple("model-dir-not-savedmodel", lambda c: c.build(str(Path(c.file("d/readme.txt", "x")).parent)),
       "a directory but not a SavedModel")
simple("savedmodel-empty-pb", lambda c: c.build(str(Path(c.file("sm/saved_model.pb", b"")).parent)),
       "saved_model.pb", "empty")
simple("savedmodel-garbage-pb", lambda c: c.build(str(Path(c.file("sm/saved_model.pb", rnd(7, 512))).parent),
                                                  "-p", "fp32"), "cannot load SavedModel")
simple("savedmodel-no-variables", lambda c: c.build(str(Path(c.file("sm/saved_model.pb", b"\x08\x01")).parent),
                                                    "-p", "fp32"), "cannot load SavedModel")
simple("keras-suffixed-dir", lambda c: c.build(str(Path(c.file("m.keras/x", "x")).parent)), "m.keras")


def _fifo(c: Ctx) -> list[str]:
    os.mkfifo(c.tmp / "pipe.onnx")
    return c.build(str(c.tmp / "pipe.onnx"), "-p", "fp32")


def _loop(c: Ctx) -> list[str]:
    os.symlink(c.tmp / "loop.keras", c.tmp / "loop.keras")
    return c.build(str(c.tmp / "loop.keras"))


simple("model-fifo", _fifo, "pipe.onnx", "not a regular file")
simple("model-symlink-loop", _loop, "loop.keras")
simple("model-char-device", lambda c: c.build("/dev/null"), "/dev/null")


# -- data (calibration: -p int8 --data F; eval: -p fp32 --eval F; train: -p pruned-int8 --train F) ----------------
def _calib(name: str, make: Callable[[Ctx], str], *words: str, extra: tuple[str, ...] = (), sub: bool = False) -> None:
    def fn(c: Ctx) -> tuple[list[str], list[str]]:
        spec = make(c)
        return c.build("-p", "int8", "--data", spec, *extra), [Path(spec).name if "/" in spec else spec, *words]
    case(name, sub)(fn)


def _eval(name: str, make: Callable[[Ctx], str], *words: str) -> None:
    def fn(c: Ctx) -> tuple[list[str], list[str]]:
        spec = make(c)
        return c.build("-p", "fp32", "--eval", spec), [Path(spec).name, *words]
    case(name)(fn)


def _with(value: float, at: tuple[int, ...] = (3, 0, 0, 0)) -> np.ndarray:
    x = CAL.copy()
    x[at] = value
    return x


def _npz_member_header_lies(c: Ctx) -> str:
    good = npy_bytes(CAL)
    lying = npy_bytes(np.zeros((4000, 28, 28, 1), np.float32))[:128] + good[128:]
    return c.file("lies.npz", zip_bytes({"x.npy": lying}))


def _npz_crc(c: Ctx) -> str:
    data = bytearray(Path(c.npz("crc.npz", x=CAL)).read_bytes())
    data[len(data) // 2] ^= 0xFF
    return c.file("crc.npz", bytes(data))


_calib("npz-empty", lambda c: c.file("d.npz", b""), "not a valid .npz file")
_calib("npz-random", lambda c: c.file("d.npz", rnd(8, 2048)), "not a valid .npz file", sub=True)
_calib("npz-truncated", lambda c: c.file("d.npz", Path(c.npz("full.npz", x=CAL)).read_bytes()[:5000]),
       "not a valid .npz file")
_calib("npz-text", lambda c: c.file("d.npz", "x = [1, 2, 3]\n"), "not a valid .npz file")
_calib("npz-zip-of-text", lambda c: c.file("d.npz", zip_bytes({"x.npy": b"hello"})), "array 'x'")
_calib("npz-crc-damaged", _npz_crc, "crc.npz")
_calib("npz-header-lies", _npz_member_header_lies, "truncated or corrupt")
_calib("npz-no-x", lambda c: c.npz("d.npz", inputs=CAL), "no array for model input 'image'", "found: inputs")
_calib("npz-pickled-objects", lambda c: c.npz("d.npz", x=np.array([{"a": 1}, None], dtype=object)),
       "Python objects", "never loads pickled")
_calib("npz-nan", lambda c: c.npz("d.npz", x=_with(np.nan)), "x holds 1 non-finite value", "NaN: 1",
       "--drop-non-finite")
_calib("npz-inf", lambda c: c.npz("d.npz", x=_with(np.inf)), "x holds 1 non-finite value", "Inf: 1", sub=True)
_calib("npz-minus-inf", lambda c: c.npz("d.npz", x=_with(-np.inf, (7, 1, 2, 0))), "Inf: 1", "first at sample 7")
_calib("npz-all-nan-dropped", lambda c: c.npz("d.npz", x=np.full((20, 28, 28, 1), np.nan, np.float32)),
       "leaves no samples", extra=("--drop-non-finite",))
_calib("npz-dropped-too-few", lambda c: c.npz("d.npz", x=np.concatenate([CAL[:5], _with(np.nan)[3:4].repeat(30, 0)])),
       "5 samples, at least 16 needed", extra=("--drop-non-finite",))
_calib("npz-wrong-shape", lambda c: c.npz("d.npz", x=np.zeros((40, 8, 8, 1), np.float32)), "(8, 8, 1)",
       "(28, 28, 1)")
_calib("npz-missing-channel", lambda c: c.npz("d.npz", x=CAL[..., 0]), "(28, 28)")
_calib("npz-uint8", lambda c: c.npz("d.npz", x=(CAL * 255).astype(np.uint8)), "dtype uint8")
_calib("npz-strings", lambda c: c.npz("d.npz", x=np.array(["a", "b"])), "not a numeric array")
_calib("npz-complex", lambda c: c.npz("d.npz", x=CAL.astype(np.complex64)), "not a numeric array")
_calib("npz-scalar", lambda c: c.npz("d.npz", x=np.float32(1.0)), "no samples")
_calib("npz-zero-samples", lambda c: c.npz("d.npz", x=np.zeros((0, 28, 28, 1), np.float32)), "no samples")
_calib("npz-too-few", lambda c: c.npz("d.npz", x=CAL[:3]), "3 samples, at least 16 needed")
_calib("npz-overflow-float64", lambda c: c.npz("d.npz", x=CAL.astype(np.float64) * 1e300), "overflow",
       "float32")
_calib("npz-structured", lambda c: c.npz("d.npz", x=np.zeros(40, dtype=[("a", "f4"), ("b", "i4")])),
       "not a numeric array")
_calib("npz-y-length", lambda c: c.npz("d.npz", x=CAL, y=np.zeros(39, np.int64)), "39 labels", "40 samples")
_calib("npz-y-scalar", lambda c: c.npz("d.npz", x=CAL, y=np.int64(3)), "labels")
_calib("npz-y-3d", lambda c: c.npz("d.npz", x=CAL, y=np.zeros((40, 2, 5))), "class labels")
_calib("npz-y-fractional", lambda c: c.npz("d.npz", x=CAL, y=np.full(40, 0.5)), "integer class labels")
_calib("npz-y-strings", lambda c: c.npz("d.npz", x=CAL, y=np.array(["cat"] * 40)), "class labels")
_calib("npy-empty", lambda c: c.file("d.npy", b""), "not a valid .npy file")
_calib("npy-random", lambda c: c.file("d.npy", rnd(9, 512)), "not a valid .npy file")
_calib("npy-truncated", lambda c: c.file("d.npy", npy_bytes(CAL)[:9000]), "truncated or corrupt")
_calib("npy-bad-header", lambda c: c.file("d.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': nonsense}\n"), "bad header")
_calib("npy-huge-shape", lambda c: c.file("d.npy", npy_header((9999999999, 1000)) + b"\0" * 64),
       "truncated or corrupt")
_calib("npy-pickled", lambda c: c.file("d.npy", npy_bytes(np.array([object()]), allow_pickle=True)),
       "never loads pickled")
_calib("npy-nan", lambda c: c.file("d.npy", npy_bytes(_with(np.nan))), "non-finite")
_calib("folder-empty", lambda c: str(Path(c.file("f/readme.txt", "x")).parent), "no .npy files")
_calib("folder-corrupt-sample", lambda c: (c.file("f/000.npy", npy_bytes(CAL[0])), c.file("f/001.npy", b"junk"),
                                           str(c.tmp / "f"))[-1], "001.npy", "not a valid .npy file")
_calib("folder-mixed-shapes", lambda c: (c.file("f/000.npy", npy_bytes(CAL[0])),
                                         c.file("f/001.npy", npy_bytes(CAL[0, :14])), str(c.tmp / "f"))[-1],
       "different shapes", "001.npy")
_calib("folder-mixed-dtypes", lambda c: (c.file("f/000.npy", npy_bytes(CAL[0])),
                                         c.file("f/001.npy", npy_bytes(CAL[0].astype(np.float64))),
                                         str(c.tmp / "f"))[-1], "different dtypes")
_calib("folder-nan-sample", lambda c: ([c.file(f"f/{i:03d}.npy", npy_bytes(_with(np.nan, (i, 0, 0, 0))[i]
                                                                        if i == 17 else CAL[i])) for i in range(40)],
                                       str(c.tmp / "f"))[-1], "first in 017.npy")
_calib("folder-x-corrupt", lambda c: (c.file("f/x.npy", b"\x93NUMPY garbage"), str(c.tmp / "f"))[-1], "x.npy")
_calib("folder-y-corrupt", lambda c: (c.file("f/x.npy", npy_bytes(CAL)), c.file("f/y.npy", rnd(10, 64)),
                                      str(c.tmp / "f"))[-1], "y.npy")
_calib("data-csv", lambda c: c.file("d.csv", "1,2,3\n"), "unsupported data source")
_calib("data-missing-npz", lambda c: str(c.tmp / "nope.npz"), "no such file")
_calib("data-missing-other", lambda c: str(c.tmp / "nope.bin"), "no such file")
_calib("data-npz-is-directory", lambda c: str(Path(c.file("d.npz/readme", "x")).parent), "no .npy files")


def _module(c: Ctx, name: str, body: str) -> str:
    c.file(f"{name}.py", body)
    sys.modules.pop(name, None)
    return name


def _fn(name: str, body: str, *words: str, sub: bool = False) -> None:
    mod = f"fuzzdata_{name.replace('-', '_')}"
    _calib(f"function-{name}", lambda c: _module(c, mod, f"import numpy as np\nimport sys\n{body}") + ":data",
           *words, sub=sub)


_fn("raises", "def data():\n    raise RuntimeError('boom in the user code')\n", "raised RuntimeError", "boom",
    sub=True)
_fn("exits", "def data():\n    sys.exit(3)\n", "raised SystemExit")
_fn("returns-none", "def data():\n    return None\n", "returned None")
_fn("returns-empty-tuple", "def data():\n    return ()\n", "tuple of 0 items")
_fn("returns-triple", "def data():\n    return (1, 2, 3)\n", "tuple of 3 items")
_fn("returns-dict-without-x", "def data():\n    return {'inputs': 1}\n", "inputs holds no samples")
_fn("returns-strings", "def data():\n    return ['a', 'b']\n", "not a numeric array")
_fn("returns-ragged", "def data():\n    return [[1.0, 2.0], [3.0]]\n", "x is not an array")
_fn("returns-inf", "def data():\n    x = np.ones((40, 28, 28, 1), np.float32)\n    x[0, 0, 0, 0] = np.inf\n"
    "    return x\n", "x holds 1 non-finite value")
_fn("not-callable", "data = 42\n", "has no function data")
_fn("import-fails", "raise ImportError('missing dependency of the user')\ndef data():\n    pass\n", "cannot import")
_fn("syntax-error", "def data(:\n", "cannot import", "SyntaxError")
_calib("function-module-missing", lambda c: "fuzz_no_such_module_xyz:data", "cannot import")
_calib("function-colon-only", lambda c: ":", "not a data source")
_calib("function-no-name", lambda c: "fuzzmod:", "not a data source")
_calib("function-bad-module-name", lambda c: "../etc:data", "not a data source")

_eval("eval-labels-42", lambda c: c.npz("e.npz", x=CAL, y=np.full(40, 42)), "outside 0..9", "42",
      "10 output classes")
_eval("eval-labels-negative", lambda c: c.npz("e.npz", x=CAL, y=np.full(40, -1)), "outside 0..9", "-1")
_eval("eval-labels-some-out", lambda c: c.npz("e.npz", x=CAL, y=np.r_[np.zeros(39, int), 10]), "1 of 40 labels")
_eval("eval-one-hot-12", lambda c: c.npz("e.npz", x=CAL, y=np.eye(12)[np.arange(40) % 12]), "one-hot with 12")
_eval("eval-labels-nan", lambda c: c.npz("e.npz", x=CAL, y=np.r_[np.zeros(39), np.nan]), "y holds 1 non-finite")
_eval("eval-x-inf", lambda c: c.npz("e.npz", x=_with(np.inf), y=np.zeros(40, int)), "x holds 1 non-finite")
_eval("eval-wrong-shape", lambda c: c.npz("e.npz", x=np.zeros((40, 784), np.float32)), "(784,)")
case("train-labels-42")(lambda c: (c.build("-p", "pruned-int8", "--train", c.npz("t.npz", x=CAL, y=np.full(40, 42))),
                                   ["t.npz", "training data", "outside 0..9"]))
case("train-nan")(lambda c: (c.build("-p", "pruned-int8", "--train", c.npz("t.npz", x=_with(np.nan),
                                                                             y=np.zeros(40, int))),
                             ["t.npz", "non-finite"]))


# -- YAML: targets (-t FILE), profiles (-p FILE), labs (ci --lab FILE) ------------------------------------------
T = "arch: native\ntransport: local\nformats: [tflite]\nruntimes: [litert]\n"


def _target(name: str, text: str | bytes, *words: str, sub: bool = False) -> None:
    case(name, sub)(lambda c: (c.build("-t", c.file("mine.yaml", text), "-p", "fp32"), ["mine.yaml", *words]))


def _profile(name: str, text: str | bytes, *words: str) -> None:
    case(name)(lambda c: (c.build("-p", c.file("prof.yaml", text)), ["prof.yaml", *words]))


def _lab(name: str, text: str | bytes, *words: str) -> None:
    case(name)(lambda c: (["ci", "--lab", c.file("lab.yaml", text), "--results", str(c.tmp / "res"),
                           "--artifacts", str(c.tmp / "art")], ["lab.yaml", *words]))


_target("target-typo", T + "threds: 4\n", "threds: unknown field", "did you mean 'threads'")
_target("target-wrong-type", T + "threads: four\n", "threads")
_target("target-non-utf8", T.encode() + b"description: caf\xe9\n", "not UTF-8", "line 5", sub=True)
_target("target-utf16", T.encode("utf-16"), "not UTF-8")
_target("target-binary", rnd(11, 300), "mine.yaml")
_target("target-huge-threads", T + "threads: 1000000000\n", "threads")
_target("target-huge-int", T + "threads: " + "9" * 5000 + "\n", "mine.yaml")
_target("target-nan-threads", T + "threads: .nan\n", "threads")
_target("target-inf-memory", T + "memory: {ram_bytes: .inf}\n", "memory.ram_bytes")
_target("target-negative-memory", T + "memory: {ram_bytes: -5}\n", "memory.ram_bytes")
_target("target-port-huge", T + "connection: {port: 99999999}\n", "connection.port")
_target("target-invalid-yaml", "arch: [native\n", "invalid YAML")
_target("target-tabs", "arch:\tnative\n\tformats: [tflite]\n", "invalid YAML")
_target("target-top-level-list", "- arch\n- native\n", "mapping")
_target("target-scalar", "native\n", "mapping")
_target("target-empty", "", "empty")
_target("target-python-tag", "arch: !!python/object/apply:os.system ['true']\n", "invalid YAML")
_target("target-bad-timestamp", T + "description: 2001-13-01\n", "invalid YAML")
_target("target-bad-float-tag", T + "threads: !!float abc\n", "invalid YAML")
_target("target-deep-nesting", "arch: " + "[" * 3000 + "]" * 3000 + "\n", "mine.yaml")
_target("target-self-reference", T + "default_profiles: &a [*a]\n", "default_profiles")
_target("target-too-large", T + "description: " + "x" * (2 << 20) + "\n", "too large")
_target("target-bad-transport", T.replace("local", "carrier-pigeon"), "transport", "carrier-pigeon")
_target("target-missing-arch", "formats: [tflite]\nruntimes: [litert]\n", "arch", "required")
_target("target-no-formats", T.replace("[tflite]", "[]"), "formats")
_target("target-energy-command-missing", T + "energy_sensor: command\n", "energy_command")
_target("target-ssh-microcontroller", T.replace("local", "ssh") + "os: none\n", "microcontroller")
_target("target-nested-typo", T + "connection: {hots: x}\n", "connection.hots", "did you mean 'host'")
_target("target-duplicate-unknown-keys", T + "".join(f"k{i}: {i}\n" for i in range(50)), "and 46 more")
simple("target-unknown-name", lambda c: c.build("-t", "rpi-4"), "unknown target 'rpi-4'", "did you mean 'rpi4'")
simple("target-missing-yaml", lambda c: c.build("-t", str(c.tmp / "nope.yaml")), "nope.yaml")
simple("target-yaml-is-directory", lambda c: c.build("-t", str(Path(c.file("d.yaml/x", "x")).parent)), "d.yaml")

_profile("profile-nested-typo", "tflite:\n  optimisations: [default]\n", "tflite.optimisations", "'optimizations'")
_profile("profile-bad-literal", "onnx:\n  calibrate_method: Average\n", "onnx.calibrate_method", "'MinMax'")
_profile("profile-non-utf8", b"description: \xff\xfe\n", "not UTF-8")
_profile("profile-negative-samples", "calibration: {samples: -1}\n", "calibration.samples")
_profile("profile-huge-samples", "calibration: {samples: 100000000000}\n", "calibration.samples")
_profile("profile-huge-batch", "prune: {sparsity: 0.5, batch_size: 1000000000000}\n", "prune.batch_size")
_profile("profile-inf-temperature", "distill: {width_multiplier: 0.5, temperature: .inf}\n", "distill.temperature",
         "finite")
_profile("profile-nan-sparsity", "prune: {sparsity: .nan}\n", "prune.sparsity")
_profile("profile-huge-seed", "seed: 99999999999999\n", "seed")
_profile("profile-int-io-without-calibration", "tflite: {inference_input_type: int8}\n", "representative_dataset")
_profile("profile-two-transforms", "prune: {sparsity: 0.5}\nqat: {}\n", "one training transform")
_profile("profile-section-is-list", "tflite: [1, 2]\n", "tflite")
_profile("profile-bool-is-word", "onnx: {per_channel: maybe}\n", "onnx.per_channel")
_profile("profile-sparsity-one", "prune: {sparsity: 1.0}\n", "prune.sparsity")
_profile("profile-distill-both", "distill: {width_multiplier: 0.5, student: s.keras}\n", "exactly one")
_profile("profile-empty", "", "empty")
simple("profile-unknown-name", lambda c: c.build("-p", "int-8"), "unknown profile 'int-8'", "did you mean 'int8'")
simple("profile-list-empty", lambda c: c.build("-p", ","), "--profile", "empty profile list", sub=True)
simple("profile-list-empty-string", lambda c: c.build("-p", ""), "--profile", "empty profile list")
simple("profile-list-blanks", lambda c: c.build("-p", " , ", "-p", ","), "--profile", "empty profile list")
simple("profile-all-and-typo", lambda c: c.build("-p", "all,int-8"), "unknown profile 'int-8'")

LAB = "devices: [{name: a, target: local}]\n"
_lab("lab-typo", LAB + "gates:\n  latency: {min_efect: 0.1}\n", "gates.latency.min_efect", "'min_effect'")
_lab("lab-devices-string", "devices: pi\n", "devices")
_lab("lab-non-utf8", LAB.encode() + b"description: \xc3\x28\n", "not UTF-8")
_lab("lab-missing-devices", "profiles: [fp32]\n", "devices", "required")
_lab("lab-no-devices", "devices: []\n", "devices")
_lab("lab-duplicate-devices", "devices: [{name: a, target: local}, {name: a, target: local}]\n", "repeated")
_lab("lab-unknown-profile", LAB + "profiles: [int-8]\n", "profiles", "int-8")
_lab("lab-empty-profiles", LAB + "profiles: ''\n", "profiles")
_lab("lab-huge-bootstrap", LAB + "gates:\n  latency: {bootstrap: 1000000000000}\n", "gates.latency.bootstrap")
_lab("lab-zero-runs", LAB + "bench: {runs: 0}\n", "bench.runs")
_lab("lab-huge-runs", LAB + "bench: {runs: 100000000000}\n", "bench.runs")
_lab("lab-inf-timeout", LAB + "bench: {timeout: .inf}\n", "bench.timeout")
_lab("lab-bad-device-name", "devices: [{name: ../x, target: local}]\n", "devices.0.name")
_lab("lab-port-string", "devices: [{name: a, target: local, port: ssh}]\n", "devices.0.port")
_lab("lab-gate-alpha", LAB + "gates:\n  latency: {alpha: 2}\n", "gates.latency.alpha")
_lab("lab-empty", "", "empty")
_lab("lab-list", "- a\n", "mapping")
simple("lab-missing-file", lambda c: ["ci", "--lab", str(c.tmp / "nope.yaml")], "nope.yaml", "does not exist")
simple("lab-is-directory", lambda c: ["ci", "--lab", str(c.tmp)], "is not a file")


# -- environments: EDGEOPT_CONFIG_DIR, ./targets, EDGEOPT_CACHE_DIR, --out, results dirs ------------------------
def _env(name: str, setup: Callable[[Ctx], list[str]], *words: str, sub: bool = False) -> None:
    case(name, sub)(lambda c: (setup(c), [w.replace("{tmp}", str(c.tmp)) for w in words]))


def _config_dir(c: Ctx, value: str) -> list[str]:
    c.env["EDGEOPT_CONFIG_DIR"] = value
    return c.build("-p", "fp32")


_env("env-config-dir-missing", lambda c: _config_dir(c, str(c.tmp / "nope")), "EDGEOPT_CONFIG_DIR", "not a directory")
_env("env-config-dir-file", lambda c: _config_dir(c, c.file("cfg", "x")), "EDGEOPT_CONFIG_DIR", "not a directory")
_env("env-config-targets-file", lambda c: (c.file("cfg/targets", "x"), _config_dir(c, str(c.tmp / "cfg")))[-1],
     "EDGEOPT_CONFIG_DIR", "targets is not a directory")
_env("env-config-bad-local", lambda c: (c.file("cfg/targets/local.yaml", "arch: [\n"),
                                        _config_dir(c, str(c.tmp / "cfg")))[-1], "local.yaml", "invalid YAML")
_env("env-config-non-utf8-profile", lambda c: (c.file("cfg/profiles/fp32.yaml", b"\xff"),
                                               _config_dir(c, str(c.tmp / "cfg")))[-1], "fp32.yaml", "not UTF-8")
_env("env-config-profile-is-dir", lambda c: (c.file("cfg/profiles/fp32.yaml/x", "x"),
                                             _config_dir(c, str(c.tmp / "cfg")))[-1], "fp32.yaml", "cannot read")
_env("cwd-targets-broken-local", lambda c: (c.file("targets/local.yaml", T + "threds: 1\n"), c.build("-p", "fp32"))[-1],
     "local.yaml", "threds")


def _cache_dir(c: Ctx) -> list[str]:
    c.env["EDGEOPT_CACHE_DIR"] = c.file("cache-is-a-file", "x")
    return c.build("-p", "fp32")


_env("env-cache-dir-is-file", _cache_dir, "cache-is-a-file", "EDGEOPT_CACHE_DIR")
_env("out-is-a-file", lambda c: ["build", "-p", "fp32", "--out", c.file("out", "x")], "{tmp}/out")
_env("out-under-dev-null", lambda c: ["build", "-p", "fp32", "--out", "/dev/null/out"], "/dev/null/out")
_env("out-in-proc", lambda c: ["build", "-p", "fp32", "--out", "/proc/edgeopt-out"], "/proc/edgeopt-out")
_env("out-read-only", lambda c: ["build", "-p", "fp32", "--out", str(c.mount_ro("ro"))], "{tmp}/ro",
     "writable --out")


def _store_file(c: Ctx, make: Callable[[Path], None], *extra: str) -> list[str]:
    (c.tmp / "res").mkdir()
    make(c.tmp / "res" / "edgeopt.sqlite")
    return ["report", "--results", str(c.tmp / "res"), *extra]


def _sqlite(path: Path, *sql: str) -> None:
    import sqlite3

    db = sqlite3.connect(path)
    for s in sql:
        db.execute(s)
    db.commit()
    db.close()


_env("results-is-a-file", lambda c: ["report", "--results", c.file("res", "x")], "{tmp}/res")
_env("results-garbage-db", lambda c: _store_file(c, lambda p: p.write_bytes(rnd(12, 8192))), "edgeopt.sqlite",
     "cannot open results store")
_env("results-empty-db", lambda c: _store_file(c, lambda p: p.write_bytes(b"")), "edgeopt.sqlite", "empty database")
_env("results-foreign-schema", lambda c: _store_file(c, lambda p: _sqlite(
    p, "CREATE TABLE runs (id INTEGER, name TEXT)", "INSERT INTO runs VALUES (1, 'x')")),
    "edgeopt.sqlite", "not an edgeopt results store", "run_id", sub=True)
_env("results-foreign-list", lambda c: _store_file(c, lambda p: _sqlite(p, "CREATE TABLE other (a)"), "--list"),
     "edgeopt.sqlite", "not an edgeopt results store")
_env("results-newer-schema", lambda c: _store_file(c, lambda p: _sqlite(p, "PRAGMA user_version = 99")),
     "edgeopt.sqlite", "schema 99")
_env("results-db-is-directory", lambda c: _store_file(c, lambda p: p.mkdir()), "edgeopt.sqlite", "is a directory")
_env("results-truncated-db", lambda c: _store_file(c, lambda p: p.write_bytes(
    (c.good.store / "edgeopt.sqlite").read_bytes()[:2048])), "edgeopt.sqlite")
_env("results-unknown-run", lambda c: ["report", "--results", str(c.good.store), "--run", "nope"], "'nope'",
     "run-good")
_env("store-is-directory", lambda c: ["report", "--store", str(c.tmp)], "{tmp}", "is a directory")
_env("store-missing", lambda c: ["report", "--store", str(c.tmp / "x.sqlite")], "x.sqlite", "no results store")


# -- flags -----------------------------------------------------------------------------------------------------
def _flag(name: str, argv: list[str], *words: str) -> None:
    case(name)(lambda c: (list(argv), list(words)))


_flag("flag-unknown", ["build", "--bogus"], "--bogus")
_flag("flag-two-models", ["build", "a.keras", "b.keras"], "b.keras")
_flag("flag-search-runs-word", ["build", "--search", "--search-runs", "abc"], "--search-runs")
_flag("flag-search-runs-zero", ["build", "--search", "--search-runs", "0"], "--search-runs")
_flag("flag-max-drop-nan", ["build", "--search", "--max-accuracy-drop", "nan"], "--max-accuracy-drop")
_flag("flag-max-drop-negative", ["build", "--search", "--max-accuracy-drop", "-1"], "--max-accuracy-drop")
_flag("flag-search-drop-non-finite", ["build", "--search", "--drop-non-finite"], "--drop-non-finite", "--search")
_flag("flag-objective", ["build", "--search", "--objective", "fastest"], "--objective")
_flag("flag-profile-missing-value", ["build", "-p"], "-p")
_flag("flag-report-limit-zero", ["report", "--limit", "0"], "--limit")
_flag("flag-report-limit-word", ["report", "--limit", "many"], "--limit")
_flag("flag-report-compare-one", ["report", "--compare", "a"], "--compare")
_flag("flag-ci-without-lab", ["ci"], "--lab")
_flag("flag-no-command", [], "command")
_flag("flag-unknown-command", ["biuld"], "biuld")


# ---------------------------------------------------------------------------------------------------------------
# running and judging a case
# ---------------------------------------------------------------------------------------------------------------
def leftovers(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        for p in root.rglob("*"):
            if any(mark in p.name for mark in LEFTOVER_MARKS):
                found.append(str(p))
    return found


def message_lines(err: str) -> tuple[list[str], bool]:
    """The error lines of stderr, and whether stderr is argparse's usage + error (its own standard form)."""
    lines = [line for line in err.splitlines() if line.strip()]
    argparse_form = bool(lines) and lines[0].startswith("usage: ")
    if argparse_form:
        return [line for line in lines if ": error: " in line], True
    return lines, False


def run_case(name: str, c: Ctx, argv: list[str], monkeypatch: pytest.MonkeyPatch,
             capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    if name in SUBPROCESS:
        env = {**os.environ, **c.env}
        proc = subprocess.run([EDGEOPT, *argv], capture_output=True, text=True, cwd=c.tmp, env=env, timeout=600)
        return proc.returncode, proc.stderr
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(c.tmp)
    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    return code, capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str, good: Good, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capfd: pytest.CaptureFixture[str]) -> None:
    c = Ctx(good, tmp_path)
    try:
        argv, words = CASES[name](c)
        before = tree(tmp_path)
        code, err = run_case(name, c, argv, monkeypatch, capfd)
    finally:
        for where in reversed(c.mounts):
            subprocess.run(["umount", "-l", str(where)], check=False)
    lines, argparse_form = message_lines(err)
    assert code == 2, f"{name}: exit {code} (want 2); stderr:\n{err[-3000:]}"
    assert "Traceback" not in err and "internal error" not in err, f"{name}: {err[-3000:]}"
    assert len(lines) == 1, f"{name}: want one message line, got:\n{err[-3000:]}"
    line = lines[0]
    assert line.startswith("edgeopt: error: ") or argparse_form, line
    for word in words:
        assert word in line, f"{name}: {word!r} not named in: {line}"
    # nothing half-written, nothing new anywhere, the good build and store untouched
    c.mounts.clear()
    assert leftovers(good.out, good.store, tmp_path) == []
    mounted = lambda k: k == "ro" or k.startswith("ro/")  # noqa: E731 - a read-only mount, unmounted now
    after = {k: v for k, v in tree(tmp_path).items() if not mounted(k)}
    assert after == {k: v for k, v in before.items() if not mounted(k)}, f"{name}: files changed"
    now = {**tree(good.out), **{f"results/{k}": v for k, v in tree(good.store).items()
                                if not k.endswith(("-wal", "-shm"))}}
    assert now == {k: v for k, v in good.snapshot.items() if not k.endswith(("-wal", "-shm"))}, \
        f"{name}: the good build or store changed"


def test_the_corpus_is_large_and_covers_every_family() -> None:
    assert len(CASES) >= 100, len(CASES)
    families = {n.split("-")[0] for n in CASES}
    assert {"keras", "h5", "onnx", "tflite", "savedmodel", "npz", "npy", "folder", "function", "eval", "train",
            "target", "profile", "lab", "env", "out", "results", "store", "flag"} <= families
    assert len(SUBPROCESS) >= 8


# ---------------------------------------------------------------------------------------------------------------
# property-based: the config and data parsers
# ---------------------------------------------------------------------------------------------------------------
FIELDS = sorted({*Target.model_fields, *Profile.model_fields, *Lab.model_fields, "threads", "samples", "sparsity"})
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                   st.sampled_from(["native", "local", "tflite", "onnx", "int8", "static", "MinMax", ".inf"]))
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), inner,
                                                 max_size=4)), max_leaves=12)
documents = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)), values, max_size=8)


def _load_config(path: Path, model: type) -> None:
    try:
        load_model_file(path, model)
    except ConfigError as exc:
        line = exc.one_line()
        assert str(path) in line and "\n" not in line and len(line) < 2000, line


@PROPERTY
@given(doc=documents, model=st.sampled_from([Target, Profile, Lab]))
def test_config_parser_any_document(doc: dict[str, Any], model: type) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        _load_config(path, model)


@PROPERTY
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=400).map(lambda t: t.encode("utf-8", "replace"))),
       model=st.sampled_from([Target, Profile, Lab]))
def test_config_parser_any_bytes(data: bytes, model: type) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(data)
        _load_config(path, model)


@PROPERTY
@given(base=st.sampled_from(["threads", "connection", "memory", "formats", "arch"]), value=values)
def test_target_field_values(base: str, value: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.yaml"
        path.write_text(yaml.safe_dump({"arch": "native", "formats": ["tflite"], "runtimes": ["litert"],
                                        base: value}))
        _load_config(path, Target)


numeric = st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                    hnp.boolean_dtypes(), hnp.complex_number_dtypes(), hnp.unicode_string_dtypes(max_len=3))
arrays = hnp.arrays(numeric, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))


def _load_data(path: Path, drop: bool) -> None:
    try:
        d = load_dataset(str(path), drop)
    except DataError as exc:
        line = exc.one_line()
        assert str(path) in line and "\n" not in line, line
        return
    assert len(d) >= 1 and d.x.dtype.kind in "biuf"
    if d.x.dtype.kind == "f":
        assert np.isfinite(d.x).all()
    if d.y is not None:
        assert d.y.dtype.kind == "i" and d.y.shape == (len(d),)
    assert len(d.sha256) == 64 and set(d.describe()) >= {"spec", "samples", "sha256"}


@PROPERTY
@given(x=arrays, y=st.none() | arrays, drop=st.booleans())
def test_data_parser_any_arrays(x: np.ndarray, y: np.ndarray | None, drop: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "d.npz"
        np.savez(path, **({"x": x} if y is None else {"x": x, "y": y}))
        _load_data(path, drop)
        np.save(Path(d) / "d.npy", x)
        _load_data(Path(d) / "d.npy", drop)


@PROPERTY
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".npz", ".npy"]))
def test_data_parser_any_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"d{suffix}"
        path.write_bytes(data)
        _load_data(path, False)


VALID_NPZ = (lambda buf: (np.savez(buf, x=CAL[:4], y=np.arange(4)), buf.getvalue())[1])(io.BytesIO())
VALID_NPY = npy_bytes(CAL[:4])


@PROPERTY
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=8),
       cut=st.none() | st.integers(0, 10**6), npz=st.booleans())
def test_data_parser_damaged_files(flips: list[tuple[int, int]], cut: int | None, npz: bool) -> None:
    data = bytearray(VALID_NPZ if npz else VALID_NPY)
    for at, bits in flips:
        data[at % len(data)] ^= bits
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("d.npz" if npz else "d.npy")
        path.write_bytes(bytes(data))
        _load_data(path, False)


@PROPERTY
@given(x=hnp.arrays(st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.uint8, np.int64]),
                    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)),
       shape=st.lists(st.none() | st.integers(1, 4), max_size=3),
       dtype=st.sampled_from(["float32", "float16", "int8", "uint8"]), min_samples=st.integers(1, 5))
def test_check_against_model_any_input(x: np.ndarray, shape: list[int | None], dtype: str, min_samples: int) -> None:
    from edgeopt.inputs.data import Dataset

    data = Dataset(x, None, "d.npz", "0" * 64)
    try:
        out = check_against_model(data, [TensorSpec("x", (None, *tuple(shape)), dtype)], "calibration", min_samples)
    except DataError as exc:
        assert "d.npz" in exc.one_line() and "\n" not in exc.one_line()
        return
    assert out.x.dtype == np.dtype(dtype) and len(out) >= min_samples
    assert all(e is None or e == g for e, g in zip(shape, out.x.shape[1:])) and out.x.ndim == len(shape) + 1
    if out.x.dtype.kind == "f":
        assert np.isfinite(out.x).all() or not np.isfinite(x).all()


@PROPERTY
@given(labels=hnp.arrays(np.int64, st.integers(1, 20), elements=st.integers(-3, 15)), classes=st.integers(1, 12))
def test_label_range_property(labels: np.ndarray, classes: int) -> None:
    from edgeopt.inputs.data_checks import check_label_range

    inside = bool(((labels >= 0) & (labels < classes)).all())
    try:
        check_label_range(labels, classes, "eval data e.npz")
    except DataError as exc:
        assert not inside and "e.npz" in exc.one_line() and f"{classes} output classes" in exc.one_line()
        return
    assert inside


@PROPERTY
@given(values=st.lists(st.text(alphabet=st.sampled_from(list(", \tabfp32int8-")), max_size=12), max_size=4))
def test_profile_list_parsing(values: list[str]) -> None:
    from edgeopt.cli.build import profile_names

    try:
        names = profile_names(values)
    except EdgeoptError as exc:
        assert "--profile" in exc.one_line() and not [n for v in values for n in v.split(",") if n.strip()]
        return
    assert names and all(n == n.strip() and n and "," not in n for n in names) and len(set(names)) == len(names)
