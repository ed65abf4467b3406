"""What ``edgeopt bench`` runs: its options, one job (a model file on a device) and one device's plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edgeopt.config import Target
from edgeopt.errors import ConfigError

MODEL_SUFFIXES = {".tflite": "tflite", ".onnx": "onnx"}
DEFAULT_TIMEOUT = 600.0


@dataclass
class BenchOptions:
    """Everything ``edgeopt bench`` can be told. ``targets``: names or YAML paths; ``models``: ready model
    files (instead of built artifacts)."""

    targets: list[str] = field(default_factory=lambda: ["local"])
    models: list[Path] = field(default_factory=list)
    profiles: list[str] | None = None  # None: every profile built for the target
    formats: list[str] | None = None
    artifacts: Path = Path("artifacts")
    results: Path = Path("results")
    store: Path | None = None  # default: <results>/edgeopt.sqlite
    runs: int = 100
    warmup: int = 10
    min_seconds: float = 0.0
    max_runs: int | None = None  # default: the agent's (100000)
    threads: int | None = None  # default: the target's threads
    affinity: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    # connection overrides (one device only for host/user/port; key/python/… apply to every target)
    host: str | None = None
    user: str | None = None
    port: int | None = None
    key: str | None = None
    python: str | None = None
    accept_new_host_key: bool = False
    known_hosts: str | None = None
    ssh_config: str | None = None
    connect_timeout: float | None = None
    agent_cache: Path | None = None  # host dir for the agent zipapp; default ~/.cache/edgeopt/agent
    command: str | None = None  # the command line, recorded with the run
    agent_args: list[str] = field(default_factory=list)  # extra agent options (edgeopt ci: --max-other-load …)

    def check(self) -> None:
        if self.runs < 1:
            raise ConfigError(f"--runs must be at least 1 (got {self.runs})")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be 0 or more (got {self.warmup})")
        if self.min_seconds < 0:
            raise ConfigError(f"--min-seconds must be 0 or more (got {self.min_seconds})")
        if self.max_runs is not None and self.max_runs < self.runs:
            raise ConfigError(f"--max-runs ({self.max_runs}) must be at least --runs ({self.runs})")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1 (got {self.threads})")
        if self.timeout <= 0:
            raise ConfigError(f"--timeout must be positive (got {self.timeout:g})")
        if not self.targets:
            raise ConfigError("no --target given")
        if (self.host is not None or self.port is not None) and len(set(self.targets)) > 1:
            raise ConfigError("--host/--port name one device but several --target were given",
                              "run one edgeopt bench per device, or put each address in its target YAML")
        for fmt in self.formats or []:
            if fmt not in MODEL_SUFFIXES.values():
                raise ConfigError(f"--format {fmt!r}: allowed tflite, onnx")


@dataclass(frozen=True)
class Job:
    """One model file to run on one device."""

    target: str
    profile: str | None  # None for a ready model file given on the command line
    format: str
    model: Path
    sha256: str
    bytes: int
    reference: Path | None = None
    reference_sha256: str | None = None
    manifest_path: Path | None = None
    manifest_target: str | None = None
    runtime_hint: str | None = None  # the runtime the host used at build time (manifest)
    metrics: dict[str, Any] | None = None
    build_key: str | None = None

    @property
    def label(self) -> str:
        return f"{self.profile}/{self.format}" if self.profile else self.model.name


@dataclass
class DevicePlan:
    target: Target
    jobs: list[Job]
    transport_kind: str  # "local" | "ssh"
    python: str
    spec: Any = None  # ConnectionSpec for ssh


def split_values(values: Iterable[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in str(item).split(",") if v.strip()]
