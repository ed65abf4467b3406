"""The reports of edgeopt ci parse and say what they must: JUnit XML (counts consistent, the failure message says
what regressed by how much), the Markdown summary (verdict first), the self-contained HTML (its four plots as
base64 PNG <img> tags), and `edgeopt report --html --compare A B` over the store. Real runs on this machine
(two `local` devices with their own device caches), real artifacts."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_ci import junit_counts, release_artifacts
from test_report_browser import assert_report_renders, browser, screenshots_dir  # noqa: F401 (fixtures)

from edgeopt.ci import CIOptions, load_baseline_file, run_ci
from edgeopt.cli import main
from edgeopt.report.write import write_reports

pytestmark = pytest.mark.slow
IMG = re.compile(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture(scope="module")
def runs(example_build, wide_build, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reports")
    built = Path(example_build["out"]) / "local"
    fast = release_artifacts(built, "int8", root / "main-build")
    slow = release_artifacts(wide_build, "fp32", root / "change-build")  # 16x the work: slower anywhere

    def lab(name: str, artifacts: Path) -> Path:
        path = root / f"{name}.yaml"
        path.write_text(json.dumps({
            "name": "desk", "results": str(root / "results"), "profiles": ["release"], "formats": ["tflite"],
            "devices": [{"name": "here-1", "target": "local", "workdir": str(root / "dev1")},
                        {"name": "here-2", "target": "local", "workdir": str(root / "dev2")}],
            "models": [{"name": "mnist", "artifacts": str(artifacts)}],
            "bench": {"runs": 150, "warmup": 20, "max_other_load": 8.0}}))
        return path

    out = root / "out"
    main = run_ci(CIOptions(lab=lab("main", fast), tag=["main"], agent_cache=root / "agent"))
    change = run_ci(CIOptions(lab=lab("change", slow), baseline="main", agent_cache=root / "agent"))
    write_reports(change, junit=out / "junit.xml", summary=out / "summary.md", html=out / "report.html",
                  json_out=out / "ci.json")
    return {"root": root, "out": out, "main": main, "change": change}


def test_junit_failure_says_what_regressed_by_how_much(runs):
    assert runs["main"].exit_code == 0 and runs["change"].exit_code == 1
    root = junit_counts(runs["out"] / "junit.xml")
    assert root.get("tests") == "2" and root.get("failures") == "2" and root.get("errors") == "0"
    assert [s.get("name") for s in root.findall("testsuite")] == ["desk/here-1", "desk/here-2"]
    for case in root.iter("testcase"):
        assert case.get("name") == "mnist/release/tflite" and case.get("classname").startswith("edgeopt.desk.")
        message = case.find("failure").get("message")
        pct = float(re.search(r"\(\+(\d+(?:\.\d+)?)%", message).group(1))
        assert "latency regressed" in message and pct > 50 and "size regressed" in message


def test_markdown_has_the_verdict_first(runs):
    text = (runs["out"] / "summary.md").read_text()
    first = text.splitlines()[0]
    assert first.startswith("## edgeopt ci: REGRESSION: 0/2 passed, 2 regressed")
    assert f"tag main {runs['main'].run_id}" in first
    table = [line for line in text.splitlines() if line.startswith("| ❌ |")]
    assert len(table) == 2 and all("regression" in line for line in table)
    assert text.index("| | device |") > text.index("REGRESSION")


def test_html_is_one_file_with_the_plots(runs):
    text = (runs["out"] / "report.html").read_text()
    images = IMG.findall(text)
    assert [alt for alt, _ in images] == ["latency distributions", "accuracy vs latency vs size",
                                         "per-device comparison", "baseline vs current"]
    for _, data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # self-contained: nothing fetched (the policy allows data: images and the inline style/script by hash only)
    assert "http://" not in text and "https://" not in text and " src=\"data:image/png" in text
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:;' in text
    assert text.count("<script") == 1 and "<script src" not in text
    assert 'class="verdict regression"' in text and text.count('<tr class="regression">') == 2


def test_json_export_is_a_baseline_file(runs, tmp_path):
    export = json.loads((runs["out"] / "ci.json").read_text())
    assert export["summary"]["verdict"] == "regression" and len(export["results"]) == 2
    assert all(len(d["agent"]["latency_ms"]["samples"]) == 150 for d in export["results"])
    base = load_baseline_file(runs["out"] / "ci.json")
    assert base.run_id == runs["change"].run_id and len(base.docs) == 2


def cli(*argv: object) -> int:
    """The real command line (edgeopt.cli.main): parse, call, one line + exit code on an EdgeoptError."""
    return main([str(a) for a in argv])


def test_report_compare_two_stored_runs(runs, tmp_path, capsys):
    results = runs["root"] / "results"
    html = tmp_path / "cmp.html"
    assert cli("report", "--results", results, "--html", html, "--junit", tmp_path / "j.xml", "--compare",
               runs["main"].run_id, runs["change"].run_id) == 0
    out = capsys.readouterr().out
    assert out.startswith("## edgeopt ci: REGRESSION") and runs["main"].run_id in out.splitlines()[0]
    assert len(IMG.findall(html.read_text())) == 4
    assert ET.parse(tmp_path / "j.xml").getroot().get("failures") == "2"
    # --exit-code: the verdict's exit code, as edgeopt ci gives it (a CI step using report --compare fails)
    assert cli("report", "--results", results, "--exit-code", "--compare", runs["main"].run_id,
               runs["change"].run_id) == 1
    # reversed: the wide fp32 -> example int8 direction is an improvement, not a failure
    assert cli("report", "--results", results, "--summary", tmp_path / "s.md", "--compare",
               runs["change"].run_id, runs["main"].run_id, "--exit-code") == 0
    assert (tmp_path / "s.md").read_text().startswith("## edgeopt ci: PASS: 2/2 passed")
    capsys.readouterr()
    # plain `edgeopt report` is unchanged
    assert cli("report", "--results", results, "--json") == 0
    assert json.loads(capsys.readouterr().out)["run"]["run_id"] == runs["change"].run_id


def test_ci_command_line_exit_codes(runs, capsys):
    lab = runs["root"] / "change.yaml"
    code = cli("ci", "--lab", lab, "--baseline", "main", "--runs", "50", "-q")
    err = capsys.readouterr().err
    assert code == 1 and "REGRESSION here-1/mnist/release/tflite: latency regressed" in err
    assert cli("ci", "--lab", runs["root"] / "nope.yaml") == 2
    assert "does not exist" in capsys.readouterr().err


def test_real_ci_report_in_a_browser(runs, browser, screenshots_dir):  # noqa: F811 (fixtures)
    """The report of a real `edgeopt ci` run (two local devices, a real regression) in headless chromium: no
    console error, no request but the file, four decoded and visible plots, a sortable table, a screenshot."""
    seen = assert_report_renders(browser, runs["out"] / "report.html", screenshots_dir, plots=4)
    assert seen["columns"] == 12
    statuses = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.sortable tbody tr'), r => r.className)")
    assert statuses == ["regression", "regression"]
