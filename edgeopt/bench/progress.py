"""What a bench run tells whoever watches it (the CLI renders it; the library is silent by default)."""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    def device(self, target: str, status: str) -> None: ...
    def upload(self, target: str, name: str, done: int, total: int) -> None: ...
    def running(self, target: str, label: str, index: int, count: int) -> None: ...
    def result(self, target: str, doc: dict[str, Any]) -> None: ...


class SilentProgress:
    def device(self, target: str, status: str) -> None:
        pass

    def upload(self, target: str, name: str, done: int, total: int) -> None:
        pass

    def running(self, target: str, label: str, index: int, count: int) -> None:
        pass

    def result(self, target: str, doc: dict[str, Any]) -> None:
        pass
