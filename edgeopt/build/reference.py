"""The reference a build ships next to its artifacts (``reference.npz``): a few inputs, the float model's outputs
on them, and each artifact's host outputs - what the device agent checks its own outputs against.

Single-input single-output models keep the original keys (``x``, ``y_float``, ``y_tflite``/``y_onnx``,
``labels``). Other models get, per artifact format FMT, the inputs in that artifact's own input order
(``x_FMT:0``, ``x_FMT:1``, ...), the float outputs mapped to the artifact's outputs (``y_float_FMT:0``, ...) and
the artifact's host outputs (``y_FMT:0``, ...), so the device needs no name matching (docs/artifacts.md).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from edgeopt.build.onnx_view import OnnxView
from edgeopt.errors import ConversionError, ModelError
from edgeopt.inputs.data import Dataset
from edgeopt.inputs.model import SourceModel
from edgeopt.inputs.tensors import Feeds

REFERENCE_SAMPLES = 32


@dataclass
class Reference:
    feeds: Feeds  # by source input name
    y_float: list[np.ndarray]  # by source output
    labels: np.ndarray | None
    inputs_from: str  # eval | calibration | random
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # what reference.npz holds

    @property
    def samples(self) -> int:
        return int(next(iter(self.feeds.values())).shape[0])

    def tflite_inputs(self) -> np.ndarray:
        """The (single) input as the TFLite artifact takes it: TF layout when onnx2tf moved it."""
        return self.arrays["x_tflite:0"] if "x_tflite:0" in self.arrays else self.arrays["x"]


def make_reference(src: SourceModel, calib: Dataset | None, evalset: Dataset | None) -> Reference:
    """Reference inputs from the eval data, else the calibration data, else generated (fixed seed)."""
    if evalset is not None:
        data = evalset.head(REFERENCE_SAMPLES)
        feeds, labels, source = data.feeds, data.y, "eval"
    elif calib is not None:
        feeds, labels, source = calib.head(REFERENCE_SAMPLES).feeds, None, "calibration"
    else:
        feeds, labels, source = generated_inputs(src), None, "random"
    y_float = src.predict_all(feeds)
    check_finite_outputs(src, y_float, source)
    ref = Reference(feeds, y_float, labels, source)
    if src.single_io:
        x = feeds[src.inputs[0].name]
        ref.arrays["x"] = x.astype(np.float32) if x.dtype.kind == "f" else x
        ref.arrays["y_float"] = y_float[0]
    if labels is not None:
        ref.arrays["labels"] = labels.astype(np.int64)
    return ref


def generated_inputs(src: SourceModel, samples: int = 8) -> Feeds:
    rng = np.random.default_rng(0)
    feeds: Feeds = {}
    for t in src.inputs:
        if any(d is None for d in t.sample_shape):
            raise ConversionError(f"model input '{t.name}' has shape {list(t.shape)} with unknown dims and no data "
                                  "was given", "pass --data or --eval so reference inputs have a shape")
        shape = (samples, *cast("tuple[int, ...]", t.sample_shape))
        feeds[t.name] = rng.random(shape, dtype=np.float32).astype(t.dtype) if np.dtype(t.dtype).kind == "f" \
            else rng.integers(0, 127, shape).astype(t.dtype)
    return feeds


def add_artifact(ref: Reference, src: SourceModel, path: Path, fmt: str, outputs: list[np.ndarray]) -> None:
    """Record an artifact's host outputs (in source output order) on the reference inputs."""
    if src.single_io:
        ref.arrays[f"y_{fmt}"] = outputs[0]
        return
    from edgeopt.analyze.outputs import align, io_names

    in_names, out_names = io_names(path, fmt)
    in_map = align([t.name for t in src.inputs], in_names)
    out_map = align([t.name for t in src.outputs], out_names)
    for k, j in enumerate(in_map):
        x = ref.feeds[src.inputs[k].name]
        ref.arrays[f"x_{fmt}:{j}"] = x.astype(np.float32) if x.dtype.kind == "f" else x
    for k, j in enumerate(out_map):
        ref.arrays[f"y_float_{fmt}:{j}"] = ref.y_float[k]
        ref.arrays[f"y_{fmt}:{j}"] = outputs[k]
    first = src.classifier_output
    if first is not None:
        mark_labels_output(ref, fmt, out_map[first])


def add_artifact_tf(ref: Reference, view: OnnxView, path: Path) -> None:
    """A TFLite artifact of an ONNX source (onnx2tf): inputs and outputs recorded in its own TF layout."""
    from edgeopt.analyze.outputs import align, io_names, run_all

    tf = view.tf_src
    tf_feeds = view.to_tf(ref.feeds)
    got = run_all(path, "tflite", tf_feeds, tf.inputs, tf.outputs)
    y_float = view.outputs_to_tf(ref.y_float)
    in_names, out_names = io_names(path, "tflite")
    for k, j in enumerate(align([t.name for t in tf.inputs], in_names)):
        x = tf_feeds[tf.inputs[k].name]
        ref.arrays[f"x_tflite:{j}"] = x.astype(np.float32) if x.dtype.kind == "f" else x
    out_map = align([t.name for t in tf.outputs], out_names)
    for k, j in enumerate(out_map):
        ref.arrays[f"y_float_tflite:{j}"] = y_float[k]
        ref.arrays[f"y_tflite:{j}"] = got[k]
    first = view.onnx_src.classifier_output
    if first is not None:  # the TF outputs are the signature's (sorted by name): found through onnx2tf's map
        name = view.onnx_src.outputs[first].name
        signature = next((m.signature_name for m in view.result.outputs if m.onnx_name == name), None)
        tf_names = [t.name for t in tf.outputs]
        if signature in tf_names:
            mark_labels_output(ref, "tflite", out_map[tf_names.index(signature)])


def mark_labels_output(ref: Reference, fmt: str, index: int) -> None:
    """``labels_output_<fmt>``: which of the artifact's outputs the labels belong to (the artifact may order its
    outputs otherwise than the source: a TFLite signature sorts them by name), so that the device's accuracy is
    taken on the output the build's was."""
    if "labels" in ref.arrays:
        ref.arrays[f"labels_output_{fmt}"] = np.asarray(index, dtype=np.int64)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub matches **kwds against allow_pickle: bool
    return buf.getvalue()


def check_finite_outputs(src: SourceModel, outputs: list[np.ndarray], inputs_from: str) -> None:
    """NaN/Inf out of the float model on sane inputs: damaged weights (which would also crash the calibrator)."""
    for spec, y in zip(src.outputs, outputs):
        bad = ~np.isfinite(y.reshape(len(y), -1)).all(axis=1) if y.ndim else ~np.isfinite(y)
        if bad.any():
            name = f" '{spec.name}'" if len(src.outputs) > 1 else ""
            raise ModelError(f"{src.path}: the model's float outputs{name} hold NaN/Inf for {int(bad.sum())} of "
                             f"{len(y)} {inputs_from} inputs", "the weights may be damaged; re-export the model")

