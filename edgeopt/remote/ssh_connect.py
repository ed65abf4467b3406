"""Opening an SSH connection, and turning each way it can fail into one line that says what to fix.

Authentication uses ssh-agent and the usual key files (paramiko's ``allow_agent``/``look_for_keys``) plus an
explicit key file; passwords are never used. Host keys are checked by :mod:`edgeopt.remote.host_keys` on every
hop. ``ProxyJump`` hops are connected first, and the device is reached through a ``direct-tcpip`` channel of the
last hop (``ssh -J``); a ``ProxyCommand`` is run as the socket. Every
failure becomes :class:`~edgeopt.errors.RemoteError` (with a hint) or :class:`~edgeopt.errors.HostKeyError`;
key contents and secrets never appear in messages.
"""

from __future__ import annotations

import errno
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import paramiko
from paramiko.ssh_exception import (
    AuthenticationException,
    BadAuthenticationType,
    NoValidConnectionsError,
    PasswordRequiredException,
    SSHException,
)

from edgeopt.errors import HostKeyError, RemoteError
from edgeopt.remote.host_keys import HostKeyPolicy, KnownHosts
from edgeopt.remote.ssh_config import ResolvedConnection

# what paramiko says when a key file is not a private key it can read (a .pub file, a text file, garbage)
KEY_FILE_PROBLEM = re.compile(r"private key file|not a valid .*key|encountered .* key, expected|Invalid key|"
                              r"unpack requires|no such key|q must be exactly", re.IGNORECASE)


def describe_connect_error(conn: ResolvedConnection, exc: BaseException) -> RemoteError | None:
    """Turn a connection failure into a one-line typed error (``None``: not a connection failure)."""
    where = f"{conn.hostname}:{conn.port}"
    via = f" (alias {conn.alias!r})" if conn.alias != conn.hostname else ""
    if isinstance(exc, UnicodeError):  # raised by the idna codec before any lookup
        return RemoteError(
            f"invalid host name {conn.hostname!r}{via}", "check the spelling and the HostName in your SSH config"
        )
    if isinstance(exc, socket.gaierror):
        return RemoteError(
            f"cannot resolve host name {conn.hostname!r}{via}: {exc.strerror or exc}",
            "check the spelling, the HostName in your SSH config, and DNS/mDNS on this network",
        )
    if isinstance(exc, NoValidConnectionsError):
        errnos = {getattr(e, "errno", None) for e in exc.errors.values()}
        if errno.ECONNREFUSED in errnos:
            return RemoteError(
                f"connection refused by {where}{via}",
                f"nothing listens on port {conn.port}: is sshd running on the device, and is the port right?",
            )
        return _unreachable(where, via)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return RemoteError(
            f"timed out connecting to {where}{via} after {conn.connect_timeout:g} s",
            "the host does not answer: check it is powered on, the address, and firewalls",
        )
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return RemoteError(
            f"connection refused by {where}{via}",
            f"nothing listens on port {conn.port}: is sshd running on the device, and is the port right?",
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
        return _unreachable(where, via)
    if isinstance(exc, PasswordRequiredException):
        return RemoteError(
            f"authentication failed for user {conn.user!r} on {where}{via}: a private key is passphrase-protected",
            "load it into ssh-agent (ssh-add) — edgeopt never asks for passphrases",
        )
    if isinstance(exc, BadAuthenticationType):
        allowed = ", ".join(exc.allowed_types) or "none"
        return RemoteError(
            f"authentication failed for user {conn.user!r} on {where}{via}: "
            f"the server does not accept keys (allows: {allowed})",
            "enable PubkeyAuthentication on the device and install your public key (ssh-copy-id)",
        )
    if isinstance(exc, AuthenticationException):
        return RemoteError(
            f"authentication failed for user {conn.user!r} on {where}{via} (tried: {conn.auth_methods_tried()})",
            "check the user name and that your public key is in ~/.ssh/authorized_keys on the device "
            "(ssh-copy-id); a passphrase-protected key must be loaded into ssh-agent",
        )
    if isinstance(exc, SSHException) and KEY_FILE_PROBLEM.search(str(exc)) and conn.key_filenames:
        files = ", ".join(conn.key_filenames)  # paramiko read a key file it could not parse: ours, not the device's
        public = any(Path(f).suffix == ".pub" for f in conn.key_filenames)
        return RemoteError(f"SSH key file {files} is not a private key paramiko can read"
                           f"{' (a public key)' if public else ''}: {' '.join(str(exc).split())[:160]}",
                           "give the private key file (the one without .pub), in OpenSSH or PEM format")
    if isinstance(exc, (SSHException, EOFError)):
        text = str(exc) or type(exc).__name__
        if "banner" in text.lower():
            return RemoteError(
                f"{where}{via} accepted the connection but sent no SSH banner within {conn.connect_timeout:g} s",
                "is an SSH server on that port? the device may be overloaded",
            )
        return RemoteError(f"SSH connection to {where}{via} failed: {text}", "check the device's sshd log")
    if isinstance(exc, OSError):
        return RemoteError(
            f"cannot connect to {where}{via}: {exc.strerror or exc}", "check the address and the network"
        )
    return None


def _unreachable(where: str, via: str) -> RemoteError:
    return RemoteError(
        f"host {where}{via} is unreachable",
        "check the device is powered on and on the same network (ping it)",
    )


@dataclass
class OpenedClient:
    """An authenticated client, the fingerprint of a host key accept-new recorded for it (``None``: known), and
    the clients of its ProxyJump hops (closed after it)."""

    client: paramiko.SSHClient
    recorded_host_key: str | None
    hops: list[paramiko.SSHClient] = field(default_factory=list)

    def close(self) -> None:
        self.client.close()
        for hop in reversed(self.hops):
            hop.close()


def open_client(conn: ResolvedConnection) -> OpenedClient:
    """Connect and authenticate to ``conn`` (through its ProxyJump hops, each host key checked), checking its
    host key against known_hosts. Every failure is a one-line :class:`~edgeopt.errors.RemoteError` or
    :class:`~edgeopt.errors.HostKeyError`."""
    hops: list[paramiko.SSHClient] = []
    if conn.via is not None:
        try:
            outer = open_client(conn.via)
        except RemoteError as exc:
            raise type(exc)(f"ProxyJump host {conn.via.alias} (for {conn.alias}): {exc.message}", exc.hint) from exc
        hops = [*outer.hops, outer.client]
    try:
        return OpenedClient(*connect_client(conn, hops[-1] if hops else None), hops)
    except BaseException:
        for hop in reversed(hops):
            hop.close()
        raise


def connect_client(conn: ResolvedConnection, jump: paramiko.SSHClient | None) -> tuple[paramiko.SSHClient, str | None]:
    """One hop: TCP (or a ProxyCommand, or a ``direct-tcpip`` channel through ``jump``), then SSH."""
    known = KnownHosts.read(conn.known_hosts_files)
    client = paramiko.SSHClient()
    policy = HostKeyPolicy(known, conn.accept_new_host_key)
    client.set_missing_host_key_policy(policy)
    timeout = conn.connect_timeout
    # We open the TCP connection ourselves so that the connect timeout, the banner timeout and paramiko's
    # negotiation window are separate (paramiko uses one ``timeout`` for the socket and for start_client,
    # and start_client gives up silently, hiding the real cause).
    sock: socket.socket | paramiko.ProxyCommand | paramiko.Channel
    try:
        if jump is not None:
            sock = open_tunnel(conn, jump)
        elif conn.proxy_command:
            sock = paramiko.ProxyCommand(conn.proxy_command)
        else:
            sock = socket.create_connection((conn.hostname, conn.port), timeout=timeout)
            # SFTP is many small request/response round trips: without this, delayed ACKs stall each ~40 ms
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except RemoteError:
        client.close()
        raise
    except (OSError, UnicodeError, SSHException) as exc:
        client.close()
        raise (describe_connect_error(conn, exc) or RemoteError(str(exc))) from exc
    try:
        client.connect(
            conn.hostname,
            port=conn.port,
            username=conn.user,
            key_filename=list(conn.key_filenames) or None,
            timeout=max(2 * timeout, timeout + 5),  # the whole key exchange
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            allow_agent=conn.allow_agent,
            look_for_keys=conn.look_for_keys,
            sock=sock,
            transport_factory=prefer_known_key_types(known.key_types_for(conn.host_key_name)),
        )
    except BaseException as exc:
        cause: BaseException = exc
        inner = client.get_transport()
        saved = inner.get_exception() if inner is not None else None
        if saved is not None and isinstance(exc, SSHException) and not isinstance(exc, AuthenticationException):
            cause = saved  # the transport thread's reason (e.g. no banner)
        elif isinstance(exc, SSHException) and "No existing session" in str(exc):
            cause = SSHException(f"SSH negotiation did not finish within {max(2 * timeout, timeout + 5):g} s")
        client.close()
        sock.close()
        if isinstance(exc, (HostKeyError, RemoteError)):
            raise
        mapped = describe_connect_error(conn, cause)
        if mapped is None:
            raise
        raise mapped from exc
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    return client, policy.recorded


def open_tunnel(conn: ResolvedConnection, jump: paramiko.SSHClient) -> paramiko.Channel:
    """A ``direct-tcpip`` channel from the ProxyJump host ``jump`` to ``conn``'s address."""
    where = f"{conn.hostname}:{conn.port}"
    hop = conn.via.description if conn.via is not None else "the jump host"
    transport = jump.get_transport()
    if transport is None or not transport.is_active():
        raise RemoteError(f"the connection to ProxyJump host {hop} closed", "check the jump host")
    try:
        return transport.open_channel("direct-tcpip", (conn.hostname, conn.port), ("127.0.0.1", 0),
                                      timeout=conn.connect_timeout)
    except paramiko.ChannelException as exc:
        reason = exc.text or f"code {exc.code}"
        raise RemoteError(
            f"ProxyJump host {hop} could not connect to {where} (for {conn.alias}): {reason}",
            "check HostName/Port as seen from the jump host, and that its sshd allows TCP forwarding "
            "(AllowTcpForwarding)") from exc
    except (SSHException, EOFError, OSError) as exc:
        raise RemoteError(f"ProxyJump host {hop} did not open a channel to {where} (for {conn.alias}): "
                          f"{exc or type(exc).__name__}", "check the jump host and the network") from exc


def prefer_known_key_types(key_types: list[str]) -> Callable[..., paramiko.Transport]:
    """A transport factory that asks the server for a host key of a type known_hosts holds (as OpenSSH orders
    HostKeyAlgorithms), so a host with several keys offers the one we can check."""

    def factory(sock: Any, disabled_algorithms: dict[str, Any] | None = None) -> paramiko.Transport:
        transport = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
        options = transport.get_security_options()
        wanted: list[str] = []
        for key_type in key_types:
            wanted += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if key_type == "ssh-rsa" else [key_type]
        first = [k for k in wanted if k in options.key_types]
        if first:
            options.key_types = first + [k for k in options.key_types if k not in first]
        return transport

    return factory


def link_gone(chan: paramiko.Channel, wait: float = 1.0) -> bool:
    """Whether the channel closed because its connection died. paramiko reports -1 both when the server closed
    the channel without an exit status (the remote shell killed by a signal: sshd's ``exit-signal``, which
    paramiko ignores) and when the connection went; in the latter its transport thread closes the channels
    just before it marks itself inactive, so this waits a moment for that."""
    deadline = time.monotonic() + wait
    while True:
        transport = chan.get_transport()
        if transport is None or not transport.is_active():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)

