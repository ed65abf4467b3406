"""What a device is: :class:`ConnectionSpec` and its resolution through ``~/.ssh/config``.

``~/.ssh/config`` is honoured (path overridable), ``Include`` followed (relative paths from ``~/.ssh``, globs,
conditional inside ``Host``/``Match``): ``Host`` alias → ``HostName``, ``User``, ``Port``, ``IdentityFile``,
``IdentitiesOnly``, ``ProxyCommand``, ``ProxyJump``, ``UserKnownHostsFile`` (every file listed),
``ConnectTimeout``. Precedence is OpenSSH's: explicit fields (the command line) > the config > the ``default_*``
fields (a target's YAML) > OpenSSH defaults (current user, port 22). The result is a :class:`ResolvedConnection`.
Every problem is a one-line :class:`~edgeopt.errors.RemoteError`.
"""

from __future__ import annotations

import dataclasses
import getpass
import glob
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import paramiko

from edgeopt.config.target import parse_address
from edgeopt.errors import ConfigError, RemoteError
from edgeopt.remote.host_keys import host_key_name

DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_KNOWN_HOSTS_FILES = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")  # OpenSSH's UserKnownHostsFile
MAX_INCLUDE_DEPTH = 16  # as OpenSSH
MAX_JUMPS = 8
_KEYWORD = re.compile(r"\s*(\w+)(?:\s*=\s*|\s+)(.*?)\s*$")


@dataclass(frozen=True)
class ConnectionSpec:
    """How to reach one device. ``None`` fields come from ``~/.ssh/config`` (for ``host`` as a ``Host``
    alias), then from the ``default_*`` fields (a target's YAML), then from OpenSSH defaults (current user,
    port 22)."""

    host: str
    user: str | None = None
    port: int | None = None
    key_filename: str | os.PathLike[str] | None = None
    connect_timeout: float | None = None  # default: ConnectTimeout from ssh config, else 10 s
    command_timeout: float = 600.0
    accept_new_host_key: bool = False
    known_hosts: str | os.PathLike[str] | None = None  # default: UserKnownHostsFile, else ~/.ssh/known_hosts{,2}
    ssh_config: str | os.PathLike[str] | None = None  # default: ~/.ssh/config if it exists
    use_ssh_config: bool = True
    allow_agent: bool = True
    look_for_keys: bool = True
    default_user: str | None = None  # below the ssh config: used only when it names no User
    default_port: int | None = None
    default_key_filename: str | os.PathLike[str] | None = None  # used only when the config lists no IdentityFile

    def resolve(self) -> ResolvedConnection:
        """Merge this spec with the ssh config: explicit fields win, ``default_*`` fields lose."""
        return resolve_spec(self, depth=0, jumps=True)


def resolve_spec(spec: ConnectionSpec, depth: int, jumps: bool) -> ResolvedConnection:
    """:meth:`ConnectionSpec.resolve`; ``jumps=False`` ignores the host's own ProxyJump/ProxyCommand (a later
    hop of a ProxyJump chain is reached through the hop before it, as OpenSSH does)."""
    options: dict[str, object] = {}
    config_path: Path | None = None
    if spec.use_ssh_config:
        config_path = Path(os.path.expanduser(str(spec.ssh_config or DEFAULT_SSH_CONFIG)))
        if config_path.is_file():
            config = read_ssh_config(config_path)
            try:
                options = dict(config.lookup(spec.host))
            except Exception as exc:  # Match exec, canonicalisation, tokens: paramiko raises several kinds
                raise RemoteError(f"cannot apply SSH config {config_path} to host {spec.host}: {exc}",
                                  "fix or remove the offending line") from exc
        elif spec.ssh_config is not None:
            raise RemoteError(f"SSH config file {config_path} does not exist", "check the path")
        else:
            config_path = None

    hostname = str(options.get("hostname") or spec.host)
    user = spec.user or _opt_str(options, "user") or spec.default_user or getpass.getuser()
    # paramiko's SSHConfigDict holds str values, lists for the multi-valued keys (IdentityFile, ...)
    port_value: str | int = 22
    for candidate in (spec.port, options.get("port"), spec.default_port):
        if candidate is not None:
            port_value = cast("str | int", candidate)
            break
    try:
        port = int(port_value)
    except (TypeError, ValueError):
        raise RemoteError(f"invalid SSH port {port_value!r} for host {spec.host}") from None
    if not 0 < port < 65536:
        raise RemoteError(f"invalid SSH port {port} for host {spec.host}", "use a port between 1 and 65535")

    identities_only = _opt_str(options, "identitiesonly").lower() == "yes"
    listed = cast("list[str]", options.get("identityfile") or [])
    if spec.key_filename is not None:
        keys: tuple[str, ...] = (_key_file(spec.key_filename, "--key"),)
    elif listed:  # like OpenSSH, silently skip IdentityFile entries that do not exist
        keys = tuple(p for p in (os.path.expanduser(str(x)) for x in listed) if os.path.isfile(p))
    elif spec.default_key_filename is not None:
        keys = (_key_file(spec.default_key_filename, "the target's connection.key"),)
    else:
        keys = ()

    if spec.known_hosts is not None:
        known_files: tuple[Path, ...] = (Path(os.path.expanduser(str(spec.known_hosts))),)
    else:
        try:
            configured = shlex.split(_opt_str(options, "userknownhostsfile"))
        except ValueError as exc:
            raise RemoteError(f"invalid UserKnownHostsFile for host {spec.host} in {config_path}: {exc}",
                              "fix the quoting of that line") from exc
        if [c.lower() for c in configured] == ["none"]:
            known_files = ()
        else:
            known_files = tuple(Path(os.path.expanduser(p)) for p in configured or DEFAULT_KNOWN_HOSTS_FILES)

    if spec.connect_timeout is not None:
        connect_timeout = float(spec.connect_timeout)
    else:
        try:
            connect_timeout = float(_opt_str(options, "connecttimeout") or 10.0)
        except ValueError:
            connect_timeout = 10.0

    proxy = _opt_str(options, "proxycommand") if jumps else ""
    proxy = proxy if proxy and proxy.lower() != "none" else ""
    jump = _opt_str(options, "proxyjump") if jumps else ""
    jump = jump if jump and jump.lower() != "none" else ""
    if proxy and jump:
        raise RemoteError(f"both ProxyCommand and ProxyJump are set for host {spec.host} in {config_path}",
                          "keep one of them for this host")
    via = resolve_jumps(spec, jump, config_path, depth) if jump else None
    return ResolvedConnection(
        alias=spec.host,
        hostname=hostname,
        port=port,
        user=user,
        key_filenames=keys,
        known_hosts_files=known_files,
        proxy_command=proxy or None,
        allow_agent=spec.allow_agent,
        look_for_keys=spec.look_for_keys and not identities_only,
        connect_timeout=connect_timeout,
        command_timeout=float(spec.command_timeout),
        accept_new_host_key=spec.accept_new_host_key,
        ssh_config=config_path,
        via=via,
    )


def resolve_jumps(spec: ConnectionSpec, jump: str, config_path: Path | None, depth: int) -> ResolvedConnection:
    """The last hop of ``ProxyJump a,b,...`` (each hop reached through the one before it; the first hop's own
    ProxyJump/ProxyCommand apply). Hops take their user, port and keys from the ssh config (as ``ssh -J``), and
    this spec's known_hosts, host-key policy, agent and timeouts."""
    if depth >= MAX_JUMPS:
        raise RemoteError(f"ProxyJump for host {spec.host} nests more than {MAX_JUMPS} hops deep (a loop?)",
                          f"check the ProxyJump lines in {config_path}")
    via: ResolvedConnection | None = None
    for number, text in enumerate(h.strip() for h in jump.split(",")):
        hop = text[len("ssh://"):] if text.startswith("ssh://") else text
        try:
            address = parse_address(hop, f"ProxyJump for host {spec.host} in {config_path}:")
        except ConfigError as exc:
            raise RemoteError(exc.message, exc.hint) from exc
        hop_spec = ConnectionSpec(
            host=address.host, user=address.user, port=address.port, connect_timeout=spec.connect_timeout,
            command_timeout=spec.command_timeout, accept_new_host_key=spec.accept_new_host_key,
            known_hosts=spec.known_hosts, ssh_config=spec.ssh_config, use_ssh_config=spec.use_ssh_config,
            allow_agent=spec.allow_agent, look_for_keys=spec.look_for_keys)
        resolved = resolve_spec(hop_spec, depth + 1, jumps=number == 0)
        if via is not None:
            resolved = dataclasses.replace(resolved, via=via)
        via = resolved
    assert via is not None
    return via


# ------------------------------------------------------------------------------------------------------------
# reading the config: Include
# ------------------------------------------------------------------------------------------------------------
def read_ssh_config(path: Path) -> paramiko.SSHConfig:
    """Parse ``path`` with every ``Include`` followed (see :func:`expand_includes`)."""
    try:
        text = expand_includes(path, None, 0)
        return paramiko.SSHConfig.from_text(text)
    except RemoteError:
        raise
    except Exception as exc:  # paramiko raises several kinds for a bad file
        raise RemoteError(f"cannot read SSH config {path} (or a file it includes): {exc}",
                          "fix or remove the offending line") from exc


def expand_includes(path: Path, outer: str | None, depth: int) -> str:
    """The text of ``path`` with each ``Include`` replaced by the files it names, as OpenSSH reads them:
    relative paths are under ``~/.ssh``, globs expand in sorted order, missing files are skipped, an
    ``Include`` inside a ``Host``/``Match`` block applies only to hosts that block matches (the included
    ``Host``/``Match`` lines are ANDed with it), and the including block continues after the included text.
    ``outer`` is the ``Host``/``Match`` line in force where this file is included (``None``: global)."""
    if depth > MAX_INCLUDE_DEPTH:
        raise RemoteError(f"SSH config Include nesting deeper than {MAX_INCLUDE_DEPTH} at {path} (a loop?)",
                          "check the Include lines")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RemoteError(f"cannot read SSH config {path}: {exc}", "check the file") from exc
    out: list[str] = []
    block = outer  # the Host/Match line in force in this file
    for line in lines:
        match = _KEYWORD.match(line)
        keyword = match.group(1).lower() if match else ""
        if match and keyword in ("host", "match"):
            block = _and_blocks(outer, keyword, match.group(2))
            out.append(block)
        elif match and keyword == "include":
            for name in shlex.split(match.group(2)):
                pattern = os.path.expanduser(name)
                if not os.path.isabs(pattern):
                    pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
                for included in sorted(glob.glob(pattern)):
                    if os.path.isfile(included):
                        out.append(expand_includes(Path(included), block, depth + 1))
                        out.append(block or "Host *")  # back to the including block
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _and_blocks(outer: str | None, keyword: str, value: str) -> str:
    """A ``Host``/``Match`` line that matches only where ``outer`` (an earlier such line, or ``None``) does too."""
    if outer is None:
        return f"{keyword.capitalize()} {value}"
    criteria = [_criteria(outer), _criteria(f"{keyword} {value}")]
    criteria = [c for c in criteria if c != "all"] or ["all"]
    return "Match " + " ".join(criteria)


def _criteria(block: str) -> str:
    keyword, _, value = block.partition(" ")
    if keyword.lower() == "match":
        return value.strip()
    return "originalhost " + shlex.quote(",".join(shlex.split(value)))


def _key_file(path: str | os.PathLike[str], what: str) -> str:
    key_path = Path(os.path.expanduser(str(path)))
    if not key_path.is_file():
        raise RemoteError(f"SSH key file {key_path} does not exist", f"check the key_filename/{what} path")
    return str(key_path)


def _opt_str(options: dict[str, object], key: str) -> str:
    value = options.get(key)
    if value is None:
        return ""
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value)


@dataclass(frozen=True)
class ResolvedConnection:
    """A :class:`ConnectionSpec` after the ssh config and defaults were applied. ``via``: the ProxyJump hop this
    connection is tunnelled through (itself resolved, possibly with its own ``via``)."""

    alias: str
    hostname: str
    port: int
    user: str
    key_filenames: tuple[str, ...]
    known_hosts_files: tuple[Path, ...]  # every file read; new keys are recorded in the first
    proxy_command: str | None
    allow_agent: bool
    look_for_keys: bool
    connect_timeout: float
    command_timeout: float
    accept_new_host_key: bool
    ssh_config: Path | None = field(default=None)
    via: ResolvedConnection | None = None

    @property
    def known_hosts(self) -> Path | None:
        """The file new host keys are recorded in (``None``: ``UserKnownHostsFile none``)."""
        return self.known_hosts_files[0] if self.known_hosts_files else None

    @property
    def description(self) -> str:
        where = f"{self.user}@{self.hostname}:{self.port}"
        if self.via is not None:
            where += f" via {self.via.alias}"
        return where if self.alias == self.hostname and self.via is None else f"{self.alias} ({where})"

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
