"""Artifacts on the host: hashes and atomic writes (:mod:`.files`) and the one manifest type (:mod:`.manifest`)."""

from edgeopt.artifacts.files import (
                                     atomic_write_bytes,
                                     atomic_write_json,
                                     output_error,
                                     read_json,
                                     sha256_bytes,
                                     sha256_file,
                                     sha256_tree,
                                     staged_directory,
)
from edgeopt.artifacts.manifest import MANIFEST_FILE, Manifest

__all__ = ["MANIFEST_FILE", "Manifest", "atomic_write_bytes", "atomic_write_json", "output_error", "read_json",
           "sha256_bytes", "sha256_file", "sha256_tree", "staged_directory"]
