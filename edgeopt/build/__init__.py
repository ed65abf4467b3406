"""``edgeopt build`` as a library: the pipeline (target x profile -> converter passes -> artifacts + manifest,
with a content cache; :mod:`.pipeline`), the training transforms' build side (:mod:`.transforms`) and the
search over compression profiles (:mod:`.search`).

The names below are loaded on first use (PEP 562), so importing a light submodule (:mod:`.reporter`) does not
load the pipeline and numpy: the command line starts without them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeopt.build.reporter import Reporter

if TYPE_CHECKING:
    from edgeopt.build.pipeline import BuildRequest, BuildResult, build, build_key

__all__ = ["BuildRequest", "BuildResult", "Reporter", "build", "build_key"]

_FROM_PIPELINE = frozenset({"BuildRequest", "BuildResult", "build", "build_key"})


def __getattr__(name: str) -> Any:
    if name in _FROM_PIPELINE:
        from edgeopt.build import pipeline

        value = getattr(pipeline, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
