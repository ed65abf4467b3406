"""The cache of built root filesystems: ``<cache_root>/emulate/<device>/images/<key>.tar.zst`` (+ ``<key>.json``:
the recipe, versions, build time). The key is the recipe's hash, so a changed recipe builds a new image and an
unchanged one is only unpacked (seconds). Packing goes to a temporary name and is renamed into place: an
interrupted build never leaves a half-written image."""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

from edgeopt.artifacts.files import file_lock
from edgeopt.emulate.host import Progress, no_progress, run
from edgeopt.emulate.mounts import mounts_under, remove_tree
from edgeopt.emulate.recipe import Recipe
from edgeopt.errors import EmulationError
from edgeopt.paths import cache_root

ZSTD_PACK = "zstd -T0 -10 -q"


def emulate_root() -> Path:
    return cache_root() / "emulate"


def images_dir(r: Recipe) -> Path:
    return emulate_root() / r.name / "images"


def image_file(r: Recipe) -> Path:
    return images_dir(r) / f"{r.key()}.tar.zst"


def image_meta_file(r: Recipe) -> Path:
    return images_dir(r) / f"{r.key()}.json"


def image_info(r: Recipe) -> dict[str, Any] | None:
    """The cached image's metadata, or None when there is no complete image for this recipe."""
    if not image_file(r).is_file() or not image_meta_file(r).is_file():
        return None
    try:
        info: dict[str, Any] = json.loads(image_meta_file(r).read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("key") == r.key() else None


@contextmanager
def locked(path: Path, progress: Progress = no_progress, what: str = "") -> Iterator[None]:
    """An exclusive lock on ``path`` (created), waiting for another edgeopt process that holds it."""
    with file_lock(path, on_wait=lambda: progress(f"waiting for another edgeopt process {what}".rstrip())):
        yield


def pack(root: Path, r: Recipe, meta: dict[str, Any], progress: Progress = no_progress) -> Path:
    """Pack ``root`` (nothing mounted) into the cache as this recipe's image, atomically."""
    if mounts_under(root):
        raise EmulationError(f"cannot pack {root}: something is still mounted below it")
    dest = image_file(r)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    started = time.monotonic()
    progress(f"packing the root filesystem into {dest}")
    try:
        run(["tar", "-C", str(root), "--numeric-owner", f"--use-compress-program={ZSTD_PACK}", "-cf", str(tmp),
             "."], "packing the root filesystem")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {**meta, "key": r.key(), "recipe": asdict(r), "image": dest.name, "bytes": dest.stat().st_size,
            "packed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "pack_seconds": round(time.monotonic() - started, 1)}
    meta_tmp = image_meta_file(r).with_suffix(".json.part")
    meta_tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(meta_tmp, image_meta_file(r))
    progress(f"image {dest.name}: {dest.stat().st_size / 1e6:.0f} MB in {meta['pack_seconds']:.0f} s")
    return dest


def restore(r: Recipe, root: Path, progress: Progress = no_progress) -> float:
    """Unpack this recipe's cached image into ``root`` (replaced atomically: unpacked beside it, then renamed).
    Returns the seconds it took."""
    image = image_file(r)
    if image_info(r) is None:
        raise EmulationError(f"no cached image for {r.name} (key {r.key()})",
                             f"build it: edgeopt emulate {r.name} build")
    started = time.monotonic()
    progress(f"restoring {r.name} from {image} ({image.stat().st_size / 1e6:.0f} MB)")
    staging = root.with_name(f".{root.name}.restore")
    remove_tree(staging)
    staging.mkdir(parents=True)
    try:
        run(["tar", "-C", str(staging), "--numeric-owner", "--use-compress-program=zstd", "-xpf", str(image)],
            "unpacking the root filesystem")
        remove_tree(root)
        os.replace(staging, root)
    finally:
        remove_tree(staging)
    return round(time.monotonic() - started, 2)
