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
from edgeopt.errors import ConversionError, DataError, EdgeoptError, ModelError
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


def check_outputs_vary(src: SourceModel, feeds: Feeds, outputs: list[np.ndarray], inputs_from: str,
                       retrained: str | None = None) -> None:
    """Refuse a dead source: every output the same for all the judged samples (an untrained or collapsed model).
    Its artifacts would match it exactly and be judged ``ok``: a faithful copy of a model that predicts nothing.
    One constant output among varying ones is fine (a detector's anchor grid). ``retrained``: the profile whose
    training made ``src`` (pruned, distilled, QAT model), checked before it is converted."""
    def varies(a: np.ndarray) -> bool:  # any sample unlike the first (NaN counts as varying); no float64 copy
        a = np.asarray(a)
        return a.ndim > 0 and bool((a != a[:1]).any())

    n = int(outputs[0].shape[0]) if outputs and outputs[0].ndim else 0
    if n < 2 or any(varies(o) for o in outputs):
        return
    names = ", ".join(t.name for t in src.outputs[:3]) + (" ..." if len(src.outputs) > 3 else "")
    if not any(varies(v) for v in feeds.values()):
        raise DataError(f"the {n} {inputs_from} samples are all the same input, so the model's outputs cannot vary",
                        "pass --eval (or --data) samples that differ")
    if retrained:
        raise ModelError(f"{retrained}: every output of the re-trained model ({names}) is the same for all {n} "
                         f"{inputs_from} samples: its training collapsed it",
                         "check that the source model is trained (its accuracy), or lower the profile's "
                         "learning_rate / raise its epochs")
    raise ModelError(f"every output of the model ({names}) is the same for all {n} {inputs_from} samples: it is dead "
                     f"(untrained, or collapsed in training) and its artifacts could only copy that",
                     "check the model file: its float outputs should change with the input")


def make_judge(src: SourceModel, evalset: Dataset | None, float_eval: list[np.ndarray] | None,
               ref: Reference) -> Judge:
    """Judged on the eval set when there is one, else on the reference inputs; ``view`` is set once the build knows
    whether its TFLite artifacts come through onnx2tf."""
    if evalset is not None and float_eval is not None:
        return Judge(src, evalset.feeds, float_eval, evalset.y, "eval")
    return Judge(src, ref.feeds, ref.y_float, None, ref.inputs_from)


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
        elif judge.inputs_from == "eval" and not src.single_io:  # several: the first classifier output's
            first = src.classifier_output
            if first is not None:
                metrics = {**compare(got[first], judge.float_outputs[first], judge.labels),
                           "output": src.outputs[first].name}
        quality = judge.quality(path, fmt, profile, got)
    except EdgeoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - a runtime refusing the artifact is a conversion failure
        raise runtime_refusal(path, fmt, exc) from exc
    from edgeopt.analyze.sparsity import compression_facts

    min_weights = profile.prune.min_weights if profile.prune is not None else 0
    return {"file": path.name, "format": fmt, "runtime": RUNTIME_FOR[fmt], "sha256": _sha256(path),
            "bytes": path.stat().st_size, **info, "metrics": metrics, "quality": quality,
            **compression_facts(path, fmt, min_weights)}


def runtime_refusal(path: Path, fmt: str, exc: Exception) -> ConversionError:
    """The runtime's refusal, and its likely cause when the .tflite shows one: activations whose int8 range was empty
    in calibration (a layer whose output never varied: XNNPACK then cannot prepare the ops that read it)."""
    line = f"{path.name} does not run in {RUNTIME_FOR[fmt]}: {str(exc).splitlines()[0][:300]}"
    if fmt == "tflite":
        from edgeopt.analyze.tflite import empty_range_tensors

        try:
            dead = empty_range_tensors(path.read_bytes())
        except Exception:  # noqa: BLE001 - only a better message was at stake
            dead = []
        if dead:
            first = dead[0]
            return ConversionError(
                f"{line} — {len(dead)} quantised activation(s) never varied over the calibration data, first "
                f"{first['name']} ({first['op']} output, range {first['range']:.1g}): a dead layer, the model "
                "collapsed",
                "check that the model (for pruned/distilled/qat profiles: the re-trained one) gives outputs that "
                "change with the input; build -p fp32 to look at the float model")
    return ConversionError(line)


def worst_verdict(artifacts: list[dict[str, Any]]) -> str | None:
    """The worst quality verdict among a build's artifacts (None when none was judged)."""
    seen = [a["quality"]["verdict"] for a in artifacts if isinstance(a.get("quality"), dict)]
    return max(seen, key=VERDICTS.index) if seen else None


def _sha256(path: Path) -> str:
    from edgeopt.artifacts.files import sha256_file

    return sha256_file(path)
