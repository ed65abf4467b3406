"""Keras / SavedModel -> ONNX with tf2onnx (``from_function``: its Keras-3 ``from_keras`` route is broken)."""

from __future__ import annotations

from pathlib import Path

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.errors import ConversionError
from edgeopt.inputs.model import SourceModel

OPSET = 17


def export_onnx(src: SourceModel, out: Path, *, static_batch: bool, opset: int = OPSET) -> Path:
    from edgeopt.tf_env import quiet_tensorflow

    tf = quiet_tensorflow()
    import tf2onnx

    fn = src.tf_function()
    name = (src.input_name or "input").split(":")[0]
    spec = tf.TensorSpec((1 if static_batch else None, *src.input_shape), tf.dtypes.as_dtype(src.input_dtype),
                         name=name)
    try:
        proto, _ = tf2onnx.convert.from_function(tf.function(fn), input_signature=[spec], opset=opset)
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises bare exceptions for unsupported ops
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"ONNX export (tf2onnx) failed: {first}",
                              "the model may use an op tf2onnx cannot map; try the TFLite artifact") from exc
    atomic_write_bytes(out, proto.SerializeToString())
    return out
