"""The ``run`` command: verify the artifact, load it, time it, measure memory, check parity, describe the device."""

from __future__ import annotations

import hashlib
import os
import re
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple, TypedDict, Union

import numpy as np

from . import AGENT_VERSION, SCHEMA, energy, inputs, memory, parity, state, sysinfo, timing
from .errors import AgentFailure, usage_error
from .runtimes import FORMATS, LoadedRuntime, Model, select

MIN_LOAD_WINDOW_S = 0.5  # /proc/stat counts 10 ms ticks: shorter windows say nothing about other load
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class RunOptions:
    def __init__(self, model: str, sha256: str, reference: Optional[str] = None, runs: int = 100,
                 warmup: int = 10, min_seconds: float = 0.0, max_runs: int = 100000, threads: Optional[int] = None,
                 affinity: Optional[List[int]] = None, runtime: str = "auto", fmt: Optional[str] = None,
                 energy_opts: Optional[energy.EnergyOptions] = None, sysfs_root: str = "/",
                 pin: Optional[str] = None, governor: Optional[str] = None, cooldown_below: Optional[float] = None,
                 cooldown_timeout: float = 300.0, max_other_load: float = 0.5, inputs_file: Optional[str] = None,
                 shapes: Optional[List[str]] = None, int_range: Optional[str] = None) -> None:
        self.model = model
        self.inputs_file = inputs_file  # a user's inputs (.npz, one array per model input name)
        self.shapes = list(shapes or [])  # --shape NAME=1x3x224x224 for generated inputs
        self.int_range = inputs.parse_int_range(int_range) if int_range else inputs.DEFAULT_INT_RANGE
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
        self.sysfs_root = sysfs_root
        self.energy = energy_opts or energy.EnergyOptions(root=sysfs_root)
        self.energy.root = sysfs_root
        self.pin = pin
        self.governor = governor
        self.cooldown_below = cooldown_below
        self.cooldown_timeout = cooldown_timeout
        self.max_other_load = max_other_load
        #: the model file's bytes, read once and hashed by ``verify_model``: the runtime loads these, never the path
        self.model_content: Optional[bytes] = None
        self.reference_sha256: Optional[str] = None  # of the bytes the reference was loaded from (read once)
        self.inputs_sha256: Optional[str] = None  # of the bytes the --inputs file was loaded from

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
        e = self.energy
        if e.sensor not in energy.CHOICES:
            raise usage_error("--energy must be one of %s, got %r" % ("|".join(energy.CHOICES), e.sensor))
        if e.rate_hz is not None and not e.rate_hz > 0:
            raise usage_error("--energy-rate-hz must be > 0, got %s" % e.rate_hz)
        if e.min_seconds is not None and e.min_seconds < 0:
            raise usage_error("--energy-min-seconds must be >= 0, got %s" % e.min_seconds)
        if e.sensor == "command" and not e.command:
            raise usage_error("--energy command needs --energy-command 'CMD ARGS'")
        if self.pin is not None and self.affinity is not None:
            raise usage_error("--pin and --affinity exclude each other")
        if self.cooldown_timeout < 0:
            raise usage_error("--cooldown-timeout must be >= 0, got %s" % self.cooldown_timeout)
        if self.reference and self.inputs_file:
            raise usage_error("--reference and --inputs exclude each other", "give one source of inputs")
        for text in self.shapes:
            inputs.parse_shape(text)
        if not os.path.isdir(self.sysfs_root):
            raise usage_error("--sysfs-root %s is not a directory" % self.sysfs_root)


def detect_format(path: str, head: Optional[bytes] = None) -> str:
    """By extension; otherwise by content (``head``: the first bytes; a TFLite flatbuffer carries ``TFL3`` at
    byte 4)."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext in FORMATS:
        return ext
    if head is None:
        with open(path, "rb") as fh:
            head = fh.read(8)
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:1] == b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version), varint
        return "onnx"
    raise AgentFailure("unsupported_format", "cannot tell the format of %s (extension %r)" % (path, ext),
                       "name the file *.tflite or *.onnx, or pass --format")


def verify_model(path: str, expected: str) -> Tuple[Dict[str, object], bytes]:
    """Reads the model file ONCE and checks the sha256 of those bytes; the runtime then loads the same bytes
    (never the path again: a file swapped after the check cannot be what runs)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise AgentFailure("model_not_found", "model file %s does not exist" % path,
                           "push the artifact to the device first")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected.lower():
        raise AgentFailure("hash_mismatch", "%s: sha256 mismatch: expected %s, actual %s" % (path, expected.lower(), actual),
                           "the file on the device is not the artifact that was built; push it again",
                           expected=expected.lower(), actual=actual)
    return {"path": os.path.abspath(path), "sha256": actual, "bytes": len(data)}, data


class Pinning(TypedDict):
    """What ``apply_affinity`` returns (and the runtime block reports)."""

    affinity_requested: Optional[List[int]]
    affinity: Optional[List[int]]


def apply_affinity(cpus: Optional[List[int]], warnings: List[str]) -> Pinning:
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


def _infer(model: Model, arrays: List[Any]) -> List[Any]:
    model.set_inputs(arrays)
    model.invoke()
    return [inputs.dequantize(y, info) for y, info in zip(model.get_outputs(), model.outputs)]


def run(opts: RunOptions) -> Dict[str, object]:
    started = time.time()
    opts.check()
    warnings: List[str] = []
    model_block, opts.model_content = verify_model(opts.model, opts.sha256)
    fmt = opts.format or detect_format(opts.model, opts.model_content[:8])
    model_block["format"] = fmt
    reference = None
    if opts.reference:
        reference, opts.reference_sha256 = inputs.load_reference(opts.reference)
    user_inputs = None
    if opts.inputs_file:
        user_inputs, opts.inputs_sha256 = inputs.load_npz(opts.inputs_file, "inputs")

    runtime: LoadedRuntime = select(fmt, opts.runtime)  # imports it: before the memory baseline
    root = opts.sysfs_root
    conditions: Dict[str, object] = {"sysfs_root": root, "max_other_load": opts.max_other_load}
    meter = open_energy(opts.energy)
    affinity_cpus = opts.affinity
    if opts.pin == "fastest":
        affinity_cpus, pin_info = state.fastest_cpus(root, sysinfo.affinity())
        pin_info["cpus"] = affinity_cpus
        conditions["pin"] = pin_info
        if not affinity_cpus:
            affinity_cpus = None
            warnings.append("--pin fastest: no cpufreq information, not pinned")
    pinning = apply_affinity(affinity_cpus, warnings)
    cpus_used = pinning["affinity"]
    conditions["cpus_used"] = cpus_used
    governor = state.Governor(root, cpus_used, opts.governor, apply=False) if opts.governor else None
    try:  # SIGTERM/SIGINT (the host kills the agent: Ctrl-C, a timeout) end up here too: see __main__
        if governor is not None:
            governor.apply()
            conditions["governor"] = governor.info
            if governor.info["error"]:
                warnings.append("--governor %s: %s" % (opts.governor, governor.info["error"]))
        return _run_measured(opts, started, warnings, model_block, fmt, reference, runtime, pinning, conditions,
                             meter, user_inputs)
    finally:
        if governor is not None:
            governor.restore()


def open_energy(eopts: energy.EnergyOptions) -> Union[energy.EnergyMeter, _NoSensor, None]:
    """The sensor chosen by --energy; a forced one that is not available is a failure, auto falls through."""
    try:
        sensor, tried = energy.select(eopts)
    except energy.SensorUnavailable as exc:
        raise AgentFailure("energy_unavailable", "--energy %s: %s" % (eopts.sensor, exc),
                           "choose another sensor (`agent.pyz probe` lists them), --energy auto, or --energy none")
    if sensor is None:
        return None if eopts.sensor == "none" else _NoSensor(tried)
    return energy.EnergyMeter(sensor, eopts, "auto" if eopts.sensor == "auto" else "--energy %s" % eopts.sensor,
                              tried)


class _NoSensor:
    """--energy auto found nothing: reported as such, never faked."""

    def __init__(self, tried: Dict[str, str]) -> None:
        self.tried = tried


def _run_measured(opts: RunOptions, started: float, warnings: List[str], model_block: Dict[str, object], fmt: str,
                  reference: Optional[Dict[str, Any]], runtime: LoadedRuntime, pinning: Pinning,
                  conditions: Dict[str, object], meter: Any,
                  user_inputs: Optional[Dict[str, Any]] = None) -> Dict[str, object]:
    root = opts.sysfs_root
    cooldown_info = None
    if opts.cooldown_below is not None:
        cooldown_info = state.cooldown(root, opts.cooldown_below, opts.cooldown_timeout)
        conditions["cooldown"] = cooldown_info
        if cooldown_info.get("start_c") is None:
            warnings.append("--cooldown-below: no thermal zone under %s: no cool-down" % sysinfo.sys_path(root, "class/thermal"))
    state_before = sysinfo.device_state(root)
    run_load = state.OtherLoad().start()

    rss_before = memory.rss_kib()
    t0 = time.perf_counter_ns()
    try:
        model = runtime.load(opts.model, opts.threads, content=opts.model_content)
    except AgentFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - the runtime refused the model
        raise AgentFailure("model_load_failed", "%s %s cannot load %s: %s: %s"
                           % (runtime.name, runtime.version, opts.model, type(exc).__name__, " ".join(str(exc).split())),
                           "check that the runtime supports every op of the model (an older runtime may not)")
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    rss_after = memory.rss_kib()

    if reference is not None:
        source, data, path, sha = "reference", reference, opts.reference, opts.reference_sha256
    elif user_inputs is not None:
        source, data, path, sha = "inputs", user_inputs, opts.inputs_file, opts.inputs_sha256
    else:
        source, data, path, sha = None, None, None, None
    pool, inputs_block, what = inputs.input_pool(model, fmt, source, data, os.path.abspath(path) if path else None,
                                                 sha, opts.shapes, opts.int_range)
    try:  # the runtime refuses the values or shapes (an index out of range, a shape it cannot run)
        model.set_inputs(pool[0])
        first_ms = timing.time_call(model.invoke)
    except Exception as exc:  # noqa: BLE001
        raise inputs.rejected(model.inputs, [i.shape for i in model.inputs], what, exc)

    def prepare(i: int) -> None:
        model.set_inputs(pool[i % len(pool)])

    energy_meter = meter if isinstance(meter, energy.EnergyMeter) else None
    min_seconds = opts.min_seconds
    if energy_meter is not None:
        min_seconds = max(min_seconds, energy_meter.min_seconds)
    freq_monitor = state.FreqMonitor(root, pinning["affinity"])
    loop_load = state.OtherLoad()
    other_load: Dict[str, Optional[float]] = {}

    def between(per_call_s: Optional[float]) -> None:
        if energy_meter is not None:
            # idle baseline as long as the timed loop is expected to be (capped), the model loaded and idle
            per_call = per_call_s if per_call_s is not None else first_ms / 1e3
            seconds = min(max(min_seconds, opts.runs * per_call), energy.BASELINE_MAX_SECONDS)
            idle_load = state.OtherLoad().start()
            energy_meter.baseline(seconds)
            other_load["idle baseline"] = idle_load.stop(MIN_LOAD_WINDOW_S)
        freq_monitor.start()
        loop_load.start()
        if energy_meter is not None:
            energy_meter.start()  # last: its first reading is right before the loop

    try:
        measured = timing.measure(model.invoke, prepare if len(pool) > 1 else None, opts.warmup, opts.runs,
                                  min_seconds, opts.max_runs, between)
    finally:
        if energy_meter is not None:
            energy_meter.stop()
        freq_info = freq_monitor.stop()
        other_load["timed loop"] = loop_load.stop(MIN_LOAD_WINDOW_S)
        if other_load["timed loop"] is None:  # too short to count clock ticks: judge the whole run instead
            other_load["run"] = run_load.stop(MIN_LOAD_WINDOW_S)
    samples = measured["samples_ms"]
    if measured["capped"]:
        warnings.append("stopped at --max-runs %d before --runs/--min-seconds were met" % opts.max_runs)
    stats = timing.summarize(samples)
    latency: Dict[str, object] = {"init": _round_ms(init_ms), "first": _round_ms(first_ms)}
    latency.update({k: _round_ms(v) for k, v in stats.items()})
    latency.update({"count": len(samples), "warmup": opts.warmup, "runs_requested": opts.runs,
                    "min_seconds": opts.min_seconds, "min_seconds_effective": min_seconds, "measure_seconds": round(measured["measure_seconds"], 6),
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
    state_after = sysinfo.device_state(root)
    device["state_after"] = state_after

    if energy_meter is not None:
        energy_block = energy_meter.result(measured["measure_seconds"], len(samples))
        warnings.extend("energy: " + w for w in energy_block["warnings"])
    elif meter is not None:
        energy_block = energy.none_block("--energy auto found no sensor", meter.tried)
    else:
        energy_block = energy.none_block("not requested (--energy none)")

    conditions["cpufreq_during"] = freq_info
    conditions["other_load_cpus"] = other_load
    reasons, notes = state.judge(state_before, state_after, freq_info, other_load,
                                 opts.max_other_load, cooldown_info)
    conditions["notes"] = notes
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
        "energy": energy_block,
        "conditions": conditions,
        "valid": not reasons,
        "invalid_reasons": reasons,
        "warnings": warnings,
    }


def check_parity(model: Model, pool: List[List[Any]], reference: Dict[str, Any], fmt: str,
                 warnings: List[str]) -> Dict[str, object]:
    """Runs every reference sample once more (untimed) and compares each output with the host's outputs."""
    per_sample = [_infer(model, arrays) for arrays in pool]
    outputs = [np.stack([row[k] for row in per_sample]) for k in range(len(model.outputs))]
    return parity.parity_block(outputs, [o.name for o in model.outputs], reference, fmt, warnings)
