"""Where edgeopt keeps things on the host: the one cache root and the shipped data inside the package."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def cache_root() -> Path:
    """``$EDGEOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgeopt``, else ``~/.cache/edgeopt``: the example model,
    the agent zipapp and everything else edgeopt caches on the host lives below it."""
    explicit = os.environ.get("EDGEOPT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeopt"


def shipped(kind: str) -> Path:
    """A folder of data shipped inside the package (``targets``, ``profiles``, ``firmware``): present in an
    editable install and in a wheel alike."""
    return PACKAGE_DIR / kind
