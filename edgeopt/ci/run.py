"""``edgeopt ci``: hardware-in-the-loop over a device lab, a noise-aware regression gate, reports.

    edgeopt ci --lab lab.yaml --baseline main
    edgeopt ci --lab lab.yaml --junit out/junit.xml --summary out/summary.md --html out/report.html --tag main

Flow (docs/ci.md):

1. ``lab.yaml`` (:mod:`edgeopt.lab`) is validated; devices, profiles and the baseline are resolved before any
   device is contacted.
2. Each model is built for each target kind in the lab (``edgeopt build``'s pipeline and its content cache:
   an unchanged model costs nothing), or taken from prebuilt ``artifacts:``.
3. Devices run in parallel (one worker thread each), each device's cells one after the other, with
   :func:`edgeopt.bench.run_device` — the same push-by-hash / agent / result code as ``edgeopt bench``. Before
   measuring, a worker takes the device's lock (on the device: :class:`edgeopt.lab.DeviceLock`) and keeps it
   until its last retry is done. Results the agent marks ``valid: false`` (throttled, disturbed) are measured
   again (``bench.retries``) and, if still invalid, reported as such — never compared.
4. Every cell (device × model × profile × format) is compared with the same cell of the baseline by the gates
   (:mod:`edgeopt.gate`). Verdict and exit code: 0 pass, 1 regression, 2 infrastructure error
   (``infra_errors_fail: false`` turns 2 into 0).
5. Results go to the store (the run carries its verdict and can be tagged: ``--tag main``), then JUnit XML,
   the Markdown summary, the HTML report and a JSON export (usable later as ``--baseline file.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import re
import shlex
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edgeopt import __version__
from edgeopt.bench.run import (BenchOptions, DevicePlan, Job, SilentProgress, _base_doc, _Context, _error, _workdir,
                    _positive_int, agent_zipapp, find_artifacts, new_run_id, open_transport, run_device, utc_now)
from edgeopt.config import Target, apply_connection_overrides, load_target
from edgeopt.errors import ConfigError, EdgeoptError
from edgeopt.ci.gate import (IMPROVED, PASS, REGRESSION, Check, LatencyGate, accuracy_drop, compare_latency,
                   relative_increase)
from edgeopt.config.lab import DeviceLock, Gates, Lab, load_lab
from edgeopt.report.table import _get
from edgeopt.results.store import Store, open_store

log = logging.getLogger(__name__)

EXIT_PASS = 0
EXIT_REGRESSION = 1
EXIT_INFRA = 2
RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
LATEST_PASSING = "latest-passing"
LATEST = "latest"

# cell statuses
ERROR = "error"  # infrastructure / agent failure: not measured
INVALID = "invalid"  # measured, but the agent says the conditions were bad (after retries)
NEW = "new"  # no baseline for this cell: measured and stored, nothing to compare


# ------------------------------------------------------------------------------------------------------------
# options and results
# ------------------------------------------------------------------------------------------------------------
@dataclass
class CIOptions:
    lab: Path
    baseline: str | None = None  # run id | tag | latest-passing | latest | file.json; default: the lab's
    tag: list[str] = field(default_factory=list)  # tags for this run when it passes
    junit: Path | None = None
    summary: Path | None = None
    html: Path | None = None
    json_out: Path | None = None
    results: Path | None = None  # default: the lab's results
    store: Path | None = None
    artifacts: Path | None = None  # default: the lab's artifacts
    runs: int | None = None
    warmup: int | None = None
    retries: int | None = None
    threads: int | None = None
    infra_errors_fail: bool | None = None
    job: str | None = None  # a name for the lock owner (default: $GITHUB_RUN_ID/$CI_JOB_ID or the run id)
    ssh_config: str | None = None
    agent_cache: Path | None = None
    build: bool = True
    command: str | None = None


@dataclass
class Cell:
    device: str
    model: str
    profile: str | None
    format: str
    status: str
    message: str
    checks: list[Check] = field(default_factory=list)
    current: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    attempts: int = 1

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.device, self.model, self.profile or "-", self.format)

    @property
    def name(self) -> str:
        return "/".join(self.key)

    def check(self, gate: str) -> Check | None:
        return next((c for c in self.checks if c.gate == gate), None)

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "model": self.model, "profile": self.profile, "format": self.format,
                "status": self.status, "message": self.message, "attempts": self.attempts,
                "current": (self.current or {}).get("result_id"),
                "baseline": (self.baseline or {}).get("result_id"),
                "checks": [c.to_json() for c in self.checks]}


@dataclass
class CIResult:
    run_id: str
    lab: str
    cells: list[Cell]
    baseline: dict[str, Any]  # {"spec", "source", "run_id", "label"}
    infra_errors_fail: bool = True
    devices: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    store_path: str | None = None
    gates: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for c in self.cells if c.status == status)

    @property
    def verdict(self) -> str:
        if any(c.status == REGRESSION for c in self.cells):
            return REGRESSION
        if any(c.status in (ERROR, INVALID) for c in self.cells) or not self.cells:
            return ERROR
        return PASS

    @property
    def exit_code(self) -> int:
        verdict = self.verdict
        if verdict == REGRESSION:
            return EXIT_REGRESSION
        if verdict == ERROR:
            return EXIT_INFRA if self.infra_errors_fail else EXIT_PASS
        return EXIT_PASS

    def headline(self) -> str:
        n = len(self.cells)
        parts = [f"{self.count(PASS) + self.count(IMPROVED) + self.count(NEW)}/{n} passed"]
        for status, word in ((REGRESSION, "regressed"), (ERROR, "infrastructure errors"), (INVALID, "invalid")):
            if self.count(status):
                parts.append(f"{self.count(status)} {word}")
        label = {PASS: "PASS", REGRESSION: "REGRESSION", ERROR: "INFRASTRUCTURE ERROR"}[self.verdict]
        if self.verdict == ERROR and not self.infra_errors_fail:
            label += " (not failing the job)"
        return f"{label}: " + ", ".join(parts) + f" — baseline {self.baseline.get('label') or 'none'}"

    def summary(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "cells": len(self.cells),
                **{s: self.count(s) for s in (PASS, IMPROVED, NEW, REGRESSION, ERROR, INVALID)},
                "baseline": self.baseline, "seconds": round(self.seconds, 3), "headline": self.headline()}

    def to_json(self, with_docs: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"run_id": self.run_id, "lab": self.lab, "summary": self.summary(),
                               "gates": self.gates, "devices": self.devices, "tags": self.tags,
                               "cells": [c.to_json() for c in self.cells]}
        if with_docs:  # the export is a baseline file: the full result documents with the raw samples
            out["results"] = [c.current for c in self.cells if c.current is not None]
        return out


# ------------------------------------------------------------------------------------------------------------
# cells and gates
# ------------------------------------------------------------------------------------------------------------
def cell_key(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    ci = doc.get("ci") or {}
    profile = doc.get("profile") or (doc.get("artifact") or {}).get("file") or "-"
    return (str(ci.get("device") or doc.get("target")), str(ci.get("model") or "default"), str(profile),
            str(doc.get("format")))


def agent_valid(doc: dict[str, Any]) -> bool:
    """The agent judged its own measurement conditions (throttling, clock drops, other load …)."""
    agent = doc.get("agent") or {}
    return agent.get("valid", True) is not False


def invalid_reasons(doc: dict[str, Any]) -> list[str]:
    return [str(r) for r in (doc.get("agent") or {}).get("invalid_reasons") or []]


def usable(doc: dict[str, Any]) -> bool:
    """A result that can be compared: measured, valid for bench, valid for the agent, not superseded."""
    return bool(doc.get("valid")) and agent_valid(doc) and not (doc.get("ci") or {}).get("superseded")


def samples(doc: dict[str, Any] | None) -> list[float]:
    return [float(x) for x in _get(doc, "agent", "latency_ms", "samples") or [] if isinstance(x, (int, float))]


def _find_key(doc: Any, key: str) -> Any:
    if isinstance(doc, dict):
        if key in doc and isinstance(doc[key], (int, float)):
            return doc[key]
        for value in doc.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def accuracy_of(doc: dict[str, Any] | None, source: str = "build") -> float | None:
    if doc is None:
        return None
    value = _get(doc, "agent", "parity", "accuracy") if source == "device" else \
        _get(doc, "artifact", "metrics", "accuracy")
    return float(value) if isinstance(value, (int, float)) else None


def energy_of(doc: dict[str, Any] | None) -> float | None:
    value = _find_key(_get(doc, "agent", "energy"), "energy_per_inference_j")
    return float(value) if value is not None else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def latency_gate(gates: Gates) -> LatencyGate | None:
    g = gates.latency
    if g is None:
        return None
    return LatencyGate(min_effect=g.min_effect, alpha=g.alpha, method=g.method, bootstrap=g.bootstrap,
                       min_samples=g.min_samples)


def judge(current: dict[str, Any], baseline: dict[str, Any] | None, gates: Gates) -> list[Check]:
    """Every configured gate on one measured cell."""
    checks: list[Check] = []
    lat = latency_gate(gates)
    if lat is not None and baseline is not None:
        verdict = compare_latency(samples(baseline), samples(current), lat)
        checks.append(Check("latency", verdict.status, verdict.message, verdict.median_baseline,
                            verdict.median_current, verdict.to_json()))
    if gates.accuracy is not None:
        checks.append(accuracy_drop(accuracy_of(baseline, gates.accuracy.source),
                                    accuracy_of(current, gates.accuracy.source), gates.accuracy.max_drop,
                                    gates.accuracy.min))
    for gate, what, unit, getter in (
        ("size", "size", "B", lambda d: _num(_get(d, "artifact", "bytes"))),
        ("peak_memory", "peak RSS", "KiB", lambda d: _num(_get(d, "agent", "memory", "peak_rss_kib"))),
        ("energy", "energy per inference", "J", energy_of),
    ):
        settings = getattr(gates, gate)
        if settings is None:
            continue
        check = relative_increase(gate, what, unit, getter(baseline) if baseline else None, getter(current),
                                  settings.max_increase, settings.max)
        if gate == "energy" and check.current is None:
            check.message = "energy: no sensor reading on this device"
        checks.append(check)
    return checks


def evaluate(current_docs: Iterable[dict[str, Any]], baseline_docs: Iterable[dict[str, Any]], gates: Gates,
             attempts: dict[tuple[str, str, str, str], int] | None = None) -> list[Cell]:
    """One cell per current (latest, not superseded) result; compared with the usable baseline result of the
    same device × model × profile × format."""
    base: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for doc in baseline_docs:
        if usable(doc):
            base[cell_key(doc)] = doc  # later (retried) results win
    latest: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for doc in current_docs:
        if not (doc.get("ci") or {}).get("superseded"):
            latest[cell_key(doc)] = doc
    cells = []
    for key in sorted(latest):
        doc = latest[key]
        device, model, profile, fmt = key
        cell = Cell(device, model, doc.get("profile") or profile, fmt, PASS, "", current=doc,
                    attempts=(attempts or {}).get(key, (doc.get("ci") or {}).get("attempt", 1)))
        error = doc.get("error")
        if not doc.get("valid"):
            kind = (error or {}).get("kind", "error")
            cell.status = ERROR
            cell.message = f"{kind} error: {(error or {}).get('message', 'no result')}"
        elif not agent_valid(doc):
            cell.status = INVALID
            cell.message = ("measurement invalid after %d attempt(s), not compared: %s"
                            % (cell.attempts, "; ".join(invalid_reasons(doc)) or "the agent says so"))
        else:
            cell.baseline = base.get(key)
            cell.checks = judge(doc, cell.baseline, gates)
            bad = [c for c in cell.checks if c.status == REGRESSION]
            if bad:
                cell.status = REGRESSION
                cell.message = "; ".join(c.message for c in bad)
            else:
                latc = cell.check("latency")
                if cell.baseline is None:
                    cell.status = NEW
                    p50 = _get(doc, "agent", "latency_ms", "p50")
                    cell.message = f"no baseline for this cell (p50 {p50:.4g} ms)" if isinstance(p50, float) \
                        else "no baseline for this cell"
                elif latc is not None and latc.status == IMPROVED:
                    cell.status = IMPROVED
                    cell.message = latc.message
                else:
                    cell.status = PASS
                    cell.message = latc.message if latc is not None else "ok"
        cells.append(cell)
    return cells


# ------------------------------------------------------------------------------------------------------------
# baselines
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Baseline:
    spec: str | None
    source: str  # store | file | none
    label: str
    run_id: str | None = None
    docs: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "source": self.source, "label": self.label, "run_id": self.run_id,
                "results": len(self.docs), "note": self.note}


def load_baseline_file(path: Path) -> Baseline:
    """A JSON export: ``edgeopt ci --json`` / ``edgeopt report --json --full`` ({"results": [...]}) or a list
    of result documents. Only full result documents carry the raw latency samples the gate needs."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read baseline file {path}: {exc}",
                          "export one with `edgeopt ci --json FILE` or `edgeopt report --json --full`") from exc
    docs = data.get("results") if isinstance(data, dict) else data
    if not isinstance(docs, list) or not all(isinstance(d, dict) and "result_id" in d for d in docs):
        raise ConfigError(f"baseline file {path} holds no result documents",
                          "use `edgeopt ci --json FILE` or `edgeopt report --json --full` (with --full: the raw "
                          "samples are needed)")
    run_id = (data.get("run") or {}).get("run_id") if isinstance(data, dict) else None
    run_id = run_id or (data.get("run_id") if isinstance(data, dict) else None)
    return Baseline(str(path), "file", f"file {Path(path).name}" + (f" (run {run_id})" if run_id else ""),
                    run_id, docs)


def resolve_baseline(spec: str | None, store: Store, exclude: str | None = None) -> Baseline:
    """``spec``: a JSON file, ``latest-passing`` (default), ``latest``, a run id (or unique prefix), or a tag."""
    spec = spec or LATEST_PASSING
    if spec.endswith(".json") or Path(spec).is_file():
        return load_baseline_file(Path(spec))
    run: dict[str, Any] | None = None
    label = spec
    if spec == LATEST_PASSING:
        run = store.find_run(passing=True, exclude=exclude)
        label = "latest passing run"
    elif spec == LATEST:
        run = store.find_run(exclude=exclude)
        label = "latest run"
    else:
        run = store.find_run(tag=spec, exclude=exclude)
        if run is not None:
            label = f"tag {spec}"
        elif RUN_ID.match(spec) or len(spec) >= 8 and spec[:8].isdigit():
            run = store.run(spec)  # raises StoreError naming the latest runs when unknown
            label = "run"
    if run is None:
        return Baseline(spec, "none", f"none ({label}: no such run yet)",
                        note=f"no baseline found for {spec!r}: every cell is new")
    return Baseline(spec, "store", f"{label} {run['run_id']}" if label != "run" else f"run {run['run_id']}",
                    run["run_id"], store.results(run["run_id"]))


# ------------------------------------------------------------------------------------------------------------
# planning
# ------------------------------------------------------------------------------------------------------------
@dataclass
class CellPlan:
    plan: DevicePlan
    device: Any  # lab.Device
    models: dict[str, str]  # artifact path -> model name
    lock_path: str | None = None


def _load_device_target(lab: Lab, name: str) -> Target:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        resolved = lab.path(name)
        assert resolved is not None
        return load_target(resolved)
    return load_target(name)


def plan_lab(lab: Lab, opts: CIOptions, progress: Any = None) -> list[CellPlan]:
    """Targets, builds and jobs for every device (raises ConfigError/ArtifactMissing before anything runs)."""
    from edgeopt.build.pipeline import BuildRequest, build
    from edgeopt.config import load_profile
    from edgeopt.remote.ssh import ConnectionSpec

    kinds: dict[str, Target] = {}
    for device in lab.devices:
        if device.target not in kinds:
            try:
                kinds[device.target] = _load_device_target(lab, device.target)
            except ConfigError as exc:
                raise ConfigError(f"{lab.source_file}: devices.{device.name}.target: {exc.message}", exc.hint) \
                    from exc
    artifacts_root = Path(opts.artifacts) if opts.artifacts else Path(lab.path(lab.artifacts) or "artifacts/ci")
    roots: dict[str, Path] = {}
    for model in lab.models:
        if model.artifacts:
            roots[model.name] = Path(lab.path(model.artifacts) or "")
            continue
        roots[model.name] = artifacts_root / model.name
        if not opts.build:
            continue
        path = None if model.path in (None, "example") else lab.path(model.path)
        profiles = [load_profile(p) for p in lab.profiles]
        for kind in kinds.values():
            if kind.transport == "none":
                continue
            if progress is not None:
                progress.note(f"build {model.name} for {kind.name}: {', '.join(lab.profiles)}")
            build(BuildRequest(target=kind, profiles=profiles, model=path, data=lab.path(model.data),
                               eval=lab.path(model.eval), out=roots[model.name]))
    plans = []
    for device in lab.devices:
        kind = kinds[device.target]
        target = apply_connection_overrides(kind, host=device.host, user=device.user, port=device.port,
                                            key=lab.path(device.key) if device.key else None, python=device.python)
        conn = target.connection
        if device.workdir:
            conn = conn.model_copy(update={"workdir": device.workdir})
        target = target.model_copy(update={"name": device.name, "connection": conn,
                                           "threads": device.threads or target.threads})
        if device.host:
            transport = "ssh"
        elif target.transport in ("local", "ssh"):
            transport = target.transport
        else:
            raise ConfigError(f"{lab.source_file}: devices.{device.name}: target {kind.name} has transport "
                              f"{target.transport}; edgeopt ci runs devices over ssh or locally")
        if transport == "ssh" and not target.connection.host:
            raise ConfigError(f"{lab.source_file}: devices.{device.name}: no host",
                              f"set host: in the lab or connection.host in {kind.source_file}")
        jobs: list[Job] = []
        models: dict[str, str] = {}
        for model in lab.models:
            found = find_artifacts(kind, roots[model.name], list(lab.profiles), list(lab.formats or []) or None)
            for job in found:
                jobs.append(dataclasses.replace(job, target=device.name))
                models[str(job.model)] = model.name
        python = target.connection.python
        if transport == "local" and python == "python3" and not device.python:
            python = sys.executable
        spec = None
        if transport == "ssh":
            spec = ConnectionSpec(
                host=conn.host or "", user=target.connection.user, port=target.connection.port,
                key_filename=target.connection.key, connect_timeout=lab.bench.connect_timeout,
                command_timeout=lab.bench.timeout, accept_new_host_key=device.accept_new_host_key,
                known_hosts=lab.path(device.known_hosts), ssh_config=lab.path(device.ssh_config) or opts.ssh_config)
        plans.append(CellPlan(DevicePlan(target=target, jobs=jobs, transport_kind=transport, python=python,
                                         spec=spec), device, models))
    return plans


# ------------------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------------------
class LineProgress(SilentProgress):
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
        label = f"{doc.get('profile') or (doc.get('artifact') or {}).get('file')}/{doc.get('format')}"
        if doc.get("error"):
            self.note(f"{target} {label}: {doc['error'].get('kind')}: {doc['error'].get('message')}")
        elif self.verbose:
            lat = _get(doc, "agent", "latency_ms") or {}
            extra = "" if agent_valid(doc) else " INVALID: " + "; ".join(invalid_reasons(doc))
            self.note(f"{target} {label}: p50 {lat.get('p50')} ms ({lat.get('count')} runs){extra}")


def _failed_docs(ctx: _Context, plan: DevicePlan, error: dict[str, Any], description: str) -> list[dict[str, Any]]:
    docs = []
    for i, job in enumerate(plan.jobs, start=1):
        doc = _base_doc(ctx, plan, job, i)
        doc["transport"]["description"] = description
        doc["error"] = error
        doc["host_seconds"] = 0.0
        ctx.on_result(doc)
        ctx.progress.result(plan.target.name, doc)
        docs.append(doc)
    return docs


def _rerun(plan: DevicePlan, ctx: _Context, docs: list[dict[str, Any]], which: list[int], suffix: str) -> None:
    """Measure the jobs ``which`` of ``plan`` again; the new results replace the old ones (stored, marked
    superseded)."""
    retry_plan = dataclasses.replace(plan, jobs=[plan.jobs[i] for i in which])
    retry_ctx = _Context(ctx.opts, ctx.run_id, ctx.agent, ctx.agent_sha, _retry_store(ctx.on_result, suffix),
                         ctx.progress)
    again = run_device(retry_plan, retry_ctx)
    for i, new in zip(which, again):
        old = docs[i]
        old.setdefault("ci", {})["superseded"] = True
        ctx.on_result(old)  # re-stored, marked superseded
        new["ci"]["attempt"] = (old.get("ci") or {}).get("attempt", 1) + 1
        ctx.on_result(new)
        docs[i] = new


def _device_worker(cp: CellPlan, ctx: _Context, lab: Lab, job_name: str, retries: int,
                   progress: LineProgress | SilentProgress,
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
                path = f"{_workdir(plan, lock_transport.home())}/lock"
                waited = []

                def on_wait(holder: Any) -> None:
                    if not waited:
                        if hasattr(progress, "note"):
                            progress.note(f"{name}: waiting for the device lock held by {holder.describe()}")
                        waited.append(holder.owner)

                lock = DeviceLock(lock_transport, path, job=job_name, stale_after_s=lab.lock.stale_after_s,
                                  wait_s=lab.lock.wait_s, poll_s=lab.lock.poll_s, on_wait=on_wait,
                                  command_timeout=min(60.0, lab.bench.timeout))
                lock.acquire()
                info["lock"] = {"path": path, "acquired_at": time.time(), "waited_s": round(lock.waited_s, 3),
                                "took_over": lock.took_over, "waited_for": waited[:1]}
            except EdgeoptError as exc:
                return _failed_docs(ctx, plan, _error("infrastructure", exc, stage="lock"), description), info
            except Exception as exc:  # an unexpected library failure must not take the other devices down
                log.debug("locking %s failed", name, exc_info=True)
                return _failed_docs(ctx, plan, _error("infrastructure", f"cannot lock {name}: "
                                                      f"{type(exc).__name__}: {exc}", stage="lock"),
                                    description), info
        docs = run_device(plan, ctx)
        for attempt in range(2, retries + 2):
            bad = [i for i, d in enumerate(docs) if d.get("valid") and not agent_valid(d)]
            if not bad:
                break
            info["attempts"] = attempt
            if hasattr(progress, "note"):
                progress.note(f"{name}: {len(bad)} invalid measurement(s), attempt {attempt}: "
                              + "; ".join(invalid_reasons(docs[bad[0]]))[:200])
            _rerun(plan, ctx, docs, bad, f"a{attempt}")
        gate = latency_gate(lab.gates)
        confirm = lab.gates.latency.confirm if lab.gates.latency is not None else 0
        for round_ in range(1, confirm + 1):
            if gate is None or not baseline:
                break
            slow = [i for i, d in enumerate(docs) if usable(d) and cell_key(d) in baseline and compare_latency(
                samples(baseline[cell_key(d)]), samples(d), gate).status == REGRESSION]
            if not slow:
                break
            info.setdefault("confirmations", []).append([cell_key(docs[i]) for i in slow])
            if hasattr(progress, "note"):
                progress.note(f"{name}: {len(slow)} latency regression(s), measuring again to confirm")
            _rerun(plan, ctx, docs, slow, f"c{round_}")
        return docs, info
    finally:
        if lock is not None:
            try:
                lock.release()
            except EdgeoptError as exc:
                log.warning("releasing the lock on %s failed: %s", name, exc.one_line())
            if info.get("lock"):
                info["lock"]["released_at"] = time.time()
        if lock_transport is not None:
            try:
                lock_transport.close()
            except Exception:
                log.debug("closing the lock connection to %s failed", name, exc_info=True)


def _retry_store(on_result: Any, suffix: str) -> Any:
    def store(doc: dict[str, Any]) -> None:
        if not doc["result_id"].endswith(f"-{suffix}"):
            doc["result_id"] = f"{doc['result_id']}-{suffix}"
        doc.setdefault("ci", {})["measured"] = suffix
        on_result(doc)

    return store


def run_ci(opts: CIOptions, progress: LineProgress | SilentProgress | None = None) -> CIResult:
    """Run the lab's matrix, judge it against the baseline, store and report. Returns the result; its
    ``exit_code`` is what the CLI exits with."""
    progress = progress or SilentProgress()
    lab = load_lab(opts.lab)
    if opts.infra_errors_fail is not None:
        lab = lab.model_copy(update={"infra_errors_fail": opts.infra_errors_fail})
    settings = lab.bench.model_copy(update={k: v for k, v in (("runs", opts.runs), ("warmup", opts.warmup),
                                                              ("retries", opts.retries), ("threads", opts.threads))
                                            if v is not None})
    results_dir = Path(opts.results) if opts.results else Path(lab.path(lab.results) or "results")
    store = open_store(results_dir, opts.store)
    try:
        run_id = new_run_id()
        baseline = resolve_baseline(opts.baseline or lab.baseline, store, exclude=run_id)
        if baseline.note and hasattr(progress, "note"):
            progress.note(baseline.note)
        plans = plan_lab(lab, opts, progress if hasattr(progress, "note") else None)
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

        def on_result(doc: dict[str, Any]) -> None:
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
        ctx = _Context(bench_opts, run_id, agent, agent_sha, on_result, progress)
        docs: list[dict[str, Any]] = []
        devices: dict[str, Any] = {}
        status = "interrupted"
        try:
            with ThreadPoolExecutor(max_workers=len(plans), thread_name_prefix="edgeopt-ci") as pool:
                base_map = {cell_key(d): d for d in baseline.docs if usable(d)}
                futures = [pool.submit(_device_worker, p, ctx, lab, job_name, settings.retries, progress,
                                       base_map) for p in plans]
                for future in futures:
                    device_docs, info = future.result()
                    docs.extend(device_docs)
                    devices[info["device"]] = info
            status = "complete"
        finally:
            cells = evaluate(docs, baseline.docs, lab.gates)
            result = CIResult(run_id, lab.name, cells, baseline.to_json(), lab.infra_errors_fail, devices,
                              time.perf_counter() - t0, str(store.path), gates=lab.gates.model_dump())
            if status == "complete" and result.verdict != PASS:
                status = "failed"
            store.finish_run(run_id, utc_now(), status, result.summary())
            tags = list(opts.tag) if result.verdict == PASS and status == "complete" else []
            store.update_run(run_id, {"ci": {"lab": lab.name, "lab_file": lab.source_file, "job": job_name,
                                             "baseline": baseline.to_json(), "verdict": result.verdict,
                                             "exit_code": result.exit_code, "devices": devices,
                                             "cells": [c.to_json() for c in cells]}})
            for tag in tags:
                store.tag_run(run_id, tag)
            result.tags = tags
    finally:
        store.close()
    write_reports(result, opts)
    return result


def write_reports(result: CIResult, opts: Any) -> None:
    from edgeopt.artifacts.files import atomic_write_bytes

    def write(path: Path | None, text: str) -> None:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(Path(path), text.encode("utf-8"))

    if getattr(opts, "junit", None):
        from edgeopt.report.junit import junit_xml

        write(opts.junit, junit_xml(result))
    if getattr(opts, "summary", None):
        from edgeopt.report.markdown import markdown_summary

        write(opts.summary, markdown_summary(result))
    if getattr(opts, "html", None):
        from edgeopt.report.html import html_report

        write(opts.html, html_report(result))
    if getattr(opts, "json_out", None):
        write(opts.json_out, json.dumps(result.to_json(), indent=1))


# ------------------------------------------------------------------------------------------------------------
# edgeopt report --html / --compare (a hook from edgeopt.bench's report command)
# ------------------------------------------------------------------------------------------------------------
def compare_runs(store: Store, current: str, baseline: str | None, gates: Gates | None = None) -> CIResult:
    """Judge stored run ``current`` against run/tag/file ``baseline`` (default: the baseline that run used)."""
    run = store.run(current)
    gates = gates or Gates()
    if baseline is None:
        recorded = (run.get("ci") or {}).get("baseline") or {}
        baseline = recorded.get("run_id") or (recorded.get("spec") if recorded.get("source") == "file" else None)
    base = resolve_baseline(baseline, store, exclude=run["run_id"]) if baseline else \
        Baseline(None, "none", "none")
    cells = evaluate(store.results(run["run_id"]), base.docs, gates)
    infra = (run.get("ci") or {}).get("infra_errors_fail", True)
    return CIResult(run["run_id"], (run.get("ci") or {}).get("lab") or "-", cells, base.to_json(), infra,
                    (run.get("ci") or {}).get("devices") or {}, gates=gates.model_dump(),
                    store_path=str(store.path))


def cmd_report_compare(args: argparse.Namespace) -> int:
    gates = load_lab(args.lab).gates if getattr(args, "lab", None) else None
    with open_store(args.results, args.store, create=False) as store:
        if args.compare:
            base_spec, current = args.compare
        else:
            current = args.run or store.latest_run_id()
            base_spec = None
            if current is None:
                raise ConfigError(f"no runs in {store.path}", "run `edgeopt ci` or `edgeopt bench` first")
        result = compare_runs(store, current, base_spec, gates)
    write_reports(result, args)
    from edgeopt.report.markdown import markdown_summary

    print(markdown_summary(result))
    return 0


# ------------------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------------------
def cmd_ci(args: argparse.Namespace) -> int:
    opts = CIOptions(
        lab=Path(args.lab), baseline=args.baseline, tag=[t for item in args.tag or [] for t in item.split(",") if t],
        junit=args.junit, summary=args.summary, html=args.html, json_out=args.json,
        results=args.results, store=args.store, artifacts=args.artifacts, runs=args.runs, warmup=args.warmup,
        retries=args.retries, threads=args.threads, infra_errors_fail=args.infra_errors_fail, job=args.job,
        ssh_config=args.ssh_config, build=not args.no_build, command=shlex.join(["edgeopt", *sys.argv[1:]]))
    result = run_ci(opts, LineProgress(verbose=args.verbose))
    from edgeopt.report.markdown import markdown_summary

    if not args.quiet:
        print(markdown_summary(result))
    for cell in result.cells:
        if cell.status in (REGRESSION, ERROR, INVALID):
            print(f"edgeopt ci: {cell.status.upper()} {cell.name}: {cell.message}", file=sys.stderr)
    print(f"edgeopt ci: {result.headline()} (run {result.run_id}, {result.seconds:.1f} s)", file=sys.stderr)
    if result.tags:
        print(f"edgeopt ci: tagged run {result.run_id} as {', '.join(result.tags)}", file=sys.stderr)
    return result.exit_code


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``ci`` sub-command to the edgeopt CLI."""
    c = sub.add_parser("ci", help="run a model x profile x device matrix on a lab and gate on regressions",
                       description="Build, measure on every lab device (in parallel, each device locked), compare "
                                   "with a baseline (Mann-Whitney U + bootstrap CI + minimum effect), write "
                                   "reports. Exit 0 pass, 1 regression, 2 infrastructure error.")
    c.add_argument("--lab", required=True, metavar="LAB.YAML", help="the lab: devices, models, profiles, gates")
    c.add_argument("--baseline", metavar="REF",
                   help="run id, tag (e.g. main), latest-passing (default), latest, or a JSON export")
    c.add_argument("--tag", action="append", metavar="TAG", help="tag this run when it passes (e.g. main)")
    out = c.add_argument_group("reports")
    out.add_argument("--junit", type=Path, metavar="FILE", help="JUnit XML (one test case per cell)")
    out.add_argument("--summary", type=Path, metavar="FILE",
                     help="Markdown summary (e.g. $GITHUB_STEP_SUMMARY)")
    out.add_argument("--html", type=Path, metavar="FILE", help="self-contained HTML report with plots")
    out.add_argument("--json", type=Path, metavar="FILE", help="JSON export (usable as --baseline FILE)")
    out.add_argument("-q", "--quiet", action="store_true", help="do not print the summary on stdout")
    out.add_argument("-v", "--verbose", action="store_true", help="a line per result")
    over = c.add_argument_group("override the lab")
    over.add_argument("--results", type=Path, metavar="DIR")
    over.add_argument("--store", type=Path, metavar="FILE")
    over.add_argument("--artifacts", type=Path, metavar="DIR")
    over.add_argument("--runs", type=_positive_int)
    over.add_argument("--warmup", type=int)
    over.add_argument("--threads", type=_positive_int)
    over.add_argument("--retries", type=int, help="re-measure results the agent marks invalid (default: lab)")
    over.add_argument("--infra-errors-fail", action=argparse.BooleanOptionalAction, default=None,
                      help="infrastructure errors fail the job with exit 2 (default: the lab's, yes)")
    over.add_argument("--job", help="job name recorded in the device lock (default $GITHUB_RUN_ID or the run id)")
    over.add_argument("--ssh-config", metavar="PATH")
    over.add_argument("--no-build", action="store_true", help="use what is already built; do not run the build")
    c.set_defaults(func=cmd_ci)
