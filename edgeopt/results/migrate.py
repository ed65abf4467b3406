"""``edgeopt store migrate --from FILE|URL --to FILE|URL``: copy a results history from one store to another
(typically a runner's SQLite file to the shared PostgreSQL store).

Each run is copied with all its results in one transaction of the destination, oldest run first; a run already
there (same ``run_id``) is skipped, so a copy interrupted half-way is finished by running it again, and nothing
is ever doubled — except a run that was unfinished when it was copied (its writer still at it): when the source
has since finished it (or holds more of its results), a later migrate brings it up to date. A run still being
written in the source is copied as it is and named in the report. The source is only read.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeopt.errors import EdgeoptError
from edgeopt.results.common import is_url
from edgeopt.results.store import Store, open_store

ALL_RUNS = 1_000_000_000


@dataclass
class CopyReport:
    """What :func:`copy_history` did: runs copied, brought up to date (unfinished in the destination, further along
    in the source), skipped (already there), results copied, and the runs still being written in the source."""

    runs: int = 0
    updated: int = 0
    skipped: int = 0
    results: int = 0
    copied: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)

    def one_line(self) -> str:
        line = f"copied {self.runs} runs ({self.results} results); "
        if self.updated:
            line += f"{self.updated} brought up to date (unfinished when last copied); "
        line += f"{self.skipped} already there, skipped"
        if self.running:
            line += (f"; {len(self.running)} still being written in the source ({', '.join(self.running[:3])}"
                     f"{', …' if len(self.running) > 3 else ''}): copied as they are, migrate again when they end")
        return line


def copy_history(src: Store | str | Path, dst: Store | str | Path, *, results_dir: str | Path | None = None
                 ) -> CopyReport:
    """Copy every run of ``src`` (a store, a SQLite file or a ``postgresql://`` URL) into ``dst`` (created, and
    migrated to the current schema, when new). Copied runs write no JSON files (theirs stay where they were);
    ``results_dir`` (default: the SQLite source's directory) is only the results directory the stores open with."""
    report = CopyReport()
    with tempfile.TemporaryDirectory(prefix="edgeopt-migrate-") as scratch:  # neither is a file: no ./results
        home = Path(results_dir) if results_dir is not None else file_home(src) or file_home(dst) or Path(scratch)
        try:
            source = src if isinstance(src, Store) else open_store(home, src, create=False)
        except EdgeoptError as exc:  # named as the command names it (not --results/--store)
            exc.message = f"--from: {exc.message}"
            if file_home(src) is not None:
                exc.hint = "give the store to copy from: a SQLite file edgeopt wrote (e.g. results/edgeopt.sqlite)"
            raise
        try:
            _copy(source, dst, home, report)
        finally:
            if source is not src:
                source.close()
    return report


def file_home(spec: Store | str | Path) -> Path | None:
    """The directory of a SQLite store file (its JSON copies' home), None for a store or a URL."""
    return None if isinstance(spec, Store) or is_url(str(spec)) else Path(str(spec)).parent


def _copy(source: Store, dst: Store | str | Path, home: Path, report: CopyReport) -> None:
    target = dst if isinstance(dst, Store) else open_store(home, dst, create=True)
    try:
        for run in reversed(source.runs(limit=ALL_RUNS)):  # oldest first: the destination's order follows
            doc = source.run(run["run_id"])
            results = source.results(run["run_id"])
            outcome = target.import_run(doc, results)
            if outcome == "skipped":
                report.skipped += 1
                continue
            report.runs += outcome == "copied"
            report.updated += outcome == "updated"
            report.results += len(results)
            report.copied.append(run["run_id"])
            if source.status(doc) == "running":
                report.running.append(run["run_id"])
    finally:
        if target is not dst:
            target.close()
