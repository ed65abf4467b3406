"""Command layer: parse, call, print. No logic lives here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from edgeopt import __version__
from edgeopt.errors import EdgeoptError


def _console(stderr: bool = True) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


class RichReporter:
    """Progress bar over conversion passes; -v prints each pass with its time."""

    def __init__(self, verbose: bool, quiet: bool) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = _console()
        self.verbose, self.quiet = verbose, quiet
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                 console=self.console, transient=True, disable=quiet)
        self.task: Any = None

    def __enter__(self) -> "RichReporter":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, total_steps: int) -> None:
        self.task = self.progress.add_task("building", total=total_steps)

    def step(self, profile: str, what: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=f"{profile}: {what}")

    def done(self, profile: str, what: str, seconds: float, detail: str = "") -> None:
        if self.verbose:
            self.progress.console.print(f"  {profile}: {what} done in {seconds:.2f} s {detail}")

    def artifact_done(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.progress.console.print(message)


def _print_build(results: list[Any], console: Any) -> None:
    from rich.table import Table

    roots = sorted({str(r.directory.parent) for r in results})
    table = Table(title="edgeopt build", title_justify="left",
                  caption=f"artifacts in {', '.join(roots)}/<profile>/ (manifest.json, reference.npz)",
                  caption_justify="left")
    for col in ("profile", "format", "bytes", "accuracy", "top-1 agree", "max |diff|", "status"):
        table.add_column(col, justify="left" if col in ("profile", "format", "status") else "right", no_wrap=True)
    for r in results:
        for a in r.manifest["artifacts"]:
            m = a.get("metrics") or {}
            acc = f"{m['accuracy']:.4f}" if "accuracy" in m else "-"
            agree = f"{m['top1_agreement']:.4f}" if m else "-"
            diff = f"{m['max_abs_diff']:.4f}" if m else "-"
            table.add_row(r.profile, a["format"], f"{a['bytes']:,}", acc, agree, diff,
                          "cached" if r.cached else f"built {r.seconds:.1f} s")
        for sk in r.manifest.get("skipped", []):
            table.add_row(r.profile, sk["format"], "-", "-", "-", "-", f"skipped: {sk['reason']}")
    console.print(table)


def cmd_build(args: argparse.Namespace) -> int:
    from edgeopt.build.pipeline import BuildRequest, build
    from edgeopt.config import load_profile, load_target

    if args.search:
        from edgeopt.build.search import run_from_args

        with RichReporter(verbose=args.verbose, quiet=args.json) as rep:
            return run_from_args(args, rep)
    target = load_target(args.target)
    names = [n for p in (args.profile or []) for n in p.split(",") if n] or target.default_profiles
    if names == ["all"]:
        from edgeopt.config import available

        names = sorted(available("profiles"))
    profiles = [load_profile(n) for n in names]
    req = BuildRequest(target=target, profiles=profiles, model=args.model, data=args.data, eval=args.eval,
                       train=args.train, out=Path(args.out), force=args.force)
    t0 = time.perf_counter()
    with RichReporter(verbose=args.verbose, quiet=args.json) as rep:
        results = build(req, rep)
    if args.json:
        print(json.dumps({"results": [r.summary() for r in results], "seconds": round(time.perf_counter() - t0, 3)},
                         indent=2))
    else:
        from edgeopt.bench.run import _stdout_console

        _print_build(results, _stdout_console())
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from edgeopt.config import list_targets

    targets = list_targets()
    if args.json:
        print(json.dumps([t.model_dump() for t in targets], indent=2))
        return 0
    for t in targets:
        where = t.transport if t.transport != "ssh" else f"ssh {t.connection.user}@{t.connection.host}"
        print(f"{t.name:<16} {t.machine:<8} {where:<28} {','.join(t.formats):<12} {t.description}")
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from edgeopt.config import list_profiles

    profiles = list_profiles()
    if args.json:
        print(json.dumps([p.model_dump() for p in profiles], indent=2))
        return 0
    for p in profiles:
        print(f"{p.name:<16} {p.description}")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgeopt", description="Take a trained model to edge devices and prove "
                                 "how it runs there.")
    ap.add_argument("--version", action="version", version=f"edgeopt {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="convert a model into TFLite/ONNX artifacts for a target and profiles")
    b.add_argument("model", nargs="?", help=".keras/.h5/.onnx file or SavedModel dir (default: bundled MNIST example)")
    b.add_argument("--target", "-t", default="local", help="target name or YAML file (default: local)")
    b.add_argument("--profile", "-p", action="append",
                   help="profile name(s), repeatable or comma-separated; 'all' (default: the target's defaults)")
    b.add_argument("--data", help="calibration data: .npz with x, folder of .npy, or module:function")
    b.add_argument("--eval", help="eval data (x, and y for accuracy): same forms as --data")
    b.add_argument("--train", help="training data for the pruned/distilled/qat profiles (.npz with x, y; same "
                   "forms as --data; the bundled example brings its own)")
    b.add_argument("--out", default="artifacts", help="output root (default: ./artifacts)")
    b.add_argument("--force", action="store_true", help="rebuild even when the cache says up to date")
    b.add_argument("--json", action="store_true", help="machine-readable results on stdout")
    b.add_argument("-v", "--verbose", action="store_true", help="show each pass and its time")
    from edgeopt.build.search import add_arguments as add_search_arguments

    add_search_arguments(b)
    b.set_defaults(func=cmd_build)

    t = sub.add_parser("targets", help="list the targets (devices) defined")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_targets)
    p = sub.add_parser("profiles", help="list the profiles (optimisation recipes) defined")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profiles)

    from edgeopt.bench.run import register as register_bench

    register_bench(sub)  # bench, report
    from edgeopt.ci.run import register as register_ci

    register_ci(sub)  # ci
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except EdgeoptError as exc:
        print(f"edgeopt: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgeopt: interrupted; nothing half-written was left in place", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
