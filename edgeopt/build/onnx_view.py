"""An ONNX model seen as TensorFlow (onnx2tf, NCHW -> NHWC), so an ONNX input also gets TFLite artifacts.

The SavedModel onnx2tf writes is converted by the same TFLite step as a Keras model; data given in the ONNX
layout is moved into the TF layout (per input: renamed to the signature name, transposed), and the TFLite
artifact's outputs are moved back before they are judged against the ONNX float model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.inputs.model import SourceModel, open_model
from edgeopt.inputs.tensors import Feeds


@dataclass
class OnnxView:
    onnx_src: SourceModel
    tf_src: SourceModel  # the SavedModel onnx2tf wrote
    result: Any  # convert.onnx2tf.Onnx2TfResult

    def to_tf(self, feeds: Feeds) -> Feeds:
        """ONNX-layout data by ONNX input name -> TF-layout data by signature input name."""
        return {m.signature_name: _transpose(np.asarray(feeds[m.onnx_name]), m.perm) for m in self.result.inputs}

    def outputs_from_tf(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs in ``tf_src.outputs`` order and TF layout -> ONNX source output order and layout."""
        by_sig = dict(zip([t.name for t in self.tf_src.outputs], outputs))
        maps = {m.onnx_name: m for m in self.result.outputs}
        return [_transpose(by_sig[maps[t.name].signature_name], maps[t.name].perm) for t in self.onnx_src.outputs]

    def outputs_to_tf(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """ONNX-order, ONNX-layout outputs (the float model's) -> ``tf_src.outputs`` order and TF layout."""
        by_onnx = dict(zip([t.name for t in self.onnx_src.outputs], outputs))
        maps = {m.signature_name: m for m in self.result.outputs}
        return [_transpose(by_onnx[maps[t.name].onnx_name], tuple(int(i) for i in np.argsort(maps[t.name].perm)))
                for t in self.tf_src.outputs]

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = self.result.describe()
        return facts


def _transpose(a: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    if len(perm) != a.ndim or tuple(perm) == tuple(range(a.ndim)):
        return a
    return np.ascontiguousarray(np.transpose(a, perm))


def onnx_view(src: SourceModel, workdir: Path, note: Callable[[str], None]) -> OnnxView:
    """Convert the ONNX model with onnx2tf (its own Python 3.12 tool venv, built once and cached)."""
    from edgeopt.convert.onnx2tf import onnx_to_saved_model

    result = onnx_to_saved_model(src.path, workdir / "onnx2tf", note=note, model_label=str(src.path))
    return OnnxView(src, open_model(result.saved_model).load(), result)


@functools.lru_cache(maxsize=1)
def onnx2tf_unavailable() -> str | None:
    """Why ONNX -> TFLite cannot run on this machine (no Python 3.12 for onnx2tf's tool venv), or None."""
    from edgeopt.convert.onnx2tf import find_python312, requirements_file

    try:
        requirements_file()
        find_python312()
    except EdgeoptError as exc:
        return exc.one_line()
    except Exception as exc:  # noqa: BLE001 - whatever the lookup raised, ONNX -> TFLite is not available
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def onnx2tf_facts() -> dict[str, Any]:
    """What an ONNX -> TFLite artifact depends on beyond our own tools: the tool venv's pinned requirements and the
    driver script run there (its naming and layout checks)."""
    import hashlib

    from edgeopt.artifacts.files import sha256_file
    from edgeopt.convert.onnx2tf import DRIVER, requirements_file

    return {"onnx2tf_requirements": sha256_file(requirements_file()),
            "onnx2tf_driver": hashlib.sha256(DRIVER.encode()).hexdigest()[:16]}
