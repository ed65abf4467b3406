"""The command layer: one module per command (``build``, ``bench``, ``report``, ``ci``) plus the console and
progress they show. The only place that parses arguments or prints; no logic lives here."""

from edgeopt.cli.main import main, parser

__all__ = ["main", "parser"]
