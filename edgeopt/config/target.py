"""Targets: the devices edgeopt builds for and runs on (``targets/*.yaml``)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from edgeopt.config.base import StrictModel, available, format_validation, load_model_file, resolve
from edgeopt.errors import ConfigError

Format = Literal["tflite", "onnx"]
Runtime = Literal["litert", "tflite-runtime", "tensorflow", "onnxruntime", "tflite-micro"]


class Connection(StrictModel):
    """How to reach a device. Every field can be overridden on the command line or by ~/.ssh/config."""

    host: str | None = None
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    key: str | None = None  # path to a private key file; never the key itself
    python: str = "python3"  # the device's Python, e.g. /usr/bin/python3 or a venv's
    workdir: str = "~/.cache/edgeopt"


class Memory(StrictModel):
    ram_bytes: int | None = Field(default=None, gt=0)
    storage_bytes: int | None = Field(default=None, gt=0)
    flash_bytes: int | None = Field(default=None, gt=0)
    runtime_overhead_bytes: int = Field(default=0, ge=0)


class Target(StrictModel):
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
    def _check(self) -> Target:
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


def load_target(name_or_path: str) -> Target:
    return resolve("targets", name_or_path, Target)



def list_targets() -> list[Target]:
    return [load_model_file(p, Target) for p in available("targets").values()]


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
        raise ConfigError(format_validation(Path("(command line)"), exc)) from exc
