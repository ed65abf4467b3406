"""Import TensorFlow quietly and once (its import takes seconds: only passes that convert call this)."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what C++ code writes to fd 2 (absl/XLA start-up lines, the converter's ``fully_quantize: …``) to
    /dev/null for the duration. Python exceptions still carry their messages; EDGEOPT_DEBUG=1 keeps everything."""
    if os.environ.get("EDGEOPT_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters, some test runners)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if "tensorflow" not in sys.modules:
        with native_stderr_silenced():
            import tensorflow  # noqa: F401
    import absl.logging
    import tensorflow as tf

    absl.logging.set_verbosity(absl.logging.ERROR)
    for name in ("tf2onnx", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    return tf
