"""Shared fixtures: the example model is trained once (and cached on disk); the example build runs once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def example_model() -> Path:
    from edgeopt.inputs.model import example_model_path

    return example_model_path()


@pytest.fixture(scope="session")
def example_build(example_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """All five standard profiles of the bundled example for the `local` target, built once."""
    from edgeopt.build import BuildRequest, build
    from edgeopt.config import load_profile, load_target

    out = tmp_path_factory.mktemp("example-build")
    profiles = ["fp32", "fp16", "dynamic", "int8", "int8-float-io"]
    req = BuildRequest(target=load_target("local"), profiles=[load_profile(p) for p in profiles], out=out)
    results = build(req)
    return {"out": out, "results": {r.profile: r for r in results}, "request": req}


@pytest.fixture(scope="session")
def example_eval():
    from edgeopt.inputs.data import example_split

    return example_split("eval")


# the real loopback OpenSSH server (tests/sshd.py): `sshd` (one per session) and `sshd_factory(name)`
from sshd import sshd, sshd_factory  # noqa: E402,F401
