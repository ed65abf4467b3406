"""The one Manifest type: what ``edgeopt build`` wrote into an artifact directory (docs/artifacts.md).

A manifest is a JSON object, so :class:`Manifest` is a ``dict`` (readers keep their ``manifest["artifacts"]``)
with the few facts every reader needs as methods: written last and atomically by :meth:`write` (its presence
means the directory is complete), read by :meth:`read`, and checked file by file by :meth:`verify`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.artifacts.files import atomic_write_json, read_json, sha256_file

MANIFEST_FILE = "manifest.json"
SCHEMA = 1


class Manifest(dict[str, Any]):
    """The manifest of one ``<target>/<profile>/`` directory."""

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Raises ``OSError`` (missing, unreadable) or ``ValueError`` (not a JSON object)."""
        doc = read_json(Path(directory) / MANIFEST_FILE)
        if not isinstance(doc, dict):
            raise ValueError(f"{Path(directory) / MANIFEST_FILE} is not a JSON object")
        return cls(doc)

    @staticmethod
    def exists(directory: Path) -> bool:
        return (Path(directory) / MANIFEST_FILE).is_file()

    def write(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        atomic_write_json(path, dict(self))
        return path

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        return list(self.get("artifacts") or [])

    @property
    def reference(self) -> dict[str, Any] | None:
        ref = self.get("reference")
        return ref if isinstance(ref, dict) and ref.get("file") else None

    def files(self) -> list[tuple[str, str]]:
        """Every file the manifest lists, relative to its directory, with its sha256."""
        files = [(str(a["file"]), str(a["sha256"])) for a in self.artifacts]
        if self.reference:
            files.append((str(self.reference["file"]), str(self.reference["sha256"])))
        trained = (self.get("transform") or {}).get("model")
        if trained:
            files.append((str(trained["file"]), str(trained["sha256"])))
        tflm = self.get("tflm")
        if tflm:
            files.extend((f"firmware/{name}", str(f["sha256"])) for name, f in (tflm.get("files") or {}).items())
        return files

    def verify(self, directory: Path) -> list[str]:
        """The listed files that are missing or whose content no longer has the recorded hash (empty: intact)."""
        bad = []
        for name, digest in self.files():
            path = Path(directory) / name
            if not path.is_file() or sha256_file(path) != digest:
                bad.append(name)
        return bad
