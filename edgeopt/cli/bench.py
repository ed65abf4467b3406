"""``edgeopt bench``: benchmark built artifacts (or ready model files) on one or many devices."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.cli.args import add_later, positive_int
from edgeopt.cli.console import RichProgress, stdout_console

if TYPE_CHECKING:
    from edgeopt.bench import BenchOptions, BenchRun


def _options_from_args(args: argparse.Namespace) -> BenchOptions:
    from edgeopt.bench import BenchOptions
    from edgeopt.bench.options import split_values

    return BenchOptions(
        targets=args.target or ["local"], models=[Path(m) for m in args.models or []],
        profiles=split_values(args.profile) or None, formats=split_values(args.format) or None,
        artifacts=Path(args.artifacts), results=Path(args.results), store=args.store,
        runs=args.runs, warmup=args.warmup, min_seconds=args.min_seconds, max_runs=args.max_runs,
        threads=args.threads,
        affinity=args.affinity, timeout=args.timeout, host=args.host, user=args.user, port=args.port, key=args.key,
        python=args.python, accept_new_host_key=args.accept_new_host_key, known_hosts=args.known_hosts,
        ssh_config=args.ssh_config, connect_timeout=args.connect_timeout,
        command=args.command_line,
        agent_args=_condition_args(args),
        inputs=Path(args.inputs) if args.inputs else None, shapes=list(args.shape or []), int_range=args.int_range,
    )


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
    if run.interrupted:
        s = run.summary()
        print(f"edgeopt: interrupted: {s['valid']}/{s['results']} results finished; commands running on the "
              f"devices were killed; run {run.run_id} is stored as interrupted", file=sys.stderr)
        return
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


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgeopt.bench import bench
    from edgeopt.bench.run import enable_hard_stop
    from edgeopt.cli.lines import BenchLineProgress

    if getattr(args, "own_process", False):
        enable_hard_stop()
    opts = _options_from_args(args)
    err = Console(stderr=True, highlight=False)
    if args.json or not err.is_terminal:
        run = bench(opts, BenchLineProgress(err, args.verbose) if args.verbose else None)
    else:
        with RichProgress(verbose=args.verbose, console=err) as progress:
            run = bench(opts, progress)
    if args.json:
        print(json.dumps(run.to_json(), indent=2))
    else:
        from edgeopt.report.table import render_table

        render_table(run.results, stdout_console(), title=f"edgeopt bench — run {run.run_id}")
        s = run.summary()
        disturbed = (f" ({s['disturbed']} measured under disturbed conditions: agent.valid false, never a CI "
                     "baseline, their latency never compared)") if s["disturbed"] else ""
        print(f"{s['valid']}/{s['results']} results valid{disturbed}, {s['bytes_sent']:,} bytes sent, "
              f"{s['seconds']:.1f} s; "
              f"stored in {run.store_path} and {run.results_dir}/", file=sys.stderr)
    _print_failures(run)
    return run.exit_code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench``."""
    b = sub.add_parser("bench", help="run artifacts on devices (push by hash, run the agent, store results)",
                       description="Benchmark built artifacts (or ready .tflite/.onnx files) on one or more "
                                   "devices in parallel; results go to the results store.")
    add_later(b, _arguments)  # --timeout's default comes from edgeopt.bench: imported only for `edgeopt bench`
    b.set_defaults(func=cmd_bench)


def _arguments(b: argparse.ArgumentParser) -> None:
    from edgeopt.bench import DEFAULT_TIMEOUT

    b.add_argument("models", nargs="*", metavar="MODEL",
                   help="ready .tflite/.onnx files to run instead of built artifacts (generated inputs, or "
                        "--inputs)")
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
    ins = b.add_argument_group("inputs of ready model files (docs/artifacts.md)")
    ins.add_argument("--inputs", metavar="NPZ",
                     help="real inputs: one array per model input name ('x' for a single input), (N, *sample) "
                          "or one sample; checked on the host, pushed by hash")
    ins.add_argument("--shape", action="append", metavar="NAME=1x3x224x224",
                     help="run a dynamic input with this shape (repeatable; NAME may be left out for a "
                          "single-input model); default: batch 1, other dynamic dims 224")
    ins.add_argument("--int-range", metavar="LO:HI",
                     help="range of generated integer inputs, clipped to the dtype (default 0:127)")
    how = b.add_argument_group("measurement")
    how.add_argument("--runs", type=positive_int, default=100, help="timed runs (default 100)")
    how.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    how.add_argument("--min-seconds", type=float, default=0.0, help="time at least this long as well (default 0)")
    how.add_argument("--max-runs", type=positive_int, help="never more timed runs than this (default: the "
                     "agent's, 100000)")
    how.add_argument("--threads", type=positive_int, help="runtime threads (default: the target's threads)")
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
    out.add_argument("--store", metavar="FILE|URL",
                     help="SQLite file or postgresql://user@host:port/db (default: $EDGEOPT_STORE, else "
                     "<results>/edgeopt.sqlite)")
    out.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    out.add_argument("-v", "--verbose", action="store_true", help="one line per result as it arrives")
