"""Targets: the devices edgeopt builds for and runs on (``targets/*.yaml``)."""

from __future__ import annotations

import ipaddress
import platform
import re
from dataclasses import dataclass
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


ADDRESS_FORM = "[user@]host[:port] or [user@][IPv6 address][:port], port 1-65535"
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")  # a name, an IPv4 address or an ~/.ssh/config alias
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\$?")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class Address:
    """``[user@]host[:port]`` split into its parts (``host`` without IPv6 brackets)."""

    host: str
    user: str | None = None
    port: int | None = None


def parse_address(text: str, what: str = "--host") -> Address:
    """Parse ``[user@]host[:port]`` strictly: one optional ``user@``, a host name (or alias) or a bracketed IPv6
    address, an optional port 1-65535. Anything else is a one-line :class:`ConfigError` naming ``what``."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{what} {text!r}: {why}", f"expected {ADDRESS_FORM}, e.g. pi@10.0.0.7:22 or an "
                                                      f"~/.ssh/config Host alias")

    userinfo, at, after = text.rpartition("@")
    if at and ":" in userinfo and "//" not in userinfo:  # user:password@host — never echoed, never taken
        shown = f"{userinfo.split(':', 1)[0]}:***@{after}"
        raise ConfigError(f"{what} {shown!r}: a password in the address (user:password@host)",
                          "edgeopt takes no SSH password: use a key file (--key, the target's key:) or ssh-agent")
    rest, user = text, None
    if "@" in rest:
        user, rest = rest.split("@", 1)
        if "@" in rest:
            raise bad("more than one '@'")
        if not _USER_NAME.fullmatch(user):
            raise bad(f"invalid user name {user!r}" if user else "empty user name before '@'")
    port_text: str | None = None
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket:
            raise bad("'[' without a closing ']'")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} in brackets is not an IPv6 address") from None
        if tail:
            if not tail.startswith(":"):
                raise bad(f"unexpected {tail!r} after ']'")
            port_text = tail[1:]
    else:
        if rest.count(":") > 1:
            raise bad("an IPv6 address needs brackets, e.g. [fe80::1]:22")
        host, colon, after = rest.partition(":")
        port_text = after if colon else None
        if not host:
            raise bad("no host")
        if not _HOST_NAME.fullmatch(host) or len(host) > 253:
            raise bad(f"invalid host name {host!r}")
    port = None
    if port_text is not None:
        if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise bad(f"port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return Address(host=host, user=user, port=port)


@dataclass(frozen=True)
class Endpoint:
    """Where to reach a device over SSH, by OpenSSH precedence: the explicit fields (the command line, a lab's
    device entry) win over ``~/.ssh/config``, which wins over the target YAML's ``default_*`` values."""

    host: str | None
    user: str | None = None
    port: int | None = None
    key: str | None = None
    default_user: str | None = None
    default_port: int | None = None
    default_key: str | None = None


def connection_endpoint(
    target: Target,
    host: str | None = None,
    user: str | None = None,
    port: int | None = None,
    key: str | None = None,
    what: str = "--host",
) -> Endpoint:
    """The explicit values given for ``target`` (``host`` may be ``user@host:port``), kept apart from the
    target's own ``connection`` values, which only apply where ``~/.ssh/config`` says nothing."""
    conn = target.connection
    if host is None:
        return Endpoint(conn.host, user, port, key, conn.user, conn.port, conn.key)
    address = parse_address(host, what)
    for name, given, in_address in (("user", user, address.user), ("port", port, address.port)):
        if given is not None and in_address is not None and given != in_address:
            raise ConfigError(f"{what} {host!r} says {name} {in_address}, but {name} {given} was also given",
                              f"give the {name} once")
    return Endpoint(address.host, user if user is not None else address.user,
                    port if port is not None else address.port, key, conn.user, conn.port, conn.key)


def apply_connection_overrides(
    target: Target,
    host: str | None = None,
    user: str | None = None,
    port: int | None = None,
    key: str | None = None,
    python: str | None = None,
    what: str = "--host",
) -> Target:
    """The target with command-line (or lab) connection values filled in; ``host`` may be ``user@host:port``.
    Only for display and for ``python``/``workdir``: the SSH connection is built from
    :func:`connection_endpoint`, which keeps ``~/.ssh/config`` above the target's own values."""
    endpoint = connection_endpoint(target, host, user, port, key, what)
    conn = target.connection.model_dump()
    for key_name, value in (("host", endpoint.host), ("user", endpoint.user), ("port", endpoint.port),
                            ("key", endpoint.key), ("python", python)):
        if value is not None:
            conn[key_name] = value
    try:
        return target.model_copy(update={"connection": Connection.model_validate(conn)})
    except ValidationError as exc:
        raise ConfigError(format_validation(Path("(command line)"), exc)) from exc
