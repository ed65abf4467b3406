"""One device's worker: connect, push the agent and each job's files by hash, run the agent, turn every
outcome (result, agent failure, lost link, timeout) into a result document. Never raises for device failures."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

from edgeopt.bench.document import add_flags, base_doc, check_result, device_flags, error_doc
from edgeopt.bench.options import BenchOptions, DevicePlan, Job
from edgeopt.bench.plan import open_transport
from edgeopt.bench.progress import Progress
from edgeopt.bench.schema import schema_problem
from edgeopt.bench.zipapp import ZIP_PACKAGE
from edgeopt.errors import (
    AgentError,
    AgentFailed,
    DeviceOutputError,
    EdgeoptError,
    Interrupted,
    RemoteError,
    RemoteTimeout,
)
from edgeopt.remote.session import DeviceSession

log = logging.getLogger(__name__)


# Runs a Python zipapp from the bytes it verified (Python >= 3.9, started with -I: no PYTHON* variables, no
# working directory on sys.path). argv: <zipapp> <sha256> <package> <arguments…>. The file is read ONCE; its
# sha256 is checked; the package's modules are imported from those bytes in memory (never from the path again),
# then <package>.__main__.main() runs with sys.argv = [<zipapp>, <arguments…>]. A mismatch prints the agent's
# {"error": {"type": "hash_mismatch", …}} document and exits 1. -I also drops the user's site-packages: they are
# put back (a runtime installed with `pip install --user`), after the system's.
VERIFIED_ZIPAPP_CODE = """import hashlib, importlib.abc, importlib.util, io, json, linecache, os, site, sys, zipfile
zip_path, want, package = sys.argv[1], sys.argv[2].lower(), sys.argv[3]
with open(zip_path, "rb") as fh:
    data = fh.read()
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.stdout.write(json.dumps({"error": {"type": "hash_mismatch", "expected": want, "actual": got,
        "message": "%s: sha256 mismatch: expected %s, actual %s" % (zip_path, want, got),
        "hint": "the agent on the device is not the one that was pushed; run again to push it"}}) + "\\n")
    sys.exit(1)
user_site = site.getusersitepackages()
if sys.prefix == sys.base_prefix and isinstance(user_site, str) and os.path.isdir(user_site):
    site.addsitedir(user_site)
archive = zipfile.ZipFile(io.BytesIO(data))
names = set(archive.namelist())
class Loader(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def entry(self, name):
        base = name.replace(".", "/")
        for key, is_package in ((base + "/__init__.py", True), (base + ".py", False)):
            if key in names:
                return key, is_package
        return None, False
    def find_spec(self, name, path=None, target=None):
        if name != package and not name.startswith(package + "."):
            return None
        key, is_package = self.entry(name)
        if key is None:
            return None
        return importlib.util.spec_from_loader(name, self, origin=zip_path + "/" + key, is_package=is_package)
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        key = self.entry(module.__name__)[0]
        source = archive.read(key).decode("utf-8")
        module.__file__ = zip_path + "/" + key
        linecache.cache[module.__file__] = (len(source), None, source.splitlines(True), module.__file__)
        exec(compile(source, module.__file__, "exec"), module.__dict__)
sys.meta_path.insert(0, Loader())
sys.argv = [zip_path] + sys.argv[4:]
main = importlib.import_module(package + ".__main__").main
sys.exit(main())
"""


def verified_zipapp_argv(python: str, zipapp: str, sha256: str, package: str, args: list[str]) -> list[str]:
    """The argv that runs ``zipapp`` on the device from the bytes it verified against ``sha256`` (see
    :data:`VERIFIED_ZIPAPP_CODE`): a file swapped after the push is refused, never run."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256.lower()):
        raise ValueError(f"invalid sha256 {sha256!r}")
    return [python, "-I", "-c", VERIFIED_ZIPAPP_CODE, zipapp, sha256.lower(), package, *args]



class RunContext:
    """Shared by the device workers of one run. ``cancel`` is set on Ctrl-C: every worker stops, a command
    running on a device is killed (the transports check it), the jobs not run are stored as interrupted."""

    def __init__(self, opts: BenchOptions, run_id: str, agent: Path, agent_sha: str,
                 on_result: Callable[[dict[str, Any]], object], progress: Progress,
                 cancel: threading.Event | None = None) -> None:
        self.opts = opts
        self.run_id = run_id
        self.agent = agent
        self.agent_sha = agent_sha
        self.on_result = on_result
        self.progress = progress
        self.cancel = cancel if cancel is not None else threading.Event()


INTERRUPTED = {"kind": "interrupted", "message": "not run: the run was interrupted (Ctrl-C)"}


def remote_workdir(plan: DevicePlan, home: str) -> str:
    workdir = plan.target.connection.workdir or "~/.cache/edgeopt"
    home = home.rstrip("/")
    if workdir == "~":
        return home
    if workdir.startswith("~/"):
        return f"{home}/{workdir[2:].rstrip('/')}"
    if not workdir.startswith("/"):
        return f"{home}/{workdir.rstrip('/')}"
    return workdir.rstrip("/") or "/"


def agent_argv(plan: DevicePlan, ctx: RunContext, agent_remote: str, job: Job, model_remote: str,
               ref_remote: str | None, threads: int | None, inputs_remote: str | None = None) -> list[str]:
    opts = ctx.opts
    argv = ["run", "--model", model_remote, "--sha256", job.sha256,
            "--runs", str(opts.runs), "--warmup", str(opts.warmup), "--format", job.format]
    if ref_remote:
        argv += ["--reference", ref_remote]
    elif inputs_remote:
        argv += ["--inputs", inputs_remote]
    else:  # generated inputs
        for shape in opts.shapes:
            argv += ["--shape", shape]
        if opts.int_range:
            argv += ["--int-range", opts.int_range]
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
    # run from the bytes verified against the agent's sha256, not by path: a zipapp swapped since the push
    # (the device's cache is checked once per session) is refused, never run
    return verified_zipapp_argv(plan.python, agent_remote, ctx.agent_sha, ZIP_PACKAGE, argv)


def run_device(plan: DevicePlan, ctx: RunContext) -> list[dict[str, Any]]:
    """Run every job of one device; never raises for device or agent failures (they become results)."""
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
        device_error = error_doc("infrastructure", exc, stage="connect")
    except Exception as exc:  # an unexpected library failure must not take the other devices down
        log.debug("connecting to %s failed", name, exc_info=True)
        device_error = error_doc("infrastructure", f"cannot connect to {name}: {type(exc).__name__}: {exc}",
                                 stage="connect")
    if device_error is not None:
        for i, job in enumerate(plan.jobs, start=1):
            doc = base_doc(ctx.run_id, ctx.opts, plan, job, i)
            doc["transport"]["description"] = description
            doc["error"] = device_error
            finish(doc, started)
        return docs

    assert transport is not None
    transport.cancel = ctx.cancel
    try:
        session: DeviceSession | None = None
        verified: dict[tuple[str, str], str] = {}  # (sha256, file name) -> remote path, checked this session
        agent_remote = ""
        threads = ctx.opts.threads if ctx.opts.threads is not None else plan.target.threads
        for i, job in enumerate(plan.jobs, start=1):
            started = time.perf_counter()
            doc = base_doc(ctx.run_id, ctx.opts, plan, job, i)
            doc["transport"]["description"] = transport.description
            if ctx.cancel.is_set() and device_error is None:
                device_error = dict(INTERRUPTED)
            if device_error is not None:
                message = device_error["message"]
                doc["error"] = {**device_error,
                                "message": message if message.startswith("not run:") else f"not run: {message}"}
                finish(doc, started)
                continue
            transfer = doc["transfer"]

            # push() runs within this iteration only: it may use this iteration's session and transfer
            def push(path: Path, sha: str | None, what: str) -> str:
                assert session is not None  # noqa: B023
                key = (sha or "", path.name)
                if sha and key in verified:  # verified on the device by this session moments ago (e.g. the
                    return verified[key]     # reference shared by a profile's tflite and onnx artifacts)
                ctx.progress.upload(name, path.name, 0, path.stat().st_size)
                remote = session.ensure_file(  # noqa: B023
                    path, sha, progress=lambda done, total: ctx.progress.upload(name, path.name, done, total))
                transfer[what] += session.last_sent  # noqa: B023
                transfer["total"] += session.last_sent  # noqa: B023
                if sha:
                    verified[key] = remote
                return remote

            try:
                if not agent_remote:
                    ctx.progress.device(name, "checking the device cache")
                    if session is None:
                        session = DeviceSession(transport, python=plan.python, hash_timeout=ctx.opts.timeout,
                                                cache_dir=remote_workdir(plan, transport.home()))
                    agent_remote = push(ctx.agent, ctx.agent_sha, "agent")
                model_remote = push(job.model, job.sha256, "model")
                ref_remote = push(job.reference, job.reference_sha256, "reference") if job.reference else None
                inputs_remote = push(job.inputs, job.inputs_sha256, "inputs") if job.inputs else None
                ctx.progress.running(name, job.label, i, count)
                argv = agent_argv(plan, ctx, agent_remote, job, model_remote, ref_remote, threads, inputs_remote)
                assert session is not None  # opened before agent_remote was first set
                agent = session.run_json(argv, timeout=ctx.opts.timeout)
                if not isinstance(agent, dict) or agent.get("command") != "run":
                    raise AgentFailed(f"the agent on {transport.description} printed an unexpected document",
                                      "update edgeopt on the host (the agent is pushed from it)")
                problem = schema_problem(agent)  # device output is untrusted: typed before it is stored
                if problem:
                    raise DeviceOutputError(f"the agent on {transport.description} printed a malformed document: "
                                            f"{problem}", "is the agent on the device edgeopt's? run again")
                doc["agent"] = agent
                add_flags(doc, device_flags(agent))  # "emulated": latency not comparable with hardware
                ok, why, stale = check_result(agent, job)
                if stale:
                    verified.clear()  # a file changed on the device under us: verify everything again
                doc["valid"] = ok
                if not ok:
                    doc["error"] = {"kind": "invalid", "message": why}
            except Interrupted as exc:
                device_error = dict(INTERRUPTED)
                doc["error"] = error_doc("interrupted", exc)
            except AgentFailed as exc:
                doc["error"] = error_doc("agent", exc)
                if exc.payload.get("type") == "hash_mismatch":  # a file changed on the device since verified:
                    verified.clear()                              # verify (and push) everything again
                    agent_remote = ""
            except AgentError as exc:  # the local artifact changed since the build, etc.
                doc["error"] = error_doc("artifact", exc)
            except RemoteError as exc:
                if isinstance(exc, RemoteTimeout):
                    doc["error"] = error_doc("timeout", exc)
                else:  # link lost, cannot write on the device …: this device cannot go on
                    device_error = error_doc("infrastructure", exc, stage="run")
                    doc["error"] = device_error
            except EdgeoptError as exc:
                doc["error"] = error_doc("error", exc)
            except Exception as exc:
                log.debug("%s on %s failed", job.label, name, exc_info=True)
                device_error = error_doc("infrastructure", f"{type(exc).__name__}: {exc}", stage="run")
                doc["error"] = device_error
            finish(doc, started)
    finally:
        try:
            transport.close()
        except Exception:  # closing a dead link must not hide the results
            log.debug("closing %s failed", name, exc_info=True)
    ctx.progress.device(name, "done")
    return docs
