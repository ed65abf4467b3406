"""``edgeopt store migrate``: copy a results history from one store to another (e.g. SQLite -> PostgreSQL)."""

from __future__ import annotations

import argparse


def cmd_store_migrate(args: argparse.Namespace) -> int:
    from edgeopt.results.migrate import copy_history

    print(copy_history(args.src, args.dst, results_dir=args.results).one_line())
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``store`` (``store migrate``)."""
    s = sub.add_parser("store", help="manage results stores (SQLite file or postgresql:// URL)")
    actions = s.add_subparsers(dest="store_command", required=True)
    m = actions.add_parser("migrate", help="copy every run (results, tags) from one store to another; runs already "
                           "there are skipped, so it can be run again or finished after an interruption")
    m.add_argument("--from", dest="src", required=True, metavar="FILE|URL",
                   help="source store: a SQLite file (e.g. results/edgeopt.sqlite) or postgresql://user@host/db")
    m.add_argument("--to", dest="dst", required=True, metavar="FILE|URL", help="destination store")
    m.add_argument("--results", default=None, metavar="DIR",
                   help="results directory the stores open with (default: the SQLite source's directory)")
    m.set_defaults(func=cmd_store_migrate)
