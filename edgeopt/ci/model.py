"""What ``edgeopt ci`` decides: its options, one cell's verdict and the run's (exit codes, headline, export)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.ci.gate import IMPROVED, PASS, REGRESSION, Check

EXIT_PASS = 0
EXIT_REGRESSION = 1
EXIT_INFRA = 2

# cell statuses (besides the gate's PASS / IMPROVED / REGRESSION)
ERROR = "error"  # infrastructure / agent failure: not measured
INVALID = "invalid"  # measured, but the agent says the conditions were bad (after retries)
NEW = "new"  # no baseline for this cell: measured and stored, nothing to compare


@dataclass
class CIOptions:
    lab: Path
    baseline: str | None = None  # run id | tag | latest-passing | latest | file.json; default: the lab's
    tag: list[str] = field(default_factory=list)  # tags for this run when it passes
    results: Path | None = None  # default: the lab's results
    store: str | Path | None = None  # a SQLite file or a postgresql:// URL
    artifacts: Path | None = None  # default: the lab's artifacts
    runs: int | None = None
    warmup: int | None = None
    retries: int | None = None
    threads: int | None = None
    infra_errors_fail: bool | None = None
    job: str | None = None  # a name for the lock owner (default: $GITHUB_RUN_ID/$CI_JOB_ID or the run id)
    ssh_config: str | None = None
    agent_cache: Path | None = None
    build: bool = True
    command: str | None = None


@dataclass
class Cell:
    device: str
    model: str
    profile: str | None
    format: str
    status: str
    message: str
    checks: list[Check] = field(default_factory=list)
    current: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    attempts: int = 1

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.device, self.model, self.profile or "-", self.format)

    @property
    def name(self) -> str:
        return "/".join(self.key)

    def check(self, gate: str) -> Check | None:
        return next((c for c in self.checks if c.gate == gate), None)

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "model": self.model, "profile": self.profile, "format": self.format,
                "status": self.status, "message": self.message, "attempts": self.attempts,
                "current": (self.current or {}).get("result_id"),
                "baseline": (self.baseline or {}).get("result_id"),
                "checks": [c.to_json() for c in self.checks]}


@dataclass
class CIResult:
    run_id: str
    lab: str
    cells: list[Cell]
    baseline: dict[str, Any]  # {"spec", "source", "run_id", "label"}
    infra_errors_fail: bool = True
    devices: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    store_path: str | None = None
    gates: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for c in self.cells if c.status == status)

    @property
    def verdict(self) -> str:
        if any(c.status == REGRESSION for c in self.cells):
            return REGRESSION
        if any(c.status in (ERROR, INVALID) for c in self.cells) or not self.cells:
            return ERROR
        return PASS

    @property
    def exit_code(self) -> int:
        verdict = self.verdict
        if verdict == REGRESSION:
            return EXIT_REGRESSION
        if verdict == ERROR:
            return EXIT_INFRA if self.infra_errors_fail else EXIT_PASS
        return EXIT_PASS

    def headline(self) -> str:
        n = len(self.cells)
        parts = [f"{self.count(PASS) + self.count(IMPROVED) + self.count(NEW)}/{n} passed"]
        for status, word in ((REGRESSION, "regressed"), (ERROR, "infrastructure errors"), (INVALID, "invalid")):
            if self.count(status):
                parts.append(f"{self.count(status)} {word}")
        label = {PASS: "PASS", REGRESSION: "REGRESSION", ERROR: "INFRASTRUCTURE ERROR"}[self.verdict]
        if self.verdict == ERROR and not self.infra_errors_fail:
            label += " (not failing the job)"
        return f"{label}: " + ", ".join(parts) + f" — baseline {self.baseline.get('label') or 'none'}"

    def summary(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "cells": len(self.cells),
                **{s: self.count(s) for s in (PASS, IMPROVED, NEW, REGRESSION, ERROR, INVALID)},
                "baseline": self.baseline, "seconds": round(self.seconds, 3), "headline": self.headline()}

    def to_json(self, with_docs: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"run_id": self.run_id, "lab": self.lab, "summary": self.summary(),
                               "gates": self.gates, "devices": self.devices, "tags": self.tags,
                               "cells": [c.to_json() for c in self.cells]}
        if with_docs:  # the export is a baseline file: the full result documents with the raw samples
            out["results"] = [c.current for c in self.cells if c.current is not None]
        return out
