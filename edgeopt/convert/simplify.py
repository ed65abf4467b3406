"""ONNX -> simplified ONNX (onnxsim: constant folding, shape inference, redundant-node removal)."""

from __future__ import annotations

from pathlib import Path

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.errors import ConversionError
from edgeopt.inputs.tensors import TensorSpec


def simplify_onnx(src: Path, out: Path, *, static_batch: bool, inputs: list[TensorSpec] | None = None
                  ) -> tuple[Path, dict[str, int]]:
    """Returns the output path and node counts before/after. With ``static_batch`` every batched input whose
    sample shape is fully known is fixed to batch 1 (inputs with dynamic H/W keep their dynamic dims)."""
    import onnx
    import onnxsim

    model = onnx.load(str(src))
    before = len(model.graph.node)
    overwrite = None
    if static_batch and inputs:
        fixed = {t.name: [1, *t.sample_shape] for t in inputs
                 if t.batched and all(d is not None for d in t.sample_shape)}
        if not fixed:
            shapes = ", ".join(f"{t.name} {list(t.shape)}" for t in inputs)
            raise ConversionError(f"cannot make the inputs static: {shapes} have unknown dims",
                                  "export the model with fixed input shapes for this target")
        overwrite = fixed
    try:
        simplified, ok = onnxsim.simplify(model, overwrite_input_shapes=overwrite)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"onnxsim failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    if not ok:
        raise ConversionError("onnxsim could not validate the simplified model against the original")
    atomic_write_bytes(out, simplified.SerializeToString())
    return out, {"nodes_before": before, "nodes_after": len(simplified.graph.node)}
