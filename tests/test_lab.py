"""lab.yaml validation (the device lock: tests/test_lock.py)."""

from __future__ import annotations

import pytest

from edgeopt.config.lab import load_lab
from edgeopt.errors import ConfigError

LAB = """
name: bench-lab
devices:
  - {name: pi-a, target: rpi4, host: 10.0.0.7, user: pi, key: keys/lab}
  - {name: pi-b, target: rpi5, host: "pi@10.0.0.8:2222"}
models:
  - {name: mnist, path: example}
profiles: fp32,int8
bench: {runs: 50, retries: 2}
gates:
  latency: {min_effect: 0.1}
  energy: {max_increase: 0.1}
"""


def test_lab_loads_into_typed_objects(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(LAB)
    lab = load_lab(path)
    assert [d.name for d in lab.devices] == ["pi-a", "pi-b"] and lab.profiles == ["fp32", "int8"]
    assert lab.bench.runs == 50 and lab.bench.retries == 2 and lab.bench.warmup == 20
    assert lab.gates.latency.min_effect == 0.1 and lab.gates.latency.alpha == 0.01
    assert lab.gates.energy.max_increase == 0.1 and lab.gates.size.max_increase == 0.05
    assert lab.path(lab.devices[0].key) == str(tmp_path / "keys" / "lab")
    assert lab.infra_errors_fail is True and lab.lock.enabled


@pytest.mark.parametrize("text,expected", [
    (LAB.replace("min_effect: 0.1", "min_efect: 0.1"), "gates.latency.min_efect: unknown field"),
    (LAB.replace("retries: 2", "retries: -1"), "bench.retries"),
    (LAB.replace("name: pi-b", "name: pi-a"), "names must be unique (pi-a repeated)"),
    (LAB.replace("profiles: fp32,int8", "profiles: fp32,int9"), "profiles: unknown profile 'int9'"),
    (LAB.replace("devices:", "device:"), "unknown field"),
    (LAB.replace("{name: mnist, path: example}", "{name: 'bad name', path: example}"), "models.0.name"),
    (LAB + "results: {stor: db.sqlite}\n", "results: unknown field 'stor'"),
    (LAB.replace("  - {name: mnist, path: example}", "  []"), "models: List should have at least 1 item"),
    (LAB + "formats: []\n", "formats: List should have at least 1 item"),
    (LAB + "gates:\n  size: null\n", "line 13: invalid YAML (the key 'gates' is given twice)"),
    (LAB.replace("bench: {runs: 50, retries: 2}", "bench: {runs: 50, runs: 2}"), "the key 'runs' is given twice"),
    (LAB.replace("{name: mnist, path: example}", "{name: mnist, path: m.onnx, artifacts: built}"),
     "give path (built by edgeopt ci) or artifacts (already built), not both"),
    (LAB.replace("  - {name: mnist, path: example}", "  - {name: a, artifacts: built}\n  - {name: b, artifacts: built/}"),
     "models a and b name the same artifacts directory"),
    (LAB + "store: a.sqlite\nresults: {store: b.sqlite}\n", "store is given twice"),
])
def test_lab_errors_name_file_and_field(tmp_path, text, expected):
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_lab(path)
    line = info.value.one_line()
    assert str(path) in line and expected in line, line
    if "min_efect" in text:
        assert "did you mean 'min_effect'?" in line


def test_results_section_holds_the_directory_and_the_store(tmp_path):
    """``results: {dir, store}`` (the issue's ``results.store``) is the same as ``results:`` and ``store:``."""
    path = tmp_path / "lab.yaml"
    path.write_text(LAB + "results: {dir: runs, store: postgresql://ci@db.lab/edgeopt}\n")
    lab = load_lab(path)
    assert (lab.results, lab.store) == ("runs", "postgresql://ci@db.lab/edgeopt")
    path.write_text(LAB + "results: {store: history.sqlite}\n")
    lab = load_lab(path)
    assert (lab.results, lab.path(lab.store)) == ("results", str(tmp_path / "history.sqlite"))


def test_missing_lab_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_lab(tmp_path / "nope.yaml")


def test_fewer_runs_than_the_latency_gate_needs_is_refused_up_front(tmp_path, capsys):
    """``--runs 5`` with min_samples 10 skipped the latency gate of every cell: a 4x slower run passed."""
    from edgeopt.cli import main

    path = tmp_path / "lab.yaml"
    path.write_text("name: t\ndevices: [{name: here, target: local}]\nresults: res\n")
    assert main(["ci", "--lab", str(path), "--runs", "5", "-q"]) == 2
    err = capsys.readouterr().err
    assert "5 runs per cell are fewer than gates.latency.min_samples (10)" in err and "--runs" in err
    assert not (tmp_path / "res").exists()  # nothing created, nothing measured
    path.write_text("name: t\ndevices: [{name: here, target: local}]\nresults: res\nbench: {runs: 5}\n"
                    "gates: {latency: {min_samples: 5}}\nmodels: [{name: m, artifacts: nowhere}]\n")
    assert main(["ci", "--lab", str(path), "-q"]) != 0 and "min_samples" not in capsys.readouterr().err


def test_report_paths_are_checked_before_anything_runs(tmp_path, capsys):
    """An unwritable --junit was an internal error (exit 70) after the whole run was measured, stored and tagged;
    a run that ended without a verdict left the previous run's green HTML/JSON beside its error."""
    from edgeopt.cli import main

    path = tmp_path / "lab.yaml"
    path.write_text("name: t\ndevices: [{name: here, target: local}]\nresults: res\n")
    (tmp_path / "base.yaml").write_text("")
    assert main(["ci", "--lab", str(path), "--junit", str(tmp_path / "base.yaml" / "j.xml"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edgeopt: error: cannot write report {tmp_path / 'base.yaml' / 'j.xml'}") and "\n" not in err
    assert not (tmp_path / "res").exists()
    assert main(["ci", "--lab", str(path), "--html", str(tmp_path), "-q"]) == 2
    assert "is a directory" in capsys.readouterr().err

    old_html, old_json, junit = tmp_path / "r.html", tmp_path / "r.json", tmp_path / "r.xml"
    old_html.write_text('<p class="verdict pass">')
    old_json.write_text("{}")
    path.write_text("name: t\ndevices: [{name: here, target: local}]\nresults: res\nprofiles: [fp32, nosuch]\n")
    assert main(["ci", "--lab", str(path), "--html", str(old_html), "--json", str(old_json), "--junit", str(junit),
                 "-q"]) == 2
    assert not old_html.exists() and not old_json.exists() and "nosuch" in junit.read_text()


def test_a_model_s_data_may_be_module_function_as_for_edgeopt_build(tmp_path):
    """``data: calibmod:load`` became ``<lab dir>/calibmod:load``: "not a data source"."""
    path = tmp_path / "lab.yaml"
    path.write_text(LAB.replace("{name: mnist, path: example}",
                                "{name: mnist, path: m.onnx, data: 'calibmod:load', eval: 'example:eval'}"))
    lab = load_lab(path)
    assert (lab.data_source(lab.models[0].data), lab.data_source(lab.models[0].eval)) == ("calibmod:load",
                                                                                          "example:eval")
    (tmp_path / "calib.npz").write_bytes(b"")
    assert lab.data_source("calib.npz") == str(tmp_path / "calib.npz") and lab.data_source(None) is None
