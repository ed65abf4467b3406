"""What a device is: :class:`ConnectionSpec` and its resolution through ``~/.ssh/config``.

``~/.ssh/config`` is honoured (path overridable): ``Host`` alias → ``HostName``, ``User``, ``Port``,
``IdentityFile``, ``IdentitiesOnly``, ``ProxyCommand``, ``UserKnownHostsFile``, ``ConnectTimeout``. Arguments
given explicitly override the config; then OpenSSH defaults apply (current user, port 22). The result is a
:class:`ResolvedConnection`. Every problem is a one-line :class:`~edgeopt.errors.RemoteError`.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import paramiko

from edgeopt.errors import RemoteError
from edgeopt.remote.host_keys import host_key_name

DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class ConnectionSpec:
    """How to reach one device. ``None`` fields come from ``~/.ssh/config`` (for ``host`` as a ``Host``
    alias), then from OpenSSH defaults (current user, port 22)."""

    host: str
    user: str | None = None
    port: int | None = None
    key_filename: str | os.PathLike[str] | None = None
    connect_timeout: float | None = None  # default: ConnectTimeout from ssh config, else 10 s
    command_timeout: float = 600.0
    accept_new_host_key: bool = False
    known_hosts: str | os.PathLike[str] | None = None  # default: UserKnownHostsFile, else ~/.ssh/known_hosts
    ssh_config: str | os.PathLike[str] | None = None  # default: ~/.ssh/config if it exists
    use_ssh_config: bool = True
    allow_agent: bool = True
    look_for_keys: bool = True

    def resolve(self) -> ResolvedConnection:
        """Merge this spec with the ssh config; explicit fields win."""
        options: dict[str, object] = {}
        config_path: Path | None = None
        if self.use_ssh_config:
            config_path = Path(os.path.expanduser(str(self.ssh_config or DEFAULT_SSH_CONFIG)))
            if config_path.is_file():
                try:
                    options = dict(paramiko.SSHConfig.from_path(str(config_path)).lookup(self.host))
                except Exception as exc:  # paramiko raises several kinds for a bad file
                    raise RemoteError(
                        f"cannot read SSH config {config_path}: {exc}", "fix or remove the offending line"
                    ) from exc
            elif self.ssh_config is not None:
                raise RemoteError(f"SSH config file {config_path} does not exist", "check the path")
            else:
                config_path = None

        hostname = str(options.get("hostname") or self.host)
        user = self.user or _opt_str(options, "user") or getpass.getuser()
        # paramiko's SSHConfigDict holds str values, lists for the multi-valued keys (IdentityFile, ...)
        port_text = self.port if self.port is not None else cast("str | int", options.get("port", 22))
        try:
            port = int(port_text)
        except (TypeError, ValueError):
            raise RemoteError(f"invalid SSH port {port_text!r} for host {self.host}") from None
        if not 0 < port < 65536:
            raise RemoteError(f"invalid SSH port {port} for host {self.host}", "use a port between 1 and 65535")

        identities_only = _opt_str(options, "identitiesonly").lower() == "yes"
        if self.key_filename is not None:
            key_path = Path(os.path.expanduser(str(self.key_filename)))
            if not key_path.is_file():
                raise RemoteError(f"SSH key file {key_path} does not exist", "check the key_filename/--key path")
            keys: tuple[str, ...] = (str(key_path),)
        else:
            # Like OpenSSH, silently skip IdentityFile entries that do not exist.
            listed = cast("list[str]", options.get("identityfile") or [])
            keys = tuple(
                p for p in (os.path.expanduser(str(x)) for x in listed) if os.path.isfile(p)
            )

        if self.known_hosts is not None:
            known_hosts = Path(os.path.expanduser(str(self.known_hosts)))
        else:
            configured = _opt_str(options, "userknownhostsfile").split()
            known_hosts = Path(os.path.expanduser(configured[0] if configured else DEFAULT_KNOWN_HOSTS))

        if self.connect_timeout is not None:
            connect_timeout = float(self.connect_timeout)
        else:
            try:
                connect_timeout = float(_opt_str(options, "connecttimeout") or 10.0)
            except ValueError:
                connect_timeout = 10.0

        proxy = _opt_str(options, "proxycommand")
        return ResolvedConnection(
            alias=self.host,
            hostname=hostname,
            port=port,
            user=user,
            key_filenames=keys,
            known_hosts=known_hosts,
            proxy_command=proxy if proxy and proxy.lower() != "none" else None,
            allow_agent=self.allow_agent,
            look_for_keys=self.look_for_keys and not identities_only,
            connect_timeout=connect_timeout,
            command_timeout=float(self.command_timeout),
            accept_new_host_key=self.accept_new_host_key,
            ssh_config=config_path,
        )


def _opt_str(options: dict[str, object], key: str) -> str:
    value = options.get(key)
    if value is None:
        return ""
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value)


@dataclass(frozen=True)
class ResolvedConnection:
    """A :class:`ConnectionSpec` after the ssh config and defaults were applied."""

    alias: str
    hostname: str
    port: int
    user: str
    key_filenames: tuple[str, ...]
    known_hosts: Path
    proxy_command: str | None
    allow_agent: bool
    look_for_keys: bool
    connect_timeout: float
    command_timeout: float
    accept_new_host_key: bool
    ssh_config: Path | None = field(default=None)

    @property
    def description(self) -> str:
        where = f"{self.user}@{self.hostname}:{self.port}"
        return where if self.alias == self.hostname else f"{self.alias} ({where})"

    @property
    def host_key_name(self) -> str:
        return host_key_name(self.hostname, self.port)

    def auth_methods_tried(self) -> str:
        tried = [f"key {k}" for k in self.key_filenames]
        if self.allow_agent:
            tried.append("ssh-agent" if os.environ.get("SSH_AUTH_SOCK") else "ssh-agent (not running)")
        if self.look_for_keys:
            tried.append("default keys in ~/.ssh")
        return ", ".join(tried) if tried else "no keys at all"
