"""What an artifact is worth: its graph facts, its outputs on the reference and eval inputs, and a quality verdict
per output against the float model the user gave (``analyze.quality``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.build.onnx_view import OnnxView
from edgeopt.build.reference import Reference, add_artifact, add_artifact_tf
from edgeopt.config import Profile
from edgeopt.errors import ConversionError, EdgeoptError
from edgeopt.inputs.data import Dataset
from edgeopt.inputs.model import SourceModel
from edgeopt.inputs.tensors import Feeds

RUNTIME_FOR = {"tflite": "litert", "onnx": "onnxruntime"}
VERDICTS = ("ok", "degraded", "broken")


@dataclass
class Judge:
    """The data an artifact is judged on: the eval set when there is one, else the reference inputs."""

    src: SourceModel  # the model the user gave (a transformed model is judged against it too)
    feeds: Feeds
    float_outputs: list[np.ndarray]
    labels: np.ndarray | None
    inputs_from: str
    view: OnnxView | None = None  # the TFLite artifacts of an ONNX source take TF-layout data (onnx2tf)

    def outputs_of(self, path: Path, fmt: str) -> list[np.ndarray]:
        """The artifact's outputs on the judged data, in the source model's output order and layout."""
        return run_in_source_terms(path, fmt, self.src, self.feeds, self.view)

    def quality(self, path: Path, fmt: str, profile: Profile, got: list[np.ndarray] | None = None
                ) -> dict[str, Any]:
        from edgeopt.analyze.quality import assess

        got = self.outputs_of(path, fmt) if got is None else got
        q = assess([t.name for t in self.src.outputs], self.float_outputs, got, profile.quality, self.labels)
        q["inputs_from"] = self.inputs_from
        return q


def run_in_source_terms(path: Path, fmt: str, src: SourceModel, feeds: Feeds, view: OnnxView | None
                        ) -> list[np.ndarray]:
    from edgeopt.analyze.outputs import run_all

    if fmt == "tflite" and view is not None:
        tf = view.tf_src
        return view.outputs_from_tf(run_all(path, fmt, view.to_tf(feeds), tf.inputs, tf.outputs))
    return run_all(path, fmt, feeds, src.inputs, src.outputs)


def make_judge(src: SourceModel, evalset: Dataset | None, float_eval: list[np.ndarray] | None,
               ref: Reference, view: OnnxView | None = None) -> Judge:
    if evalset is not None and float_eval is not None:
        return Judge(src, evalset.feeds, float_eval, evalset.y, "eval", view)
    return Judge(src, ref.feeds, ref.y_float, None, ref.inputs_from, view)


def describe_artifact(path: Path, fmt: str, judge: Judge, ref: Reference, profile: Profile) -> dict[str, Any]:
    """Manifest entry of one artifact: file facts, graph facts, legacy classifier metrics and the quality verdict."""
    from edgeopt.analyze.evaluate import compare
    from edgeopt.analyze.outputs import run_all

    src = judge.src
    if fmt == "tflite":
        from edgeopt.analyze.tflite import inspect as inspect_tflite

        info = inspect_tflite(path.read_bytes())
    else:
        from edgeopt.analyze.onnx import inspect as inspect_onnx

        info = inspect_onnx(path)
    try:
        if fmt == "tflite" and judge.view is not None:
            add_artifact_tf(ref, judge.view, path)
        else:
            add_artifact(ref, src, path, fmt, run_all(path, fmt, ref.feeds, src.inputs, src.outputs))
        got = judge.outputs_of(path, fmt)
        metrics = None
        if judge.inputs_from == "eval" and src.single_io and len(src.output_shape) == 1:
            metrics = compare(got[0], judge.float_outputs[0], judge.labels)  # a classifier: top-1, accuracy
        quality = judge.quality(path, fmt, profile, got)
    except EdgeoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - a runtime refusing the artifact is a conversion failure
        raise ConversionError(f"{path.name} does not run in {RUNTIME_FOR[fmt]}: {str(exc).splitlines()[0][:300]}"
                              ) from exc
    from edgeopt.analyze.sparsity import compression_facts

    min_weights = profile.prune.min_weights if profile.prune is not None else 0
    return {"file": path.name, "format": fmt, "runtime": RUNTIME_FOR[fmt], "sha256": _sha256(path),
            "bytes": path.stat().st_size, **info, "metrics": metrics, "quality": quality,
            **compression_facts(path, fmt, min_weights)}


def worst_verdict(artifacts: list[dict[str, Any]]) -> str | None:
    """The worst quality verdict among a build's artifacts (None when none was judged)."""
    seen = [a["quality"]["verdict"] for a in artifacts if isinstance(a.get("quality"), dict)]
    return max(seen, key=VERDICTS.index) if seen else None


def _sha256(path: Path) -> str:
    from edgeopt.artifacts.files import sha256_file

    return sha256_file(path)
