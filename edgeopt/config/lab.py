"""A device lab for ``edgeopt ci``: ``lab.yaml``, typed and validated like targets and profiles
(the device lock is :mod:`edgeopt.remote.lock`).

``lab.yaml``::

    devices:                      # each: a target (name or YAML path) plus its connection overrides
      - {name: pi4-a, target: rpi4, host: 10.0.0.7, user: pi, key: ~/.ssh/lab_ed25519}
    models:                       # a model file, `example` (the bundled MNIST CNN), or prebuilt artifacts
      - {name: mnist, path: example}
    profiles: [fp32, int8]
    bench: {runs: 200, warmup: 20, threads: null, retries: 1}
    gates:
      latency: {min_effect: 0.05, alpha: 0.01}
      accuracy: {max_drop: 0.01}
      size: {max_increase: 0.05}

Every error names the file and the field (``lab.yaml: gates.latency.min_efect: unknown field — did you mean
'min_effect'?``).

"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgeopt.config.base import StrictModel, load_model_file
from edgeopt.config.profile import load_profile
from edgeopt.errors import ConfigError

# ------------------------------------------------------------------------------------------------------------
# lab.yaml
# ------------------------------------------------------------------------------------------------------------
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DAY, WEEK = 86_400.0, 7 * 86_400.0  # upper bounds of the time settings: a huge value is a typo, not a wish


class Device(StrictModel):
    """One device of the lab: a target (what kind of device) plus how to reach this one."""

    name: str = Field(pattern=_NAME)
    target: str  # target name (targets/*.yaml) or a YAML path (relative to lab.yaml)
    host: str | None = None  # user@host:port also accepted
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    key: str | None = None
    python: str | None = None
    workdir: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    ssh_config: str | None = None
    threads: int | None = Field(default=None, ge=1, le=256)


class LabModel(StrictModel):
    """A model of the matrix: ``path`` (a .keras/.h5/.onnx file, a SavedModel dir, or ``example``), or
    ``artifacts``: a directory already holding ``<target>/<profile>/manifest.json`` (built by an earlier step)."""

    name: str = Field(pattern=_NAME)
    path: str | None = "example"
    data: str | None = None  # calibration data for the build
    eval: str | None = None  # evaluation data (accuracy)
    artifacts: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> LabModel:
        if self.artifacts is not None and "path" in self.model_fields_set:
            raise ValueError(f"model {self.name}: give path (built by edgeopt ci) or artifacts (already built), "
                             "not both")
        return self


class BenchSettings(StrictModel):
    runs: int = Field(default=200, ge=1, le=10_000_000)
    warmup: int = Field(default=20, ge=0, le=1_000_000)
    min_seconds: float = Field(default=0.0, ge=0, le=DAY)
    threads: int | None = Field(default=None, ge=1, le=256)
    affinity: str | None = None
    timeout: float = Field(default=600.0, gt=0, le=WEEK)
    connect_timeout: float = Field(default=10.0, gt=0, le=DAY)
    retries: int = Field(default=1, ge=0, le=10)  # re-measure a result the agent marked invalid
    max_other_load: float | None = Field(default=None, ge=0)  # passed to the agent (--max-other-load)
    agent_args: list[str] = Field(default_factory=list)  # extra agent options, e.g. ["--governor", "performance"]


class LockSettings(StrictModel):
    enabled: bool = True
    stale_after_s: float = Field(default=1800.0, gt=0, le=WEEK)  # no heartbeat for this long: the lock is stale
    wait_s: float = Field(default=3600.0, ge=0, le=WEEK)  # give up waiting for a busy device after this long
    poll_s: float = Field(default=5.0, gt=0, le=DAY)


class LatencyGateSettings(StrictModel):
    min_effect: float = Field(default=0.05, ge=0, lt=10)
    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    method: Literal["both", "mannwhitney", "bootstrap"] = "both"
    bootstrap: int = Field(default=2000, ge=100, le=1_000_000)
    min_samples: int = Field(default=10, ge=3, le=10_000_000)
    confirm: int = Field(default=1, ge=0, le=5)  # re-measure a latency regression this often; all must regress


class AccuracyGate(StrictModel):
    max_drop: float | None = Field(default=0.01, ge=0, le=1)  # absolute (0.01 = one percentage point)
    min: float | None = Field(default=None, ge=0, le=1)
    source: Literal["build", "device"] = "build"  # the build manifest's eval accuracy or the device's parity


class IncreaseGate(StrictModel):
    max_increase: float | None = Field(default=0.05, ge=0)  # relative (0.05 = 5 %)
    max: float | None = Field(default=None, gt=0)  # absolute: bytes / KiB / joules per inference


class Gates(StrictModel):
    latency: LatencyGateSettings | None = LatencyGateSettings()
    accuracy: AccuracyGate | None = AccuracyGate()
    size: IncreaseGate | None = IncreaseGate(max_increase=0.05)
    peak_memory: IncreaseGate | None = IncreaseGate(max_increase=0.20)
    energy: IncreaseGate | None = None


class Lab(StrictModel):
    name: str
    description: str = ""
    devices: list[Device] = Field(min_length=1)
    models: list[LabModel] = Field(default_factory=lambda: [LabModel(name="example")], min_length=1)
    profiles: list[str] = Field(default_factory=lambda: ["fp32", "int8"], min_length=1)
    formats: list[Literal["tflite", "onnx"]] | None = Field(default=None, min_length=1)
    artifacts: str = "artifacts/ci"  # build output root: <artifacts>/<model>/<target>/<profile>/
    results: str = "results"
    store: str | None = None  # results store: a SQLite file (relative to the lab) or postgresql://user@host/db
    bench: BenchSettings = BenchSettings()
    lock: LockSettings = LockSettings()
    gates: Gates = Gates()
    baseline: str | None = None  # default --baseline
    infra_errors_fail: bool = True  # infrastructure errors make the job fail (exit 2)
    source_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _results_section(cls, data: Any) -> Any:
        """``results: {dir: DIR, store: FILE|URL}`` is the same as ``results: DIR`` and ``store: FILE|URL``."""
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            return data
        section = dict(data["results"])
        unknown = sorted(str(k) for k in section if k not in ("dir", "store"))
        if unknown:
            raise ValueError(f"results: unknown field {unknown[0]!r} (a mapping holds dir and store; or write "
                             "results: DIR and store: FILE|URL)")
        if "store" in section and data.get("store") is not None:
            raise ValueError("the results store is given twice (store: and results.store:): keep one")
        data = {**data, "results": section.get("dir", "results")}
        if "store" in section:
            data["store"] = section["store"]
        return data

    @field_validator("profiles", mode="before")
    @classmethod
    def _split_profiles(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _unique(self) -> Lab:
        for what, names in (("devices", [d.name for d in self.devices]), ("models", [m.name for m in self.models])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what}: names must be unique ({', '.join(dupes)} repeated)")
        shared: dict[str, str] = {}
        for m in self.models:
            if m.artifacts is None:
                continue
            where = os.path.normpath(os.path.expanduser(m.artifacts))
            if where in shared:
                raise ValueError(f"models {shared[where]} and {m.name} name the same artifacts directory "
                                 f"({m.artifacts}): their cells would be one")
            shared[where] = m.name
        return self

    @property
    def base_dir(self) -> Path:
        return Path(self.source_file).resolve().parent if self.source_file else Path.cwd()

    def path(self, value: str | None) -> str | None:
        """A path from the lab file, relative to the file's directory (``~`` expanded); ``None`` stays."""
        if value is None:
            return None
        p = Path(os.path.expanduser(value))
        return str(p if p.is_absolute() else self.base_dir / p)

    def data_source(self, value: str | None) -> str | None:
        """A model's ``data``/``eval``: a path relative to the lab file, unless it is a source that is no path
        (``module:function``, ``example:eval``: kept as written, as ``edgeopt build --data`` takes it)."""
        where = self.path(value)
        if value is None or where is None or ":" not in value or Path(where).exists():
            return where
        return value


def load_lab(path: str | Path) -> Lab:
    """Read and validate ``lab.yaml``; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"lab file {path} {what}", "pass --lab PATH (see examples/lab.yaml)")
    lab = load_model_file(path, Lab)
    for name in lab.profiles if any(m.artifacts is None for m in lab.models) else []:  # prebuilt: any name
        try:
            load_profile(name)
        except ConfigError as exc:
            raise ConfigError(f"{path}: profiles: {exc.message}", exc.hint) from exc
    return lab
