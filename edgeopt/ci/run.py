"""Run a lab: every device in parallel, each locked on the device while measured; invalid results measured
again, latency regressions confirmed by a re-measure; everything stored; the verdict judged."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

from edgeopt import __version__
from edgeopt.bench.document import base_doc, error_doc, new_run_id, utc_now
from edgeopt.bench.options import BenchOptions, DevicePlan
from edgeopt.bench.plan import open_transport
from edgeopt.bench.run import Collector, cancel_on_sigint, run_parallel
from edgeopt.bench.worker import RunContext, remote_workdir, run_device
from edgeopt.bench.zipapp import agent_zipapp
from edgeopt.ci.baseline import resolve_baseline
from edgeopt.ci.gate import PASS, REGRESSION, compare_latency
from edgeopt.ci.judge import evaluate, latency_gate
from edgeopt.ci.model import CIOptions, CIResult
from edgeopt.ci.plan import CellPlan, plan_lab
from edgeopt.ci.progress import CIProgress
from edgeopt.config.lab import Lab, load_lab
from edgeopt.errors import ConfigError, EdgeoptError, Interrupted
from edgeopt.remote.lock import DeviceLock
from edgeopt.results.common import looks_like_url
from edgeopt.results.reader import agent_valid, cell_key, invalid_reasons, is_emulated, samples, usable
from edgeopt.results.store import open_store

log = logging.getLogger(__name__)


def failed_docs(ctx: RunContext, plan: DevicePlan, error: dict[str, Any], description: str) -> list[dict[str, Any]]:
    docs = []
    for i, job in enumerate(plan.jobs, start=1):
        doc = base_doc(ctx.run_id, ctx.opts, plan, job, i)
        doc["transport"]["description"] = description
        doc["error"] = error
        doc["host_seconds"] = 0.0
        ctx.on_result(doc)
        ctx.progress.result(plan.target.name, doc)
        docs.append(doc)
    return docs


def rerun(plan: DevicePlan, ctx: RunContext, docs: list[dict[str, Any]], which: list[int], suffix: str) -> None:
    """Measure the jobs ``which`` of ``plan`` again; the new results replace the old ones (stored, marked
    superseded)."""
    retry_plan = dataclasses.replace(plan, jobs=[plan.jobs[i] for i in which])
    retry_ctx = RunContext(ctx.opts, ctx.run_id, ctx.agent, ctx.agent_sha, retry_store(ctx.on_result, suffix),
                           ctx.progress, cancel=ctx.cancel)  # Ctrl-C stops a re-measure too
    again = run_device(retry_plan, retry_ctx)
    for i, new in zip(which, again):
        old = docs[i]
        old.setdefault("ci", {})["superseded"] = True
        ctx.on_result(old)  # re-stored, marked superseded
        new["ci"]["attempt"] = (old.get("ci") or {}).get("attempt", 1) + 1
        ctx.on_result(new)
        docs[i] = new


def device_worker(cp: CellPlan, ctx: RunContext, lab: Lab, job_name: str, retries: int,
                   progress: CIProgress,
                   baseline: dict[tuple[str, str, str, str], dict[str, Any]] | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Lock the device, run its cells, retry invalid ones, confirm latency regressions by measuring them again,
    release. Never raises for device failures."""
    plan = cp.plan
    name = plan.target.name
    info: dict[str, Any] = {"device": name, "lock": None, "attempts": 1}
    lock_transport = None
    lock: DeviceLock | None = None
    description = plan.spec.host if plan.spec is not None else "local"
    try:
        if lab.lock.enabled:
            try:
                lock_transport = open_transport(plan)
                description = lock_transport.description
                path = f"{remote_workdir(plan, lock_transport.home())}/lock"
                waited: list[dict[str, Any]] = []

                def on_wait(holder: Any) -> None:
                    if not waited:
                        progress.note(f"{name}: waiting for the device lock held by {holder.describe()}")
                        waited.append(holder.owner)

                lock = DeviceLock(lock_transport, path, job=job_name, stale_after_s=lab.lock.stale_after_s,
                                  wait_s=lab.lock.wait_s, poll_s=lab.lock.poll_s, on_wait=on_wait,
                                  command_timeout=min(60.0, lab.bench.timeout))
                lock.acquire()
                info["lock"] = {"path": path, "acquired_at": time.time(), "waited_s": round(lock.waited_s, 3),
                                "took_over": lock.took_over, "waited_for": waited[:1]}
            except EdgeoptError as exc:
                return failed_docs(ctx, plan, error_doc("infrastructure", exc, stage="lock"), description), info
            except Exception as exc:  # an unexpected library failure must not take the other devices down
                log.debug("locking %s failed", name, exc_info=True)
                return failed_docs(ctx, plan, error_doc("infrastructure", f"cannot lock {name}: "
                                                      f"{type(exc).__name__}: {exc}", stage="lock"),
                                    description), info
        docs = run_device(plan, ctx)
        if void_if_lock_lost(lock, ctx, docs, info):
            return docs, info
        for attempt in range(2, retries + 2):
            if ctx.cancel.is_set():
                break
            bad = [i for i, d in enumerate(docs) if d.get("valid") and not agent_valid(d)]
            if not bad:
                break
            info["attempts"] = attempt
            progress.note(f"{name}: {len(bad)} invalid measurement(s), attempt {attempt}: "
                              + "; ".join(invalid_reasons(docs[bad[0]]))[:200])
            rerun(plan, ctx, docs, bad, f"a{attempt}")
            if void_if_lock_lost(lock, ctx, docs, info):
                return docs, info
        gate = latency_gate(lab.gates)
        confirm = lab.gates.latency.confirm if lab.gates.latency is not None else 0
        for round_ in range(1, confirm + 1):
            if gate is None or not baseline or ctx.cancel.is_set():
                break
            slow = [i for i, d in enumerate(docs) if usable(d) and not is_emulated(d) and cell_key(d) in baseline
                    and compare_latency(
                samples(baseline[cell_key(d)]), samples(d), gate).status == REGRESSION]
            if not slow:
                break
            info.setdefault("confirmations", []).append([cell_key(docs[i]) for i in slow])
            progress.note(f"{name}: {len(slow)} latency regression(s), measuring again to confirm")
            rerun(plan, ctx, docs, slow, f"c{round_}")
            if void_if_lock_lost(lock, ctx, docs, info):
                return docs, info
        return docs, info
    finally:
        if lock is not None:
            try:
                if not lock.release() and info.get("lock"):
                    info["lock"]["lost"] = lock.lost_reason or "no longer ours at release"
            except EdgeoptError as exc:
                log.warning("releasing the lock on %s failed: %s", name, exc.one_line())
            if info.get("lock"):
                info["lock"]["released_at"] = time.time()
        if lock_transport is not None:
            try:
                lock_transport.close()
            except Exception:
                log.debug("closing the lock connection to %s failed", name, exc_info=True)


def void_if_lock_lost(lock: DeviceLock | None, ctx: RunContext, docs: list[dict[str, Any]],
                      info: dict[str, Any]) -> bool:
    """When the device lock was lost while measuring (taken over, heartbeat failing), another job may have run on
    the device at the same time: the results measured under it cannot be trusted. They become infrastructure
    errors (re-stored) and the device stops here."""
    if lock is None or not lock.lost:
        return False
    error = error_doc("infrastructure", f"lost the device lock while measuring: {lock.lost_reason}", stage="lock")
    for doc in docs:
        if doc.get("valid"):
            doc["valid"] = False
            doc["error"] = error
            ctx.on_result(doc)
    if info.get("lock") is not None:
        info["lock"]["lost"] = lock.lost_reason
    return True


def retry_store(on_result: Any, suffix: str) -> Any:
    def store(doc: dict[str, Any]) -> None:
        if not doc["result_id"].endswith(f"-{suffix}"):
            doc["result_id"] = f"{doc['result_id']}-{suffix}"
        doc.setdefault("ci", {})["measured"] = suffix
        on_result(doc)

    return store


def run_ci(opts: CIOptions, progress: CIProgress | None = None) -> CIResult:
    """Run the lab's matrix, judge it against the baseline, store and report. Returns the result; its
    ``exit_code`` is what the CLI exits with."""
    progress = progress or CIProgress()
    lab = load_lab(opts.lab)
    if opts.infra_errors_fail is not None:
        lab = lab.model_copy(update={"infra_errors_fail": opts.infra_errors_fail})
    settings = lab.bench.model_copy(update={k: v for k, v in (("runs", opts.runs), ("warmup", opts.warmup),
                                                              ("retries", opts.retries), ("threads", opts.threads))
                                            if v is not None})
    latency = lab.gates.latency
    if latency is not None and settings.runs < latency.min_samples and not settings.min_seconds:
        raise ConfigError(f"{settings.runs} runs per cell are fewer than gates.latency.min_samples "
                          f"({latency.min_samples}): the latency gate could judge no cell",
                          f"measure at least {latency.min_samples} runs (--runs or bench.runs), lower "
                          "gates.latency.min_samples, or set gates.latency: null to judge no latency")
    results_dir = Path(opts.results) if opts.results else Path(lab.path(lab.results) or "results")
    lab_store = None if lab.store is None or looks_like_url(lab.store) else lab.path(lab.store)
    store = open_store(results_dir, opts.store, default=lab.store if lab_store is None else lab_store)
    try:
        run_id = new_run_id()
        baseline = resolve_baseline(opts.baseline or lab.baseline, store, exclude=run_id,
                                    devices=[d.name for d in lab.devices], models=[m.name for m in lab.models],
                                    lab=lab.name)
        if baseline.note:
            progress.note(baseline.note)
        plans = plan_lab(lab, opts, progress)
        agent_args = list(settings.agent_args)
        if settings.max_other_load is not None:
            agent_args += ["--max-other-load", repr(float(settings.max_other_load))]
        bench_opts = BenchOptions(targets=[p.plan.target.name for p in plans], runs=settings.runs,
                                  warmup=settings.warmup, min_seconds=settings.min_seconds, threads=settings.threads,
                                  affinity=settings.affinity, timeout=settings.timeout, agent_args=agent_args,
                                  agent_cache=opts.agent_cache, command=opts.command)
        bench_opts.check()
        agent, agent_sha = agent_zipapp(opts.agent_cache)
        job_name = opts.job or os.environ.get("GITHUB_RUN_ID") or os.environ.get("CI_JOB_ID") or run_id
        models = {path: name for p in plans for path, name in p.models.items()}

        def store_result(doc: dict[str, Any]) -> None:
            ci = doc.setdefault("ci", {})
            ci.setdefault("device", doc["target"])
            ci.setdefault("model", models.get((doc.get("artifact") or {}).get("path") or "", "default"))
            ci.setdefault("lab", lab.name)
            ci.setdefault("attempt", 1)
            store.add_result(doc)

        t0 = time.perf_counter()
        store.begin_run({
            "run_id": run_id, "created_at": utc_now(), "command": opts.command,
            "targets": [p.plan.target.name for p in plans], "agent_sha256": agent_sha,
            "host": {"hostname": platform.node(), "edgeopt_version": __version__},
            "options": {"runs": settings.runs, "warmup": settings.warmup, "threads": settings.threads,
                        "retries": settings.retries, "profiles": lab.profiles, "formats": lab.formats,
                        "agent_args": agent_args},
            "ci": {"lab": lab.name, "lab_file": lab.source_file, "job": job_name, "baseline": baseline.to_json(),
                   "verdict": "running"},
        })
        collector = Collector(store_result)  # closed before the run is finished: a late worker stores nothing
        ctx = RunContext(bench_opts, run_id, agent, agent_sha, collector.add, progress)
        docs: list[dict[str, Any]] = []
        devices: dict[str, Any] = {}
        status = "interrupted"
        outcomes: dict[int, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
        done = threading.Lock()

        def task(index: int, cp: CellPlan, base_map: dict[tuple[str, str, str, str], dict[str, Any]]) -> None:
            outcome = device_worker(cp, ctx, lab, job_name, settings.retries, progress, base_map)
            with done:
                outcomes[index] = outcome

        try:
            base_map = {cell_key(d): d for d in baseline.docs if usable(d)}
            with cancel_on_sigint(ctx.cancel):  # Ctrl-C: every device stops, its commands killed, lock released
                run_parallel([functools.partial(task, i, p, base_map) for i, p in enumerate(plans)], ctx.cancel)
            with done:
                for i in sorted(outcomes):
                    device_docs, info = outcomes[i]
                    docs.extend(device_docs)
                    devices[info["device"]] = info
            status = "interrupted" if ctx.cancel.is_set() else "complete"
        finally:
            collector.close()
            cells = evaluate(docs, baseline.docs, lab.gates)
            result = CIResult(run_id, lab.name, cells, baseline.to_json(), lab.infra_errors_fail, devices,
                              time.perf_counter() - t0, store.where, gates=lab.gates.model_dump())
            if status == "complete" and result.verdict != PASS:
                status = "failed"
            tags = list(dict.fromkeys(opts.tag)) if result.verdict == PASS and status == "complete" else []
            verdict = {"lab": lab.name, "lab_file": lab.source_file, "job": job_name, "baseline": baseline.to_json(),
                       "verdict": result.verdict, "exit_code": result.exit_code, "devices": devices,
                       "cells": [c.to_json() for c in cells], "gates": lab.gates.model_dump()}
            finished = {"finished_at": utc_now(), "status": status, "summary": result.summary(), "ci": verdict}

            def finish(doc: dict[str, Any]) -> None:
                """Status, summary, verdict and tags in one transaction: a store lost while finishing leaves the
                run unfinished as a whole, never "complete" without its verdict or a passing run untagged."""
                doc.update(finished)
                if tags:
                    doc["tags"] = [t for t in doc.get("tags") or [] if t not in tags] + tags

            store.modify_run(run_id, finish)
            result.tags = tags
    finally:
        store.close()
    if status == "interrupted":
        raise Interrupted(f"interrupted: run {run_id} is stored as interrupted; commands running on the devices "
                          "were killed and their locks released", "run `edgeopt ci` again")
    return result
