"""Plain progress lines: ``edgeopt bench -v`` without a terminal, ``edgeopt ci`` in a CI log.

Apart from :mod:`edgeopt.cli.console` because these subclass the progress bases of ``edgeopt.bench`` and
``edgeopt.ci``, whose packages are heavy to import: only the commands that run them import this module."""

from __future__ import annotations

import sys
import threading
from typing import Any

from edgeopt.bench.progress import SilentProgress
from edgeopt.ci.progress import CIProgress
from edgeopt.cli.labels import p50_text, result_label, sent_text
from edgeopt.results.reader import agent_valid, error, invalid_reasons, text


class BenchLineProgress(SilentProgress):
    """-v without a terminal: one plain line per event that matters."""

    def __init__(self, console: Any, verbose: bool) -> None:
        self.console = console
        self.verbose = verbose

    def running(self, target: str, label: str, index: int, count: int) -> None:
        self.console.print(f"{target}: run {label} ({index}/{count})", markup=False)

    def result(self, target: str, doc: dict[str, Any]) -> None:
        failure = error(doc)
        what = f"error: {failure['message']}" if failure else f"p50 {p50_text(doc)} ms"
        self.console.print(f"{target}: {result_label(doc)} {what}, sent {sent_text(doc)} B", markup=False)


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
            self.note(f"{target} {result_label(doc)}: {failure['kind']}: {failure['message']}")
        elif self.verbose:
            count = text(doc, "agent", "latency_ms", "count")
            extra = "" if agent_valid(doc) else " INVALID: " + "; ".join(invalid_reasons(doc))
            self.note(f"{target} {result_label(doc)}: p50 {p50_text(doc)} ms ({count} runs){extra}")
