"""Targets (devices) and profiles (optimisation recipes): typed models loaded from YAML.

Every error names the file, the field and what is allowed; an unknown name suggests the closest one.
"""

from __future__ import annotations

import difflib
import os
import platform
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

Format = Literal["tflite", "onnx"]
Runtime = Literal["litert", "tflite-runtime", "tensorflow", "onnxruntime", "tflite-micro"]
TensorType = Literal["float32", "float16", "int8", "uint8", "int16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Connection(_Strict):
    """How to reach a device. Every field can be overridden on the command line or by ~/.ssh/config."""

    host: str | None = None
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    key: str | None = None  # path to a private key file; never the key itself
    python: str = "python3"  # the device's Python, e.g. /usr/bin/python3 or a venv's
    workdir: str = "~/.cache/edgeopt"


class Memory(_Strict):
    ram_bytes: int | None = Field(default=None, gt=0)
    storage_bytes: int | None = Field(default=None, gt=0)
    flash_bytes: int | None = Field(default=None, gt=0)
    runtime_overhead_bytes: int = Field(default=0, ge=0)


class Target(_Strict):
    name: str
    description: str = ""
    arch: Literal["native", "x86_64", "aarch64", "armv7l", "armv7em", "armv8m", "riscv32"]
    os: Literal["linux", "android", "none"] = "linux"
    transport: Literal["local", "ssh", "adb", "none"] = "ssh"
    connection: Connection = Connection()
    formats: list[Format] = Field(min_length=1)
    runtimes: list[Runtime] = Field(min_length=1)
    threads: int = Field(default=1, ge=1, le=256)
    static_batch: bool = False  # export batch-1 static shapes (microcontrollers, fixed-shape delegates)
    memory: Memory = Memory()
    energy_sensor: Literal["auto", "none", "rpi5-pmic", "hwmon", "rapl", "power-supply", "command"] = "auto"
    energy_command: str | None = None
    default_profiles: list[str] = Field(default_factory=lambda: ["fp32", "int8"])
    source_file: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "Target":
        if self.energy_sensor == "command" and not self.energy_command:
            raise ValueError("energy_sensor 'command' needs energy_command (a command that prints watts)")
        if self.transport == "ssh" and self.os == "none":
            raise ValueError("a microcontroller (os: none) cannot be reached over ssh; use transport: none")
        return self

    @property
    def machine(self) -> str:
        """The CPU architecture, with ``native`` resolved to this machine's."""
        return platform.machine() if self.arch == "native" else self.arch

    def build_facts(self) -> dict[str, Any]:
        """The fields that change what a build produces (the cache key uses these, not the connection)."""
        return {"formats": list(self.formats), "static_batch": self.static_batch}


class TFLiteOptions(_Strict):
    enabled: bool = True
    optimizations: list[Literal["default"]] = Field(default_factory=list)
    representative_dataset: bool = False
    supported_ops: list[Literal["builtins", "builtins_int8", "select_tf_ops"]] = Field(
        default_factory=lambda: ["builtins"]
    )
    supported_types: list[TensorType] = Field(default_factory=list)
    inference_input_type: TensorType = "float32"
    inference_output_type: TensorType = "float32"
    require_full_integer: bool = False  # fail if any op is left in float (names the op)

    @model_validator(mode="after")
    def _check(self) -> "TFLiteOptions":
        quantised_io = {"int8", "uint8", "int16"}
        if (self.inference_input_type in quantised_io or self.inference_output_type in quantised_io) and not (
            self.representative_dataset
        ):
            raise ValueError("integer inference_input/output_type needs representative_dataset: true")
        if self.require_full_integer and not self.representative_dataset:
            raise ValueError("require_full_integer needs representative_dataset: true")
        return self


class ONNXOptions(_Strict):
    enabled: bool = True
    quantization: Literal["none", "float16", "dynamic", "static"] = "none"
    quant_format: Literal["QDQ", "QOperator"] = "QDQ"
    per_channel: bool = True
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"
    activation_type: Literal["int8", "uint8"] = "int8"
    weight_type: Literal["int8", "uint8"] = "int8"
    reduce_range: bool = False


class Calibration(_Strict):
    samples: int = Field(default=200, ge=1)
    min_samples: int = Field(default=16, ge=1)


class Training(_Strict):
    """Fine-tuning shared by the training transforms (prune, distill, qat)."""

    epochs: int = Field(default=2, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    max_samples: int | None = Field(default=None, ge=1)  # train on the first N samples only (quick runs)
    validation_split: float = Field(default=0.0, ge=0, lt=1)


class PruneOptions(Training):
    """Magnitude pruning of Conv/Dense kernels to a target sparsity (a fraction of weights set to zero)."""

    sparsity: float = Field(ge=0, lt=1)
    initial_sparsity: float = Field(default=0.0, ge=0, lt=1)
    schedule: Literal["polynomial", "constant"] = "polynomial"
    power: float = Field(default=3.0, gt=0)  # polynomial decay exponent (tfmot's PolynomialDecay default)
    begin_fraction: float = Field(default=0.0, ge=0, lt=1)  # of the fine-tuning steps
    end_fraction: float = Field(default=0.7, gt=0, le=1)  # sparsity reaches the target here; the rest recovers
    frequency: int = Field(default=10, ge=1)  # steps between mask updates
    layers: list[Literal["conv", "depthwise", "dense"]] = Field(default_factory=lambda: ["conv", "depthwise", "dense"])
    min_weights: int = Field(default=0, ge=0)  # kernels smaller than this are left dense
    learning_rate: float = Field(default=5e-4, gt=0, le=1)

    @model_validator(mode="after")
    def _check_schedule(self) -> "PruneOptions":
        if self.initial_sparsity > self.sparsity:
            raise ValueError(f"initial_sparsity {self.initial_sparsity} is above the target sparsity {self.sparsity}")
        if self.begin_fraction >= self.end_fraction:
            raise ValueError("begin_fraction must be below end_fraction")
        return self


class DistillOptions(Training):
    """Knowledge distillation from the source model (teacher) into a smaller student."""

    width_multiplier: float | None = Field(default=None, gt=0, lt=1)  # student = teacher's architecture, narrower
    student: str | None = None  # or a student model file (.keras/.h5) the user supplies
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.1, ge=0, le=1)  # weight of the hard-label loss; 1 - alpha on the teacher's
    teacher_outputs: Literal["auto", "logits", "probabilities"] = "auto"
    epochs: int = Field(default=8, ge=1, le=1000)
    learning_rate: float = Field(default=3e-3, gt=0, le=1)
    min_units: int = Field(default=4, ge=1)  # no student layer gets fewer filters/units than this

    @model_validator(mode="after")
    def _check_student(self) -> "DistillOptions":
        if (self.width_multiplier is None) == (self.student is None):
            raise ValueError("give exactly one of width_multiplier (0 < w < 1) or student (a model file)")
        return self


class QATOptions(Training):
    """Quantisation-aware fine-tuning: int8 fake-quantised weights (straight-through estimator)."""

    epochs: int = Field(default=1, ge=1, le=1000)
    learning_rate: float = Field(default=1e-4, gt=0, le=1)
    fold_batch_norm: bool = True  # quantise Conv/Dense kernels as the converter sees them (BN folded in)
    freeze_batch_norm: bool = True  # BN statistics fixed while fine-tuning (needed for exact folding)


class Profile(_Strict):
    name: str
    description: str = ""
    tflite: TFLiteOptions = TFLiteOptions()
    onnx: ONNXOptions = ONNXOptions()
    calibration: Calibration = Calibration()
    prune: PruneOptions | None = None
    distill: DistillOptions | None = None
    qat: QATOptions | None = None
    seed: int = Field(default=0, ge=0)  # training transforms are deterministic for a seed
    source_file: str | None = None

    @model_validator(mode="after")
    def _check_transforms(self) -> "Profile":
        given = [name for name in ("prune", "distill", "qat") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"one training transform per profile, got {' and '.join(given)}")
        return self

    @property
    def transforms(self) -> list[str]:
        """The training transform this profile applies to the Keras model before conversion (zero or one)."""
        return [name for name in ("prune", "distill", "qat") if getattr(self, name) is not None]

    @property
    def needs_training(self) -> bool:
        return bool(self.transforms)

    @property
    def needs_calibration(self) -> bool:
        return (self.tflite.enabled and self.tflite.representative_dataset) or (
            self.onnx.enabled and self.onnx.quantization == "static"
        )

    def build_facts(self) -> dict[str, Any]:
        facts = self.model_dump(exclude={"source_file", "description"})
        for name in ("prune", "distill", "qat"):  # absent transforms leave the keys of plain profiles unchanged
            if facts.get(name) is None:
                facts.pop(name, None)
        if not self.needs_training:
            facts.pop("seed", None)
        return facts


def config_dirs(kind: str) -> list[Path]:
    """Where ``targets``/``profiles`` are looked up: $EDGEOPT_CONFIG_DIR, ./<kind>, the project's own."""
    dirs: list[Path] = []
    env = os.environ.get("EDGEOPT_CONFIG_DIR")
    if env:
        dirs.append(Path(env) / kind)
    dirs.append(Path.cwd() / kind)
    dirs.append(PROJECT_ROOT / kind)
    seen: list[Path] = []
    for d in dirs:
        r = d.resolve()
        if r not in seen:
            seen.append(r)
    return seen


def available(kind: str) -> dict[str, Path]:
    """name -> file, earlier directories winning."""
    found: dict[str, Path] = {}
    for d in config_dirs(kind):
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")):
                found.setdefault(p.stem, p)
    return found


M = TypeVar("M", bound=BaseModel)


def _format_validation(path: Path, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
            msg = f"got {err.get('input')!r}; allowed: {err['ctx']['expected']}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{field}: {msg}")
    return f"{path}: " + "; ".join(parts)


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    cur: Any = model
    for part in loc[:-1]:
        field = cur.model_fields.get(str(part)) if isinstance(cur, type) and issubclass(cur, BaseModel) else None
        annotation = field.annotation if field is not None else None
        for arg in typing.get_args(annotation):  # `Section | None`: the section's model
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                annotation = arg
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        cur = annotation
    return sorted(cur.model_fields) if isinstance(cur, type) and issubclass(cur, BaseModel) else []


def load_model_file(path: Path, model: type[M]) -> M:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level")
    raw.setdefault("name", path.stem)
    raw["source_file"] = str(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        hint = None
        for err in exc.errors():
            if err["type"] == "extra_forbidden":
                allowed = _allowed_fields(model, tuple(err["loc"]))
                close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed fields: {', '.join(allowed)}"
                break
        raise ConfigError(_format_validation(path, exc), hint) from exc


def _resolve(kind: str, name_or_path: str, model: type[M]) -> M:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load_model_file(candidate, model)
    names = available(kind)
    if name_or_path in names:
        return load_model_file(names[name_or_path], model)
    close = difflib.get_close_matches(name_or_path, list(names), n=1, cutoff=0.5)
    singular = kind.rstrip("s")
    hint = f"did you mean '{close[0]}'?" if close else f"see `edgeopt {kind}`"
    known = ", ".join(sorted(names)) or "none"
    raise ConfigError(f"unknown {singular} '{name_or_path}' (known: {known})", hint)


def load_target(name_or_path: str) -> Target:
    return _resolve("targets", name_or_path, Target)


def load_profile(name_or_path: str) -> Profile:
    return _resolve("profiles", name_or_path, Profile)


def list_targets() -> list[Target]:
    return [load_model_file(p, Target) for p in available("targets").values()]


def list_profiles() -> list[Profile]:
    return [load_model_file(p, Profile) for p in available("profiles").values()]


def apply_connection_overrides(
    target: Target,
    host: str | None = None,
    user: str | None = None,
    port: int | None = None,
    key: str | None = None,
    python: str | None = None,
) -> Target:
    """Command-line overrides; ``host`` may be ``user@host:port``."""
    conn = target.connection.model_dump()
    if host:
        if "@" in host:
            user_part, host = host.split("@", 1)
            user = user or user_part
        if host.count(":") == 1:
            host, port_text = host.split(":")
            if not port_text.isdigit():
                raise ConfigError(f"--host: port '{port_text}' is not a number", "use user@host:port")
            port = port or int(port_text)
        conn["host"] = host
    for key_name, value in (("user", user), ("port", port), ("key", key), ("python", python)):
        if value is not None:
            conn[key_name] = value
    try:
        return target.model_copy(update={"connection": Connection.model_validate(conn)})
    except ValidationError as exc:
        raise ConfigError(_format_validation(Path("(command line)"), exc)) from exc
