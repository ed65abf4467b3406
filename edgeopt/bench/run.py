"""``edgeopt bench`` as a library call: plan every device, run them in parallel (one worker thread and one
transport each), store every result as soon as it exists."""

from __future__ import annotations

import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
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


@dataclass
class BenchRun:
    run_id: str
    results: list[dict[str, Any]]
    store_path: Path
    results_dir: Path
    seconds: float

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r.get("valid")]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed or not self.results else EXIT_OK

    def summary(self) -> dict[str, Any]:
        devices = sorted({r["target"] for r in self.results})
        failed_devices = sorted({r["target"] for r in self.results
                                 if (r.get("error") or {}).get("kind") == "infrastructure"})
        return {"results": len(self.results), "valid": len(self.results) - len(self.failed),
                "devices": devices, "failed_devices": failed_devices,
                "bytes_sent": sum(r["transfer"]["total"] for r in self.results), "seconds": round(self.seconds, 3)}

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "store": str(self.store_path), "results_dir": str(self.results_dir),
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
    ctx = RunContext(opts, run_id, agent, agent_sha, store.add_result, progress)
    results: list[dict[str, Any]] = []
    status = "interrupted"
    try:
        with ThreadPoolExecutor(max_workers=len(plans), thread_name_prefix="edgeopt-bench") as pool:
            futures = [pool.submit(run_device, p, ctx) for p in plans]
            for future in futures:
                results.extend(future.result())
        results.sort(key=lambda r: r["result_id"])  # by target name, then plan order: as the store lists them
        status = "complete"
    finally:
        run = BenchRun(run_id, results, store.path, store.run_dir(run_id), time.perf_counter() - t0)
        if status == "complete" and run.failed:
            status = "failed"
        try:
            store.finish_run(run_id, utc_now(), status, run.summary())
        finally:
            store.close()
    return run
