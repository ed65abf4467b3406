"""What a CI run tells whoever watches it: bench's events plus notes (builds, locks, retries, confirmations)."""

from __future__ import annotations

from edgeopt.bench.progress import SilentProgress


class CIProgress(SilentProgress):
    """Silent by default; the command line prints (``edgeopt.cli.console.CILineProgress``)."""

    def note(self, text: str) -> None:
        pass
