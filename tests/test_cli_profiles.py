"""``-p all`` on a model that cannot be fine-tuned (ONNX, SavedModel): the profiles that train are skipped with a
note, instead of failing the whole build ("profile distilled-int8 (distill) fine-tunes the model, which needs a
Keras model")."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edgeopt.cli.build import request_from_args
from edgeopt.config import available, load_profile
from edgeopt.errors import ConfigError


def _args(model: str | None, profile: list[str]) -> argparse.Namespace:
    return argparse.Namespace(target=None, profile=profile, model=model, data=None, eval=None, train=None,
                              out="artifacts", force=False, drop_non_finite=False)


def test_all_on_an_onnx_model_skips_the_training_profiles(capsys) -> None:
    trains = sorted(n for n in available("profiles") if load_profile(n).needs_training)
    assert trains  # pruned, distilled, qat: the profiles -p all would have failed on
    req = request_from_args(_args("exported.onnx", ["all"]))
    names = [p.name for p in req.profiles]
    assert names and not set(trains) & set(names) and "int8" in names
    err = capsys.readouterr().err
    assert f"-p all: skipping {', '.join(trains)}" in err and "exported.onnx is not one" in err
    keras = request_from_args(_args("model.keras", ["all"]))  # a Keras model keeps them all
    assert set(trains) <= {p.name for p in keras.profiles}
    assert {p.name for p in request_from_args(_args(None, ["all"])).profiles} >= set(trains)  # the example
    named = request_from_args(_args("exported.onnx", [trains[0]]))  # named alone: kept (the build says why not)
    assert [p.name for p in named.profiles] == [trains[0]]
    both = request_from_args(_args("exported.onnx", [f"all,{trains[0]}"]))  # named beside all: kept too
    assert trains[0] in {p.name for p in both.profiles} and not set(trains[1:]) & {p.name for p in both.profiles}


def test_an_unknown_profile_is_still_an_error() -> None:
    with pytest.raises(ConfigError):
        request_from_args(_args(str(Path("m.onnx")), ["all,nosuch"]))


def test_a_failed_build_with_json_still_prints_a_document(tmp_path: Path, capsys) -> None:
    """``edgeopt build --json`` printed nothing on stdout when the build failed: a script had only stderr."""
    import json

    from edgeopt.cli import main

    code = main(["build", str(tmp_path / "nope.onnx"), "-p", "fp32", "--json", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert code == 2 and doc["results"] == [] and doc["error"]["exit_code"] == 2
    assert "nope.onnx" in doc["error"]["message"] and err.startswith("edgeopt: error: ")


def test_a_build_refused_before_it_starts_with_json_prints_a_document(tmp_path: Path, capsys) -> None:
    import json

    from edgeopt.cli import main

    assert main(["build", "-p", "nosuch", "--json", "--out", str(tmp_path / "out")]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"]["kind"] == "ConfigError" and "nosuch" in doc["error"]["message"]


def test_the_aborted_summary_shows_html_as_text(tmp_path: Path) -> None:
    from edgeopt.report.write import write_aborted

    write_aborted("<b>lab", "store lost at <img src=x>", 3, summary=tmp_path / "s.md")
    text = (tmp_path / "s.md").read_text()
    assert "<b>" not in text and "<img" not in text and "&lt;img src=x&gt;" in text
