"""The one error type the agent raises; ``__main__`` turns it into ``{"error": {...}}`` on stdout."""

from __future__ import annotations

from typing import Dict, Optional

EXIT_FAILURE = 1
EXIT_USAGE = 2


class AgentFailure(Exception):
    """A failure the agent reports as JSON. ``type`` is a stable machine-readable word."""

    def __init__(self, type: str, message: str, hint: Optional[str] = None,
                 exit_code: int = EXIT_FAILURE, **details: object) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        self.details = details

    def to_json(self) -> dict:
        doc: Dict[str, object] = {"type": self.type, "message": self.message, "hint": self.hint}
        doc.update(self.details)
        return {"error": doc}


def usage_error(message: str, hint: Optional[str] = None) -> AgentFailure:
    return AgentFailure("bad_usage", message, hint or "see `agent.pyz run --help`", exit_code=EXIT_USAGE)
