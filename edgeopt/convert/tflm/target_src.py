"""Where the TensorFlow Lite Micro sources for the target build come from, and their unpacked copy in the cache.

A TFLM source is, in this order: ``$EDGEOPT_TFLM_SRC`` (an unpacked tree or its ``.tar.gz``), else the shared
bundle ``<repo>/../shared/tflm/tflm-src-*.tar.gz``. Either has the bundle's layout: ``tflite-micro/`` (the
tflite-micro tree with its third-party ``downloads/`` in place) and ``extras/mps2_an500_vectors.S`` (the vector
table that boots a TFLM ELF on QEMU's MPS2-AN500); ``scripts/fetch-tflm.sh`` makes one from the internet.

The source is identified by its content (every file's path below the bundle root and bytes: an archive and the
same tree unpacked get the same hash: an archive's hash is remembered per file version in the cache, a
directory's once per process) and unpacked (or copied) once into ``cache_root()/tflm/src-<hash>/``, staged
under a temporary name and renamed into place.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.errors import TflmSourceError
from edgeopt.paths import PACKAGE_DIR, cache_root

ENV_VAR = "EDGEOPT_TFLM_SRC"
BUNDLE_GLOB = "tflm-src-*.tar.gz"
VECTORS = Path("extras") / "mps2_an500_vectors.S"
MAKEFILE = Path("tensorflow") / "lite" / "micro" / "tools" / "make" / "Makefile"
OFF = ("off", "none")
SKIP_DIRS = {".git", "gen"}  # a user's tree may hold build output or git data: neither is source


@dataclass(frozen=True)
class TflmSource:
    """A TFLM source as found (``path``: archive or directory), how it was found and its content hash."""

    path: Path
    origin: str
    sha256: str

    def describe(self) -> dict[str, str]:
        return {"path": str(self.path), "origin": self.origin, "sha256": self.sha256}


def shared_bundle_dir() -> Path:
    """``<repo>/../shared/tflm``: where a checkout finds the pinned offline bundle (CI copies it there)."""
    return PACKAGE_DIR.parent.parent / "shared" / "tflm"


def switched_off() -> bool:
    """``EDGEOPT_TFLM_SRC=off`` (or ``none``): no target build even if the shared bundle is there."""
    return os.environ.get(ENV_VAR, "").strip().lower() in OFF


def missing_reason() -> str:
    """Why there is no target build, and how to get one (one line)."""
    if switched_off():
        return f"{ENV_VAR}={os.environ.get(ENV_VAR, '').strip()}: the emulated Cortex-M7 build is switched off"
    return (f"no TensorFlow Lite Micro source: set {ENV_VAR} to a TFLM tree or .tar.gz (scripts/fetch-tflm.sh makes "
            f"one) or put the bundle {BUNDLE_GLOB} in {shared_bundle_dir()}")


def find_source() -> TflmSource | None:
    """``$EDGEOPT_TFLM_SRC``, else the newest shared bundle, else None (also for ``off``). A set but unusable
    variable is an error."""
    explicit = os.environ.get(ENV_VAR, "").strip()
    if switched_off():
        return None
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_dir():
            check_layout(path)
            return TflmSource(path.resolve(), ENV_VAR, _tree_sha256_once(path.resolve()))
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
            return TflmSource(path.resolve(), ENV_VAR, archive_sha256(path))
        raise TflmSourceError(f"{ENV_VAR}={explicit} is neither a directory nor a .tar.gz file",
                              f"point {ENV_VAR} at a TFLM tree or bundle (scripts/fetch-tflm.sh makes one)")
    bundles = sorted(shared_bundle_dir().glob(BUNDLE_GLOB)) if shared_bundle_dir().is_dir() else []
    if not bundles:
        return None
    return TflmSource(bundles[-1].resolve(), "shared bundle", archive_sha256(bundles[-1]))


def check_layout(root: Path) -> None:
    """``root`` holds ``tflite-micro/`` (with its Makefile) and ``extras/mps2_an500_vectors.S``."""
    missing = [str(p) for p in (Path("tflite-micro") / MAKEFILE, VECTORS) if not (root / p).is_file()]
    if missing:
        raise TflmSourceError(f"TFLM source {root} lacks {', '.join(missing)}",
                              f"use the bundle's layout (tflite-micro/ + extras/): run scripts/fetch-tflm.sh or "
                              f"point {ENV_VAR} at the unpacked bundle")


def tree_files(root: Path) -> list[Path]:
    """Every regular file below ``root`` (sorted, relative), without build output or git data."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        base = Path(dirpath).relative_to(root)
        out += [base / name for name in sorted(filenames) if (Path(dirpath) / name).is_file()]
    return out


def content_sha256(files: Iterable[tuple[str, bytes]]) -> str:
    """One hash over (relative path, sha256 of the bytes) pairs, in path order: a tree and its archive agree."""
    h = hashlib.sha256()
    for rel, digest in sorted(files):
        h.update(rel.encode() + b"\0" + digest)
    return h.hexdigest()


def tree_sha256(root: Path) -> str:
    """Content hash of a tree: every file's relative path and bytes."""
    return content_sha256((rel.as_posix(), hashlib.sha256((root / rel).read_bytes()).digest())
                          for rel in tree_files(root))


@functools.lru_cache(maxsize=8)
def _tree_sha256_once(root: Path) -> str:
    """``tree_sha256()`` once per process and tree (a build asks ``find_source()`` several times; hashing a
    TFLM tree reads thousands of files). A tree edited while one process runs keeps its first hash there."""
    return tree_sha256(root)


def archive_sha256(path: Path) -> str:
    """Content hash of a bundle archive, equal to ``tree_sha256()`` of it unpacked; remembered per file version."""
    st = path.stat()
    memo_path = cache_root() / "tflm" / "archive-hashes.json"
    memo_key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return str(memo[memo_key])
    files: list[tuple[str, bytes]] = []
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        roots = {m.name[:m.name.index("tflite-micro/")] for m in members if "tflite-micro/" in m.name}
        if len(roots) != 1:
            raise TflmSourceError(f"{path} does not unpack to tflite-micro/ + extras/",
                                  f"use the pinned bundle or the output of scripts/fetch-tflm.sh as {ENV_VAR}")
        prefix = roots.pop()
        for m in members:
            rel = m.name[len(prefix):] if m.name.startswith(prefix) else ""
            f = tar.extractfile(m)
            if rel and f is not None and not SKIP_DIRS & set(Path(rel).parts):
                files.append((rel, hashlib.sha256(f.read()).digest()))
    digest = content_sha256(files)
    memo[memo_key] = digest
    atomic_write_bytes(memo_path, json.dumps(memo, indent=1).encode())
    return digest


def unpacked(src: TflmSource) -> Path:
    """The source's tree in the cache (``tflite-micro/``, ``extras/``), unpacked or copied on first use."""
    base = cache_root() / "tflm"
    final = base / f"src-{src.sha256[:16]}"
    if (final / VECTORS).is_file():
        return final
    base.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".src-{src.sha256[:16]}-", dir=base))
    try:
        if src.path.is_dir():
            for rel in tree_files(src.path):
                (stage / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src.path / rel, stage / "tree" / rel)
            tree = stage / "tree"
        else:
            with tarfile.open(src.path) as tar:
                tar.extractall(stage / "x", filter="data")
            tree = _bundle_root(stage / "x", src.path)
        check_layout(tree)
        for p in [tree, *tree.rglob("*")]:  # the archive may be read-only: we must be able to delete it later
            if p.is_dir() and not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o700)
        try:
            tree.rename(final)
        except OSError:  # another process put it there first
            if not (final / VECTORS).is_file():
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return final


def _bundle_root(extracted: Path, archive: Path) -> Path:
    if (extracted / "tflite-micro").is_dir():
        return extracted
    tops = [p for p in extracted.iterdir() if p.is_dir()]
    if len(tops) == 1 and (tops[0] / "tflite-micro").is_dir():
        return tops[0]
    raise TflmSourceError(f"{archive} does not unpack to tflite-micro/ + extras/",
                          f"use the pinned bundle or the output of scripts/fetch-tflm.sh as {ENV_VAR}")
