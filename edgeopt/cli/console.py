"""Everything the command line shows while work runs: consoles, progress bars, plain progress lines.

Names and messages that come from devices, files or results are printed as text, never as Rich markup (a
``[/x]`` in a device's error message prints literally)."""

from __future__ import annotations

import sys
import threading
from typing import Any

from edgeopt.bench.progress import SilentProgress
from edgeopt.build import Reporter
from edgeopt.ci.progress import CIProgress
from edgeopt.results.reader import agent_valid, error, invalid_reasons, text


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
        label = _label(doc)
        failure = error(doc)
        if failure:
            self._progress.console.print(f"{target} {label}: {failure['message']}", style="red", markup=False)
        elif self.verbose:
            self._progress.console.print(f"{target} {label}: p50 {_ms(doc)} ms, sent {_sent(doc)} B", markup=False)


def _label(doc: dict[str, Any]) -> str:
    return f"{text(doc, 'profile') or text(doc, 'artifact', 'file')}/{text(doc, 'format')}"


def _ms(doc: dict[str, Any]) -> str:
    return text(doc, "agent", "latency_ms", "p50") or "None"


def _sent(doc: dict[str, Any]) -> str:
    return text(doc, "transfer", "total") or "-"


class BenchLineProgress(SilentProgress):
    """-v without a terminal: one plain line per event that matters."""

    def __init__(self, console: Any, verbose: bool) -> None:
        self.console = console
        self.verbose = verbose

    def running(self, target: str, label: str, index: int, count: int) -> None:
        self.console.print(f"{target}: run {label} ({index}/{count})", markup=False)

    def result(self, target: str, doc: dict[str, Any]) -> None:
        failure = error(doc)
        what = f"error: {failure['message']}" if failure else f"p50 {_ms(doc)} ms"
        self.console.print(f"{target}: {_label(doc)} {what}, sent {_sent(doc)} B", markup=False)


class CILineProgress(CIProgress):
    """Plain lines on stderr (a CI log): devices, locks, results, retries."""

    def __init__(self, verbose: bool = False, stream: Any = None) -> None:
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def note(self, text: str) -> None:
        with self._lock:
            print(f"edgeopt ci: {text}", file=self.stream, flush=True)

    def device(self, target: str, status: str) -> None:
        if self.verbose:
            self.note(f"{target}: {status}")

    def result(self, target: str, doc: dict[str, Any]) -> None:
        failure = error(doc)
        if failure:
            self.note(f"{target} {_label(doc)}: {failure['kind']}: {failure['message']}")
        elif self.verbose:
            count = text(doc, "agent", "latency_ms", "count")
            extra = "" if agent_valid(doc) else " INVALID: " + "; ".join(invalid_reasons(doc))
            self.note(f"{target} {_label(doc)}: p50 {_ms(doc)} ms ({count} runs){extra}")
