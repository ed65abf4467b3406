"""Command line of the agent: ``python3 agent.pyz run …`` / ``python3 agent.pyz probe``.

Prints exactly ONE JSON document on stdout, whatever happens: the result (exit 0) or
``{"error": {"type", "message", "hint"}}`` (exit 1; 2 for bad usage). Anything a runtime prints to stdout
(C++ logging …) is sent to stderr so it cannot corrupt the document. ``--help``/``--version`` print text.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import traceback
from typing import Any, List, Optional, Sequence

from . import AGENT_VERSION, SCHEMA
from .energy import CHOICES
from .errors import EXIT_FAILURE, AgentFailure, usage_error
from .runtimes import BY_NAME, FORMATS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise usage_error(message, "usage: " + self.format_usage().strip().replace("usage: ", "", 1))


def _cpu_list(text: str) -> List[int]:
    """``0,1`` or ``0-3`` or ``0-1,4``."""
    cpus: List[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-", 1)
                cpus.extend(range(int(lo), int(hi) + 1))
            elif part:
                cpus.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError("expected CPU numbers like 0,1 or 0-3, got %r" % text)
    if not cpus or any(c < 0 for c in cpus):
        raise argparse.ArgumentTypeError("expected CPU numbers like 0,1 or 0-3, got %r" % text)
    return sorted(set(cpus))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sysfs-root", default="/",
                        help="root of every sysfs reader (hwmon, powercap, power_supply, thermal, cpufreq): "
                             "<root>/sys/... (default /)")
    parser.add_argument("--energy-command", help="external meter: a command (no shell) printing watts per call")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agent.pyz", description="edgeopt on-device benchmark agent %s" % AGENT_VERSION)
    parser.add_argument("--version", action="version", version=AGENT_VERSION)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", help="benchmark one model file; prints the result JSON")
    run.add_argument("--model", required=True, help="the .tflite or .onnx file")
    run.add_argument("--sha256", required=True, help="expected sha256 of the model file (hex)")
    run.add_argument("--reference", help="reference.npz (x, y_float, y_tflite|y_onnx, or x_FMT:i, y_float_FMT:k, "
                                         "y_FMT:k); generated inputs without it")
    run.add_argument("--inputs", dest="inputs_file", metavar="NPZ",
                     help="real inputs: one (N, *sample) array per model input name ('x' for one input); "
                          "excludes --reference")
    run.add_argument("--shape", action="append", default=[], metavar="NAME=1x3x224x224",
                     help="shape of a dynamic input for generated inputs (repeatable; no NAME for one input)")
    run.add_argument("--int-range", metavar="LO:HI",
                     help="range of generated integer inputs, clipped to the dtype (default 0:127)")
    run.add_argument("--runs", type=int, default=100, help="timed runs (at least; default 100)")
    run.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    run.add_argument("--min-seconds", type=float, default=0.0,
                     help="keep timing until this many seconds passed as well (default 0)")
    run.add_argument("--max-runs", type=int, default=100000, help="never more timed runs than this")
    run.add_argument("--threads", type=int, help="num_threads / intra_op_num_threads (default: runtime's)")
    run.add_argument("--affinity", type=_cpu_list, help="pin to these CPUs, e.g. 0,1 or 2-3")
    run.add_argument("--runtime", default="auto", choices=["auto"] + sorted(BY_NAME),
                     help="force a runtime (default: first importable)")
    run.add_argument("--format", choices=FORMATS, help="model format (default: from the extension)")
    _common(run)
    en = run.add_argument_group("energy")
    en.add_argument("--energy", default="none", choices=CHOICES,
                    help="energy sensor (default none); auto: the best available, reported with what was tried")
    en.add_argument("--energy-rate-hz", type=float, help="sampling rate (default: per sensor, 10-50 Hz)")
    en.add_argument("--energy-min-seconds", type=float,
                    help="shortest timed loop with energy on (default: per sensor, 1-10 s); extends --min-seconds")
    en.add_argument("--energy-command-joules", action="store_true",
                    help="the --energy-command prints cumulative joules, not watts")
    en.add_argument("--energy-hwmon", help="hwmon device to use (its name or hwmonN; default: the first)")
    st = run.add_argument_group("measuring conditions")
    st.add_argument("--pin", choices=["fastest"], help="pin to the fastest cores (big.LITTLE: cpu_capacity / "
                                                       "cpuinfo_max_freq); excludes --affinity")
    st.add_argument("--governor", choices=["performance"],
                    help="set this cpufreq governor on the cores used for the run, restore it afterwards")
    st.add_argument("--cooldown-below", type=float, metavar="C",
                    help="before measuring, wait until the hottest thermal zone is below C degrees Celsius")
    st.add_argument("--cooldown-timeout", type=float, default=300.0, metavar="S",
                    help="wait at most S seconds for --cooldown-below (default 300)")
    st.add_argument("--max-other-load", type=float, default=0.5, metavar="CPUS",
                    help="other processes using more CPUs than this on average make the run invalid (default 0.5)")
    pr = sub.add_parser("probe", help="device facts, the runtimes importable here and the energy sensors")
    _common(pr)
    return parser


def probe(args: argparse.Namespace) -> dict:
    from . import energy, sysinfo
    from .runtimes import probe as probe_runtimes

    root = getattr(args, "sysfs_root", "/")
    eopts = energy.EnergyOptions(command=getattr(args, "energy_command", None), root=root)
    return {"schema": SCHEMA, "agent_version": AGENT_VERSION, "command": "probe",
            "device": sysinfo.device_facts(), "state": sysinfo.device_state(root), "runtimes": probe_runtimes(),
            "energy": energy.probe(eopts)}


def execute(args: argparse.Namespace) -> dict:
    if args.command == "probe":
        return probe(args)
    if args.command != "run":
        raise usage_error("a command is required: run or probe", "agent.pyz run --model M --sha256 HEX")
    try:
        import numpy  # noqa: F401 - every runtime needs it; say so before anything else fails
    except ImportError as exc:
        raise AgentFailure("numpy_missing", "numpy cannot be imported on this device: %s: %s"
                           % (type(exc).__name__, exc),
                           "install it: `pip install numpy` (Debian/Raspberry Pi OS: `apt install python3-numpy`)")
    from .energy import EnergyOptions
    from .runner import RunOptions, run

    eopts = EnergyOptions(sensor=args.energy, rate_hz=args.energy_rate_hz, command=args.energy_command,
                          command_joules=args.energy_command_joules, min_seconds=args.energy_min_seconds,
                          hwmon=args.energy_hwmon, root=args.sysfs_root)
    return run(RunOptions(model=args.model, sha256=args.sha256, reference=args.reference, runs=args.runs,
                          warmup=args.warmup, min_seconds=args.min_seconds, max_runs=args.max_runs,
                          threads=args.threads, affinity=args.affinity, runtime=args.runtime, fmt=args.format,
                          energy_opts=eopts, sysfs_root=args.sysfs_root, pin=args.pin, governor=args.governor,
                          cooldown_below=args.cooldown_below, cooldown_timeout=args.cooldown_timeout,
                          max_other_load=args.max_other_load, inputs_file=args.inputs_file, shapes=args.shape,
                          int_range=args.int_range))


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _emit(doc: dict) -> None:
    sys.stdout.write(json.dumps(_finite(doc), allow_nan=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _stop_on_signals() -> None:
    """SIGTERM, SIGINT and SIGHUP (the host kills the agent's process group on Ctrl-C or a timeout, then
    SIGKILLs it a moment later; a lost SSH session hangs up) raise ``AgentFailure("interrupted")`` in the main
    thread, so every ``finally`` runs: the CPU governor is restored, the energy sampler stopped. Later signals
    are ignored, so nothing interrupts that clean-up."""

    def handler(signum: int, frame: Any) -> None:
        for other in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(other, signal.SIG_IGN)
        name = signal.Signals(signum).name
        raise AgentFailure("interrupted", "the agent was stopped by %s" % name,
                           "the host interrupted the run (Ctrl-C or a timeout)", exit_code=128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if argv is None:  # the zipapp or `python -m`: a process of its own
        _stop_on_signals()
    try:
        args = build_parser().parse_args(argv)  # --help / --version print to stdout and exit here
    except AgentFailure as exc:
        _emit(exc.to_json())
        return exc.exit_code
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)  # from here on, whatever writes to fd 1 (a runtime's C++ logging …) lands on stderr
    try:
        doc, code = execute(args), 0
    except AgentFailure as exc:
        doc, code = exc.to_json(), exc.exit_code
    except BaseException as exc:  # noqa: BLE001 - never a bare traceback: wrap it
        doc = {"error": {"type": "internal", "message": "%s: %s" % (type(exc).__name__, exc),
                         "hint": "an agent bug or a runtime crash: report it with the traceback",
                         "traceback": traceback.format_exc()}}
        code = EXIT_FAILURE
    finally:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    _emit(doc)
    return code


if __name__ == "__main__":
    sys.exit(main())
