"""``edgeopt bench``: run built artifacts (or any ready .tflite/.onnx file) on one or many devices and store
the results; ``edgeopt report``: show stored results.

Flow per device (one worker thread and ONE transport per device; devices run in parallel, the artifacts of
one device one after the other):

1. connect (``LocalTransport`` for ``transport: local``, else ``SSHTransport``);
2. ``DeviceSession.ensure_file`` the agent zipapp, then for each artifact its model file and reference.npz:
   pushed by sha256 into ``<workdir>/blobs/<sha256>/``, skipped when the device holds a verified copy,
   re-pushed when the copy there is corrupt;
3. ``<python> agent.pyz run --model … --sha256 … --reference … --runs … --warmup … [--threads …]`` via
   ``run_json``; the agent's JSON plus host context becomes one result document (docs/bench.md);
4. every result — valid or failed — goes to the store (SQLite + one JSON file) as soon as it exists.

A device that cannot be reached (or loses its link) fails its own results as infrastructure errors with a
one-line message; the other devices carry on. The exit code is 0 when every result is valid, else 3.

The CLI hook is :func:`register` (``edgeopt/cli.py`` calls it with its sub-parsers).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import secrets
import shlex
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from edgeopt import __version__
from edgeopt.config import Target, apply_connection_overrides, load_target
from edgeopt.errors import AgentError, ConfigError, EdgeoptError, RemoteError
from edgeopt.results.store import open_store

log = logging.getLogger(__name__)

RESULT_SCHEMA = 1
EXIT_OK = 0
EXIT_FAILED = 3  # some device or result failed (RemoteError/AgentError exit code)
MODEL_SUFFIXES = {".tflite": "tflite", ".onnx": "onnx"}
DEFAULT_TIMEOUT = 600.0


# ------------------------------------------------------------------------------------------------------------
# What to run
# ------------------------------------------------------------------------------------------------------------
@dataclass
class BenchOptions:
    """Everything ``edgeopt bench`` can be told. ``targets``: names or YAML paths; ``models``: ready model
    files (instead of built artifacts)."""

    targets: list[str] = field(default_factory=lambda: ["local"])
    models: list[Path] = field(default_factory=list)
    profiles: list[str] | None = None  # None: every profile built for the target
    formats: list[str] | None = None
    artifacts: Path = Path("artifacts")
    results: Path = Path("results")
    store: Path | None = None  # default: <results>/edgeopt.sqlite
    runs: int = 100
    warmup: int = 10
    min_seconds: float = 0.0
    max_runs: int | None = None  # default: the agent's (100000)
    threads: int | None = None  # default: the target's threads
    affinity: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    # connection overrides (one device only for host/user/port; key/python/… apply to every target)
    host: str | None = None
    user: str | None = None
    port: int | None = None
    key: str | None = None
    python: str | None = None
    accept_new_host_key: bool = False
    known_hosts: str | None = None
    ssh_config: str | None = None
    connect_timeout: float | None = None
    agent_cache: Path | None = None  # host dir for the agent zipapp; default ~/.cache/edgeopt/agent
    command: str | None = None  # the command line, recorded with the run
    agent_args: list[str] = field(default_factory=list)  # extra agent options (edgeopt ci: --max-other-load …)

    def check(self) -> None:
        if self.runs < 1:
            raise ConfigError(f"--runs must be at least 1 (got {self.runs})")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be 0 or more (got {self.warmup})")
        if self.min_seconds < 0:
            raise ConfigError(f"--min-seconds must be 0 or more (got {self.min_seconds})")
        if self.max_runs is not None and self.max_runs < self.runs:
            raise ConfigError(f"--max-runs ({self.max_runs}) must be at least --runs ({self.runs})")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1 (got {self.threads})")
        if self.timeout <= 0:
            raise ConfigError(f"--timeout must be positive (got {self.timeout:g})")
        if not self.targets:
            raise ConfigError("no --target given")
        if (self.host or self.port) and len(set(self.targets)) > 1:
            raise ConfigError("--host/--port name one device but several --target were given",
                              "run one edgeopt bench per device, or put each address in its target YAML")
        for fmt in self.formats or []:
            if fmt not in MODEL_SUFFIXES.values():
                raise ConfigError(f"--format {fmt!r}: allowed tflite, onnx")


@dataclass(frozen=True)
class Job:
    """One model file to run on one device."""

    target: str
    profile: str | None  # None for a ready model file given on the command line
    format: str
    model: Path
    sha256: str
    bytes: int
    reference: Path | None = None
    reference_sha256: str | None = None
    manifest_path: Path | None = None
    manifest_target: str | None = None
    runtime_hint: str | None = None  # the runtime the host used at build time (manifest)
    metrics: dict[str, Any] | None = None
    build_key: str | None = None

    @property
    def label(self) -> str:
        return f"{self.profile}/{self.format}" if self.profile else self.model.name


@dataclass
class DevicePlan:
    target: Target
    jobs: list[Job]
    transport_kind: str  # "local" | "ssh"
    python: str
    spec: Any = None  # ConnectionSpec for ssh


def _split(values: Iterable[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in str(item).split(",") if v.strip()]


def _sha256(path: Path) -> str:
    from edgeopt.artifacts.files import sha256_file

    return sha256_file(path)


def build_command(target: str, profiles: Sequence[str] | None = None) -> str:
    cmd = f"edgeopt build --target {target}"
    if profiles:
        cmd += f" --profile {','.join(profiles)}"
    return cmd


def find_artifacts(target: Target, root: Path, profiles: list[str] | None, formats: list[str] | None) -> list[Job]:
    """The jobs for the artifacts built for ``target`` under ``root/<target>/<profile>/manifest.json``."""
    base = Path(root) / target.name
    if profiles:
        names = profiles
    else:
        names = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if base.is_dir() else []
        names = [n for n in names if (base / n / "manifest.json").is_file()]
        if not names:
            raise ArtifactMissing(f"nothing built for target {target.name} under {base}",
                                  f"run `{build_command(target.name)}` first (or pass --artifacts DIR)")
    jobs: list[Job] = []
    for name in names:
        directory = base / name
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            state = "incomplete (no manifest.json)" if directory.is_dir() else "not built"
            raise ArtifactMissing(f"profile {name} for target {target.name} is {state}: {directory}",
                                  f"run `{build_command(target.name, [name])}` first")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactMissing(f"cannot read {manifest_path}: {exc}",
                                  f"rebuild it: `{build_command(target.name, [name])}`") from exc
        reference = None
        reference_sha = None
        ref = manifest.get("reference") or {}
        if ref.get("file"):
            reference = directory / ref["file"]
            reference_sha = ref.get("sha256")
            if not reference.is_file():
                raise ArtifactMissing(f"{reference} is missing (listed in {manifest_path})",
                                      f"rebuild it: `{build_command(target.name, [name])}`")
        found = 0
        for art in manifest.get("artifacts", []):
            if formats and art.get("format") not in formats or art.get("format") not in target.formats:
                continue
            model = directory / art["file"]
            if not model.is_file():
                raise ArtifactMissing(f"{model} is missing (listed in {manifest_path})",
                                      f"rebuild it: `{build_command(target.name, [name])}`")
            jobs.append(Job(target=target.name, profile=manifest.get("profile", name), format=art["format"],
                            model=model, sha256=art["sha256"], bytes=int(art.get("bytes") or model.stat().st_size),
                            reference=reference, reference_sha256=reference_sha, manifest_path=manifest_path,
                            manifest_target=manifest.get("target"), runtime_hint=art.get("runtime"),
                            metrics=art.get("metrics"), build_key=manifest.get("build_key")))
            found += 1
        if not found:
            usable = [f for f in target.formats if not formats or f in formats]
            raise ArtifactMissing(
                f"profile {name} for target {target.name} has no {' or '.join(usable) or 'usable'} artifact "
                f"({directory}; the target takes {', '.join(target.formats)})",
                f"check --format, or rebuild: `{build_command(target.name, [name])}`")
    return jobs


def model_jobs(target: Target, models: list[Path]) -> list[Job]:
    """Jobs for ready model files given on the command line (random inputs: no reference)."""
    jobs = []
    for model in models:
        model = Path(model)
        if not model.is_file():
            raise ArtifactMissing(f"model file {model} does not exist", "give the path of a .tflite or .onnx file")
        fmt = MODEL_SUFFIXES.get(model.suffix.lower())
        if fmt is None:
            raise ConfigError(f"{model}: cannot benchmark a {model.suffix or 'file without extension'}",
                              "give a ready .tflite or .onnx file (for other models run `edgeopt build` first)")
        jobs.append(Job(target=target.name, profile=None, format=fmt, model=model.resolve(), sha256=_sha256(model),
                        bytes=model.stat().st_size))
    return jobs


def _is_default_python(target: Target, python_override: str | None) -> bool:
    return python_override is None and target.connection.python == "python3"


def plan_device(name: str, opts: BenchOptions) -> DevicePlan:
    target = load_target(name)
    target = apply_connection_overrides(target, host=opts.host, user=opts.user, port=opts.port, key=opts.key,
                                        python=opts.python)
    if opts.host:
        kind = "ssh"  # an address was given: reach that machine over SSH, whatever the target says
    elif target.transport in ("local", "ssh"):
        kind = target.transport
    elif target.transport == "adb":
        raise ConfigError(f"target {target.name}: transport adb is not supported by edgeopt bench yet",
                          "reach the phone over SSH (e.g. Termux sshd) with transport: ssh")
    else:
        raise ConfigError(f"target {target.name} has no transport (a microcontroller)",
                          "edgeopt bench runs on devices with an OS; use the TFLM harness for MCUs")
    if kind == "ssh" and not target.connection.host:
        raise ConfigError(f"target {target.name} has no connection.host",
                          f"pass --host user@host:port or set connection.host in {target.source_file}")
    jobs = model_jobs(target, opts.models) if opts.models else find_artifacts(
        target, opts.artifacts, _split(opts.profiles) or None, _split(opts.formats) or None)
    python = target.connection.python
    if kind == "local" and _is_default_python(target, opts.python):
        python = sys.executable  # this machine: the Python running edgeopt has numpy and the runtimes
    spec = None
    if kind == "ssh":
        from edgeopt.remote.ssh import ConnectionSpec

        conn = target.connection
        spec = ConnectionSpec(
            host=conn.host or "", user=conn.user, port=conn.port, key_filename=conn.key,
            connect_timeout=opts.connect_timeout, command_timeout=opts.timeout,
            accept_new_host_key=opts.accept_new_host_key, known_hosts=opts.known_hosts,
            ssh_config=opts.ssh_config)
    return DevicePlan(target=target, jobs=jobs, transport_kind=kind, python=python, spec=spec)


# ------------------------------------------------------------------------------------------------------------
# Progress (the CLI shows it with rich; the library stays silent by default)
# ------------------------------------------------------------------------------------------------------------
class Progress(Protocol):
    def device(self, target: str, status: str) -> None: ...
    def upload(self, target: str, name: str, done: int, total: int) -> None: ...
    def running(self, target: str, label: str, index: int, count: int) -> None: ...
    def result(self, target: str, doc: dict[str, Any]) -> None: ...


class SilentProgress:
    def device(self, target: str, status: str) -> None:
        pass

    def upload(self, target: str, name: str, done: int, total: int) -> None:
        pass

    def running(self, target: str, label: str, index: int, count: int) -> None:
        pass

    def result(self, target: str, doc: dict[str, Any]) -> None:
        pass


class RichProgress:
    """One line per device on stderr: what it is doing, upload bytes, which artifact runs."""

    def __init__(self, verbose: bool = False, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress as _Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn)

        self.console = console or Console(stderr=True, highlight=False)
        self.verbose = verbose
        self._progress = _Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                   DownloadColumn(), TimeElapsedColumn(), console=self.console, transient=True)
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "RichProgress":
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
        label = doc.get("profile") or (doc.get("artifact") or {}).get("file")
        if doc.get("error"):
            self._progress.console.print(f"[red]{target} {label}/{doc.get('format')}: {doc['error']['message']}")
        elif self.verbose:
            lat = (doc.get("agent") or {}).get("latency_ms") or {}
            self._progress.console.print(f"{target} {label}/{doc.get('format')}: p50 {lat.get('p50')} ms, "
                                         f"sent {doc['transfer']['total']} B")


# ------------------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------------------
def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def agent_zipapp(cache: Path | None = None) -> tuple[Path, str]:
    """The agent zipapp in the host cache (rebuilt when the agent sources changed) and its sha256."""
    from edgeopt.bench.zipapp import DEFAULT_NAME, archive_bytes, build_zipapp
    from edgeopt.artifacts.files import sha256_bytes

    base = Path(cache) if cache else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "edgeopt" / "agent"
    data = archive_bytes()
    digest = sha256_bytes(data)
    directory = base / digest[:16]
    path = directory / DEFAULT_NAME
    if not (path.is_file() and path.stat().st_size == len(data) and _sha256(path) == digest):
        directory.mkdir(parents=True, exist_ok=True)
        build_zipapp(path)
    return path, digest


def _workdir(plan: DevicePlan, home: str) -> str:
    workdir = plan.target.connection.workdir or "~/.cache/edgeopt"
    home = home.rstrip("/")
    if workdir == "~":
        return home
    if workdir.startswith("~/"):
        return f"{home}/{workdir[2:].rstrip('/')}"
    if not workdir.startswith("/"):
        return f"{home}/{workdir.rstrip('/')}"
    return workdir.rstrip("/") or "/"


def _error(kind: str, exc: BaseException | str, **extra: Any) -> dict[str, Any]:
    if isinstance(exc, EdgeoptError):
        message = exc.one_line()
    else:
        message = " ".join(str(exc).split())
    doc: dict[str, Any] = {"kind": kind, "message": message}
    payload = getattr(exc, "payload", None)
    if payload:
        doc["type"] = payload.get("type")
        for key in ("expected", "actual", "tried"):
            if key in payload:
                doc[key] = payload[key]
    status = getattr(exc, "status", None)
    if status is not None:
        doc["status"] = status
    stderr = getattr(exc, "stderr", "")
    if stderr and kind != "agent":
        doc["stderr_tail"] = stderr[-1000:]
    doc.update(extra)
    return doc


def _timed_out(exc: RemoteError) -> bool:
    return "timed out after" in exc.message and "connecting" not in exc.message


class _Context:
    """Shared by the device workers of one run."""

    def __init__(self, opts: BenchOptions, run_id: str, agent: Path, agent_sha: str,
                 on_result: Callable[[dict[str, Any]], None], progress: Progress) -> None:
        self.opts = opts
        self.run_id = run_id
        self.agent = agent
        self.agent_sha = agent_sha
        self.on_result = on_result
        self.progress = progress


def _base_doc(ctx: _Context, plan: DevicePlan, job: Job, index: int) -> dict[str, Any]:
    opts = ctx.opts
    threads = opts.threads if opts.threads is not None else plan.target.threads
    return {
        "schema": RESULT_SCHEMA,
        "result_id": f"{ctx.run_id}-{plan.target.name}-{index:03d}",
        "run_id": ctx.run_id,
        "created_at": utc_now(),
        "target": plan.target.name,
        "profile": job.profile,
        "format": job.format,
        "source": "build" if job.profile else "file",
        "flags": [] if job.reference else ["random-inputs"],
        "artifact": {
            "file": job.model.name, "path": str(job.model), "sha256": job.sha256, "bytes": job.bytes,
            "manifest": str(job.manifest_path) if job.manifest_path else None,
            "built_for": job.manifest_target, "build_key": job.build_key, "runtime": job.runtime_hint,
            "metrics": job.metrics, "reference": str(job.reference) if job.reference else None,
            "reference_sha256": job.reference_sha256,
        },
        "request": {"runs": opts.runs, "warmup": opts.warmup, "min_seconds": opts.min_seconds,
                    "max_runs": opts.max_runs, "threads": threads, "affinity": opts.affinity,
                    "timeout_s": opts.timeout},
        "transport": {"kind": plan.transport_kind, "description": None, "python": plan.python},
        "transfer": {"agent": 0, "model": 0, "reference": 0, "total": 0},
        "host": {"hostname": platform.node(), "edgeopt_version": __version__,
                 "python": platform.python_version()},
        "valid": False,
        "error": None,
        "agent": None,
        "host_seconds": None,
    }


def _agent_argv(plan: DevicePlan, ctx: _Context, agent_remote: str, job: Job, model_remote: str,
                ref_remote: str | None, threads: int | None) -> list[str]:
    opts = ctx.opts
    argv = [plan.python, agent_remote, "run", "--model", model_remote, "--sha256", job.sha256,
            "--runs", str(opts.runs), "--warmup", str(opts.warmup), "--format", job.format]
    if ref_remote:
        argv += ["--reference", ref_remote]
    if opts.min_seconds:
        argv += ["--min-seconds", repr(float(opts.min_seconds))]
    if opts.max_runs is not None:
        argv += ["--max-runs", str(opts.max_runs)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if opts.affinity:
        argv += ["--affinity", opts.affinity]
    argv += [str(a) for a in opts.agent_args]
    if "--energy" not in opts.agent_args:  # the target's sensor setting (auto: the best the device has)
        argv += ["--energy", plan.target.energy_sensor]
        if plan.target.energy_command and "--energy-command" not in opts.agent_args:
            argv += ["--energy-command", plan.target.energy_command]
    return argv


def _valid(agent: dict[str, Any], job: Job) -> tuple[bool, str | None, bool]:
    """A result is valid when the agent ran the files we meant (by the hashes it computed on the device) and
    measured something finite (the agent maps NaN to null)."""
    model_sha = (agent.get("model") or {}).get("sha256")
    if model_sha != job.sha256:
        return False, f"the agent ran {job.model.name} with sha256 {model_sha}, not {job.sha256}", True
    ref_sha = (agent.get("inputs") or {}).get("sha256")
    if job.reference_sha256 and ref_sha != job.reference_sha256:
        name = job.reference.name if job.reference else "the reference"
        return False, f"the agent read {name} with sha256 {ref_sha}, not {job.reference_sha256}", True
    latency = agent.get("latency_ms") or {}
    if not isinstance(latency.get("p50"), (int, float)) or not latency.get("count"):
        return False, "the agent returned no latency figures", False
    parity = agent.get("parity") or {}
    artifact = parity.get("artifact") or {}
    if artifact and artifact.get("all_finite") is False:
        return False, "the model produced non-finite outputs on the device", False
    return True, None, False


def open_transport(plan: DevicePlan) -> Any:
    if plan.transport_kind == "local":
        from edgeopt.remote.local import LocalTransport

        return LocalTransport()
    from edgeopt.remote.ssh import SSHTransport

    return SSHTransport(plan.spec)


def run_device(plan: DevicePlan, ctx: _Context) -> list[dict[str, Any]]:
    """Run every job of one device; never raises for device or agent failures (they become results)."""
    from edgeopt.remote.session import AgentFailed, DeviceSession

    name = plan.target.name
    docs: list[dict[str, Any]] = []
    count = len(plan.jobs)
    device_error: dict[str, Any] | None = None
    description = plan.spec.host if plan.spec is not None else "local"

    def finish(doc: dict[str, Any], started: float) -> None:
        doc["host_seconds"] = round(time.perf_counter() - started, 3)
        docs.append(doc)
        ctx.on_result(doc)
        ctx.progress.result(name, doc)

    ctx.progress.device(name, f"connecting ({plan.transport_kind})")
    started = time.perf_counter()
    transport = None
    try:
        transport = open_transport(plan)
        description = transport.description
    except EdgeoptError as exc:
        device_error = _error("infrastructure", exc, stage="connect")
    except Exception as exc:  # an unexpected library failure must not take the other devices down
        log.debug("connecting to %s failed", name, exc_info=True)
        device_error = _error("infrastructure", f"cannot connect to {name}: {type(exc).__name__}: {exc}",
                              stage="connect")
    if device_error is not None:
        for i, job in enumerate(plan.jobs, start=1):
            doc = _base_doc(ctx, plan, job, i)
            doc["transport"]["description"] = description
            doc["error"] = device_error
            finish(doc, started)
        return docs

    assert transport is not None
    try:
        session: DeviceSession | None = None
        verified: dict[tuple[str, str], str] = {}  # (sha256, file name) -> remote path, checked this session
        agent_remote = ""
        threads = ctx.opts.threads if ctx.opts.threads is not None else plan.target.threads
        for i, job in enumerate(plan.jobs, start=1):
            started = time.perf_counter()
            doc = _base_doc(ctx, plan, job, i)
            doc["transport"]["description"] = transport.description
            if device_error is not None:
                doc["error"] = {**device_error, "message": f"not run: {device_error['message']}"}
                finish(doc, started)
                continue
            transfer = doc["transfer"]

            def push(path: Path, sha: str | None, what: str) -> str:
                assert session is not None
                key = (sha or "", path.name)
                if sha and key in verified:  # verified on the device by this session moments ago (e.g. the
                    return verified[key]     # reference shared by a profile's tflite and onnx artifacts)
                ctx.progress.upload(name, path.name, 0, path.stat().st_size)
                remote = session.ensure_file(
                    path, sha, progress=lambda done, total: ctx.progress.upload(name, path.name, done, total))
                transfer[what] += session.last_sent
                transfer["total"] += session.last_sent
                if sha:
                    verified[key] = remote
                return remote

            try:
                if not agent_remote:
                    ctx.progress.device(name, "checking the device cache")
                    if session is None:
                        session = DeviceSession(transport, python=plan.python, hash_timeout=ctx.opts.timeout,
                                                cache_dir=_workdir(plan, transport.home()))
                    agent_remote = push(ctx.agent, ctx.agent_sha, "agent")
                model_remote = push(job.model, job.sha256, "model")
                ref_remote = push(job.reference, job.reference_sha256, "reference") if job.reference else None
                ctx.progress.running(name, job.label, i, count)
                argv = _agent_argv(plan, ctx, agent_remote, job, model_remote, ref_remote, threads)
                agent = session.run_json(argv, timeout=ctx.opts.timeout)
                if not isinstance(agent, dict) or agent.get("command") != "run":
                    raise AgentFailed(f"the agent on {transport.description} printed an unexpected document",
                                      "update edgeopt on the host (the agent is pushed from it)")
                doc["agent"] = agent
                ok, why, stale = _valid(agent, job)
                if stale:
                    verified.clear()  # a file changed on the device under us: verify everything again
                doc["valid"] = ok
                if not ok:
                    doc["error"] = {"kind": "invalid", "message": why}
            except AgentFailed as exc:
                doc["error"] = _error("agent", exc)
            except AgentError as exc:  # the local artifact changed since the build, etc.
                doc["error"] = _error("artifact", exc)
            except RemoteError as exc:
                if _timed_out(exc):
                    doc["error"] = _error("timeout", exc)
                else:  # link lost, cannot write on the device …: this device cannot go on
                    device_error = _error("infrastructure", exc, stage="run")
                    doc["error"] = device_error
            except EdgeoptError as exc:
                doc["error"] = _error("error", exc)
            except Exception as exc:
                log.debug("%s on %s failed", job.label, name, exc_info=True)
                device_error = _error("infrastructure", f"{type(exc).__name__}: {exc}", stage="run")
                doc["error"] = device_error
            finish(doc, started)
    finally:
        try:
            transport.close()
        except Exception:  # closing a dead link must not hide the results
            log.debug("closing %s failed", name, exc_info=True)
    ctx.progress.device(name, "done")
    return docs


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
    ctx = _Context(opts, run_id, agent, agent_sha, store.add_result, progress)
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


# ------------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------------
def _options_from_args(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        targets=args.target or ["local"], models=[Path(m) for m in args.models or []],
        profiles=_split(args.profile) or None, formats=_split(args.format) or None,
        artifacts=Path(args.artifacts), results=Path(args.results), store=Path(args.store) if args.store else None,
        runs=args.runs, warmup=args.warmup, min_seconds=args.min_seconds, max_runs=args.max_runs,
        threads=args.threads,
        affinity=args.affinity, timeout=args.timeout, host=args.host, user=args.user, port=args.port, key=args.key,
        python=args.python, accept_new_host_key=args.accept_new_host_key, known_hosts=args.known_hosts,
        ssh_config=args.ssh_config, connect_timeout=args.connect_timeout,
        command=shlex.join(["edgeopt", *sys.argv[1:]]),
        agent_args=_condition_args(args),
    )


# agent options passed through as given: energy sensor and measuring conditions (docs/agent.md)
_CONDITION_OPTIONS = ("energy", "energy_command", "energy_rate_hz", "energy_min_seconds", "sysfs_root", "pin",
                      "governor", "cooldown_below", "cooldown_timeout", "max_other_load")


def _condition_args(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for name in _CONDITION_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            out += ["--" + name.replace("_", "-"), str(value)]
    return out


def _print_failures(run: BenchRun) -> None:
    seen: set[str] = set()
    for r in run.failed:
        error = r.get("error") or {"message": "no result"}
        if error.get("kind") == "infrastructure":
            if r["target"] in seen:
                continue  # one line per failed device, not one per artifact
            seen.add(r["target"])
        label = "" if error.get("kind") == "infrastructure" else f" {r.get('profile') or r['artifact']['file']}/" \
                                                                   f"{r.get('format')}"
        print(f"edgeopt: {r['target']}{label}: {error['message']}", file=sys.stderr)


def _stdout_console() -> Any:
    """stdout; when it is not a terminal (a pipe, a CI log) the table is not squeezed into 80 columns."""
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=220)


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    opts = _options_from_args(args)
    err = Console(stderr=True, highlight=False)
    if args.json or not err.is_terminal:
        run = bench(opts, _LineProgress(err, args.verbose) if args.verbose else None)
    else:
        with RichProgress(verbose=args.verbose, console=err) as progress:
            run = bench(opts, progress)
    if args.json:
        print(json.dumps(run.to_json(), indent=2))
    else:
        from edgeopt.report.table import render_table

        render_table(run.results, _stdout_console(), title=f"edgeopt bench — run {run.run_id}")
        s = run.summary()
        print(f"{s['valid']}/{s['results']} results valid, {s['bytes_sent']:,} bytes sent, {s['seconds']:.1f} s; "
              f"stored in {run.store_path} and {run.results_dir}/", file=sys.stderr)
    _print_failures(run)
    return run.exit_code


class _LineProgress(SilentProgress):
    """-v without a terminal: one plain line per event that matters."""

    def __init__(self, console: Any, verbose: bool) -> None:
        self.console = console
        self.verbose = verbose

    def running(self, target: str, label: str, index: int, count: int) -> None:
        self.console.print(f"{target}: run {label} ({index}/{count})", markup=False)

    def result(self, target: str, doc: dict[str, Any]) -> None:
        lat = (doc.get("agent") or {}).get("latency_ms") or {}
        what = f"error: {doc['error']['message']}" if doc.get("error") else f"p50 {lat.get('p50')} ms"
        self.console.print(f"{target}: {doc.get('profile') or doc['artifact']['file']}/{doc.get('format')} {what}, "
                           f"sent {doc['transfer']['total']} B", markup=False)


def cmd_report(args: argparse.Namespace) -> int:
    from edgeopt.report.table import render_runs, render_table, rows_json
    from edgeopt.results.store import open_store as _open

    if getattr(args, "compare", None) or getattr(args, "html", None) or getattr(args, "junit", None) \
            or getattr(args, "summary", None):
        from edgeopt.ci.run import cmd_report_compare

        return cmd_report_compare(args)

    with _open(args.results, args.store, create=False) as store:
        if args.list:
            runs = store.runs(limit=args.limit)
            if args.json:
                print(json.dumps(runs, indent=2))
            else:
                render_runs(runs, _stdout_console())
            return 0
        run_id = args.run or store.latest_run_id()
        if run_id is None:
            raise ArtifactMissing(f"no runs in {store.path}", "run `edgeopt bench` first")
        run = store.run(run_id)
        docs = store.results(run["run_id"])
    if args.json:
        out: dict[str, Any] = {"run": run, "rows": rows_json(docs)}
        if args.full:
            out["results"] = docs
        print(json.dumps(out, indent=2))
    else:
        title = f"edgeopt report — run {run['run_id']} ({run['created_at']}, {run.get('status')})"
        render_table(docs, _stdout_console(), title=title)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``bench`` and ``report`` sub-commands to the edgeopt CLI."""
    b = sub.add_parser("bench", help="run artifacts on devices (push by hash, run the agent, store results)",
                       description="Benchmark built artifacts (or ready .tflite/.onnx files) on one or more "
                                   "devices in parallel; results go to the results store.")
    b.add_argument("models", nargs="*", metavar="MODEL",
                   help="ready .tflite/.onnx files to run instead of built artifacts (random inputs)")
    b.add_argument("--target", "-t", action="append",
                   help="target name or YAML file; repeat for several devices in parallel (default: local)")
    conn = b.add_argument_group("connection (override the target's)")
    conn.add_argument("--host", help="user@host:port or an ~/.ssh/config alias (one target only)")
    conn.add_argument("--user")
    conn.add_argument("--port", type=int)
    conn.add_argument("--key", help="private key file")
    conn.add_argument("--python", help="the device's Python interpreter (default: the target's python:)")
    conn.add_argument("--accept-new-host-key", action="store_true",
                      help="record an unknown host key in known_hosts (a changed key is always refused)")
    conn.add_argument("--known-hosts", metavar="PATH", help="known_hosts file (default ~/.ssh/known_hosts)")
    conn.add_argument("--ssh-config", metavar="PATH", help="SSH config file (default ~/.ssh/config)")
    conn.add_argument("--connect-timeout", type=float, metavar="S", help="SSH connect timeout (default 10 s)")
    what = b.add_argument_group("what to run")
    what.add_argument("--profile", "-p", action="append",
                      help="profile(s), repeatable or comma-separated (default: every profile built for the target)")
    what.add_argument("--artifacts", default="artifacts", metavar="DIR", help="artifact root (default ./artifacts)")
    what.add_argument("--format", action="append", choices=["tflite", "onnx"], help="only this format")
    how = b.add_argument_group("measurement")
    how.add_argument("--runs", type=_positive_int, default=100, help="timed runs (default 100)")
    how.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    how.add_argument("--min-seconds", type=float, default=0.0, help="time at least this long as well (default 0)")
    how.add_argument("--max-runs", type=_positive_int, help="never more timed runs than this (default: the "
                     "agent's, 100000)")
    how.add_argument("--threads", type=_positive_int, help="runtime threads (default: the target's threads)")
    how.add_argument("--affinity", metavar="CPUS", help="pin the agent to CPUs, e.g. 0,1 or 2-3")
    how.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                     help=f"kill an agent command after this many seconds (default {DEFAULT_TIMEOUT:g})")
    cond = b.add_argument_group("energy and measuring conditions (passed to the agent)")
    cond.add_argument("--energy", choices=["auto", "none", "rpi5-pmic", "hwmon", "rapl", "power-supply", "command"],
                      help="energy sensor (default: the target's energy_sensor, usually auto)")
    cond.add_argument("--energy-command", metavar="CMD", help="external meter: a command printing watts per call")
    cond.add_argument("--energy-rate-hz", type=float, metavar="HZ", help="sensor sampling rate")
    cond.add_argument("--energy-min-seconds", type=float, metavar="S", help="minimum timed loop with energy on")
    cond.add_argument("--sysfs-root", metavar="DIR", help="root of /sys on the device (default /)")
    cond.add_argument("--pin", choices=["fastest"], help="pin to the fastest cores (big.LITTLE)")
    cond.add_argument("--governor", choices=["performance"], help="set this cpufreq governor when permitted "
                      "(restored afterwards)")
    cond.add_argument("--cooldown-below", type=float, metavar="C", help="wait until the hottest zone is below C")
    cond.add_argument("--cooldown-timeout", type=float, metavar="S", help="wait at most S s for the cool-down")
    cond.add_argument("--max-other-load", type=float, metavar="CPUS",
                      help="mark the run invalid when other processes use more CPUs than this (default 0.5)")
    out = b.add_argument_group("output")
    out.add_argument("--results", default="results", metavar="DIR", help="results directory (default ./results)")
    out.add_argument("--store", metavar="FILE", help="SQLite file (default <results>/edgeopt.sqlite)")
    out.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    out.add_argument("-v", "--verbose", action="store_true", help="one line per result as it arrives")
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("report", help="show stored benchmark results (latest run by default)")
    r.add_argument("--run", help="run id (or a unique prefix); default: the latest run")
    r.add_argument("--list", action="store_true", help="list the recent runs instead")
    r.add_argument("--limit", type=_positive_int, default=20, help="runs listed by --list (default 20)")
    r.add_argument("--results", default="results", metavar="DIR", help="results directory (default ./results)")
    r.add_argument("--store", metavar="FILE", help="SQLite file (default <results>/edgeopt.sqlite)")
    r.add_argument("--json", action="store_true", help="machine-readable rows on stdout")
    r.add_argument("--full", action="store_true", help="with --json: include the full result documents")
    # edgeopt ci's reports over stored runs (edgeopt/ci.py): the gate's verdict, HTML with plots, JUnit, Markdown
    r.add_argument("--compare", nargs=2, metavar=("BASELINE", "CURRENT"),
                   help="judge run CURRENT against BASELINE (run id, tag, latest-passing or a JSON export)")
    r.add_argument("--html", type=Path, metavar="FILE", help="self-contained HTML report with plots")
    r.add_argument("--junit", type=Path, metavar="FILE", help="JUnit XML of the comparison")
    r.add_argument("--summary", type=Path, metavar="FILE", help="Markdown summary of the comparison")
    r.add_argument("--lab", metavar="LAB.YAML", help="take the gates' thresholds from this lab")
    r.set_defaults(func=cmd_report)
