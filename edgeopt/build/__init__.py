"""``edgeopt build`` as a library: the pipeline (target x profile -> converter passes -> artifacts + manifest,
with a content cache; :mod:`.pipeline`), the training transforms' build side (:mod:`.transforms`) and the
search over compression profiles (:mod:`.search`)."""

from edgeopt.build.pipeline import BuildRequest, BuildResult, Reporter, build, build_key

__all__ = ["BuildRequest", "BuildResult", "Reporter", "build", "build_key"]
