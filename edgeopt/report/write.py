"""Write a CI verdict's reports to files (each atomically: a report is complete or absent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.ci.model import CIResult


def write_reports(result: CIResult, *, junit: Path | None = None, summary: Path | None = None,
                  html: Path | None = None, json_out: Path | None = None) -> None:
    """JUnit XML, the Markdown summary, the self-contained HTML report and the JSON export (a baseline file),
    each only when its path is given."""
    from edgeopt.report.html import html_report
    from edgeopt.report.junit import junit_xml
    from edgeopt.report.markdown import markdown_summary

    write(junit, lambda: junit_xml(result))
    write(summary, lambda: markdown_summary(result))
    write(html, lambda: html_report(result))
    write(json_out, lambda: json.dumps(result.to_json(), indent=1))


def write_aborted(lab: str, message: str, exit_code: int, *, junit: Path | None = None,
                  summary: Path | None = None) -> None:
    """A run that ended before any verdict (``message``: its one line): a JUnit error case and a summary saying
    so, where asked for (the HTML and JSON reports need a verdict and are not written)."""
    from edgeopt.report.junit import aborted_junit

    write(junit, lambda: aborted_junit(lab, message, exit_code))
    write(summary, lambda: f"## edgeopt ci {lab}: not judged (exit {exit_code})\n\n{message}\n")


def write(path: Path | None, render: Callable[[], str]) -> None:
    """``render()`` into ``path`` atomically, when a path is given."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(path), render().encode("utf-8"))
