"""``edgeopt bench`` as a library call: plan every device, run them in parallel (one worker thread and one
transport each), store every result as soon as it exists."""

from __future__ import annotations

import functools
import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from edgeopt import __version__
from edgeopt.bench.document import new_run_id, utc_now
from edgeopt.bench.options import BenchOptions
from edgeopt.bench.plan import plan_device
from edgeopt.bench.progress import Progress, SilentProgress
from edgeopt.bench.worker import RunContext, run_device
from edgeopt.bench.zipapp import agent_zipapp
from edgeopt.errors import ConfigError
from edgeopt.results.store import open_store

EXIT_OK = 0
EXIT_FAILED = 3  # some device or result failed (RemoteError/AgentError exit code)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
#: After Ctrl-C, how long the workers get to kill what runs on their devices before the run ends without them.
CANCEL_GRACE = 3.5


@dataclass
class BenchRun:
    run_id: str
    results: list[dict[str, Any]]
    store_path: str  # the SQLite file, or the PostgreSQL URL with its password masked
    results_dir: Path
    seconds: float
    interrupted: bool = False

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r.get("valid")]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed or not self.results else EXIT_OK

    def summary(self) -> dict[str, Any]:
        devices = sorted({r["target"] for r in self.results})
        failed_devices = sorted({r["target"] for r in self.results
                                 if (r.get("error") or {}).get("kind") == "infrastructure"})
        disturbed = [r for r in self.results if r.get("valid") and (r.get("agent") or {}).get("valid") is False]
        return {"results": len(self.results), "valid": len(self.results) - len(self.failed),
                "disturbed": len(disturbed), "devices": devices, "failed_devices": failed_devices,
                "bytes_sent": sum(r["transfer"]["total"] for r in self.results), "seconds": round(self.seconds, 3),
                "interrupted": self.interrupted}

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "store": self.store_path, "results_dir": str(self.results_dir),
                "summary": self.summary(), "results": self.results}


def bench(opts: BenchOptions, progress: Progress | None = None) -> BenchRun:
    """Plan (every error about missing artifacts or bad options comes before anything runs), then run all
    devices in parallel and store every result. Returns the run; its ``exit_code`` says if all went well."""
    opts.check()
    progress = progress or SilentProgress()
    names = list(dict.fromkeys(opts.targets))  # one device per target name, in order
    plans = [plan_device(n, opts) for n in names]
    seen: dict[str, str] = {}
    for p, n in zip(plans, names):
        if p.target.name in seen:
            raise ConfigError(f"--target {n} and --target {seen[p.target.name]} are both named {p.target.name}",
                              "give each device its own target name")
        seen[p.target.name] = n
    agent, agent_sha = agent_zipapp(opts.agent_cache)
    run_id = new_run_id()
    store = open_store(opts.results, opts.store)
    t0 = time.perf_counter()
    created = utc_now()
    store.begin_run({
        "run_id": run_id, "created_at": created, "command": opts.command,
        "targets": [p.target.name for p in plans], "agent_sha256": agent_sha,
        "host": {"hostname": platform.node(), "edgeopt_version": __version__},
        "options": {"runs": opts.runs, "warmup": opts.warmup, "min_seconds": opts.min_seconds,
                    "threads": opts.threads, "affinity": opts.affinity, "timeout_s": opts.timeout,
                    "profiles": opts.profiles, "formats": opts.formats,
                    "models": [str(m) for m in opts.models]},
    })
    collected = Collector(store.add_result)
    ctx = RunContext(opts, run_id, agent, agent_sha, collected.add, progress)
    status = "interrupted"
    try:
        with cancel_on_sigint(ctx.cancel):
            run_parallel([functools.partial(run_device, p, ctx) for p in plans], ctx.cancel)
        status = "interrupted" if ctx.cancel.is_set() else "complete"
    finally:
        results = collected.close()
        results.sort(key=lambda r: r["result_id"])  # by target name, then plan order: as the store lists them
        run = BenchRun(run_id, results, store.where, store.run_dir(run_id), time.perf_counter() - t0,
                       interrupted=status == "interrupted")
        if status == "complete" and run.failed:
            status = "failed"
        try:
            store.finish_run(run_id, utc_now(), status, run.summary())
        finally:
            store.close()
    return run


class Collector:
    """Every result as it arrives: stored at once and kept; once closed (the run ended, a worker still winding
    down after Ctrl-C) nothing more is stored."""

    def __init__(self, store: Callable[[dict[str, Any]], object]) -> None:
        self._store = store
        self._docs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._open = True

    def add(self, doc: dict[str, Any]) -> None:
        with self._lock:
            if self._open:
                self._docs.append(doc)
                self._store(doc)

    def close(self) -> list[dict[str, Any]]:
        with self._lock:
            self._open = False
            return list(self._docs)


HARD_STOP_S = 10.0
HARD_STOP = {"enabled": False}  # never in a library caller's process (a test, a notebook): it would end it


def enable_hard_stop() -> None:
    """The ``edgeopt`` command owns its process: a twice-interrupted run may end it (:func:`cancel_on_sigint`)."""
    HARD_STOP["enabled"] = True


def hard_stop() -> None:
    """The second Ctrl-C's last resort: what was committed stays (every store write is one transaction)."""
    os.write(2, f"edgeopt: interrupted twice; still stuck {HARD_STOP_S:.0f} s later (a results store or device not "
                "answering), stopped without finishing the run — it stays unfinished in the store\n".encode())
    os._exit(130)


@contextmanager
def cancel_on_sigint(cancel: threading.Event) -> Iterator[None]:
    """While inside: the first Ctrl-C (SIGINT) sets ``cancel`` (the workers stop and kill what runs on their
    devices); a second one raises ``KeyboardInterrupt`` as usual, and (in the ``edgeopt`` command's own process:
    :func:`enable_hard_stop`) if the process is still there :data:`HARD_STOP_S` later (its clean-up waiting on
    something that does not answer: a results store's server frozen mid-write holds the store's lock), it exits
    130 at once, saying so. Only in the main thread (signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            if HARD_STOP["enabled"]:
                timer = threading.Timer(HARD_STOP_S, hard_stop)
                timer.daemon = True
                timer.start()
            raise KeyboardInterrupt
        cancel.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_parallel(tasks: list[Callable[[], object]], cancel: threading.Event, grace: float = CANCEL_GRACE) -> None:
    """Run each task in a daemon thread of its own and wait for all of them. When ``cancel`` is set, wait at most
    ``grace`` seconds more: a worker still stuck (connecting, say) is left behind, never waited for. An
    exception a task raised is raised here once all are done."""
    errors: list[BaseException] = []

    def guarded(task: Callable[[], object]) -> None:
        try:
            task()
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(task,), name=f"edgeopt-device-{i}", daemon=True)
               for i, task in enumerate(tasks)]
    for thread in threads:
        thread.start()
    deadline: float | None = None
    while any(t.is_alive() for t in threads):
        if cancel.is_set() and deadline is None:
            deadline = time.monotonic() + grace
        if deadline is not None and time.monotonic() > deadline:
            return
        next(t for t in threads if t.is_alive()).join(0.05)
    if errors and not cancel.is_set():
        raise errors[0]
