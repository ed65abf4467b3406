"""ONNX -> TensorFlow SavedModel through onnx2tf (NCHW -> NHWC), run in its own Python 3.12 tool venv.

onnx2tf pins exact versions of everything and needs Python >= 3.12; the host venv is Python 3.11 with other pins.
So it runs as a subprocess in a venv built once from ``edgeopt/tools/onnx2tf-requirements.txt`` under
``<cache root>/tools/onnx2tf-<sha256 of that file, 16 hex>`` (same TensorFlow as the host: the SavedModel it writes
is loaded by the host's TensorFlow). onnx2tf never quantises here: the host's TFLite converter does that from the
SavedModel with edgeopt's own calibration data. The driver checks the TensorFlow model against ONNX Runtime on
random inputs and finds, per input and output, the axis permutation between the two layouts.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from edgeopt.artifacts.files import atomic_write_bytes, file_lock, read_json, sha256_file, staged_directory
from edgeopt.errors import ConversionError, ModelError
from edgeopt.inputs.onnx_external import external_data_files
from edgeopt.paths import PACKAGE_DIR, cache_root

ONNX2TF_VERSION = "2.6.9"
REQUIREMENTS = PACKAGE_DIR / "tools" / "onnx2tf-requirements.txt"  # shipped in the wheel too
READY = ".edgeopt-ready"
DEFAULT_TOLERANCE = 1e-4  # relative max error of the TF model vs ONNX Runtime, checked by the driver
Note = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class TensorMap:
    """One input or output on both sides. ``perm`` maps data between layouts with ``np.transpose(a, perm)``:
    for an input ONNX layout -> TF layout (NCHW -> NHWC is (0, 2, 3, 1)); for an output TF layout -> ONNX
    layout (NHWC -> NCHW is (0, 3, 1, 2))."""

    onnx_name: str
    signature_name: str  # the key in the SavedModel's serving_default signature (and the TFLite signature)
    onnx_shape: tuple[int | None, ...]
    tf_shape: tuple[int | None, ...]
    dtype: str
    perm: tuple[int, ...]
    rel_max_error: float | None = None  # outputs: max|tf - onnxruntime| / max|onnxruntime| on random inputs

    @property
    def layout_changed(self) -> bool:
        return self.perm != tuple(range(len(self.perm)))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "onnx_name": self.onnx_name, "signature_name": self.signature_name,
            "onnx_shape": [-1 if d is None else d for d in self.onnx_shape],
            "tf_shape": [-1 if d is None else d for d in self.tf_shape], "dtype": self.dtype, "perm": list(self.perm)}
        if self.rel_max_error is not None:
            out["rel_max_error_vs_onnxruntime"] = self.rel_max_error
        return out


@dataclass(frozen=True)
class Onnx2TfResult:
    saved_model: Path
    inputs: tuple[TensorMap, ...]  # in the ONNX model's input order
    outputs: tuple[TensorMap, ...]  # in the ONNX model's output order
    seconds: float  # conversion + check in the tool venv, wall time
    converter: str = f"onnx2tf {ONNX2TF_VERSION}"

    def describe(self) -> dict[str, Any]:
        """JSON-safe, for the manifest ("layout change")."""
        return {"converter": self.converter, "seconds": round(self.seconds, 2),
                "inputs": [t.describe() for t in self.inputs], "outputs": [t.describe() for t in self.outputs],
                "perm_inputs": "onnx -> tf (np.transpose)", "perm_outputs": "tf -> onnx (np.transpose)"}


# ----------------------------------------------------------------------------------------------- the tool venv
def requirements_file() -> Path:
    if not REQUIREMENTS.is_file():
        raise ConversionError(f"{REQUIREMENTS.name} not found next to the edgeopt package ({REQUIREMENTS.parent})",
                              "run from a source checkout of edgeopt (the onnx2tf pins live in its root)")
    return REQUIREMENTS


def tool_venv_dir() -> Path:
    return cache_root() / "tools" / f"onnx2tf-{sha256_file(requirements_file())[:16]}"


def _python_version(exe: str) -> tuple[int, int] | None:
    try:
        done = subprocess.run([exe, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = done.stdout.split()
    return (int(parts[0]), int(parts[1])) if done.returncode == 0 and len(parts) == 2 else None


def find_python312() -> str:
    """``$EDGEOPT_PYTHON312``, else ``python3.12`` on PATH, else a pyenv 3.12.x: the first that really runs 3.12."""
    explicit = os.environ.get("EDGEOPT_PYTHON312")
    if explicit:
        if _python_version(explicit) != (3, 12):
            raise ConversionError(f"EDGEOPT_PYTHON312={explicit} is not a working Python 3.12",
                                  "point it at a python3.12 executable or unset it")
        return explicit
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    found = shutil.which("python3.12")
    candidates = ([found] if found else []) + sorted(
        glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3.12"), reverse=True)
    for exe in candidates:
        if _python_version(exe) == (3, 12):
            return exe
    raise ConversionError("no Python 3.12 found: onnx2tf (ONNX -> TFLite) needs Python >= 3.12 in its own venv",
                          "install Python 3.12 (e.g. `pyenv install 3.12`) or set EDGEOPT_PYTHON312 to its python3.12")


def _run_pip(args: list[str], what: str, timeout: float) -> None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{what} took longer than {timeout:.0f} s", "check the package registry and retry")
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr + "\n" + done.stdout).splitlines() if ln.strip()]
        first = next((ln for ln in lines if ln.startswith("ERROR")), None) or next(
            (ln for ln in lines if not ln.startswith("WARNING")), "no output")
        raise ConversionError(f"{what} failed: {first[:300]}", "check the package registry, then retry")


def ensure_tool_venv(note: Note = _quiet, *, timeout: float = 1800.0) -> Path:
    """The tool venv's Python, building the venv first if needed (once; other processes wait on a lock).

    Built under a temporary name and renamed when complete, so a killed build never looks ready."""
    final = tool_venv_dir()
    python = final / "bin" / "python"
    if (final / READY).is_file():
        return python
    with file_lock(final.parent / f".{final.name}.lock",
                   on_wait=lambda: note("onnx2tf: another process is building its tool venv: waiting")):
        if (final / READY).is_file():
            return python
        base = find_python312()
        note(f"onnx2tf: building its tool venv with {base} in {final} (once; about a minute)")
        with staged_directory(final) as stage:
            _run_pip([base, "-m", "venv", str(stage)], "creating the onnx2tf venv", 300)
            pip = [str(stage / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
            _run_pip([*pip, "install", "--only-binary=:all:", "-r", str(requirements_file())],
                     f"pip install -r {REQUIREMENTS.name}", timeout)
            _run_pip([*pip, "check"], "pip check in the onnx2tf venv", 120)
            _run_pip([str(stage / "bin" / "python"), "-c", "import onnx2tf, tensorflow, tf_keras, onnxruntime"],
                     "importing onnx2tf in its venv", 300)
            atomic_write_bytes(stage / READY, sha256_file(requirements_file()).encode() + b"\n")
        note("onnx2tf: tool venv ready")
    return python


# ------------------------------------------------------------------------------------------------- conversion
DRIVER = r'''
import itertools, json, re, sys, time
spec = json.loads(sys.argv[1])
import numpy as np, onnx, onnxruntime as ort, onnx2tf, tensorflow as tf, tf_keras

def info(v):
    t = v.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return v.name, dims, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name

m = onnx.load(spec["onnx"], load_external_data=False)
known = {i.name for i in m.graph.initializer}
ins = [info(v) for v in m.graph.input if v.name not in known]
outs = [info(v) for v in m.graph.output]
del m
t0 = time.time()
model = onnx2tf.convert(input_onnx_file_path=spec["onnx"], output_folder_path=spec["work"],
                        tflite_backend="tf_converter", disable_model_save=True, non_verbose=True,
                        verbosity="error", batch_size=spec["batch"],
                        shape_hints=[f"{k}:{','.join(map(str, v))}" for k, v in spec["shape_hints"].items()] or None)
convert_s = time.time() - t0
if len(model.inputs) != len(ins) or len(model.outputs) != len(outs):
    sys.exit(f"edgeopt: onnx2tf made {len(model.inputs)}/{len(model.outputs)} inputs/outputs, "
             f"the ONNX model has {len(ins)}/{len(outs)}")
tf_in = [[d if isinstance(d, int) else None for d in t.shape] for t in model.inputs]
tf_out = [[d if isinstance(d, int) else None for d in t.shape] for t in model.outputs]
layouts = getattr(model, "onnx_output_layouts", {}) or {}

def cl(r): return tuple([0, *range(2, r), 1])
def inv(p): return tuple(int(i) for i in np.argsort(p))
def fits(src, dst, p):
    return len(src) == len(dst) == len(p) and all(src[i] is None or b is None or src[i] == b for i, b in zip(p, dst))
def perms(src, dst, first=None):
    if len(src) == 0 and len(dst) == 1 and dst[0] in (None, 1):
        return [()]  # a scalar (an int64 sample rate) that TF takes as a 1-D batch of one
    r = len(src); out = []
    for p in ([first] if first else []) + [tuple(range(r))] + ([cl(r)] if 3 <= r <= 5 else []):
        if p not in out and fits(src, dst, p): out.append(p)
    return out

in_cands = [perms(s, d) for (_, s, _), d in zip(ins, tf_in)]
out_cands = [perms(d, s, inv(cl(len(s))) if layouts.get(n) and 3 <= len(s) <= 5 else None)
             for (n, s, _), d in zip(outs, tf_out)]
for (n, s, _), d, c in zip(ins + outs, tf_in + tf_out, in_cands + out_cands):
    if not c: sys.exit(f"edgeopt: no layout maps ONNX {n} {s} to TF {d}")
rng = np.random.default_rng(spec["seed"])
hints = spec["shape_hints"]
feeds = {}
for n, s, dt in ins:
    shape = hints.get(n) or [1 if (i == 0 and d is None) else (d or 32) for i, d in enumerate(s)]
    feeds[n] = (rng.standard_normal(shape).astype(dt) if dt.startswith("float") else np.ones(shape, dt))
sess = ort.InferenceSession(spec["onnx"], providers=["CPUExecutionProvider"])
ref = sess.run([n for n, _, _ in outs], feeds)
best = None
for combo in itertools.product(*in_cands):
    xs = [tf.constant(np.reshape(feeds[n], (1,)) if not p and len(d) == 1 else np.transpose(feeds[n], p))
          for (n, _, _), p, d in zip(ins, combo, tf_in)]
    try:
        ys = model(xs, training=False)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError):  # a layout the model's inputs refuse
        continue
    ys = [np.asarray(y) for y in (ys if isinstance(ys, (list, tuple)) else [ys])]
    picked = []
    for y, r, cands in zip(ys, ref, out_cands):
        errs = []
        for p in cands:
            a = np.transpose(y, p)
            if a.shape != r.shape: continue
            scale = float(np.max(np.abs(r))) if r.size else 0.0
            diff = float(np.max(np.abs(a.astype(np.float64) - r))) if r.size else 0.0
            errs.append((diff / scale if scale > 0 else diff, p))
        picked.append(min(errs) if errs else (float("inf"), None))
    worst = max(e for e, _ in picked)
    if best is None or worst < best[0]: best = (worst, combo, picked)
if best is None: sys.exit("edgeopt: the TF model accepts no layout of the ONNX inputs")
worst, combo, picked = best

def sig(names, identifiers=False):
    # inputs become the serving function's argument names, which TF turns into identifiers ("input.1", PyTorch's
    # default, is "input_1" in the SavedModel): made so here, so that the names recorded are the file's
    out, seen = [], set()
    for n in names:
        s = re.sub(r"[^A-Za-z0-9_]" if identifiers else r"[^A-Za-z0-9_.-]", "_", n)
        s = s if re.match(r"[A-Za-z]" if identifiers else r"[A-Za-z0-9.]", s) else "t" + s
        base, k = s, 1
        while s in seen: s, k = f"{base}_{k}", k + 1
        seen.add(s); out.append(s)
    return out

in_sig, out_sig = sig([n for n, _, _ in ins], identifiers=True), sig([n for n, _, _ in outs])
report = {"convert_seconds": convert_s, "inputs": [], "outputs": []}
for (n, s, dt), d, p, sn in zip(ins, tf_in, combo, in_sig):
    report["inputs"].append({"onnx_name": n, "signature_name": sn, "onnx_shape": s, "tf_shape": d, "dtype": dt,
                             "perm": list(p)})
for (n, s, dt), d, (e, p), sn in zip(outs, tf_out, picked, out_sig):
    report["outputs"].append({"onnx_name": n, "signature_name": sn, "onnx_shape": s, "tf_shape": d, "dtype": dt,
                              "perm": list(p) if p else None, "rel_max_error": e})
with open(spec["report"], "w") as f: json.dump(report, f)
if worst > spec["tolerance"]:
    sys.exit(f"edgeopt: onnx2tf's model differs from ONNX Runtime: relative max error {worst:.3g}")
arch = tf_keras.export.ExportArchive()
arch.track(model)
specs = [tf.TensorSpec(t.shape, t.dtype, name=n) for t, n in zip(model.inputs, in_sig)]
def serve(*xs):
    ys = model(list(xs), training=False)
    return dict(zip(out_sig, ys if isinstance(ys, (list, tuple)) else [ys]))
arch.add_endpoint(name="serving_default", fn=serve, input_signature=specs)
arch.write_out(spec["out"])
'''


def _shape(dims: Sequence[int | None]) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in dims)


def _maps(items: list[dict[str, Any]], outputs: bool) -> tuple[TensorMap, ...]:
    return tuple(TensorMap(onnx_name=t["onnx_name"], signature_name=t["signature_name"],
                           onnx_shape=_shape(t["onnx_shape"]), tf_shape=_shape(t["tf_shape"]), dtype=t["dtype"],
                           perm=tuple(t["perm"]), rel_max_error=float(t["rel_max_error"]) if outputs else None)
                 for t in items)


def _tool_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    # No network: onnx2tf must never download anything (test images, calibration data); a proxy that refuses
    # every connection makes any such attempt fail at once instead of hanging.
    refuse = "http://127.0.0.1:9"
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "CUDA_VISIBLE_DEVICES": "",
                "PYTHONNOUSERSITE": "1", "HTTP_PROXY": refuse, "HTTPS_PROXY": refuse, "http_proxy": refuse,
                "https_proxy": refuse, "NO_PROXY": "", "no_proxy": ""})
    return env


def _failure(label: str, stderr: str, stdout: str) -> ConversionError:
    text = re.sub(r"\x1b\[[0-9;]*m", "", stderr + "\n" + stdout)
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    noise = re.compile(r"^(?:[IWE]\d{4} |WARNING: All log messages|To enable the following|\s*$)")
    useful = [ln for ln in lines if not noise.match(ln)]
    last = next((ln.strip() for ln in reversed(useful) if ln.startswith("edgeopt:")), None) or next(
        (ln.strip() for ln in reversed(useful) if re.search(r"Error|error|Exception", ln)),
        useful[-1].strip() if useful else "no output")
    op = re.search(r"No module named 'onnx2tf\.ops\.(\w+)'", text)
    if op:
        last = f"it has no mapping for ONNX op {op.group(1)}"
    if "differs from ONNX Runtime" in last:  # it converted, but its model computes something else
        hint = ("onnx2tf mapped the model to a TF graph that disagrees with ONNX Runtime (a layout it guessed "
                "wrong, or an op it maps differently); build the ONNX artifacts alone with a target whose formats: "
                "is [onnx], or report it to onnx2tf with the log EDGEOPT_DEBUG=1 shows")
    elif "inputs/outputs, the ONNX model has" in last:
        hint = ("onnx2tf's model lacks some inputs/outputs of the ONNX model (it drops ones it folds away); build "
                "the ONNX artifacts alone with a target whose formats: is [onnx]")
    else:
        hint = ("the model uses an op or pattern onnx2tf cannot map; a target whose formats: is [onnx] builds the "
                "ONNX artifacts alone; EDGEOPT_DEBUG=1 shows onnx2tf's full log")
    err = ConversionError(f"onnx2tf could not convert {label}: {last.removeprefix('edgeopt: ')[:300]}", hint)
    err.add_note("onnx2tf stderr (tail):\n" + "\n".join(useful[-25:]))
    return err


def internalised(onnx_path: Path, dest: Path) -> None:
    """``onnx_path`` with its external data read in, saved as one file (onnx2tf and the onnxsim it runs read only
    the graph file). Protobuf caps that at 2 GiB."""
    import onnx
    from onnx.external_data_helper import convert_model_from_external_data

    model = onnx.load(str(onnx_path))
    convert_model_from_external_data(model)
    try:
        onnx.save(model, str(dest))
    except ValueError as exc:  # protobuf: "Message onnx.ModelProto exceeds maximum protobuf size of 2GB"
        raise ModelError(f"{onnx_path} with its external data is over 2 GiB, more than onnx2tf can read",
                         "build an ONNX-only target (formats: [onnx]) for this model") from exc


def onnx_to_saved_model(onnx_path: Path, out_dir: Path, *, note: Note = _quiet, model_label: str | None = None,
                        batch: int | None = None, shape_hints: Mapping[str, Sequence[int]] | None = None,
                        tolerance: float = DEFAULT_TOLERANCE, timeout: float = 900.0,
                        seed: int = 0) -> Onnx2TfResult:
    """Convert ``onnx_path`` to a TensorFlow SavedModel: the directory ``out_dir`` (replaced only on success).

    ``batch`` fixes a dynamic batch axis (None keeps it); ``shape_hints`` gives full ONNX-layout shapes for inputs
    with other dynamic axes (the check runs on them; default 32 for each such axis). The SavedModel's
    ``serving_default`` signature takes and returns tensors named after the ONNX ones (sanitised)."""
    onnx_path = Path(onnx_path)
    label = model_label or onnx_path.name
    if not onnx_path.is_file():
        raise ModelError(f"ONNX model {onnx_path} not found", "check the model path")
    python = ensure_tool_venv(note)
    note(f"onnx2tf: converting {label} to a SavedModel (NCHW -> NHWC)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeopt-onnx2tf-") as tmp, staged_directory(Path(out_dir)) as stage:
        private = Path(tmp) / "model.onnx"  # onnx2tf rewrites its input in place (onnxsim): never the user's file
        if external_data_files(onnx_path):  # weights saved beside the graph (model.onnx.data): onnx2tf takes one file
            internalised(onnx_path, private)
        else:
            shutil.copyfile(onnx_path, private)
        spec = {"onnx": str(private), "work": str(Path(tmp) / "work"), "out": str(stage),
                "report": str(Path(tmp) / "report.json"), "batch": batch, "seed": seed, "tolerance": tolerance,
                "shape_hints": {k: [int(d) for d in v] for k, v in (shape_hints or {}).items()}}
        quiet = not os.environ.get("EDGEOPT_DEBUG")
        try:
            done = subprocess.run([str(python), "-c", DRIVER, json.dumps(spec)], cwd=tmp, env=_tool_env(),
                                  capture_output=quiet, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"onnx2tf took longer than {timeout:.0f} s on {label}",
                                  "simplify the model or raise the timeout")
        if done.returncode != 0 or not (stage / "saved_model.pb").is_file():
            raise _failure(label, done.stderr or "", done.stdout or "")
        report = read_json(Path(tmp) / "report.json")
    seconds = time.monotonic() - started
    note(f"onnx2tf: {label} converted in {seconds:.1f} s")
    return Onnx2TfResult(saved_model=Path(out_dir), inputs=_maps(report["inputs"], False),
                         outputs=_maps(report["outputs"], True), seconds=seconds)
