"""The build pipeline: target x profile -> converter passes -> artifacts + manifest, with a content cache.

A rebuild whose inputs (model bytes, data, profile, target build facts, tool versions) are unchanged does no
conversion work: the key is computed and checked before TensorFlow is even imported.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np

from edgeopt import __version__
from edgeopt.artifacts.files import atomic_write_bytes, sha256_bytes, sha256_file, sha256_tree, staged_directory
from edgeopt.artifacts.manifest import Manifest
from edgeopt.build.reporter import Reporter
from edgeopt.config import Profile, Target
from edgeopt.errors import ConversionError, EdgeoptError, ModelError
from edgeopt.inputs.data import Dataset, check_against_model, check_labels, load_dataset
from edgeopt.inputs.model import SourceModel, example_model_path, open_model
from edgeopt.paths import shipped

TOOLS = ("tensorflow", "keras", "ai-edge-litert", "onnx", "onnxruntime", "onnxsim", "tf2onnx", "tflite-micro", "numpy")
FIRMWARE_TEMPLATE = shipped("firmware") / "tflm"
REFERENCE_SAMPLES = 32
RUNTIME_FOR = {"tflite": "litert", "onnx": "onnxruntime"}


def tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


@dataclass
class BuildRequest:
    target: Target
    profiles: list[Profile]
    model: str | None = None  # None: the bundled example
    data: str | None = None
    eval: str | None = None
    train: str | None = None  # training data for profiles with prune/distill/qat (the example brings its own)
    out: Path = Path("artifacts")
    force: bool = False
    drop_non_finite: bool = False  # drop (and count) samples holding NaN/Inf instead of refusing the data


@dataclass
class BuildResult:
    target: str
    profile: str
    directory: Path
    manifest: Manifest
    cached: bool
    seconds: float
    passes: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.target, "profile": self.profile, "directory": str(self.directory),
            "cached": self.cached, "seconds": round(self.seconds, 3),
            "artifacts": [{k: a.get(k) for k in ("file", "format", "bytes", "sha256", "metrics")}
                          for a in self.manifest["artifacts"]],
            "skipped": self.manifest.get("skipped", []),
        }


def formats_for(target: Target, profile: Profile, src_kind: str) -> tuple[list[str], list[dict[str, str]]]:
    """The formats this build makes, and the ones it cannot make (with the reason)."""
    made: list[str] = []
    skipped: list[dict[str, str]] = []
    for fmt in target.formats:
        if fmt == "tflite" and not profile.tflite.enabled or fmt == "onnx" and not profile.onnx.enabled:
            skipped.append({"format": fmt, "reason": f"profile {profile.name} disables {fmt}"})
        elif fmt == "tflite" and src_kind == "onnx":
            skipped.append({"format": fmt, "reason": "no ONNX -> TFLite converter is pinned; give a Keras/SavedModel"})
        else:
            made.append(fmt)
    return made, skipped


def build_key(src: SourceModel, target: Target, profile: Profile, calib: Dataset | None,
              evalset: Dataset | None, train: Dataset | None = None) -> str:
    facts = {
        "edgeopt": __version__, "model": src.sha256, "target": target.build_facts(), "profile": profile.build_facts(),
        "calibration": calib.sha256 if calib else None, "eval": evalset.sha256 if evalset else None,
        "tools": tool_versions(),
    }
    if profile.needs_training:  # plain profiles keep their keys
        from edgeopt.build.transforms import transform_facts

        facts["training"] = transform_facts(profile, train)
    if wants_firmware(target):
        from edgeopt.convert.tflm.target_src import find_source

        facts["firmware_template"] = sha256_tree(FIRMWARE_TEMPLATE)
        source = find_source()  # a TFLM tree turns host arena figures into measured target ones: a new build
        facts["tflm_source"] = source.sha256 if source is not None else None
    return sha256_bytes(json.dumps(facts, sort_keys=True).encode())


def wants_firmware(target: Target) -> bool:
    """Microcontroller targets get a TensorFlow Lite Micro firmware bundle next to the .tflite."""
    return "tflite-micro" in target.runtimes and "tflite" in target.formats


def cached_manifest(directory: Path, key: str) -> Manifest | None:
    """The existing manifest if it was built from the same inputs and every file still has its hash."""
    if not Manifest.exists(directory):
        return None
    try:
        manifest = Manifest.read(directory)
    except (OSError, ValueError):
        return None
    if manifest.get("build_key") != key or manifest.verify(directory):
        return None
    return manifest


class Pipeline:
    """Builds one target for several profiles, sharing the loaded model and its float outputs."""

    def __init__(self, req: BuildRequest, reporter: Reporter | None = None) -> None:
        self.req = req
        self.rep = reporter or Reporter()
        self._float_eval: np.ndarray | None = None

    def run(self) -> list[BuildResult]:
        req = self.req
        model_path = req.model or str(example_model_path(progress=self.rep.note))
        src = open_model(model_path)
        example = req.model is None
        calib_spec = req.data or ("example:calibration" if example else None)
        eval_spec = req.eval or ("example:eval" if example else None)
        drop = req.drop_non_finite
        calib = load_dataset(calib_spec, drop) if calib_spec else None
        evalset = load_dataset(eval_spec, drop) if eval_spec else None
        train = None
        if any(p.needs_training for p in req.profiles):
            from edgeopt.build.transforms import check_request

            train_spec = req.train or ("example:train" if example else None)
            check_request(req.profiles, src, train_spec)  # before any data is read or TensorFlow imported
            train = load_dataset(train_spec, drop) if train_spec else None
        results: list[BuildResult] = []
        todo: list[tuple[Profile, str]] = []
        for profile in req.profiles:
            if profile.needs_calibration and calib is None:
                raise ConversionError(f"profile {profile.name} needs calibration data",
                                      "pass --data calib.npz (x: a few hundred representative inputs)")
            key = build_key(src, req.target, profile, calib, evalset, train if profile.needs_training else None)
            directory = req.out / req.target.name / profile.name
            hit = None if req.force else cached_manifest(directory, key)
            if hit is not None:
                self.rep.note(f"{req.target.name}/{profile.name}: up to date (cached, no conversion work)")
                results.append(BuildResult(req.target.name, profile.name, directory, hit, True, 0.0))
            else:
                todo.append((profile, key))
        if todo:
            src.load()
            if calib is not None:
                needed = [p.calibration.min_samples for p, _ in todo if p.needs_calibration]
                calib = check_against_model(calib, src.input_shape, src.input_dtype, "calibration",
                                            min_samples=max(needed, default=1))
            if evalset is not None:
                evalset = check_against_model(evalset, src.input_shape, src.input_dtype, "eval")
                check_labels(evalset, src.output_shape, "eval")
            if train is not None and any(p.needs_training for p, _ in todo):
                train = check_against_model(train, src.input_shape, src.input_dtype, "training")
                check_labels(train, src.output_shape, "training")
            self.rep.start(sum(len(formats_for(req.target, p, src.kind)[0]) for p, _ in todo))
            for profile, key in todo:
                results.append(self._build_one(src, profile, key, calib, evalset, train))
        return results

    # -------------------------------------------------------------------------------------------------------
    def _float_outputs(self, src: SourceModel, evalset: Dataset) -> np.ndarray:
        if self._float_eval is None:
            self._float_eval = src.predict(evalset.x)
        return self._float_eval

    def _reference_inputs(self, src: SourceModel, calib: Dataset | None, evalset: Dataset | None
                          ) -> tuple[np.ndarray, np.ndarray | None, str]:
        if evalset is not None:
            head = evalset.head(REFERENCE_SAMPLES)
            return head.x, head.y, "eval"
        if calib is not None:
            return calib.head(REFERENCE_SAMPLES).x, None, "calibration"
        if any(d is None for d in src.input_shape):
            raise ConversionError(f"model input shape {src.input_shape} has unknown dims and no data was given",
                                  "pass --data or --eval so reference inputs have a shape")
        shape = cast("tuple[int, ...]", src.input_shape)  # no None dims: checked above
        rng = np.random.default_rng(0)
        x = rng.random((8, *shape), dtype=np.float32) if np.dtype(src.input_dtype).kind == "f" \
            else rng.integers(0, 127, (8, *shape)).astype(src.input_dtype)
        return x, None, "random"

    def _build_one(self, src: SourceModel, profile: Profile, key: str, calib: Dataset | None,
                   evalset: Dataset | None, train: Dataset | None = None) -> BuildResult:
        req, target = self.req, self.req.target
        t0 = time.perf_counter()
        fmts, skipped = formats_for(target, profile, src.kind)
        final = req.out / target.name / profile.name
        calib_x = calib.x if calib is not None else None
        n_cal = min(profile.calibration.samples, len(calib)) if calib is not None else 0
        passes: list[dict[str, Any]] = []
        artifacts: list[dict[str, Any]] = []
        ref_x, ref_y, ref_source = self._reference_inputs(src, calib, evalset)
        reference: dict[str, np.ndarray] = {"x": ref_x.astype(np.float32) if ref_x.dtype.kind == "f" else ref_x,
                                            "y_float": src.predict(ref_x)}
        check_finite_outputs(src, reference["y_float"], ref_source)
        if ref_y is not None:
            reference["labels"] = ref_y.astype(np.int64)

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            self.rep.step(profile.name, name)
            t = time.perf_counter()
            value = fn()
            dt = time.perf_counter() - t
            passes.append({"pass": name, "seconds": round(dt, 3)})
            self.rep.done(profile.name, name, dt)
            return value

        with staged_directory(final) as stage, tempfile.TemporaryDirectory(prefix="edgeopt-build-") as tmpdir:
            tmp = Path(tmpdir)
            transform = None
            teacher = src
            if profile.needs_training:
                from edgeopt.build.transforms import run_transform

                assert train is not None
                src, transform = timed(profile.transforms[0], lambda: run_transform(
                    teacher, profile, train, evalset, stage, self.rep.note))
            for fmt in fmts:
                out = stage / f"model.{fmt}"
                if fmt == "tflite":
                    from edgeopt.convert.tflite import convert_tflite

                    timed("tflite", lambda: convert_tflite(src, profile.tflite, out,  # noqa: B023 (called now)
                                                           calibration=calib_x,
                                                           calibration_samples=n_cal,
                                                           static_batch=target.static_batch))
                else:
                    self._onnx_chain(src, profile, out, tmp, calib_x, n_cal, timed)
                artifacts.append(self._describe(out, fmt, teacher, evalset, reference, profile))
                self.rep.artifact_done()
            tflm = None
            if wants_firmware(target) and "tflite" in fmts:
                from edgeopt.convert.tflm import build_firmware

                tflm = timed("tflm-firmware", lambda: build_firmware(
                    stage / "model.tflite", target, stage / "firmware", sample_input=reference["x"][0],
                    eval_inputs=reference["x"], note=self.rep.note))
            atomic_write_bytes(stage / "reference.npz", _npz_bytes(reference))
            manifest = Manifest({
                "schema": 1,
                "edgeopt_version": __version__,
                "target": target.name,
                "profile": profile.name,
                "profile_description": profile.description,
                "build_key": key,
                "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "build_seconds": round(time.perf_counter() - t0, 3),
                "static_batch": target.static_batch,
                "source": teacher.describe(),
                "tools": tool_versions(),
                "data": {"calibration": calib.describe() if calib else None,
                         "calibration_samples_used": n_cal,
                         "eval": evalset.describe() if evalset else None},
                "reference": {"file": "reference.npz", "sha256": sha256_file(stage / "reference.npz"),
                              "samples": int(len(ref_x)), "inputs_from": ref_source},
                "passes": passes,
                "artifacts": artifacts,
                "skipped": skipped,
            })
            if tflm is not None:
                manifest["tflm"] = tflm
            if transform is not None:
                manifest["data"]["train"] = train.describe() if train is not None else None
                manifest["transform"] = transform
            manifest.write(stage)
        return BuildResult(target.name, profile.name, final, manifest, False, time.perf_counter() - t0, passes)

    def _onnx_chain(self, src: SourceModel, profile: Profile, out: Path, tmp: Path, calib_x: np.ndarray | None,
                    n_cal: int, timed: Callable[[str, Callable[[], Any]], Any]) -> None:
        from edgeopt.convert.simplify import simplify_onnx

        static = self.req.target.static_batch
        if src.kind == "onnx":
            raw = src.path
        else:
            from edgeopt.convert.onnx_export import export_onnx

            raw = timed("onnx-export", lambda: export_onnx(src, tmp / f"{profile.name}-raw.onnx",
                                                           static_batch=static))
        quantised = profile.onnx.quantization != "none"
        simplified = out if not quantised else tmp / f"{profile.name}-simplified.onnx"
        timed("onnx-simplify", lambda: simplify_onnx(raw, simplified, static_batch=static and src.kind == "onnx",
                                                     input_shape=src.input_shape, input_name=src.input_name))
        if quantised:
            from edgeopt.convert.onnx_quantize import quantize_onnx

            timed(f"onnx-{profile.onnx.quantization}",
                  lambda: quantize_onnx(simplified, profile.onnx, out, calibration=calib_x, calibration_samples=n_cal))

    def _describe(self, path: Path, fmt: str, src: SourceModel, evalset: Dataset | None,
                  reference: dict[str, np.ndarray], profile: Profile | None = None) -> dict[str, Any]:
        """``src`` is the model the user gave: metrics compare every artifact, transformed or not, with it."""
        from edgeopt.analyze.evaluate import compare, run_artifact

        if fmt == "tflite":
            from edgeopt.analyze.tflite import inspect as inspect_tflite

            info = inspect_tflite(path.read_bytes())
        else:
            from edgeopt.analyze.onnx import inspect as inspect_onnx

            info = inspect_onnx(path)
        try:
            reference[f"y_{fmt}"] = run_artifact(path, fmt, reference["x"])
            metrics = None
            if evalset is not None:
                metrics = compare(run_artifact(path, fmt, evalset.x), self._float_outputs(src, evalset), evalset.y)
        except EdgeoptError:
            raise
        except Exception as exc:  # noqa: BLE001 - a runtime refusing the artifact is a conversion failure
            raise ConversionError(f"{path.name} does not run in {RUNTIME_FOR[fmt]}: {str(exc).splitlines()[0][:300]}"
                                  ) from exc
        from edgeopt.analyze.sparsity import compression_facts

        min_weights = profile.prune.min_weights if profile is not None and profile.prune is not None else 0
        return {"file": path.name, "format": fmt, "runtime": RUNTIME_FOR[fmt], "sha256": sha256_file(path),
                "bytes": path.stat().st_size, **info, "metrics": metrics,
                **compression_facts(path, fmt, min_weights)}


def check_finite_outputs(src: SourceModel, y: np.ndarray, inputs_from: str) -> None:
    """NaN/Inf out of the float model on sane inputs: damaged weights (which would also crash the calibrator)."""
    bad = ~np.isfinite(y.reshape(len(y), -1)).all(axis=1)
    if bad.any():
        raise ModelError(f"{src.path}: the model's float outputs hold NaN/Inf for {int(bad.sum())} of {len(y)} "
                         f"{inputs_from} inputs", "the weights may be damaged; re-export the model")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub matches **kwds against allow_pickle: bool
    return buf.getvalue()


def build(req: BuildRequest, reporter: Reporter | None = None) -> list[BuildResult]:
    return Pipeline(req, reporter).run()
