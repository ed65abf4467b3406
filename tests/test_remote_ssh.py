"""SSHTransport and DeviceSession against a REAL OpenSSH server on 127.0.0.1 (tests/sshd.py).

No mocks of paramiko or sshd. Nothing outside 127.0.0.0/8 is ever contacted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeopt.artifacts import sha256_file
from edgeopt.errors import AgentFailed, HostKeyError, RemoteError
from edgeopt.remote.session import DeviceSession
from edgeopt.remote.ssh import ConnectionSpec, SSHTransport, describe_connect_error, fingerprint
from edgeopt.remote.transport import Result, Transport

sys.path.insert(0, str(Path(__file__).parent))
from sshd import SshServer, free_port, generate_ed25519  # noqa: E402

pytestmark = pytest.mark.ssh

WEIRD = "a b'c\"d;touch INJECTED;$(touch INJECTED2)`touch INJECTED3`&|>x"


@pytest.fixture
def known_hosts(sshd: SshServer, tmp_path: Path) -> Path:
    return sshd.write_known_hosts(tmp_path / "known_hosts")


@pytest.fixture
def spec(sshd: SshServer, known_hosts: Path) -> ConnectionSpec:
    return ConnectionSpec(**sshd.connect_kwargs(known_hosts))  # type: ignore[arg-type]


@pytest.fixture
def ssh(spec: ConnectionSpec):
    with SSHTransport(spec) as transport:
        yield transport


@pytest.fixture
def cache_dir(sshd: SshServer, tmp_path: Path) -> str:
    """A per-test remote cache root (the device's home is a local directory here)."""
    path = sshd.home / "caches" / tmp_path.name
    return str(path)


def _blob(tmp_path: Path, size: int, name: str = "model.tflite", seed: int = 0) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size) if seed == 0 else bytes((i * seed) % 251 for i in range(size)))
    return path


# ------------------------------------------------------------------------------------------------------------
# commands and files
# ------------------------------------------------------------------------------------------------------------
def test_run_returns_exit_code_stdout_stderr(ssh: SSHTransport) -> None:
    assert isinstance(ssh, Transport)
    result = ssh.run(["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=10)
    assert result == Result(7, b"out\n", b"err\n")
    assert ssh.run(["cat"], timeout=10, stdin=b"x" * 200_000).stdout == b"x" * 200_000
    assert ssh.run(["true"], timeout=10).ok


def test_put_get_round_trip_with_progress(ssh: SSHTransport, sshd: SshServer, tmp_path: Path) -> None:
    src = _blob(tmp_path, 700_000)
    remote = f"{ssh.home()}/roundtrip.bin"
    assert ssh.home() == str(sshd.home)
    calls: list[tuple[int, int]] = []
    assert ssh.put(src, remote, progress=lambda done, total: calls.append((done, total))) == 700_000
    assert calls[0] == (0, 700_000) and calls[-1] == (700_000, 700_000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert ssh.size(remote) == 700_000 and ssh.exists(remote)
    back = tmp_path / "back" / "roundtrip.bin"
    ssh.get(remote, back)
    assert back.read_bytes() == src.read_bytes()
    ssh.remove(remote)
    assert not ssh.exists(remote) and ssh.size(remote) is None
    with pytest.raises(RemoteError, match="does not exist"):
        ssh.get(remote, tmp_path / "missing.bin")
    assert not (tmp_path / "missing.bin").exists()


def test_mkdir_and_atomic_rename(ssh: SSHTransport, tmp_path: Path) -> None:
    base = f"{ssh.home()}/mk/a/b c"
    ssh.mkdir(base)
    ssh.mkdir(base)  # idempotent
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(b"1")
    two.write_bytes(b"22")
    ssh.put(one, f"{base}/x")
    ssh.put(two, f"{base}/y")
    ssh.rename(f"{base}/y", f"{base}/x")  # replaces the existing target
    assert ssh.size(f"{base}/x") == 2 and not ssh.exists(f"{base}/y")


def test_arguments_arrive_literally_no_injection(ssh: SSHTransport, sshd: SshServer, tmp_path: Path) -> None:
    home = ssh.home()
    result = ssh.run(["printf", "%s\\n", WEIRD, "$HOME", "*"], timeout=10)
    assert result.stdout.decode().splitlines() == [WEIRD, "$HOME", "*"]
    before = sorted(p.name for p in sshd.home.iterdir())
    assert ssh.run(["touch", f"{home}/{WEIRD}"], timeout=10).ok
    after = sorted(p.name for p in sshd.home.iterdir())
    assert sorted(set(after) - set(before)) == [WEIRD]  # exactly one new file, named literally
    for root in (sshd.home, Path("/root"), Path("/")):
        assert not any((root / n).exists() for n in ("INJECTED", "INJECTED2", "INJECTED3", "x"))
    # through the session: a file whose name is hostile is pushed, hashed and renamed literally
    local = tmp_path / WEIRD
    local.write_bytes(b"payload")
    session = DeviceSession(ssh, cache_dir=f"{home}/inj cache")
    remote = session.ensure_file(local)
    assert remote.endswith("/" + WEIRD) and ssh.size(remote) == 7
    assert session.remote_sha256(remote) == hashlib.sha256(b"payload").hexdigest()
    assert not any((sshd.home / n).exists() for n in ("INJECTED", "INJECTED2", "INJECTED3", "x"))


def test_command_timeout_kills_the_command(ssh: SSHTransport, sshd: SshServer) -> None:
    pidfile = sshd.home / "sleeper.pid"
    started = time.monotonic()
    with pytest.raises(RemoteError, match=r"timed out after 1 s") as info:
        ssh.run(["sh", "-c", f"echo $$ > '{pidfile}'; sleep 30 & wait"], timeout=1)
    assert time.monotonic() - started < 6
    assert "\n" not in info.value.one_line()
    pid = int(pidfile.read_text())
    for _ in range(50):  # the whole process group (sh and its sleep child) is killed
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    assert ssh.run(["echo", "still usable"], timeout=10).stdout == b"still usable\n"


# ------------------------------------------------------------------------------------------------------------
# config, host keys
# ------------------------------------------------------------------------------------------------------------
def test_ssh_config_alias_resolution(sshd: SshServer, known_hosts: Path, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host other\n    HostName 10.9.9.9\n\n" + sshd.ssh_config_block("bench-pi") + "\nHost *\n    Port 2\n")
    spec = ConnectionSpec(
        host="bench-pi", ssh_config=config, known_hosts=known_hosts, allow_agent=False, connect_timeout=5
    )
    resolved = spec.resolve()
    assert (resolved.hostname, resolved.port, resolved.user) == ("127.0.0.1", sshd.port, sshd.user)
    assert resolved.key_filenames == (str(sshd.client_key),)
    assert resolved.look_for_keys is False  # IdentitiesOnly yes
    with SSHTransport(spec) as transport:
        assert transport.run(["echo", "via alias"], timeout=10).stdout == b"via alias\n"
        assert "bench-pi" in transport.description
    # explicit arguments override the config
    over = ConnectionSpec(host="bench-pi", ssh_config=config, port=2222, user="someone").resolve()
    assert (over.port, over.user, over.hostname) == (2222, "someone", "127.0.0.1")


def test_known_hosts_verification_ok(spec: ConnectionSpec, known_hosts: Path) -> None:
    before = known_hosts.read_bytes()
    with SSHTransport(spec) as transport:
        assert transport.recorded_host_key is None
        assert transport.run(["true"], timeout=10).ok
    assert known_hosts.read_bytes() == before


def test_unknown_host_key_refused(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"  # does not exist yet
    with pytest.raises(HostKeyError) as info:
        SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known)))  # type: ignore[arg-type]
    line = info.value.one_line()
    assert "unknown" in line and "--accept-new-host-key" in line and sshd.host_key_name in line
    assert "accept_new_host_key: true" in line  # the lab field, for edgeopt ci (no such flag there)
    assert _server_fingerprint(sshd) in line
    assert not known.exists()


def test_accept_new_records_host_key_atomically(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    known.parent.mkdir()
    known.write_text("[10.0.0.1]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOdG6Q2bUxbeq66z8tOVjhvjj3Ahy+cmZGVJwtTVm0mV")
    os.chmod(known, 0o644)
    kwargs = sshd.connect_kwargs(known, accept_new_host_key=True)
    with SSHTransport(ConnectionSpec(**kwargs)) as transport:  # type: ignore[arg-type]
        assert transport.recorded_host_key == _server_fingerprint(sshd)
        assert transport.run(["true"], timeout=10).ok
    lines = known.read_text().splitlines()
    assert lines[0].startswith("[10.0.0.1]:22 ")  # existing entries kept
    assert lines[1] == sshd.known_hosts_line
    assert stat.S_IMODE(known.stat().st_mode) == 0o644  # mode preserved
    assert not [p for p in known.parent.iterdir() if p.name.endswith(".tmp")]
    # now known: connects without accept-new and does not record twice
    kwargs["accept_new_host_key"] = False
    with SSHTransport(ConnectionSpec(**kwargs)) as transport:  # type: ignore[arg-type]
        assert transport.recorded_host_key is None
    assert known.read_text().count(sshd.known_hosts_line) == 1


def test_accept_new_into_a_device_file_appends_and_keeps_it(sshd: SshServer, tmp_path: Path) -> None:
    """``--known-hosts /dev/null`` (throw-away devices) with accept-new: the key was written to a temp file renamed
    over it, turning /dev/null into a regular file (and a ``/dev/null.lock`` beside it). Here a copy of /dev/null
    (needs root, as the tmpfs tests)."""
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    link = tmp_path / "known_hosts"
    link.symlink_to(null)
    with SSHTransport(ConnectionSpec(**sshd.connect_kwargs(link, accept_new_host_key=True))) as transport:  # type: ignore[arg-type]
        assert transport.recorded_host_key == _server_fingerprint(sshd)
    assert stat.S_ISCHR(null.stat().st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["known_hosts", "null"]  # no lock, no temp file


def test_changed_host_key_refused_loudly_even_with_accept_new(sshd: SshServer, tmp_path: Path) -> None:
    impostor = generate_ed25519(tmp_path / "impostor", "x").split()
    known = tmp_path / "known_hosts"
    known.write_text(f"# comment\n{sshd.host_key_name} {impostor[0]} {impostor[1]}\n")
    before = known.read_bytes()
    with pytest.raises(HostKeyError) as info:
        SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known, accept_new_host_key=True)))  # type: ignore[arg-type]
    line = info.value.one_line()
    assert "HAS CHANGED" in line and "man-in-the-middle" in line
    assert _server_fingerprint(sshd) in line  # what the server offered
    assert f"{known} line 2" in line  # where the old entry is
    assert f"ssh-keygen -f '{known}' -R '{sshd.host_key_name}'" in line
    assert known.read_bytes() == before  # nothing recorded


def _server_fingerprint(sshd: SshServer) -> str:
    import paramiko

    return fingerprint(paramiko.Ed25519Key(filename=str(sshd.host_key)))


# ------------------------------------------------------------------------------------------------------------
# failures to connect: one typed line each
# ------------------------------------------------------------------------------------------------------------
def test_connection_refused_on_wrong_port(sshd: SshServer, known_hosts: Path) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(RemoteError) as info:
        SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known_hosts, port=port)))  # type: ignore[arg-type]
    assert time.monotonic() - started < 3
    line = info.value.one_line()
    assert f"connection refused by 127.0.0.1:{port}" in line and "sshd running" in line
    assert type(info.value) is RemoteError


def test_blackholed_host_times_out(sshd: SshServer, known_hosts: Path) -> None:
    """A listener whose accept queue is full drops SYNs: to a client it looks exactly like a host that does
    not answer, all on loopback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(RemoteError) as info:
            SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known_hosts, port=port, connect_timeout=0.5)))  # type: ignore[arg-type]
        assert time.monotonic() - started < 3
        assert f"timed out connecting to 127.0.0.1:{port} after 0.5 s" in info.value.one_line()
    finally:
        for s in fillers + [listener]:
            s.close()


def test_port_with_a_silent_or_foreign_service(sshd: SshServer, known_hosts: Path) -> None:
    """The wrong port, where something that is not sshd listens: accepts, then says nothing (or HTTP)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(RemoteError) as info:
            SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known_hosts, port=port, connect_timeout=0.5)))  # type: ignore[arg-type]
        assert time.monotonic() - started < 4
        assert "no SSH banner" in info.value.one_line()
    finally:
        listener.close()
        for c in held:
            c.close()


def test_invalid_host_name(sshd: SshServer, known_hosts: Path) -> None:
    with pytest.raises(RemoteError, match="invalid host name 'bad..name'"):
        SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known_hosts, host="bad..name")))  # type: ignore[arg-type]


def test_dns_failure_is_one_line() -> None:
    """Resolution failures are mapped without touching the network (a real lookup would leave loopback)."""
    conn = ConnectionSpec(host="no-such-device.example", use_ssh_config=False, port=22).resolve()
    error = describe_connect_error(conn, socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert isinstance(error, RemoteError)
    assert error.one_line().startswith("cannot resolve host name 'no-such-device.example': Name or service not known")


def test_defaults_come_from_home_ssh_dir(sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no paths given, ~/.ssh/config and ~/.ssh/known_hosts are used (HOME points at a temp dir)."""
    dot_ssh = tmp_path / ".ssh"
    dot_ssh.mkdir()
    (dot_ssh / "config").write_text(sshd.ssh_config_block("pi"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(HostKeyError, match=str(dot_ssh / "known_hosts")):
        SSHTransport(ConnectionSpec(host="pi", allow_agent=False))
    with SSHTransport(ConnectionSpec(host="pi", allow_agent=False, accept_new_host_key=True)) as transport:
        assert transport.run(["echo", "hi"], timeout=10).stdout == b"hi\n"
    assert (dot_ssh / "known_hosts").read_text() == sshd.known_hosts_line + "\n"
    assert stat.S_IMODE((dot_ssh / "known_hosts").stat().st_mode) == 0o600


def test_authentication_failure_names_user_and_key(sshd: SshServer, known_hosts: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_key"
    generate_ed25519(wrong)
    with pytest.raises(RemoteError) as info:
        SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known_hosts, key_filename=str(wrong))))  # type: ignore[arg-type]
    line = info.value.one_line()
    assert "\n" not in line
    assert f"authentication failed for user '{sshd.user}'" in line and str(wrong) in line
    assert "authorized_keys" in line
    secret = wrong.read_text()
    assert "PRIVATE KEY" not in line and not any(chunk in line for chunk in secret.split() if len(chunk) > 20)


def test_missing_key_file(sshd: SshServer, known_hosts: Path, tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="does not exist"):
        ConnectionSpec(**sshd.connect_kwargs(known_hosts, key_filename=str(tmp_path / "nope"))).resolve()  # type: ignore[arg-type]


def test_a_key_file_that_is_no_private_key_is_named(sshd: SshServer, known_hosts: Path, tmp_path: Path) -> None:
    """``--key client.pub`` (a common slip) said "SSH connection … failed: not a valid OPENSSH private key file —
    check the device's sshd log": the device was blamed for a local file."""
    pub = tmp_path / "k.pub"
    pub.write_text(generate_ed25519(tmp_path / "k", "x"))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    for path, says in ((pub, "(a public key)"), (text, "")):
        with pytest.raises(RemoteError) as info:
            SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known_hosts, key_filename=str(path))))  # type: ignore[arg-type]
        line = info.value.one_line()
        assert f"SSH key file {path} is not a private key paramiko can read" in line, line
        assert says in line and "sshd log" not in line and "the one without .pub" in line


# ------------------------------------------------------------------------------------------------------------
# content-addressed push
# ------------------------------------------------------------------------------------------------------------
def test_push_dedupe_second_push_sends_nothing(ssh: SSHTransport, spec: ConnectionSpec, cache_dir: str, tmp_path: Path) -> None:
    src = _blob(tmp_path, 300_000)
    digest = sha256_file(src)
    session = DeviceSession(ssh, cache_dir=cache_dir)
    remote = session.ensure_file(src, digest)
    assert remote == f"{cache_dir}/blobs/{digest}/model.tflite"
    assert session.last_sent == 300_000
    assert session.remote_sha256(remote) == digest
    assert session.ensure_file(src, digest) == remote
    assert session.last_sent == 0 and session.bytes_sent == 300_000
    with SSHTransport(spec) as again:  # a later run, new connection
        later = DeviceSession(again, cache_dir=cache_dir)
        assert later.ensure_file(src) == remote and later.bytes_sent == 0 and again.bytes_sent == 0


def test_default_cache_dir_is_under_home(ssh: SSHTransport, tmp_path: Path) -> None:
    session = DeviceSession(ssh)
    assert session.cache_dir == f"{ssh.home()}/.cache/edgeopt"
    src = _blob(tmp_path, 10, name="tiny.bin")
    assert session.ensure_file(src).startswith(f"{ssh.home()}/.cache/edgeopt/blobs/")


@pytest.mark.parametrize("how", ["transport closed", "socket dies", "server drops"])
def test_connection_dropped_mid_upload_then_next_push_resumes(how: str, sshd_factory, tmp_path: Path) -> None:
    sshd = sshd_factory("drop")  # its own server: drop_connections() must not hit other tests' sessions
    spec = ConnectionSpec(**sshd.connect_kwargs())  # type: ignore[arg-type]
    cache_dir = str(sshd.home / "cache" / how.replace(" ", "-"))
    size = 4 * 1024 * 1024
    src = _blob(tmp_path, size)
    digest = sha256_file(src)
    final = f"{cache_dir}/blobs/{digest}/model.tflite"
    transport = SSHTransport(spec)
    session = DeviceSession(transport, cache_dir=cache_dir)

    def cut(done: int, total: int) -> None:
        if done >= total // 2:
            if how == "transport closed":
                transport.close()
            elif how == "socket dies":
                transport.client.get_transport().sock.close()  # the link dies under the SFTP stream
            else:
                sshd.drop_connections()  # sshd's side of the connection is SIGKILLed
                time.sleep(0.2)

    with pytest.raises(RemoteError, match="lost while"):
        session.ensure_file(src, digest, progress=cut)
    transport.close()
    assert not Path(final).exists()  # never a file at the final name
    partial = Path(session.part_path(str(Path(final).parent), "model.tflite"))  # this session's own part file
    assert partial.exists() and partial.stat().st_size < size

    with SSHTransport(spec) as again:  # the same upload, continued over a new connection
        retry = DeviceSession(again, cache_dir=cache_dir, upload_id=session.upload_id)
        assert retry.ensure_file(src, digest) == final
        assert 0 < retry.last_sent < size  # resumed, not restarted
        assert retry.remote_sha256(final) == digest
    assert Path(final).read_bytes() == src.read_bytes() and not partial.exists()


def test_a_killed_run_s_partial_upload_is_resumed_by_the_next_run(ssh: SSHTransport, cache_dir: str,
                                                                   tmp_path: Path) -> None:
    """A run killed mid-upload left ``.model.tflite.<id>.part`` on the device: the next run (a new session, another
    upload id) sent everything again and the part stayed forever. Now a part untouched for a minute is adopted
    (the upload resumes from it) and other stale ones are removed; one still being written is left alone."""
    src = _blob(tmp_path, 400_000)
    digest = sha256_file(src)
    directory = Path(cache_dir) / "blobs" / digest
    directory.mkdir(parents=True, mode=0o700)
    old = time.time() - 3600
    stale_big, stale_small = directory / ".model.tflite.deadbeef01.part", directory / ".model.tflite.deadbeef02.part"
    stale_big.write_bytes(src.read_bytes()[:300_000])
    stale_small.write_bytes(src.read_bytes()[:1000])
    live = directory / ".model.tflite.cafe.part"  # another session writing right now
    live.write_bytes(b"x" * 10)
    for path in (stale_big, stale_small):
        os.utime(path, (old, old))
    session = DeviceSession(ssh, cache_dir=cache_dir, python=sys.executable)
    assert session.ensure_file(src, digest) == str(directory / "model.tflite")
    assert session.last_sent == 100_000  # resumed from the 300,000 bytes the killed run had sent
    assert (directory / "model.tflite").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in directory.iterdir()) == [".model.tflite.cafe.part", "model.tflite"]


def test_a_full_device_disk_is_named_not_called_a_corrupt_upload(ssh: SSHTransport, tmp_path: Path) -> None:
    """A 600 KiB file system as the device's cache: SFTP's pipelined writes swallow ENOSPC, and the upload was
    reported as "corrupt: sha256 on the device … is not …"."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(small)], check=True)
    try:
        src = _blob(tmp_path, 2_000_000)
        session = DeviceSession(ssh, cache_dir=str(small / "cache"), python=sys.executable)
        with pytest.raises(RemoteError) as info:
            session.ensure_file(src)
        line = info.value.one_line()
        assert "the device's file system is full" in line and "the file needs 2,000,000" in line, line
        assert "free space on the device" in line
        assert not [p for p in small.rglob("*") if p.is_file()]  # the partial upload removed
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_corrupt_remote_copy_is_detected_and_repushed(ssh: SSHTransport, cache_dir: str, tmp_path: Path) -> None:
    src = _blob(tmp_path, 200_000)
    session = DeviceSession(ssh, cache_dir=cache_dir)
    remote = session.ensure_file(src)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\0" * 200_000)  # same size: only the hash can tell
    ssh.put(garbage, remote)
    assert session.ensure_file(src) == remote
    assert session.last_sent == 200_000
    assert Path(remote).read_bytes() == src.read_bytes()
    truncated = tmp_path / "short"
    truncated.write_bytes(b"x")
    ssh.put(truncated, remote)
    assert session.ensure_file(src) == remote and session.last_sent == 200_000
    assert session.remote_sha256(remote) == sha256_file(src)


def test_corrupt_partial_upload_restarts_from_zero(ssh: SSHTransport, cache_dir: str, tmp_path: Path) -> None:
    src = _blob(tmp_path, 100_000)
    digest = sha256_file(src)
    directory = f"{cache_dir}/blobs/{digest}"
    ssh.mkdir(directory)
    junk = tmp_path / "junk"
    junk.write_bytes(b"J" * 50_000)  # a .part whose bytes are wrong
    session = DeviceSession(ssh, cache_dir=cache_dir)
    ssh.put(junk, session.part_path(directory, "model.tflite"))
    assert session.ensure_file(src, digest) == f"{directory}/model.tflite"
    assert session.last_sent == 50_000 + 100_000  # tried resuming, hash failed, started over
    assert session.remote_sha256(f"{directory}/model.tflite") == digest


def test_concurrent_pushes_of_one_blob_never_share_a_part_file(spec: ConnectionSpec, cache_dir: str,
                                                               tmp_path: Path) -> None:
    """Two runs pushing the same blob to the same device at once: each uploads to its own part file, both
    succeed, the file is right (they used to share `.model.tflite.part` and corrupt each other)."""
    import threading

    src = _blob(tmp_path, 3 * 1024 * 1024)
    digest = sha256_file(src)
    outcomes: list[object] = []
    started = threading.Barrier(2)

    def push() -> None:
        with SSHTransport(spec) as t:
            session = DeviceSession(t, cache_dir=cache_dir)
            started.wait()
            try:
                outcomes.append(session.ensure_file(src, digest))
            except Exception as exc:  # noqa: BLE001 - the assertion below shows it
                outcomes.append(exc)

    threads = [threading.Thread(target=push) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    final = f"{cache_dir}/blobs/{digest}/model.tflite"
    assert outcomes == [final, final]
    assert Path(final).read_bytes() == src.read_bytes()
    assert [p.name for p in Path(final).parent.iterdir()] == ["model.tflite"]  # no part file left behind


def test_sha256sum_fallback_and_python_path(ssh: SSHTransport, tmp_path: Path) -> None:
    src = _blob(tmp_path, 1000)
    remote = f"{ssh.home()}/hashme"
    ssh.put(src, remote)
    fallback = DeviceSession(ssh, python="/nonexistent/python3")
    assert fallback.remote_sha256(remote) == sha256_file(src)
    assert fallback.hasher == "sha256sum"
    assert fallback.remote_sha256(remote + ".missing") is None
    explicit = DeviceSession(ssh, python="/usr/bin/python3")
    assert explicit.remote_sha256(remote) == sha256_file(src) and explicit.hasher == "python"
    assert explicit.remote_sha256(remote + ".missing") is None


# ------------------------------------------------------------------------------------------------------------
# run_json
# ------------------------------------------------------------------------------------------------------------
def test_run_json_ok_error_killed_timeout(ssh: SSHTransport) -> None:
    session = DeviceSession(ssh)
    py = "/usr/bin/python3"
    assert session.run_json([py, "-c", "import json; print(json.dumps({'p50_ms': 1.5}))"], timeout=20) == {"p50_ms": 1.5}
    code = (
        "import json, sys; print(json.dumps({'error': {'type': 'RuntimeMissing', 'message': 'no TFLite runtime',"
        " 'hint': 'pip install ai-edge-litert'}})); sys.exit(4)"
    )
    with pytest.raises(AgentFailed) as info:
        session.run_json([py, "-c", code], timeout=20)
    assert info.value.one_line().endswith("RuntimeMissing: no TFLite runtime — pip install ai-edge-litert")
    assert info.value.status == 4 and info.value.payload["type"] == "RuntimeMissing"
    with pytest.raises(AgentFailed, match="killed by SIGKILL"):
        session.run_json(["sh", "-c", "kill -9 $$"], timeout=20)
    with pytest.raises(AgentFailed, match="no valid JSON"):
        session.run_json(["echo", "{not json"], timeout=20)
    with pytest.raises(AgentFailed, match="exited with status 3: boom"):
        session.run_json(["sh", "-c", "echo boom >&2; exit 3"], timeout=20)
    with pytest.raises(RemoteError, match="timed out after 0.5 s"):
        session.run_json(["sleep", "10"], timeout=0.5)


def test_a_link_lost_mid_command_is_a_lost_connection_not_a_killed_agent(sshd_factory, tmp_path: Path) -> None:
    """sshd's side SIGKILLed while the agent runs: paramiko reports exit status -1, which read as "python on … was
    killed by a signal — INFO: Created TensorFlow Lite XNNPACK delegate for CPU." (an agent error)."""
    sshd = sshd_factory("midrun")
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line + "\n")
    with SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known))) as transport:  # type: ignore[arg-type]
        session = DeviceSession(transport)
        timer = threading.Timer(1.0, sshd.drop_connections)
        timer.start()
        try:
            with pytest.raises(RemoteError) as info:
                session.run_json(["sh", "-c", "echo 'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.' >&2; "
                                  "sleep 20"], timeout=30)
        finally:
            timer.cancel()
    assert not isinstance(info.value, AgentFailed), info.value.one_line()
    assert "lost while running 'sh'" in info.value.one_line() and "XNNPACK" not in info.value.one_line()


def test_runtime_start_up_chatter_is_not_the_error_line() -> None:
    result = Result(1, b"", b"boom: no such op\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert result.last_error_line() == "boom: no such op"


# ------------------------------------------------------------------------------------------------------------
# a small lab
# ------------------------------------------------------------------------------------------------------------
def test_several_independent_servers(sshd_factory, tmp_path: Path) -> None:
    a, b = sshd_factory("lab-a"), sshd_factory("lab-b")
    assert len({a.port, b.port}) == 2 and a.host_pubkey != b.host_pubkey and a.home != b.home
    with SSHTransport(ConnectionSpec(**a.connect_kwargs())) as ta, SSHTransport(ConnectionSpec(**b.connect_kwargs())) as tb:  # type: ignore[arg-type]
        assert ta.home() == str(a.home) and tb.home() == str(b.home)
        src = _blob(tmp_path, 1000)
        remote = DeviceSession(ta).ensure_file(src)
        assert ta.exists(remote) and not tb.exists(remote.replace(str(a.home), str(b.home)))
    # a's known_hosts does not vouch for b
    with pytest.raises(HostKeyError, match="unknown"):
        SSHTransport(ConnectionSpec(**b.connect_kwargs(a.root / "known_hosts")))  # type: ignore[arg-type]
    a.stop()
    assert not a.running and b.running


# ------------------------------------------------------------------------------------------------------------
# ~/.ssh/config: precedence, Include, ProxyJump; known_hosts: several files, @cert-authority, @revoked
# ------------------------------------------------------------------------------------------------------------
def _home_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME whose ~/.ssh is empty (nothing from the real ~/.ssh)."""
    dot_ssh = tmp_path / "home" / ".ssh"
    dot_ssh.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return dot_ssh


def _whoami(spec: ConnectionSpec) -> str:
    with SSHTransport(spec) as transport:
        return transport.run(["sh", "-c", 'echo "$(id -un) $SSH_CONNECTION"'], timeout=10).text.strip()


def test_target_defaults_lose_to_the_ssh_config_alias(sshd: SshServer, known_hosts: Path, tmp_path: Path) -> None:
    """A target's YAML user/port/key (default_*) apply only where the alias's config says nothing; explicit
    values still win over the config."""
    config = tmp_path / "ssh_config"
    config.write_text(sshd.ssh_config_block("mypi"))
    wrong_key = tmp_path / "target_key"
    generate_ed25519(wrong_key)
    spec = ConnectionSpec(host="mypi", ssh_config=config, known_hosts=known_hosts, allow_agent=False,
                          connect_timeout=5, default_user="pi", default_port=free_port(),
                          default_key_filename=str(wrong_key))
    resolved = spec.resolve()
    assert (resolved.port, resolved.user, resolved.key_filenames) == (sshd.port, sshd.user, (str(sshd.client_key),))
    who = _whoami(spec)
    assert who.startswith(f"{sshd.user} ") and who.endswith(f" {sshd.port}")
    # the alias says nothing: the target's values apply, before OpenSSH's own defaults
    bare = tmp_path / "bare_config"
    bare.write_text("Host lab\n    HostName 127.0.0.1\n")
    fallback = ConnectionSpec(host="lab", ssh_config=bare, default_user="pi", default_port=2200,
                              default_key_filename=str(wrong_key)).resolve()
    assert (fallback.user, fallback.port, fallback.key_filenames) == ("pi", 2200, (str(wrong_key),))
    explicit = ConnectionSpec(host="mypi", ssh_config=config, user="me", port=2222, default_user="pi").resolve()
    assert (explicit.user, explicit.port) == ("me", 2222)


def test_include_is_followed(sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative Include paths are under ~/.ssh, globs expand sorted, an Include inside a Host block applies only
    to that block's hosts, and the including block continues after it."""
    dot_ssh = _home_ssh(tmp_path, monkeypatch)
    sshd.write_known_hosts(dot_ssh / "known_hosts")
    (dot_ssh / "config.d").mkdir()
    (dot_ssh / "config.d" / "10-pi.conf").write_text(sshd.ssh_config_block("inc-pi"))
    (dot_ssh / "config.d" / "20-other.conf").write_text("Host inc-other\n    HostName 10.9.9.9\n")
    (dot_ssh / "only-for-x.conf").write_text("User from-x\nHost *\n    ConnectTimeout 3\n")
    (dot_ssh / "config").write_text(
        "Include config.d/*.conf\n"
        "Host x-*\n"
        "    Include only-for-x.conf\n"
        "    Port 2022\n"
        "Host *\n"
        "    User fallback\n")
    with SSHTransport(ConnectionSpec(host="inc-pi", allow_agent=False, connect_timeout=5)) as transport:
        assert transport.run(["echo", "included"], timeout=10).stdout == b"included\n"
    assert ConnectionSpec(host="inc-other").resolve().hostname == "10.9.9.9"
    x = ConnectionSpec(host="x-1").resolve()
    assert (x.user, x.port, x.connect_timeout) == ("from-x", 2022, 3.0)  # Include inside Host x-*, then Port
    other = ConnectionSpec(host="y-1").resolve()
    assert (other.user, other.port, other.connect_timeout) == ("fallback", 22, 10.0)  # nothing of x-* leaks
    (dot_ssh / "loop.conf").write_text("Include loop.conf\n")
    (dot_ssh / "config").write_text("Include loop.conf\n")
    with pytest.raises(RemoteError, match="Include nesting"):
        ConnectionSpec(host="any").resolve()


def test_proxy_jump_through_a_second_sshd(sshd: SshServer, sshd_factory, tmp_path: Path) -> None:
    """ProxyJump: the device is reached through a direct-tcpip channel of the jump host, with both host keys
    checked (each unknown one refused, then recorded with accept-new)."""
    jump = sshd_factory("jump")
    config = tmp_path / "ssh_config"
    config.write_text(jump.ssh_config_block("jumpbox") + sshd.ssh_config_block("behind")
                      + "    ProxyJump jumpbox\n")
    known = tmp_path / "known_hosts"
    known.write_text(jump.known_hosts_line + "\n" + sshd.known_hosts_line + "\n")
    spec = ConnectionSpec(host="behind", ssh_config=config, known_hosts=known, allow_agent=False, connect_timeout=5)
    assert spec.resolve().via is not None and spec.resolve().via.alias == "jumpbox"
    accepted = jump.log_text().count("Accepted publickey")
    with SSHTransport(spec) as transport:
        assert "via jumpbox" in transport.description
        assert transport.run(["echo", "behind"], timeout=10).stdout == b"behind\n"
        assert jump.log_text().count("Accepted publickey") == accepted + 1  # the jump host was used
        jump.drop_connections()  # the tunnel is the only link: cutting the jump host cuts the device
        time.sleep(0.3)
        with pytest.raises(RemoteError):
            transport.run(["true"], timeout=5)
    # host keys are checked on both hops
    known.write_text(sshd.known_hosts_line + "\n")
    with pytest.raises(HostKeyError) as info:
        SSHTransport(spec)
    assert "ProxyJump host jumpbox" in info.value.one_line() and jump.host_key_name in info.value.one_line()
    assert "unknown" in info.value.one_line()
    known.write_text(jump.known_hosts_line + "\n")
    with pytest.raises(HostKeyError) as info:
        SSHTransport(spec)
    assert "ProxyJump" not in info.value.message and sshd.host_key_name in info.value.one_line()
    known.write_text("")
    with SSHTransport(dataclasses.replace(spec, accept_new_host_key=True)) as transport:
        assert transport.run(["true"], timeout=10).ok
    assert set(known.read_text().splitlines()) == {jump.known_hosts_line, sshd.known_hosts_line}
    # a changed key on the jump host is refused, even with accept-new
    impostor = generate_ed25519(tmp_path / "impostor", "x").split()
    known.write_text(f"{jump.host_key_name} {impostor[0]} {impostor[1]}\n{sshd.known_hosts_line}\n")
    with pytest.raises(HostKeyError, match="HAS CHANGED"):
        SSHTransport(dataclasses.replace(spec, accept_new_host_key=True))
    # the jump host cannot reach the device: one line naming both
    known.write_text(jump.known_hosts_line + "\n" + sshd.known_hosts_line + "\n")
    dead = free_port()
    config.write_text(config.read_text() + f"Host nowhere\n    HostName 127.0.0.1\n    Port {dead}\n"
                      "    ProxyJump jumpbox\n")
    with pytest.raises(RemoteError) as info:
        SSHTransport(dataclasses.replace(spec, host="nowhere"))
    line = info.value.one_line()
    assert "ProxyJump host jumpbox" in line and f"could not connect to 127.0.0.1:{dead}" in line and "\n" not in line


def test_proxy_jump_forms_and_errors(sshd: SshServer, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host chain\n    HostName 10.1.1.1\n    ProxyJump me@hop1:2201,ssh://hop2,[fe80::1]:2203\n"
                      "Host hop1\n    HostName 10.0.0.1\n    User nobody\n    ProxyJump hop0\n"
                      "Host hop2\n    ProxyJump ignored\n"
                      "Host bad\n    ProxyJump user@@x:1:2\n"
                      "Host both\n    ProxyJump hop1\n    ProxyCommand nc %h %p\n"
                      "Host loop-a\n    ProxyJump loop-b\nHost loop-b\n    ProxyJump loop-a\n")
    chain = ConnectionSpec(host="chain", ssh_config=config).resolve()
    hops = []
    via = chain.via
    while via is not None:
        hops.append((via.alias, via.hostname, via.user, via.port))
        via = via.via
    assert [h[0] for h in hops] == ["fe80::1", "hop2", "hop1", "hop0"]  # last hop first; hop1's own ProxyJump
    assert hops[2][1:] == ("10.0.0.1", "me", 2201) and hops[0][3] == 2203
    with pytest.raises(RemoteError, match=r"ProxyJump for host bad .*more than one '@'"):
        ConnectionSpec(host="bad", ssh_config=config).resolve()
    with pytest.raises(RemoteError, match="both ProxyCommand and ProxyJump"):
        ConnectionSpec(host="both", ssh_config=config).resolve()
    with pytest.raises(RemoteError, match="a loop"):
        ConnectionSpec(host="loop-a", ssh_config=config).resolve()


def test_every_user_known_hosts_file_is_read(sshd: SshServer, tmp_path: Path) -> None:
    first, second = tmp_path / "first_known_hosts", tmp_path / "second_known_hosts"
    first.write_text("")
    sshd.write_known_hosts(second)
    config = tmp_path / "ssh_config"
    config.write_text(sshd.ssh_config_block("pi") + f"    UserKnownHostsFile {first} {second}\n")
    spec = ConnectionSpec(host="pi", ssh_config=config, allow_agent=False, connect_timeout=5)
    assert spec.resolve().known_hosts_files == (first, second)
    with SSHTransport(spec) as transport:  # the key is only in the second file
        assert transport.recorded_host_key is None and transport.run(["true"], timeout=10).ok
    # an unknown key names every file and, once accepted, is recorded in the first (as OpenSSH does)
    second.write_text("")
    with pytest.raises(HostKeyError) as info:
        SSHTransport(spec)
    assert str(first) in info.value.one_line() and str(second) in info.value.one_line()
    with SSHTransport(dataclasses.replace(spec, accept_new_host_key=True)):
        pass
    assert first.read_text() == sshd.known_hosts_line + "\n" and second.read_text() == ""


def test_cert_authority_lines_are_skipped_not_fatal(sshd: SshServer, tmp_path: Path) -> None:
    ca = generate_ed25519(tmp_path / "ca", "ca").split()
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority *.example.com,127.0.0.1 {ca[0]} {ca[1]}\n{sshd.known_hosts_line}\n")
    with SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known))) as transport:  # type: ignore[arg-type]
        assert transport.run(["true"], timeout=10).ok
    # a host trusted only through a CA is unknown (host certificates are not supported), and the error says why
    known.write_text(f"@cert-authority [127.0.0.1]:* {ca[0]} {ca[1]}\n")
    with pytest.raises(HostKeyError) as info:
        SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known)))  # type: ignore[arg-type]
    assert "unknown" in info.value.one_line() and "@cert-authority" in info.value.one_line()


def test_revoked_host_key_is_refused_always(sshd: SshServer, tmp_path: Path) -> None:
    key_type, key_b64 = sshd.host_pubkey.split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"{sshd.known_hosts_line}\n@revoked * {key_type} {key_b64}\n")
    before = known.read_bytes()
    for accept in (False, True):
        with pytest.raises(HostKeyError) as info:
            SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known, accept_new_host_key=accept)))  # type: ignore[arg-type]
        assert "REVOKED" in info.value.one_line() and f"{known} line 2" in info.value.one_line()
        assert _server_fingerprint(sshd) in info.value.one_line()
    known.write_text(f"@revoked * {key_type} {key_b64}\n")  # only revoked: accept-new must not record it
    with pytest.raises(HostKeyError, match="REVOKED"):
        SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known, accept_new_host_key=True)))  # type: ignore[arg-type]
    assert known.read_text() == f"@revoked * {key_type} {key_b64}\n"
    known.write_text(f"{sshd.known_hosts_line}\n@revoked * ssh-ed25519 not*base64\n")  # unreadable: loud
    with pytest.raises(HostKeyError, match="@revoked"):
        SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known)))  # type: ignore[arg-type]
    assert before  # the first file was never rewritten


def test_known_hosts_wildcards_and_hashed_names(sshd: SshServer, tmp_path: Path) -> None:
    import paramiko

    key_type, key_b64 = sshd.host_pubkey.split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.*]:{sshd.port} {key_type} {key_b64}\n")
    with SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known))):  # type: ignore[arg-type]
        pass
    known.write_text(f"[127.0.0.*]:{sshd.port},![127.0.0.1]:{sshd.port} {key_type} {key_b64}\n")
    with pytest.raises(HostKeyError, match="unknown"):  # negated
        SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known)))  # type: ignore[arg-type]
    hashed = paramiko.HostKeys.hash_host(sshd.host_key_name)
    known.write_text(f"{hashed} {key_type} {key_b64}\n")
    with SSHTransport(ConnectionSpec(**sshd.connect_kwargs(known))):  # type: ignore[arg-type]
        pass
