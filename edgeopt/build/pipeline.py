"""The build pipeline: target x profile -> converter passes -> artifacts + manifest, with a content cache.

A rebuild whose inputs (model bytes, data, profile, target build facts, tool versions) are unchanged does no
conversion work: the key is computed and checked before TensorFlow is even imported.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeopt import __version__
from edgeopt.artifacts.files import atomic_write_bytes, sha256_bytes, sha256_file, sha256_tree, staged_directory
from edgeopt.artifacts.manifest import Manifest
from edgeopt.build.judge import check_outputs_vary, describe_artifact, make_judge, worst_verdict
from edgeopt.build.onnx_view import OnnxView, onnx2tf_facts, onnx2tf_unavailable, onnx_view
from edgeopt.build.reference import make_reference, npz_bytes
from edgeopt.build.reporter import Reporter
from edgeopt.build.steps import StepContext, onnx_step, tflite_step
from edgeopt.config import Profile, Target
from edgeopt.errors import ConversionError
from edgeopt.inputs.data import Dataset, check_against_model, check_labels, load_dataset
from edgeopt.inputs.example_model import example_model_path
from edgeopt.inputs.model import SourceModel, open_model
from edgeopt.paths import shipped
from edgeopt.tf_env import quiet_tensorflow

TOOLS = ("tensorflow", "keras", "ai-edge-litert", "onnx", "onnxruntime", "onnxsim", "tf2onnx", "tflite-micro", "numpy")
FIRMWARE_TEMPLATE = shipped("firmware") / "tflm"


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
            "artifacts": [{k: a.get(k) for k in ("file", "format", "bytes", "sha256", "metrics", "quality")}
                          for a in self.manifest["artifacts"]],
            "skipped": self.manifest.get("skipped", []),
            "verdict": self.manifest.get("verdict"),
        }


FEW_EVAL_SAMPLES = 20  # fewer eval samples than this: the verdicts are said to rest on them


def range_mismatches(calib: Dataset, evalset: Dataset, factor: float = 4.0) -> list[str]:
    """Inputs whose calibration and eval values span ranges ``factor`` apart (images in 0..255 for calibration,
    0..1 for eval): the int8 scales come from the calibration data, so such an artifact is broken for a reason
    no profile fixes."""
    found = []
    for name, c in calib.feeds.items():
        e = evalset.feeds.get(name)
        if e is None or c.dtype.kind != "f" or e.dtype.kind != "f" or not c.size or not e.size:
            continue
        cs, es = float(c.max() - c.min()), float(e.max() - e.min())
        if cs > 0 and es > 0 and max(cs / es, es / cs) > factor:
            found.append(f"note: input {name}: the calibration data span {float(c.min()):.3g}..{float(c.max()):.3g} "
                         f"but the eval data {float(e.min()):.3g}..{float(e.max()):.3g} — int8 scales come from the "
                         "calibration data: preprocess both alike")
    return found


def formats_for(target: Target, profile: Profile, src_kind: str) -> tuple[list[str], list[dict[str, str]]]:
    """The formats this build makes, and the ones it cannot make (with the reason)."""
    made: list[str] = []
    skipped: list[dict[str, str]] = []
    for fmt in target.formats:
        if fmt == "tflite" and not profile.tflite.enabled or fmt == "onnx" and not profile.onnx.enabled:
            skipped.append({"format": fmt, "reason": f"profile {profile.name} disables {fmt}"})
        elif fmt == "tflite" and src_kind == "onnx" and onnx2tf_unavailable():
            skipped.append({"format": fmt, "reason": f"ONNX -> TFLite (onnx2tf) unavailable: {onnx2tf_unavailable()}"})
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
    if src.kind == "onnx" and "tflite" in target.formats:
        facts["onnx2tf"] = onnx2tf_facts()
    if profile.needs_training:  # plain profiles keep their keys
        from edgeopt.build.transforms import transform_facts

        facts["training"] = transform_facts(profile, train)
    if wants_firmware(target):
        from edgeopt.convert.tflm.target_src import find_source

        facts["firmware_template"] = sha256_tree(FIRMWARE_TEMPLATE)
        source = find_source()  # a TFLM tree turns host arena figures into measured target ones: a new build
        facts["tflm_source"] = source.sha256 if source is not None else None
    return sha256_bytes(json.dumps(facts, sort_keys=True).encode())


def data_specs(req: BuildRequest) -> tuple[str | None, str | None, str | None]:
    """The calibration, eval and training data a request builds from: its own, or the bundled example's for the
    example (``model`` None). One answer for the pipeline and for the matrix's keys."""
    example = req.model is None
    return (req.data or ("example:calibration" if example else None), req.eval or ("example:eval" if example else None),
            req.train or ("example:train" if example else None))


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
    if any(s.get("failed") for s in manifest.get("skipped") or []):  # a format a converter failed on: tried again
        return None
    return manifest


class Pipeline:
    """Builds one target for several profiles, sharing the loaded model and its float outputs."""

    def __init__(self, req: BuildRequest, reporter: Reporter | None = None) -> None:
        self.req = req
        self.rep = reporter or Reporter()
        self._float_eval: list[np.ndarray] | None = None
        self._view: OnnxView | None = None  # an ONNX source seen as TensorFlow (onnx2tf), made once per run
        self._view_error: ConversionError | None = None  # or why onnx2tf could not make it (tried once)
        self._workdir: Path | None = None

    def run(self) -> list[BuildResult]:
        req = self.req
        model_path = req.model or str(example_model_path(progress=self.rep.note, meanwhile=quiet_tensorflow))
        src = open_model(model_path)
        calib_spec, eval_spec, train_spec = data_specs(req)
        drop = req.drop_non_finite
        calib = load_dataset(calib_spec, drop) if calib_spec else None
        evalset = load_dataset(eval_spec, drop) if eval_spec else None
        train = None
        if any(p.needs_training for p in req.profiles):
            from edgeopt.build.transforms import check_request

            check_request(req.profiles, src, train_spec)  # before any data is read or TensorFlow imported
            train = load_dataset(train_spec, drop) if train_spec else None
        results: list[BuildResult] = []
        todo: list[tuple[Profile, str]] = []
        for profile in req.profiles:
            if profile.needs_calibration and calib is None:
                raise ConversionError(f"profile {profile.name} needs calibration data",
                                      "pass --data calib.npz (x: a few hundred representative inputs)")
            key = build_key(src, req.target, profile, calib, evalset, train)  # train counts for training profiles
            directory = req.out / req.target.name / profile.name
            hit = None if req.force else cached_manifest(directory, key)
            if hit is not None:
                self.rep.note(f"{req.target.name}/{profile.name}: up to date (cached, no conversion work)")
                results.append(BuildResult(req.target.name, profile.name, directory, hit, True, 0.0))
            else:
                todo.append((profile, key))
        if todo:
            src.load()
            check_model_fits(src, req.target, [p for p, _ in todo])
            if calib is not None:
                needed = [p.calibration.min_samples for p, _ in todo if p.needs_calibration]
                calib = check_against_model(calib, src.inputs, "calibration", min_samples=max(needed, default=1))
            if evalset is not None:
                evalset = check_against_model(evalset, src.inputs, "eval")
                if len(evalset) < FEW_EVAL_SAMPLES:
                    self.rep.note(f"note: the eval data {evalset.spec} holds {len(evalset)} samples: the accuracy "
                                  f"and every verdict rest on them (give a few hundred)")
                check_labels(evalset, src.label_shape, "eval")
            if calib is not None and evalset is not None and any(p.needs_calibration for p, _ in todo):
                for message in range_mismatches(calib, evalset):
                    self.rep.note(message)
            if train is not None and any(p.needs_training for p, _ in todo):
                train = check_against_model(train, src.inputs, "training")
                check_labels(train, src.label_shape, "training")
            self.rep.start(sum(len(formats_for(req.target, p, src.kind)[0]) for p, _ in todo))
            with tempfile.TemporaryDirectory(prefix="edgeopt-run-") as workdir:
                self._workdir = Path(workdir)
                for profile, key in todo:
                    results.append(self._build_one(src, profile, key, calib, evalset, train))
        return results

    def _onnx_view(self, src: SourceModel) -> OnnxView:
        if self._view_error is not None:
            raise self._view_error
        if self._view is None:
            assert self._workdir is not None
            self.rep.note(f"converting {src.path.name} to TensorFlow with onnx2tf (NCHW -> NHWC)")
            self._view = onnx_view(src, self._workdir, self.rep.note)
        return self._view

    # -------------------------------------------------------------------------------------------------------
    def _float_outputs(self, src: SourceModel, evalset: Dataset) -> list[np.ndarray]:
        if self._float_eval is None:
            self._float_eval = src.predict_all(evalset.feeds)
        return self._float_eval

    def _build_one(self, src: SourceModel, profile: Profile, key: str, calib: Dataset | None,
                   evalset: Dataset | None, train: Dataset | None = None) -> BuildResult:
        req, target = self.req, self.req.target
        t0 = time.perf_counter()
        fmts, skipped = formats_for(target, profile, src.kind)
        final = req.out / target.name / profile.name
        calib_feeds = calib.feeds if calib is not None else None
        n_cal = min(profile.calibration.samples, len(calib)) if calib is not None else 0
        passes: list[dict[str, Any]] = []
        artifacts: list[dict[str, Any]] = []
        ref = make_reference(src, calib, evalset)

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            self.rep.step(profile.name, name)
            t = time.perf_counter()
            value = fn()
            dt = time.perf_counter() - t
            passes.append({"pass": name, "seconds": round(dt, 3)})
            self.rep.done(profile.name, name, dt)
            return value

        judge = make_judge(src, evalset, self._float_outputs(src, evalset) if evalset else None, ref)
        check_outputs_vary(src, judge.feeds, judge.float_outputs, judge.inputs_from)
        with staged_directory(final) as stage, tempfile.TemporaryDirectory(prefix="edgeopt-build-") as tmpdir:
            tmp = Path(tmpdir)
            transform = None
            teacher = src
            if profile.needs_training:
                from edgeopt.build.transforms import run_transform

                assert train is not None
                src, transform = timed(profile.transforms[0], lambda: run_transform(
                    teacher, profile, train, evalset, stage, self.rep.note))
                check_outputs_vary(src, judge.feeds, src.predict_all(judge.feeds), judge.inputs_from,
                                   retrained=profile.name)
            view = None
            if src.kind == "onnx" and "tflite" in fmts:
                try:
                    view = judge.view = self._onnx_view(src)
                except ConversionError as exc:  # the ONNX artifacts need no onnx2tf: they are still built
                    if fmts == ["tflite"]:
                        raise
                    self._view_error = exc
                    fmts = [f for f in fmts if f != "tflite"]
                    skipped.append({"format": "tflite", "reason": exc.one_line(), "failed": "onnx2tf"})
                    self.rep.note(f"TFLite not built (the ONNX artifacts still are): {exc.one_line()}")
            ctx = StepContext(target.static_batch, calib_feeds, n_cal, tmp, timed, self.rep.note, judge,
                              str(teacher.path))
            for fmt in fmts:
                out = stage / f"model.{fmt}"
                if fmt == "tflite" and view is not None:
                    tf_ctx = dataclasses.replace(ctx, calib=view.to_tf(calib_feeds) if calib_feeds else None)
                    facts = {**tflite_step(tf_ctx, view.tf_src, profile, out), "layout_change": view.describe()}
                else:
                    facts = (tflite_step if fmt == "tflite" else onnx_step)(ctx, src, profile, out)
                artifacts.append({**describe_artifact(out, fmt, judge, ref, profile),
                                  **({"conversion": facts} if facts else {})})
                self.rep.artifact_done()
            tflm = None
            if wants_firmware(target) and "tflite" in fmts:
                from edgeopt.convert.tflm import build_firmware

                tflm = timed("tflm-firmware", lambda: build_firmware(
                    stage / "model.tflite", target, stage / "firmware", sample_input=ref.tflite_inputs()[0],
                    eval_inputs=ref.tflite_inputs(), note=self.rep.note))
            atomic_write_bytes(stage / "reference.npz", npz_bytes(ref.arrays))
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
                              "samples": ref.samples, "inputs_from": ref.inputs_from,
                              "keys": sorted(ref.arrays)},
                "passes": passes,
                "artifacts": artifacts,
                "skipped": skipped,
                "verdict": worst_verdict(artifacts),
            })
            if tflm is not None:
                manifest["tflm"] = tflm
            if transform is not None:
                manifest["data"]["train"] = train.describe() if train is not None else None
                manifest["transform"] = transform
            manifest.write(stage)
        return BuildResult(target.name, profile.name, final, manifest, False, time.perf_counter() - t0, passes)


def check_model_fits(src: SourceModel, target: Target, profiles: list[Profile]) -> None:
    """What needs a single-input single-output model (training transforms, TFLM firmware) says so up front."""
    if src.single_io:
        return
    shape = f"{len(src.inputs)} inputs / {len(src.outputs)} outputs"
    for profile in profiles:
        if profile.needs_training:
            raise ConversionError(f"profile {profile.name} ({profile.transforms[0]}) trains single-input "
                                  f"single-output models; {src.path} has {shape}",
                                  "use a profile without training (fp32, dynamic, int8, int8-auto)")
    if wants_firmware(target):
        raise ConversionError(f"target {target.name} (TFLite Micro firmware) takes single-input single-output "
                              f"models; {src.path} has {shape}", "build it for an application-processor target")


def build(req: BuildRequest, reporter: Reporter | None = None) -> list[BuildResult]:
    return Pipeline(req, reporter).run()
