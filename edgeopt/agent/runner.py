"""The ``run`` command: verify the artifact, load it, time it, measure memory, check parity, describe the device."""

from __future__ import annotations

import hashlib
import os
import re
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

import numpy as np

from . import AGENT_VERSION, SCHEMA, inputs, memory, parity, sysinfo, timing
from .errors import AgentFailure, usage_error
from .runtimes import FORMATS, LoadedRuntime, Model, select

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class RunOptions:
    def __init__(self, model: str, sha256: str, reference: Optional[str] = None, runs: int = 100,
                 warmup: int = 10, min_seconds: float = 0.0, max_runs: int = 100000, threads: Optional[int] = None,
                 affinity: Optional[List[int]] = None, runtime: str = "auto", fmt: Optional[str] = None) -> None:
        self.model = model
        self.sha256 = sha256
        self.reference = reference
        self.runs = runs
        self.warmup = warmup
        self.min_seconds = min_seconds
        self.max_runs = max_runs
        self.threads = threads
        self.affinity = affinity
        self.runtime = runtime
        self.format = fmt

    def check(self) -> None:
        if not _HEX64.match(self.sha256 or ""):
            raise usage_error("--sha256 must be 64 hex digits, got %r" % self.sha256,
                              "pass the artifact's sha256 from manifest.json")
        if self.runs < 1:
            raise usage_error("--runs must be >= 1, got %d" % self.runs)
        if self.warmup < 0:
            raise usage_error("--warmup must be >= 0, got %d" % self.warmup)
        if self.min_seconds < 0:
            raise usage_error("--min-seconds must be >= 0, got %s" % self.min_seconds)
        if self.max_runs < self.runs:
            raise usage_error("--max-runs (%d) must be >= --runs (%d)" % (self.max_runs, self.runs))
        if self.threads is not None and self.threads < 1:
            raise usage_error("--threads must be >= 1, got %d" % self.threads)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path: str) -> str:
    """By extension; otherwise by content (a TFLite flatbuffer carries ``TFL3`` at byte 4)."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext in FORMATS:
        return ext
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:1] == b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version), varint
        return "onnx"
    raise AgentFailure("unsupported_format", "cannot tell the format of %s (extension %r)" % (path, ext),
                       "name the file *.tflite or *.onnx, or pass --format")


def verify_model(path: str, expected: str) -> Dict[str, object]:
    if not os.path.isfile(path):
        raise AgentFailure("model_not_found", "model file %s does not exist" % path,
                           "push the artifact to the device first")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise AgentFailure("hash_mismatch", "%s: sha256 mismatch: expected %s, actual %s" % (path, expected.lower(), actual),
                           "the file on the device is not the artifact that was built; push it again",
                           expected=expected.lower(), actual=actual)
    return {"path": os.path.abspath(path), "sha256": actual, "bytes": os.path.getsize(path)}


def apply_affinity(cpus: Optional[List[int]], warnings: List[str]) -> Dict[str, object]:
    setter = getattr(os, "sched_setaffinity", None)
    if cpus is not None:
        if setter is None:
            warnings.append("--affinity ignored: os.sched_setaffinity is not available on this platform")
        else:
            try:
                setter(0, set(cpus))
            except (OSError, ValueError) as exc:
                raise AgentFailure("bad_affinity", "cannot pin to CPUs %s: %s" % (cpus, exc),
                                   "choose CPUs from %s" % sysinfo.affinity())
    return {"affinity_requested": cpus, "affinity": sysinfo.affinity()}


def _round_ms(value: float) -> float:
    return round(value, 6)  # 1 ns resolution


def _infer(model: Model, arrays: List[Any]) -> Any:
    model.set_inputs(arrays)
    model.invoke()
    return inputs.dequantize(model.get_outputs()[0], model.outputs[0])


def run(opts: RunOptions) -> Dict[str, object]:
    started = time.time()
    opts.check()
    warnings: List[str] = []
    model_block = verify_model(opts.model, opts.sha256)
    fmt = opts.format or detect_format(opts.model)
    model_block["format"] = fmt
    reference = inputs.load_reference(opts.reference) if opts.reference else None

    runtime: LoadedRuntime = select(fmt, opts.runtime)  # imports it: before the memory baseline
    pinning = apply_affinity(opts.affinity, warnings)
    state_before = sysinfo.device_state()

    rss_before = memory.rss_kib()
    t0 = time.perf_counter_ns()
    try:
        model = runtime.load(opts.model, opts.threads)
    except AgentFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - the runtime refused the model
        raise AgentFailure("model_load_failed", "%s %s cannot load %s: %s: %s"
                           % (runtime.name, runtime.version, opts.model, type(exc).__name__, " ".join(str(exc).split())),
                           "check that the runtime supports every op of the model (an older runtime may not)")
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    rss_after = memory.rss_kib()

    if reference is not None:
        pool = inputs.reference_inputs(reference, model.inputs)
        inputs_block: Dict[str, object] = {"source": "reference", "file": os.path.abspath(opts.reference),
                                           "sha256": sha256_file(opts.reference), "samples": len(pool)}
    else:
        pool = inputs.random_inputs(model.inputs)
        inputs_block = {"source": "random", "seed": inputs.RANDOM_SEED, "samples": len(pool),
                        "distribution": "float: uniform [0, 1); int8/uint8/int16 and quantised: full dtype range; "
                                        "int32/int64: [0, 10]; bool: 0/1"}

    model.set_inputs(pool[0])
    first_ms = timing.time_call(model.invoke)

    def prepare(i: int) -> None:
        model.set_inputs(pool[i % len(pool)])

    measured = timing.measure(model.invoke, prepare if len(pool) > 1 else None, opts.warmup, opts.runs,
                              opts.min_seconds, opts.max_runs)
    samples = measured["samples_ms"]
    if measured["capped"]:
        warnings.append("stopped at --max-runs %d before --runs/--min-seconds were met" % opts.max_runs)
    stats = timing.summarize(samples)
    latency: Dict[str, object] = {"init": _round_ms(init_ms), "first": _round_ms(first_ms)}
    latency.update({k: _round_ms(v) for k, v in stats.items()})
    latency.update({"count": len(samples), "warmup": opts.warmup, "runs_requested": opts.runs,
                    "min_seconds": opts.min_seconds, "measure_seconds": round(measured["measure_seconds"], 6),
                    "clock": "time.perf_counter_ns around invoke()/run() only",
                    "samples": [_round_ms(v) for v in samples]})

    parity_block = None
    if reference is not None:
        parity_block = check_parity(model, pool, reference, fmt, warnings)

    runtime_block: Dict[str, object] = {"name": runtime.name, "module": runtime.spec.module,
                                        "version": runtime.version, "threads": opts.threads}
    runtime_block.update(pinning)
    if hasattr(model, "providers"):
        runtime_block["providers"] = model.providers

    mem = memory.memory_block(rss_before, rss_after)
    device = sysinfo.device_facts()
    device["state_before"] = state_before
    device["state_after"] = sysinfo.device_state()
    return {
        "schema": SCHEMA,
        "agent_version": AGENT_VERSION,
        "command": "run",
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 3),
        "model": model_block,
        "runtime": runtime_block,
        "io": {"inputs": [i.to_json() for i in model.inputs], "outputs": [o.to_json() for o in model.outputs]},
        "latency_ms": latency,
        "memory": mem,
        "inputs": inputs_block,
        "parity": parity_block,
        "device": device,
        "warnings": warnings,
    }


def check_parity(model: Model, pool: List[List[Any]], reference: Dict[str, Any], fmt: str,
                 warnings: List[str]) -> Dict[str, object]:
    """Runs every reference sample once more (untimed) and compares output 0 with the host's outputs."""
    outputs = np.stack([_infer(model, arrays) for arrays in pool])
    block: Dict[str, object] = {"samples": len(pool), "output": model.outputs[0].name}
    if len(model.outputs) > 1:
        warnings.append("parity compares output 0 (%s) only; the model has %d outputs"
                        % (model.outputs[0].name, len(model.outputs)))
    same_key = "y_" + fmt
    if same_key in reference:
        block["artifact"] = parity.compare(outputs, reference[same_key], same_key)
    else:
        block["artifact"] = None
        warnings.append("reference has no %s: parity against the host run of this artifact is missing" % same_key)
    block["float"] = parity.compare(outputs, reference["y_float"], "y_float") if "y_float" in reference else None
    if "labels" in reference:
        block["accuracy"] = parity.accuracy(outputs, reference["labels"])
    artifact = block["artifact"]
    # Flat copies of the headline figures, for a gate that reads one level deep.
    block["top1_agreement"] = artifact["top1_agreement"] if artifact else None
    block["max_abs_diff"] = artifact["max_abs_diff"] if artifact else None
    return block
