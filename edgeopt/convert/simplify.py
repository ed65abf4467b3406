"""ONNX -> simplified ONNX (onnxsim: constant folding, shape inference, redundant-node removal)."""

from __future__ import annotations

from pathlib import Path

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.errors import ConversionError


def simplify_onnx(src: Path, out: Path, *, static_batch: bool, input_shape: tuple[int | None, ...] | None = None,
                  input_name: str | None = None) -> tuple[Path, dict[str, int]]:
    """Returns the output path and node counts before/after."""
    import onnx
    import onnxsim

    model = onnx.load(str(src))
    before = len(model.graph.node)
    overwrite = None
    if static_batch and input_name and input_shape is not None:
        if any(d is None for d in input_shape):
            raise ConversionError(f"cannot make input '{input_name}' static: shape {input_shape} has unknown dims")
        overwrite = {input_name: [1, *input_shape]}
    try:
        simplified, ok = onnxsim.simplify(model, overwrite_input_shapes=overwrite)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"onnxsim failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    if not ok:
        raise ConversionError("onnxsim could not validate the simplified model against the original")
    atomic_write_bytes(out, simplified.SerializeToString())
    return out, {"nodes_before": before, "nodes_after": len(simplified.graph.node)}
