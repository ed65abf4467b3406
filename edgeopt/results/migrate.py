"""``edgeopt store migrate --from FILE|URL --to FILE|URL``: copy a results history from one store to another
(typically a runner's SQLite file to the shared PostgreSQL store).

Each run is copied with all its results in one transaction of the destination, oldest run first; a run already
there (same ``run_id``) is skipped, so a copy interrupted half-way is finished by running it again, and nothing
is ever doubled. The source is only read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeopt.results.common import is_url
from edgeopt.results.store import Store, open_store

ALL_RUNS = 1_000_000_000


@dataclass
class CopyReport:
    """What :func:`copy_history` did: runs copied, runs skipped (already in the destination), results copied."""

    runs: int = 0
    skipped: int = 0
    results: int = 0
    copied: list[str] = field(default_factory=list)

    def one_line(self) -> str:
        return f"copied {self.runs} runs ({self.results} results); {self.skipped} already there, skipped"


def copy_history(src: Store | str | Path, dst: Store | str | Path, *, results_dir: str | Path | None = None
                 ) -> CopyReport:
    """Copy every run of ``src`` (a store, a SQLite file or a ``postgresql://`` URL) into ``dst`` (created, and
    migrated to the current schema, when new). Copied runs write no JSON files (theirs stay where they were);
    ``results_dir`` (default: the SQLite source's directory) is only the results directory the stores open with."""
    report = CopyReport()
    home = Path(results_dir) if results_dir is not None else (
        Path(str(src)).parent if not isinstance(src, Store) and not is_url(str(src)) else None)
    source = src if isinstance(src, Store) else open_store(home, src, create=False)
    try:
        target = dst if isinstance(dst, Store) else open_store(home, dst, create=True)
        try:
            for run in reversed(source.runs(limit=ALL_RUNS)):  # oldest first: the destination's order follows
                doc = source.run(run["run_id"])
                results = source.results(run["run_id"])
                if target.import_run(doc, results):
                    report.runs += 1
                    report.results += len(results)
                    report.copied.append(run["run_id"])
                else:
                    report.skipped += 1
        finally:
            if target is not dst:
                target.close()
    finally:
        if source is not src:
            source.close()
    return report
