"""Everything the command line shows while work runs: consoles, progress bars, plain progress lines.

Names and messages that come from devices, files or results are printed as text, never as Rich markup (a
``[/x]`` in a device's error message prints literally).

This module is imported whenever ``edgeopt`` starts, so it loads no library package at module level (no
``edgeopt.bench``, ``edgeopt.ci``: numpy, pydantic, SQLite, paramiko). The plain-line progress classes, which
subclass the bench and CI progress bases, live in :mod:`edgeopt.cli.lines` and are re-exported here on first
use."""

from __future__ import annotations

import threading
from typing import Any

from edgeopt.build.reporter import Reporter
from edgeopt.cli.labels import p50_text, result_label, sent_text
from edgeopt.results.reader import error


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_console() -> Any:
    """stdout; when it is not a terminal (a pipe, a CI log) the table is not squeezed into 80 columns."""
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=220)


class RichReporter(Reporter):
    """Progress bar over conversion passes; -v prints each pass with its time."""

    def __init__(self, verbose: bool, quiet: bool) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = stderr_console()
        self.verbose, self.quiet = verbose, quiet
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                 console=self.console, transient=True, disable=quiet)
        self.task: Any = None

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, total_steps: int) -> None:
        self.task = self.progress.add_task("building", total=total_steps)

    def step(self, profile: str, what: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=f"{profile}: {what}")

    def done(self, profile: str, what: str, seconds: float, detail: str = "") -> None:
        if self.verbose:
            self.progress.console.print(f"  {profile}: {what} done in {seconds:.2f} s {detail}", markup=False)

    def artifact_done(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.progress.console.print(message, markup=False)


class RichProgress:
    """One line per device on stderr: what it is doing, upload bytes, which artifact runs."""

    def __init__(self, verbose: bool = False, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as _Progress

        self.console = console or Console(stderr=True, highlight=False)
        self.verbose = verbose
        self._progress = _Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                                   DownloadColumn(), TimeElapsedColumn(), console=self.console, transient=True)
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def _task(self, target: str) -> Any:
        with self._lock:
            if target not in self._tasks:
                self._tasks[target] = self._progress.add_task(target, total=None)
            return self._tasks[target]

    def device(self, target: str, status: str) -> None:
        self._progress.update(self._task(target), description=f"{target}: {status}", total=None, completed=0)

    def upload(self, target: str, name: str, done: int, total: int) -> None:
        self._progress.update(self._task(target), description=f"{target}: push {name}", total=total,
                              completed=done)

    def running(self, target: str, label: str, index: int, count: int) -> None:
        self._progress.update(self._task(target), description=f"{target}: run {label} ({index}/{count})",
                              total=None, completed=0)

    def result(self, target: str, doc: dict[str, Any]) -> None:
        label = result_label(doc)
        failure = error(doc)
        if failure:
            self._progress.console.print(f"{target} {label}: {failure['message']}", style="red", markup=False)
        elif self.verbose:
            self._progress.console.print(f"{target} {label}: p50 {p50_text(doc)} ms, sent {sent_text(doc)} B",
                                         markup=False)


def __getattr__(name: str) -> Any:
    """``BenchLineProgress`` and ``CILineProgress`` from :mod:`edgeopt.cli.lines`, imported on first use."""
    if name in ("BenchLineProgress", "CILineProgress"):
        from edgeopt.cli import lines

        return getattr(lines, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
