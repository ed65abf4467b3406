"""The ``edgeopt`` command: build the parser from the sub-command modules, run one, turn typed errors into one
line on stderr and an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from typing import Any, NoReturn, Sequence

from edgeopt import __version__
from edgeopt.cli import bench, build, ci, emulate, report, store
from edgeopt.cli.args import LazySubParsers
from edgeopt.errors import EdgeoptError
from edgeopt.results.common import mask_url

EXIT_INTERNAL = 70  # EX_SOFTWARE: an unexpected exception, i.e. a bug in edgeopt


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line and exit 2, like every other user error (sub-parsers inherit this class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"edgeopt: error: {message} — see `{self.prog} --help`\n")


def parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="edgeopt", description="Take a trained model to edge devices and prove "
                                 "how it runs there.")
    ap.add_argument("--version", action="version", version=f"edgeopt {__version__}")
    # the sub-parsers are OneLineParsers too; the register() functions only need the ArgumentParser API. They
    # import no library: what needs one (a default, choices) is added when that sub-command is chosen (add_later)
    ap.register("action", "parsers", LazySubParsers)
    sub: Any = ap.add_subparsers(dest="command", required=True)
    build.register(sub)  # build, targets, profiles
    bench.register(sub)
    report.register(sub)
    ci.register(sub)
    emulate.register(sub)
    store.register(sub)
    return ap


def terminate_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM does what Ctrl-C does at that moment (whatever handles SIGINT: a bench cancels its devices and
    stores the run as interrupted, elsewhere KeyboardInterrupt): staging directories are removed, one line."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(words)
    # recorded with bench and ci runs: a --store URL's password never is
    args.command_line = mask_url(shlex.join(["edgeopt", *words]))
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(message)s")
    args.own_process = argv is None  # the command itself, not a caller's process (then a bench/ci may end it)
    if argv is None:  # SIGTERM (a CI job cancelled) as Ctrl-C
        signal.signal(signal.SIGTERM, terminate_as_interrupt)
    try:
        return int(args.func(args) or 0)
    except EdgeoptError as exc:
        print(f"edgeopt: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgeopt: interrupted; nothing half-written was left in place", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line, the traceback only when asked for
        if os.environ.get("EDGEOPT_DEBUG"):
            raise
        text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        print(f"edgeopt: internal error: {text} — rerun with EDGEOPT_DEBUG=1 and report it", file=sys.stderr)
        return EXIT_INTERNAL
