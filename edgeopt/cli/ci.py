"""``edgeopt ci``: run a lab's model x profile x device matrix and gate on regressions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeopt.cli.args import positive_int


def cmd_ci(args: argparse.Namespace) -> int:
    from edgeopt.bench.run import enable_hard_stop
    from edgeopt.ci import ERROR, INVALID, CIOptions, run_ci
    from edgeopt.ci.gate import REGRESSION
    from edgeopt.cli.lines import CILineProgress
    from edgeopt.errors import EdgeoptError
    from edgeopt.report.markdown import markdown_summary
    from edgeopt.report.write import check_report_paths, write_aborted, write_reports

    if getattr(args, "own_process", False):
        enable_hard_stop()
    opts = CIOptions(
        lab=Path(args.lab), baseline=args.baseline, tag=[t for item in args.tag or [] for t in item.split(",") if t],
        results=args.results, store=args.store, artifacts=args.artifacts, runs=args.runs, warmup=args.warmup,
        retries=args.retries, threads=args.threads, infra_errors_fail=args.infra_errors_fail, job=args.job,
        ssh_config=args.ssh_config, build=not args.no_build, command=args.command_line)
    check_report_paths(args.junit, args.summary, args.html, args.json)
    try:
        result = run_ci(opts, CILineProgress(verbose=args.verbose))
    except EdgeoptError as exc:  # no verdict: the JUnit/summary files still say why (CI dashboards read them)
        write_aborted(Path(args.lab).stem, exc.one_line(), exc.exit_code, junit=args.junit, summary=args.summary,
                      stale=(args.html, args.json))
        raise
    write_reports(result, junit=args.junit, summary=args.summary, html=args.html, json_out=args.json)
    if not args.quiet:
        print(markdown_summary(result))
    for cell in result.cells:
        if cell.status in (REGRESSION, ERROR, INVALID):
            print(f"edgeopt ci: {cell.status.upper()} {cell.name}: {cell.message}", file=sys.stderr)
    print(f"edgeopt ci: {result.headline()} (run {result.run_id}, {result.seconds:.1f} s)", file=sys.stderr)
    if result.tags:
        print(f"edgeopt ci: tagged run {result.run_id} as {', '.join(result.tags)}", file=sys.stderr)
    elif opts.tag:  # only a run that passed moves a tag (an infrastructure error too, even with --no-infra-...)
        print(f"edgeopt ci: run {result.run_id} not tagged {', '.join(opts.tag)}: only a passing run is "
              f"(verdict: {result.verdict})", file=sys.stderr)
    return result.exit_code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ci`` sub-command to the edgeopt CLI."""
    c = sub.add_parser("ci", help="run a model x profile x device matrix on a lab and gate on regressions",
                       description="Build, measure on every lab device (in parallel, each device locked), compare "
                                   "with a baseline (Mann-Whitney U + bootstrap CI + minimum effect), write "
                                   "reports. Exit 0 pass, 1 regression, 2 infrastructure error, 3 results store "
                                   "unreachable (the JUnit and summary files then say why).")
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
    over.add_argument("--store", metavar="FILE|URL", help="SQLite file or postgresql://user@host:port/db (default: "
                      "$EDGEOPT_STORE, else the lab's store:, else <results>/edgeopt.sqlite)")
    over.add_argument("--artifacts", type=Path, metavar="DIR")
    over.add_argument("--runs", type=positive_int)
    over.add_argument("--warmup", type=int)
    over.add_argument("--threads", type=positive_int)
    over.add_argument("--retries", type=int, help="re-measure results the agent marks invalid (default: lab)")
    over.add_argument("--infra-errors-fail", action=argparse.BooleanOptionalAction, default=None,
                      help="infrastructure errors fail the job with exit 2 (default: the lab's, yes)")
    over.add_argument("--job", help="job name recorded in the device lock (default $GITHUB_RUN_ID or the run id)")
    over.add_argument("--ssh-config", metavar="PATH")
    over.add_argument("--no-build", action="store_true", help="use what is already built; do not run the build")
    c.set_defaults(func=cmd_ci)
