"""Shared fixtures: the example model is trained once (and cached on disk); the example build runs once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def example_model() -> Path:
    from edgeopt.inputs.example_model import example_model_path

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
def wide_build(example_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's architecture 4x wider (16x the convolution work; random weights), built fp32 for `local`:
    slower than the example's int8 on any machine. Never assume int8 beats fp32 (on some CPUs it does not): the
    CI tests' regression is a change that does more work. Returns the target directory (``<out>/local``)."""
    from edgeopt.build import BuildRequest, build
    from edgeopt.config import load_profile, load_target
    from edgeopt.inputs.example_model import build_example_architecture

    root = tmp_path_factory.mktemp("wide-build")
    model = build_example_architecture(width=64)
    model.save(root / "wide.keras")
    build(BuildRequest(target=load_target("local"), profiles=[load_profile("fp32")], model=str(root / "wide.keras"),
                       data="example:calibration", eval="example:eval", out=root / "out"))
    return root / "out" / "local"


@pytest.fixture(scope="session")
def example_eval():
    from edgeopt.inputs.data import example_split

    return example_split("eval")


# the real loopback OpenSSH server (tests/sshd.py): `sshd` (one per session) and `sshd_factory(name)`
from sshd import sshd, sshd_factory  # noqa: E402,F401
