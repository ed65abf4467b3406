"""The result document: one per job, valid or failed (docs/bench.md). Built here and nowhere else."""

from __future__ import annotations

import platform
import secrets
from datetime import UTC, datetime
from typing import Any

from edgeopt import __version__
from edgeopt.bench.options import BenchOptions, DevicePlan, Job
from edgeopt.errors import EdgeoptError
from edgeopt.results.reader import EMULATED  # the device is emulated (edgeopt emulate): latency is not hardware's

RESULT_SCHEMA = 1

# flags of a result document ("flags": [...])
RANDOM_INPUTS = "random-inputs"  # a ready model file: generated inputs (agent.inputs says how), no reference


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def error_doc(kind: str, exc: BaseException | str, **extra: Any) -> dict[str, Any]:
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


def check_result(agent: dict[str, Any], job: Job) -> tuple[bool, str | None, bool]:
    """A result is valid when the agent ran the files we meant (by the hashes it computed on the device) and
    measured something finite (the agent maps NaN to null)."""
    model_sha = (agent.get("model") or {}).get("sha256")
    if model_sha != job.sha256:
        return False, f"the agent ran {job.model.name} with sha256 {model_sha}, not {job.sha256}", True
    ref_sha = (agent.get("inputs") or {}).get("sha256")
    if job.reference_sha256 and ref_sha != job.reference_sha256:
        name = job.reference.name if job.reference else "the reference"
        return False, f"the agent read {name} with sha256 {ref_sha}, not {job.reference_sha256}", True
    if job.inputs_sha256 and not job.reference_sha256 and ref_sha != job.inputs_sha256:
        name = job.inputs.name if job.inputs else "the inputs"
        return False, f"the agent read {name} with sha256 {ref_sha}, not {job.inputs_sha256}", True
    latency = agent.get("latency_ms") or {}
    if not isinstance(latency.get("p50"), (int, float)) or not latency.get("count"):
        return False, "the agent returned no latency figures", False
    parity = agent.get("parity") or {}
    artifact = parity.get("artifact") or {}
    if artifact and artifact.get("all_finite") is False:
        return False, "the model produced non-finite outputs on the device", False
    return True, None, False


def base_doc(run_id: str, opts: BenchOptions, plan: DevicePlan, job: Job, index: int) -> dict[str, Any]:
    """The document of one job before it runs: what, where and how; ``valid`` false until a result fills it."""
    threads = opts.threads if opts.threads is not None else plan.target.threads
    return {
        "schema": RESULT_SCHEMA,
        "result_id": f"{run_id}-{plan.target.name}-{index:03d}",
        "run_id": run_id,
        "created_at": utc_now(),
        "target": plan.target.name,
        "profile": job.profile,
        "format": job.format,
        "source": "build" if job.profile else "file",
        "flags": [] if job.reference or job.inputs else [RANDOM_INPUTS],
        "artifact": {
            "file": job.model.name, "path": str(job.model), "sha256": job.sha256, "bytes": job.bytes,
            "manifest": str(job.manifest_path) if job.manifest_path else None,
            "built_for": job.manifest_target, "build_key": job.build_key, "runtime": job.runtime_hint,
            "metrics": job.metrics, "quality": job.quality,
            "reference": str(job.reference) if job.reference else None,
            "reference_sha256": job.reference_sha256,
            "inputs": str(job.inputs) if job.inputs else None, "inputs_sha256": job.inputs_sha256,
        },
        "request": {"runs": opts.runs, "warmup": opts.warmup, "min_seconds": opts.min_seconds,
                    "max_runs": opts.max_runs, "threads": threads, "affinity": opts.affinity,
                    "timeout_s": opts.timeout, "shapes": list(opts.shapes), "int_range": opts.int_range},
        "transport": {"kind": plan.transport_kind, "description": None, "python": plan.python},
        "transfer": {"agent": 0, "model": 0, "reference": 0, **({"inputs": 0} if job.inputs else {}), "total": 0},
        "host": {"hostname": platform.node(), "edgeopt_version": __version__,
                 "python": platform.python_version()},
        "valid": False,
        "error": None,
        "agent": None,
        "host_seconds": None,
    }


def device_flags(agent: dict[str, Any]) -> list[str]:
    """Flags the device's own facts call for: ``emulated`` when the agent found the emulation marker
    (docs/emulate.md)."""
    device = agent.get("device") if isinstance(agent, dict) else None
    return [EMULATED] if isinstance(device, dict) and device.get("emulated") else []


def add_flags(doc: dict[str, Any], flags: list[str]) -> None:
    doc["flags"] = list(doc.get("flags") or []) + [f for f in flags if f not in (doc.get("flags") or [])]
