"""Argument types shared by the sub-commands, and the sub-parsers whose arguments are added when chosen."""

from __future__ import annotations

import argparse
import weakref
from typing import Any, Callable


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


_LATER: weakref.WeakKeyDictionary[argparse.ArgumentParser, list[Callable[[argparse.ArgumentParser], None]]] = \
    weakref.WeakKeyDictionary()


def add_later(parser: argparse.ArgumentParser, add: Callable[[argparse.ArgumentParser], None]) -> None:
    """Run ``add(parser)`` when this sub-command is chosen (parsed, or its ``--help`` shown), not when the
    parser is built: arguments that need a library constant (a default, a list of choices) then import the
    library only for the command that runs, and ``edgeopt --help`` stays fast. Needs the sub-parsers action of
    :func:`edgeopt.cli.main.parser` (:class:`LazySubParsers`)."""
    _LATER.setdefault(parser, []).append(add)


def complete(parser: argparse.ArgumentParser) -> None:
    """Add the arguments :func:`add_later` deferred for ``parser`` (once)."""
    for add in _LATER.pop(parser, []):
        add(parser)


class LazySubParsers(argparse._SubParsersAction):  # noqa: SLF001 (argparse has no public one)
    """Sub-parsers that complete the chosen sub-command's arguments (:func:`add_later`) before parsing them."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        chosen = self._name_parser_map.get(values[0]) if values else None
        if chosen is not None:
            complete(chosen)
        super().__call__(parser, namespace, values, option_string)
