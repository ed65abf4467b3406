"""Keras / SavedModel -> ONNX with tf2onnx (``from_function``: its Keras-3 ``from_keras`` route is broken)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.errors import ConversionError
from edgeopt.inputs.model import SourceModel

OPSET = 17


def export_onnx(src: SourceModel, out: Path, *, static_batch: bool, opset: int = OPSET) -> Path:
    from edgeopt.tf_env import quiet_tensorflow

    tf = quiet_tensorflow()
    import tf2onnx

    call = src.tf_outputs()
    names = [t.name.split(":")[0] for t in src.inputs]
    specs = [tf.TensorSpec(((1 if static_batch else None), *t.sample_shape) if t.batched else (),
                           tf.dtypes.as_dtype(t.dtype), name=n) for t, n in zip(src.inputs, names)]
    source_names = [t.name for t in src.inputs]

    def fn(*args: Any) -> Any:
        outs = call(dict(zip(source_names, args)))
        return outs[0] if len(outs) == 1 else tuple(outs)

    try:
        proto, _ = tf2onnx.convert.from_function(tf.function(fn), input_signature=specs, opset=opset)
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises bare exceptions for unsupported ops
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"ONNX export (tf2onnx) failed: {first}",
                              "the model may use an op tf2onnx cannot map; try the TFLite artifact") from exc
    atomic_write_bytes(out, proto.SerializeToString())
    return out
