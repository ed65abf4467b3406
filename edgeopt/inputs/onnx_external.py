"""ONNX models whose tensors are saved as external data (``model.onnx`` + ``model.onnx.data``, as exporters write
models over 2 GiB or when asked): which files they need, checked once, so that the content key covers the weights
and the converters get them."""

from __future__ import annotations

import mmap
from pathlib import Path

from edgeopt.errors import ModelError


def external_data_files(onnx_path: Path) -> list[str]:
    """The files (relative to the model's directory) holding tensors saved as external data; a missing one, or a
    location outside that directory, is a one-line :class:`ModelError`."""
    if not _mentions_location(onnx_path):  # no tensor can point outside: the graph is not parsed (keys stay cheap)
        return []
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not readable as ONNX: said by the model check, in its own words
        return []
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    found: list[str] = []
    for tensor in tensors:
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        where = onnx_path.parent / location  # read lexically: a hub cache links the file elsewhere, and may
        if not location or Path(location).is_absolute() or ".." in Path(location).parts:
            raise ModelError(f"{onnx_path}: tensor {tensor.name} has its data at {location!r}, outside the "
                             "model's directory", "save the model with its external data beside it")
        if not where.is_file():
            raise ModelError(f"{onnx_path}: tensor {tensor.name} has its data in {location}, which is missing",
                             f"copy {location} next to {onnx_path.name} (the weights saved with it)")
        if location not in found:
            found.append(location)
    return found


def _mentions_location(onnx_path: Path) -> bool:
    """Whether the file holds the bytes ``location`` at all (every external-data entry names its file so)."""
    try:
        with open(onnx_path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return view.find(b"location") != -1
    except (OSError, ValueError):  # an empty file cannot be mapped
        return False
