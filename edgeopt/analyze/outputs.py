"""Run an artifact on the host with every input and output, aligned to the source model's inputs and outputs.

Converters rename tensors (a TFLite signature says ``output_0``, ``serving_default_audio:0``; tf2onnx may add
``:0``), so each artifact tensor is matched to a source tensor by name, then by normalised name, then by position.
Models run one sample per call, as on the device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeopt.analyze.evaluate import dequantize, quantize
from edgeopt.errors import DataError
from edgeopt.inputs.tensors import Feeds, TensorSpec, one_sample, samples_in

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
             "tensor(bool)": "bool"}


@dataclass(frozen=True)
class ArtifactIO:
    name: str
    key: Any  # tensor index (TFLite) or name (ONNX Runtime)
    shape: tuple[int | None, ...]  # None: dynamic
    dtype: str
    quantization: dict[str, Any] | None = None


def normalise(name: str) -> str:
    n = name.split(":")[0].lower()
    n = re.sub(r"^serving_default_", "", n)
    return re.sub(r"[^a-z0-9]+", "_", n).strip("_")


def align(source: list[str], artifact: list[str]) -> list[int]:
    """For each source name, the index of the artifact tensor it is (by name, normalised name, else position)."""
    if len(source) != len(artifact):
        raise ValueError(f"the artifact has {len(artifact)} tensors where the source model has {len(source)}")
    numbered = [re.fullmatch(r"output_0*(\d+)", a) for a in artifact]
    if not set(source) & set(artifact) and all(numbered):  # edgeopt's TFLite signature: output_<source index>
        index = {int(m.group(1)): j for j, m in enumerate(numbered) if m}
        if sorted(index) == list(range(len(source))):
            return [index[k] for k in range(len(source))]
    out: list[int | None] = []
    for name in source:
        hit = artifact.index(name) if name in artifact else None
        if hit is None:
            norm = [normalise(a) for a in artifact]
            hit = norm.index(normalise(name)) if norm.count(normalise(name)) == 1 else None
        out.append(hit)
    free = [i for i in range(len(artifact)) if i not in out]
    if len(set(i for i in out if i is not None)) != len([i for i in out if i is not None]):
        return list(range(len(source)))  # two source names claim one artifact tensor: trust the order
    return [i if i is not None else free.pop(0) for i in out]


def tflite_io(it: Any) -> tuple[list[ArtifactIO], list[ArtifactIO]]:
    """Inputs and outputs in the interpreter's tensor order (the order the device agent uses), named by the
    signature when the model has one (``images``, ``output_0``), else by tensor name."""
    from edgeopt.analyze.tflite import tensor_io

    def io(name: str, d: dict[str, Any]) -> ArtifactIO:
        t = tensor_io(d)
        shape = tuple(None if s < 0 else int(s) for s in t["shape_signature"])
        return ArtifactIO(name, d["index"], shape, t["dtype"], t["quantization"])

    names: dict[int, str] = {}
    if it.get_signature_list():
        runner = it.get_signature_runner()
        for group in (runner.get_input_details(), runner.get_output_details()):
            names.update({int(d["index"]): str(k) for k, d in group.items()})
    return ([io(names.get(d["index"], d["name"]), d) for d in it.get_input_details()],
            [io(names.get(d["index"], d["name"]), d) for d in it.get_output_details()])


def run_all(path: Path, fmt: str, feeds: Feeds, inputs: list[TensorSpec], outputs: list[TensorSpec],
            threads: int = 1) -> list[np.ndarray]:
    """The artifact's outputs (float32, dequantised) for ``feeds``, in the order of the source ``outputs``."""
    if fmt == "tflite":
        from edgeopt.analyze.tflite import interpreter

        it = interpreter(str(path), threads=threads)
        art_in, art_out = tflite_io(it)
        invoke = _tflite_invoke(it, art_in, art_out)
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        art_in = [ArtifactIO(i.name, i.name, tuple(d if isinstance(d, int) else None for d in i.shape),
                             ORT_TYPES.get(i.type, "float32")) for i in sess.get_inputs()]
        art_out = [ArtifactIO(o.name, o.name, (), "float32") for o in sess.get_outputs()]
        invoke = lambda fed: [np.asarray(v) for v in sess.run(None, fed)]  # noqa: E731
    in_map = align([t.name for t in inputs], [a.name for a in art_in])
    out_map = align([t.name for t in outputs], [a.name for a in art_out])
    def feed(part: Feeds) -> list[np.ndarray]:
        fed = {}
        for spec, j in zip(inputs, in_map):
            a = art_in[j]
            fed[a.name] = quantize(np.asarray(part[spec.name]), a.dtype, a.quantization)
        got = invoke(fed)
        return [dequantize(np.asarray(got[j]), art_out[j].quantization) for j in out_map]

    # one sample per call, as the device runs it: dynamic-range quantisation picks activation scales per call, so
    # a batched host run would judge (and record as the device's reference) numbers the device never computes
    chunks = [feed(one_sample(inputs, feeds, i)) for i in range(samples_in(feeds))]
    return [np.concatenate(c) if spec.batched and c[0].ndim else np.stack(c)
            for spec, c in zip(outputs, zip(*chunks))]


def _tflite_invoke(it: Any, art_in: list[ArtifactIO], art_out: list[ArtifactIO]
                   ) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    shapes: dict[int, tuple[int, ...]] = {}

    def invoke(fed: dict[str, np.ndarray]) -> list[np.ndarray]:
        resized = False
        for a in art_in:
            shape = tuple(fed[a.name].shape)
            if shapes.get(a.key) != shape:
                it.resize_tensor_input(a.key, list(shape), strict=False)
                shapes[a.key] = shape
                resized = True
        if resized:
            it.allocate_tensors()
        for a in art_in:
            it.set_tensor(a.key, fed[a.name])
        it.invoke()
        return [it.get_tensor(a.key) for a in art_out]

    return invoke


def io_names(path: Path, fmt: str) -> tuple[list[str], list[str]]:
    """The artifact's own input and output names, in its own order."""
    if fmt == "tflite":
        from edgeopt.analyze.tflite import interpreter

        art_in, art_out = tflite_io(interpreter(str(path)))
        return [a.name for a in art_in], [a.name for a in art_out]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()]


def run_artifact(path: Path, fmt: str, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """The output of a one-input, one-output artifact for ``x`` (N, ...), float32 and dequantised: a shorthand
    for :func:`run_all` (one sample per call, as the device runs it)."""
    ins, outs = io_names(path, fmt)
    if len(ins) != 1 or len(outs) != 1:
        raise DataError(f"{path.name} has {len(ins)} inputs and {len(outs)} outputs; run_artifact takes one of each",
                        "use edgeopt.analyze.outputs.run_all with one array per input name")
    x = np.asarray(x)
    return run_all(path, fmt, {ins[0]: x}, [TensorSpec(ins[0], (None, *x.shape[1:]), str(x.dtype))],
                   [TensorSpec(outs[0], (None,), "float32")], threads)[0]


def run_tflite(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    return run_artifact(path, "tflite", x, threads)


def run_onnx(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    return run_artifact(path, "onnx", x, threads)
