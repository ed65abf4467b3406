"""``edgeopt build`` (and ``--search``, ``--matrix``/``--ray``), ``edgeopt targets``, ``edgeopt profiles``.

Cohesive: one command's three modes (a build, a matrix of cells, a search) share their arguments, their checks
and their tables; the work itself lives in ``edgeopt.build``."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.cli.args import add_later, positive_int
from edgeopt.cli.console import RichReporter, stderr_console, stdout_console
from edgeopt.errors import ConfigError, ConversionError, EdgeoptError
from edgeopt.results.reader import quality_worst

if TYPE_CHECKING:
    from edgeopt.build.search import SearchResult


class BuildReporter(RichReporter):
    """The progress display starts with the first conversion step and only on a terminal, so a failed build
    prints its one error line and nothing else (a build refused for its inputs fails before any step)."""

    def __enter__(self) -> BuildReporter:
        return self

    def start(self, total_steps: int) -> None:
        if self.console.is_terminal:
            self.progress.start()
        super().start(total_steps)


def print_build(results: list[Any], console: Any, verbose: bool = False) -> None:
    from rich.markup import escape
    from rich.table import Table

    roots = sorted({str(r.directory.parent) for r in results})
    table = Table(title="edgeopt build", title_justify="left",
                  caption=f"artifacts in {', '.join(roots)}/<profile>/ (manifest.json, reference.npz)",
                  caption_justify="left")
    for col in ("profile", "format", "bytes", "quality", "worst output", "accuracy", "top-1 agree", "status"):
        table.add_column(col, justify="right" if col in ("bytes", "accuracy", "top-1 agree") else "left",
                         no_wrap=col != "worst output")
    style = {"ok": "green", "degraded": "yellow", "broken": "bold red"}
    for r in results:
        for a in r.manifest["artifacts"]:
            m = a.get("metrics") or {}
            q = a.get("quality") or {}
            verdict = q.get("verdict", "-")
            acc = f"{m['accuracy']:.4f}" if "accuracy" in m else "-"
            agree = f"{m['top1_agreement']:.4f}" if "top1_agreement" in m else "-"
            table.add_row(r.profile, a["format"], f"{a['bytes']:,}",
                          f"[{style.get(verdict, '')}]{verdict}[/]" if verdict in style else verdict,
                          escape(worst_line(q)), acc, agree, "cached" if r.cached else f"built {r.seconds:.1f} s")
        for sk in r.manifest.get("skipped", []):
            why = f"not built: {sk['failed']} failed (below)" if sk.get("failed") else f"skipped: {sk['reason']}"
            table.add_row(r.profile, sk["format"], "-", "-", "-", "-", "-", escape(why))
    console.print(table)
    if verbose:
        for r in results:
            for a in r.manifest["artifacts"]:
                worst = (a.get("conversion") or {}).get("worst_tensors") or []
                if worst:
                    console.print(f"where int8 loses it in {r.profile}/{a['file']} (worst first):", markup=False)
                    for t in worst:
                        console.print("  " + ", ".join(f"{k}={_short(v)}" for k, v in t.items()), markup=False)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def worst_line(quality: dict[str, Any]) -> str:
    """``class_scores: sqnr_db 3.1 (limit 20)`` - the worst output and figure of a verdict, or ``-``."""
    return quality_worst(quality) or "-"


def broken_artifacts(results: list[Any]) -> list[str]:
    """One line per artifact whose verdict is ``broken``: its path and the worst figure."""
    out = []
    for r in results:
        for a in r.manifest["artifacts"]:
            q = a.get("quality") or {}
            if q.get("verdict") == "broken":
                out.append(f"{r.directory / a['file']} is broken ({worst_line(q)})")
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from edgeopt.build import build

    if args.ray_shared_dir and not args.ray:
        raise ConfigError("--ray-shared-dir needs --ray", "add --ray local or --ray auto, or drop --ray-shared-dir")
    if args.search and args.matrix:
        raise ConfigError("--search cannot be combined with --matrix (a search is about one model on one target)",
                          "build the matrix first (the search then finds its cells cached), or use --search "
                          "--ray local|auto for one model")
    if args.matrix or (args.ray and not args.search):
        return cmd_matrix(args)
    if args.search:
        if args.drop_non_finite:
            raise ConfigError("--drop-non-finite cannot be combined with --search",
                              "clean the data for the search, or build with --drop-non-finite without --search")
        with RichReporter(verbose=args.verbose, quiet=args.json) as rep:
            return run_from_args(args, rep)
    t0 = time.perf_counter()
    try:
        req = request_from_args(args)
        with BuildReporter(verbose=args.verbose, quiet=args.json) as rep:
            results = build(req, rep)
    except EdgeoptError as exc:  # --json: a document on stdout either way (the one line still goes to stderr)
        if args.json:
            print(json.dumps({"results": [], "error": {"message": exc.message, "hint": exc.hint,
                                                        "kind": type(exc).__name__, "exit_code": exc.exit_code}},
                             indent=2))
        raise
    if args.json:
        print(json.dumps({"results": [r.summary() for r in results], "seconds": round(time.perf_counter() - t0, 3)},
                         indent=2))
    else:
        print_build(results, stdout_console(), verbose=args.verbose)
    raise_if_broken(results, args.allow_degraded)
    raise_if_not_converted(results)
    return 0


def raise_if_not_converted(results: list[Any]) -> None:
    """ConversionError (exit 2) when a format the target asks for could not be made (onnx2tf failed: the
    other format's artifacts are built and kept)."""
    failed = [(r, s) for r in results for s in r.manifest.get("skipped", []) if s.get("failed")]
    if failed:
        r, s = failed[0]
        raise ConversionError(f"{s['format']} not built for {r.profile}: {s['reason']}",
                              f"the {', '.join(a['format'] for a in r.manifest['artifacts']) or 'other'} "
                              f"artifacts are in {r.directory}")


def raise_if_broken(results: list[Any], allow_degraded: bool) -> None:
    """QualityError (exit 1) naming the first artifact whose verdict is broken, unless ``--allow-degraded``."""
    from edgeopt.errors import QualityError

    broken = broken_artifacts(results)
    if broken and not allow_degraded:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise QualityError(f"{broken[0]}{more}; kept for inspection, marked broken in its manifest",
                           "use a profile that keeps the failing layers in float (-p int8-auto), or pass "
                           "--allow-degraded to accept it")


def request_from_args(args: argparse.Namespace) -> Any:
    """The plain build's request: one target (default local), its default profiles unless ``-p``."""
    from edgeopt.build import BuildRequest
    from edgeopt.config import load_profile, load_target

    target = load_target(args.target or "local")
    profiles = [load_profile(n) for n in profile_names(args.profile) or target.default_profiles]
    named = split_profiles(args.profile or [])
    if "all" in named and args.model and Path(args.model).suffix.lower() not in (".keras", ".h5", ".hdf5"):
        skipped = [p.name for p in profiles if p.needs_training and p.name not in named]  # named: an error
        profiles = [p for p in profiles if p.name not in skipped]
        if skipped:
            print(f"edgeopt: -p all: skipping {', '.join(skipped)} (they fine-tune, prune or distil the model, "
                  f"which needs a Keras model; {Path(args.model).name} is not one)", file=sys.stderr)
    return BuildRequest(target=target, profiles=profiles, model=args.model, data=args.data, eval=args.eval,
                        train=args.train, out=Path(args.out or "artifacts"), force=args.force,
                        drop_non_finite=args.drop_non_finite)


def matrix_lines(console: Any, total: int) -> Any:
    """One line per cell event on stderr: cached (nothing sent), started, finished/FAILED with seconds."""
    from edgeopt.build.matrix import Cell, MatrixProgress

    class Lines(MatrixProgress):
        done = 0

        def _line(self, cell: Cell, text: str, style: str = "") -> None:
            self.done += text != "started" and not text.startswith("started")
            console.print(f"[{self.done}/{total}] {cell.label}: {text}", markup=False, style=style or None,
                          soft_wrap=True)

        def note(self, message: str) -> None:
            console.print(message, markup=False, soft_wrap=True)

        def cached(self, cell: Cell) -> None:
            self._line(cell, "up to date (cached: nothing sent, nothing built)")

        def started(self, cell: Cell, where: str) -> None:
            self._line(cell, f"started ({where})")

        def finished(self, cell: Cell, seconds: float, where: str) -> None:
            self._line(cell, f"finished in {seconds:.1f} s ({where})", "green")

        def failed(self, cell: Cell, error: str, seconds: float) -> None:
            self._line(cell, f"FAILED after {seconds:.1f} s: {error}", "red")

    return Lines()


def cmd_matrix(args: argparse.Namespace) -> int:
    """``--matrix FILE`` (models x targets x profiles) and/or ``--ray auto|local``: one cell per model x target x
    profile, unchanged cells answered from the cache before anything is sent; a failed cell fails alone (exit 1
    after the others finished)."""
    from edgeopt.build.matrix import expand, load_matrix, run_matrix, single_model_cells

    if args.matrix:
        given = [f for f in ("model", "data", "eval", "train") if getattr(args, f)]
        if given:
            raise ConfigError(f"--matrix names the models and their data; drop {', '.join(given)}",
                              "put them in the matrix file (models: [{name, path, data, eval}])")
        matrix = load_matrix(args.matrix)
        out = Path(args.out or matrix.path(matrix.out) or "artifacts")
        cells = expand(matrix, out, targets=[args.target] if args.target else None,
                       profiles=profile_names(args.profile), force=args.force, drop_non_finite=args.drop_non_finite)
    else:
        cells = single_model_cells(request_from_args(args))
    runner = None
    if args.ray:
        from edgeopt.build.ray_cells import ray_runner

        runner = ray_runner(args.ray, args.ray_shared_dir)
    t0 = time.perf_counter()
    outcomes = run_matrix(cells, matrix_lines(stderr_console(), len(cells)), runner)
    results = [o.result for o in outcomes if o.result is not None]
    failed = [o for o in outcomes if o.error is not None]
    if args.json:
        print(json.dumps({"results": [{"model": o.cell.model, **o.result.summary(), "cell_seconds": round(o.seconds, 3)}
                                      for o in outcomes if o.result],
                          "failed": [{"cell": o.cell.label, "error": o.error} for o in failed],
                          "sent": sum(o.sent for o in outcomes), "seconds": round(time.perf_counter() - t0, 3)},
                         indent=2))
    else:
        for root in dict.fromkeys(r.directory.parent for r in results):
            print_build([r for r in results if r.directory.parent == root], stdout_console(), verbose=args.verbose)
    console = stderr_console()
    for o in failed:
        console.print(f"edgeopt: error: cell {o.cell.label} failed: {o.error}", markup=False, style="red",
                      soft_wrap=True)
    raise_if_broken(results, args.allow_degraded)
    if failed:
        return 1
    raise_if_not_converted(results)
    return 0


def split_profiles(values: list[str]) -> list[str]:
    """``-p a,b -p c`` as written: the names, empty ones dropped (``all`` not expanded)."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def profile_names(values: list[str] | None) -> list[str] | None:
    """``-p a,b -p c`` as a list (``all`` = every profile defined), None when ``--profile`` was not given.

    An empty list (``-p ,``, ``-p ""``) is an error: silently building the defaults instead would lie."""
    if values is None:
        return None
    names = split_profiles(values)
    if not names:
        raise ConfigError(f"--profile: empty profile list ({' '.join(repr(v) for v in values)[:80]})",
                          "name at least one profile (see `edgeopt profiles`), or leave --profile out for the "
                          "target's default profiles")
    if "all" in names:
        from edgeopt.config import available

        names = [n for n in names if n != "all"] + sorted(available("profiles"))
    return list(dict.fromkeys(names))


def finite_float(text: str) -> float:
    """An argparse type: a finite number (``nan``/``inf`` refused by argparse with the flag named)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def print_search(result: SearchResult, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    table = Table(title=f"edgeopt search — target {result.target}, objective {result.objective}, "
                        f"max accuracy drop {result.max_accuracy_drop:g} pp", title_justify="left")
    cols = ["candidate", result.metric, "drop pp", "bytes", "gzip bytes", "sparsity", "p50 ms"]
    if result.energy_measured:
        cols.append("mJ/inference")
    cols += ["front", ""]
    for c in cols:
        table.add_column(c, justify="left" if c in ("candidate", "front", "") else "right")
    best = (result.recommended or {}).get("candidate")
    for r in sorted(result.rows, key=lambda r: (not r["pareto"], r["candidate"])):
        cells = [r["candidate"], _f(r["accuracy"], "{:.4f}"), _f(r["accuracy_drop_pp"], "{:+.2f}"),
                 f"{r['bytes']:,}", _f(r["bytes_gzip"], "{:,}"), _f(r["weight_sparsity"], "{:.1%}"),
                 _f(r["latency_p50_ms"], "{:.3f}")]
        if result.energy_measured:
            cells.append(_f(r["energy_per_inference_j"] and r["energy_per_inference_j"] * 1e3, "{:.4f}"))
        cells += ["*" if r["pareto"] else "", "recommended" if r["candidate"] == best else
                  ("over budget" if not r.get("within_budget") else "")]
        table.add_row(*cells)
    console.print(table)
    if result.recommended:
        console.print(f"recommended: {result.recommended['candidate']} ({result.recommended['why']})")
    for n in result.notes:
        console.print(f"note: {n}")


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def run_from_args(args: argparse.Namespace, reporter: Any = None) -> int:
    """``edgeopt build --search``: cmd_build calls this when ``args.search``."""
    from edgeopt.build.search import run_search
    from edgeopt.report.search import plot_pareto, write_search_html

    profiles = profile_names(getattr(args, "profile", None))
    target: Any = args.target or "local"
    runner = progress = None
    if getattr(args, "ray", None):  # the candidates as Ray tasks, one progress line per cell; the bench stays here
        from edgeopt.build.ray_cells import ray_runner
        from edgeopt.build.search import candidate_profiles
        from edgeopt.config import load_target

        target = load_target(target)
        profiles = profiles or candidate_profiles(target)
        runner = ray_runner(args.ray, args.ray_shared_dir)
        progress = matrix_lines(stderr_console(), len(profiles))
    result = run_search(target, model=args.model, data=args.data, eval=args.eval,
                        train=getattr(args, "train", None), out=Path(args.out or "artifacts"),
                        results=Path(args.results),
                        profiles=profiles, max_accuracy_drop=args.max_accuracy_drop, objective=args.objective,
                        runs=args.search_runs, force=args.force, reporter=reporter, runner=runner,
                        progress=progress)
    if args.plot:
        plot_pareto(result, Path(args.plot))
    if getattr(args, "html", None):
        write_search_html(result, Path(args.html))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        from rich.console import Console

        print_search(result, Console(highlight=False, width=200))
        if args.plot:
            print(f"plot: {args.plot}")
        if getattr(args, "html", None):
            print(f"report: {args.html}")
    console = stderr_console()
    for f in result.build.get("failed") or []:
        console.print(f"edgeopt: error: candidate {f['profile']} failed to build: {f['error']}", markup=False,
                      style="red", soft_wrap=True)
    return 0 if result.recommended and not result.build.get("failed") else 1


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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``build``, ``targets`` and ``profiles``."""
    b = sub.add_parser("build", help="convert a model into TFLite/ONNX artifacts for a target and profiles")
    b.add_argument("model", nargs="?", help=".keras/.h5/.onnx file or SavedModel dir (default: bundled MNIST example)")
    b.add_argument("--target", "-t", help="target name or YAML file (default: local; with --matrix: the file's)")
    b.add_argument("--profile", "-p", action="append",
                   help="profile name(s), repeatable or comma-separated; 'all' (default: the target's defaults)")
    b.add_argument("--data", help="calibration data: .npz with x, folder of .npy, or module:function")
    b.add_argument("--eval", help="eval data (x, and y for accuracy): same forms as --data")
    b.add_argument("--train", help="training data for the pruned/distilled/qat profiles (.npz with x, y; same "
                   "forms as --data; the bundled example brings its own)")
    b.add_argument("--out", help="output root (default: ./artifacts, or the matrix file's out:)")
    b.add_argument("--force", action="store_true", help="rebuild even when the cache says up to date")
    b.add_argument("--drop-non-finite", action="store_true",
                   help="drop the samples of --data/--eval/--train holding NaN/Inf (counted in the manifest) "
                        "instead of refusing the data")
    b.add_argument("--allow-degraded", action="store_true",
                   help="exit 0 even when an artifact's quality verdict is broken (it stays marked in the manifest)")
    b.add_argument("--json", action="store_true", help="machine-readable results on stdout")
    b.add_argument("-v", "--verbose", action="store_true",
                   help="show each pass and its time, and where int8 loses accuracy (worst tensors)")
    m = b.add_argument_group("matrix and Ray (docs/scale.md)")
    m.add_argument("--matrix", metavar="FILE", help="build every model x target x profile of a matrix.yaml (or of "
                   "a lab.yaml) into <out>/<model>/<target>/<profile>/; unchanged cells come from the cache")
    m.add_argument("--ray", choices=["auto", "local"], help="run the cells (with --search: the candidates' builds) "
                   "as Ray tasks: local starts Ray on this machine (all CPUs), auto joins the running cluster "
                   "(pip install 'edgeopt[ray]')")
    m.add_argument("--ray-shared-dir", metavar="DIR", help="with --ray: workers leave each cell's directory here "
                   "(a path every node mounts) instead of returning its bytes")
    add_later(b, _search_arguments)  # the objectives come from edgeopt.build.search (bench, numpy, pydantic)
    b.set_defaults(func=cmd_build)

    t = sub.add_parser("targets", help="list the targets (devices) defined")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_targets)
    p = sub.add_parser("profiles", help="list the profiles (optimisation recipes) defined")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profiles)


def _search_arguments(build_parser: argparse.ArgumentParser) -> None:
    from edgeopt.build.search import OBJECTIVES

    add_search_arguments(build_parser, OBJECTIVES)


def add_search_arguments(build_parser: argparse.ArgumentParser, objectives: tuple[str, ...]) -> None:
    """The ``edgeopt build`` options of the search (``--train`` is a plain build option)."""
    g = build_parser.add_argument_group("search (pick the best profile for the target from measured numbers)")
    g.add_argument("--search", action="store_true",
                   help="build the candidate profiles (the target's defaults + pruned/distilled/qat int8, or "
                        "--profile), benchmark each on the target, print the Pareto front and the recommendation")
    g.add_argument("--max-accuracy-drop", type=finite_float, default=1.0, metavar="PP",
                   help="accuracy budget in percentage points below the float model (default 1.0)")
    g.add_argument("--objective", choices=list(objectives), default="latency",
                   help="what the recommendation optimises among the front candidates within budget: latency (p50), "
                        "size (bytes), download (gzip bytes), energy (per inference), accuracy (default latency)")
    g.add_argument("--search-runs", type=positive_int, default=50, metavar="N",
                   help="timed runs per candidate (default 50)")
    g.add_argument("--results", default="results", metavar="DIR", help="results directory for the search's "
                   "benchmark (default ./results)")
    g.add_argument("--plot", metavar="PNG", help="write the accuracy/latency/size plot here")
    g.add_argument("--html", metavar="FILE", help="write the table and the plot as one self-contained HTML file")
