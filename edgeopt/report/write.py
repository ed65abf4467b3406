"""Write a CI verdict's reports to files (each atomically: a report is complete or absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from edgeopt.artifacts.files import atomic_write_bytes
from edgeopt.ci.model import CIResult
from edgeopt.errors import OutputError


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
                  summary: Path | None = None, stale: tuple[Path | None, ...] = ()) -> None:
    """A run that ended before any verdict (``message``: its one line): a JUnit error case and a summary saying
    so, where asked for. The HTML and JSON reports need a verdict and are not written; an earlier run's at those
    paths (``stale``) are removed, so that a green report never sits beside a failed job."""
    from edgeopt.report.junit import aborted_junit
    from edgeopt.report.markdown import md_escape

    write(junit, lambda: aborted_junit(lab, message, exit_code))
    write(summary, lambda: f"## edgeopt ci {md_escape(lab)}: not judged (exit {exit_code})\n\n"
                           f"{md_escape(message)}\n")
    for path in stale:
        if path is not None and Path(path).is_file():
            Path(path).unlink()


def check_report_paths(*paths: Path | None) -> None:
    """Before anything is measured: every report path given can be written (its directory made). A report that
    cannot be written after the run would lose the verdict's files of a run already stored and tagged."""
    for path in paths:
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise OutputError(f"report path {path} is a directory", "give a file name for --junit/--summary/--html/"
                              "--json")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot write report {path}: {exc.strerror or exc} ({exc.filename or path.parent})",
                              "give a report path in a writable directory") from exc
        if not os.access(path.parent, os.W_OK):
            raise OutputError(f"cannot write report {path}: its directory {path.parent} is not writable",
                              "give a report path in a writable directory")


def write(path: Path | None, render: Callable[[], str]) -> None:
    """``render()`` into ``path`` atomically, when a path is given."""
    if path is not None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(Path(path), render().encode("utf-8"))
        except OSError as exc:
            raise OutputError(f"cannot write report {path}: {exc.strerror or exc}",
                              "give a report path in a writable directory with free space") from exc
