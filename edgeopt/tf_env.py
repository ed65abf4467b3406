"""Import TensorFlow quietly and once (its import takes seconds: only passes that convert call this)."""

from __future__ import annotations

import logging
import os
from typing import Any


def quiet_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import absl.logging
    import tensorflow as tf

    absl.logging.set_verbosity(absl.logging.ERROR)
    for name in ("tf2onnx", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    return tf
