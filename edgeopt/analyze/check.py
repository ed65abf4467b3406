"""Is a ready model file what it claims to be? Checked on the host before anything is pushed to a device.

- TFLite: the flatbuffer identifier ``TFL3`` at bytes 4..8, and LiteRT builds an interpreter from it (which
  verifies the flatbuffer). An operator the host's LiteRT lacks (a custom op, a newer op version) is not a
  broken file: the device's runtime may have it.
- ONNX: ``onnx.checker.check_model`` on the file (it parses the protobuf, checks the IR version, the graph and
  the opsets; ops of custom domains pass).

A file that fails is a :class:`~edgeopt.errors.ModelError` (exit 2): one line naming the file and why.
"""

from __future__ import annotations

from pathlib import Path

from edgeopt.errors import ModelError

TFLITE_IDENTIFIER = b"TFL3"
# LiteRT messages that mean "this runtime lacks an operator", not "this file is broken"
_MISSING_OP = ("Didn't find op for builtin opcode", "Encountered unresolved custom op", "Registration failed")


def check_model_file(path: Path, fmt: str) -> None:
    """Raise :class:`ModelError` unless ``path`` is a loadable model of format ``fmt`` (``tflite``/``onnx``)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}", "check the path") from exc
    if size == 0:
        raise ModelError(f"model file {path} is empty", f"give a complete .{fmt} file (was it truncated?)")
    if fmt == "tflite":
        check_tflite(path)
    elif fmt == "onnx":
        check_onnx(path)
    else:
        raise ModelError(f"{path}: cannot check a model of format {fmt!r}", "give a .tflite or .onnx file")


def check_tflite(path: Path) -> None:
    hint = "give a .tflite written by the TFLite converter (e.g. `edgeopt build`); this one is corrupt or truncated"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}", "check the path") from exc
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(f"{path} is not a TFLite model (no TFL3 flatbuffer identifier)", hint)
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_path=str(path))
    except Exception as exc:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError with the reason
        text = str(exc)
        if any(marker in text for marker in _MISSING_OP):
            return  # the file parses; whether the device's runtime has the op is the device's business
        raise ModelError(f"{path} is not a valid TFLite model: {_first_line(text) or type(exc).__name__}",
                         hint) from exc


def check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - ValidationError, DecodeError, missing external data, ...
        raise ModelError(f"{path} is not a valid ONNX model: {_first_line(str(exc)) or type(exc).__name__}",
                         "give an .onnx exported by an ONNX exporter (e.g. `edgeopt build`); this one is corrupt "
                         "or truncated") from exc


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
