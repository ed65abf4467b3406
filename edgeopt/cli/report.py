"""``edgeopt report``: stored results as a table or JSON; ``--compare``/``--html``/``--junit``/``--summary``
judge one stored run against another like ``edgeopt ci`` does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgeopt.cli.args import positive_int
from edgeopt.cli.console import stdout_console
from edgeopt.errors import ArtifactMissing, ConfigError


def cmd_report(args: argparse.Namespace) -> int:
    from edgeopt.report.table import render_runs, render_table, rows_json
    from edgeopt.results.store import open_store

    if args.compare or args.html or args.junit or args.summary:
        return cmd_report_compare(args)

    with open_store(args.results, args.store, create=False) as store:
        if args.list:
            runs = store.runs(limit=args.limit)
            if args.json:
                print(json.dumps(runs, indent=2))
            else:
                render_runs(runs, stdout_console())
            return 0
        run_id = args.run or store.latest_run_id()
        if run_id is None:
            raise ArtifactMissing(f"no runs in {store.where}", "run `edgeopt bench` first")
        run = store.run(run_id)
        status = store.status(run)  # "abandoned": unfinished, and its writer is gone
        docs = store.results(run["run_id"])
    if args.json:
        out: dict[str, Any] = {"run": run, "status": status, "rows": rows_json(docs)}
        if args.full:
            out["results"] = docs
        print(json.dumps(out, indent=2))
    else:
        title = f"edgeopt report — run {run['run_id']} ({run['created_at']}, {status})"
        render_table(docs, stdout_console(), title=title)
    return 0


def cmd_report_compare(args: argparse.Namespace) -> int:
    from edgeopt.ci.compare import compare_runs
    from edgeopt.config.lab import load_lab
    from edgeopt.report.markdown import markdown_summary
    from edgeopt.report.write import check_report_paths, write_reports
    from edgeopt.results.store import open_store

    check_report_paths(args.junit, args.summary, args.html)
    gates = load_lab(args.lab).gates if args.lab else None
    with open_store(args.results, args.store, create=False) as store:
        if args.compare:
            base_spec, current = args.compare
        else:
            current = args.run or store.latest_run_id()
            base_spec = None
            if current is None:
                raise ConfigError(f"no runs in {store.where}", "run `edgeopt ci` or `edgeopt bench` first")
        result = compare_runs(store, current, base_spec, gates)
    write_reports(result, junit=args.junit, summary=args.summary, html=args.html)
    print(markdown_summary(result))
    return result.exit_code if args.exit_code else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``report``."""
    r = sub.add_parser("report", help="show stored benchmark results (latest run by default)")
    r.add_argument("--run", help="run id (or a unique prefix); default: the latest run")
    r.add_argument("--list", action="store_true", help="list the recent runs instead")
    r.add_argument("--limit", type=positive_int, default=20, help="runs listed by --list (default 20)")
    r.add_argument("--results", default="results", metavar="DIR", help="results directory (default ./results)")
    r.add_argument("--store", metavar="FILE|URL",
                   help="SQLite file or postgresql://user@host:port/db (default: $EDGEOPT_STORE, else "
                   "<results>/edgeopt.sqlite)")
    r.add_argument("--json", action="store_true", help="machine-readable rows on stdout")
    r.add_argument("--full", action="store_true", help="with --json: include the full result documents")
    # edgeopt ci's reports over stored runs (edgeopt/ci/compare.py): the verdict, HTML with plots, JUnit, Markdown
    r.add_argument("--compare", nargs=2, metavar=("BASELINE", "CURRENT"),
                   help="judge run CURRENT against BASELINE (run id, tag, latest-passing or a JSON export)")
    r.add_argument("--html", type=Path, metavar="FILE", help="self-contained HTML report with plots")
    r.add_argument("--junit", type=Path, metavar="FILE", help="JUnit XML of the comparison")
    r.add_argument("--summary", type=Path, metavar="FILE", help="Markdown summary of the comparison")
    r.add_argument("--lab", metavar="LAB.YAML",
                   help="take the gates' thresholds from this lab (default: those the run was judged with)")
    r.add_argument("--exit-code", action="store_true",
                   help="with --compare: exit as edgeopt ci would (1 regression, 2 infrastructure error); "
                        "without it the report exits 0 whatever it says")
    r.set_defaults(func=cmd_report)
