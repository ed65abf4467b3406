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
    store: str | Path | None = None  # a SQLite file or a postgresql:// URL; default: <results>/edgeopt.sqlite
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
    inputs: Path | None = None  # real inputs for the ready model files (.npz, one array per input name)
    shapes: list[str] = field(default_factory=list)  # --shape NAME=1x3x224x224 for generated inputs
    int_range: str | None = None  # --int-range LO:HI for generated integer inputs

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
        if (self.inputs is not None or self.shapes) and not self.models:
            raise ConfigError("--inputs and --shape apply to ready model files (edgeopt bench MODEL …)",
                              "built artifacts run with their reference.npz; drop --inputs/--shape")
        if self.inputs is not None and self.shapes:
            raise ConfigError("--inputs and --shape exclude each other: the inputs file fixes the shapes",
                              "drop --shape, or give arrays of the shape you want")
        if self.inputs is not None and not Path(self.inputs).is_file():
            raise ConfigError(f"--inputs {self.inputs}: no such file", "give an .npz with one array per model input")
        for text in self.shapes:
            parse_shape(text)
        if self.int_range is not None:
            parse_int_range(self.int_range)
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
    quality: dict[str, Any] | None = None  # the build's verdict on the artifact (bench.plan.quality_summary)
    build_key: str | None = None
    inputs: Path | None = None  # a user's inputs file (ready model files only), pushed by hash like the reference
    inputs_sha256: str | None = None

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


def parse_shape(text: str) -> tuple[str | None, list[int]]:
    """``--shape NAME=1x3x224x224`` (or ``1x3x224x224`` for a single-input model; ``NAME=`` for a scalar)."""
    name, _, dims = text.rpartition("=") if "=" in text else (None, "", text)
    try:
        shape = [int(d) for d in dims.lower().split("x")] if dims.strip() else []
    except ValueError:
        shape = [0]
    if any(d < 1 for d in shape) or name == "":
        raise ConfigError(f"--shape {text!r}: expected NAME=1x3x224x224 (dimensions >= 1)",
                          "e.g. --shape input=1x3x224x224; NAME may be left out for a single-input model")
    return name, shape


def parse_int_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"--int-range {text!r}: expected LO:HI", "e.g. --int-range 0:9") from None
    if lo > hi:
        raise ConfigError(f"--int-range {text!r}: LO is above HI", "e.g. --int-range 0:9")
    return lo, hi
