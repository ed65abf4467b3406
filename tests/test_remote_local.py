"""LocalTransport, argv quoting and DeviceSession on the local target (no sshd needed)."""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import pytest

from edgeopt.artifacts import sha256_file
from edgeopt.errors import AgentError, AgentFailed, RemoteError
from edgeopt.remote import DeviceSession, LocalTransport, Result, Transport, quote_argv

WEIRD = "a b'c\"d;touch INJECTED;$(touch INJECTED2)"


def test_quote_argv_round_trips_through_a_shell() -> None:
    argv = ["printf", "%s\n", WEIRD, "$HOME", "", "*"]
    line = quote_argv(argv)
    assert shlex.split(line) == argv
    with pytest.raises(TypeError):
        quote_argv("echo hi")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        quote_argv([])


def test_local_run_put_get(tmp_path: Path) -> None:
    t = LocalTransport(home=tmp_path)
    assert isinstance(t, Transport)
    assert t.run([sys.executable, "-c", "import sys; print('o'); print('e', file=sys.stderr); sys.exit(5)"], timeout=30) == Result(5, b"o\n", b"e\n")
    assert t.run(["cat"], timeout=10, stdin=b"abc").stdout == b"abc"
    assert t.run(["/nonexistent/binary"], timeout=10).exit_code == 127
    src = tmp_path / "src.bin"
    src.write_bytes(b"0123456789")
    t.mkdir(f"{t.home()}/d/e")
    seen: list[tuple[int, int]] = []
    assert t.put(src, f"{t.home()}/d/e/f", progress=lambda d, n: seen.append((d, n))) == 10
    assert seen[-1] == (10, 10)
    t.get(f"{t.home()}/d/e/f", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b"0123456789"
    with pytest.raises(RemoteError):
        t.get(f"{t.home()}/nope", tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_local_timeout_kills_process_group(tmp_path: Path) -> None:
    t = LocalTransport(home=tmp_path)
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(RemoteError, match="timed out after 0.5 s"):
        t.run(["sh", "-c", f"sleep 30 & echo $! > '{pidfile}'; wait"], timeout=0.5)
    assert time.monotonic() - started < 5
    child = int(pidfile.read_text())
    time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split(")")[1][:3]


def test_local_no_shell_injection(tmp_path: Path) -> None:
    t = LocalTransport(home=tmp_path)
    assert t.run(["touch", str(tmp_path / WEIRD)], timeout=10, stdin=None).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIRD]


def test_session_dedupe_and_resume_on_local(tmp_path: Path) -> None:
    home = tmp_path / "device"
    home.mkdir()
    t = LocalTransport(home=home)
    session = DeviceSession(t, python=sys.executable)
    src = tmp_path / "model.onnx"
    src.write_bytes(bytes(range(256)) * 1000)
    digest = sha256_file(src)
    remote = session.ensure_file(src, digest)
    assert remote == f"{home}/.cache/edgeopt/blobs/{digest}/model.onnx"
    assert session.last_sent == 256_000
    assert session.ensure_file(src, digest) == remote and session.last_sent == 0
    # a half-done upload of this session (its upload_id names the part file) is resumed
    Path(remote).unlink()
    part = Path(session.part_path(str(Path(remote).parent), "model.onnx"))
    assert part.name == f".model.onnx.{session.upload_id}.part"
    part.write_bytes(src.read_bytes()[:100_000])
    assert session.ensure_file(src) == remote and session.last_sent == 156_000
    assert Path(remote).read_bytes() == src.read_bytes() and not part.exists()
    # … and by a later session that takes over its upload_id (after a dropped connection)
    Path(remote).unlink()
    part.write_bytes(src.read_bytes()[:50_000])
    later = DeviceSession(t, python=sys.executable, upload_id=session.upload_id)
    assert later.ensure_file(src) == remote and later.last_sent == 206_000
    # a different session never touches another's part file
    Path(remote).unlink()
    part.write_bytes(b"J" * 50_000)
    other = DeviceSession(t, python=sys.executable)
    assert other.upload_id != session.upload_id
    assert other.ensure_file(src) == remote and other.last_sent == 256_000
    assert part.read_bytes() == b"J" * 50_000


def test_cache_is_private_and_a_symlink_or_foreign_dir_is_refused(tmp_path: Path) -> None:
    import os
    import stat

    home = tmp_path / "device"
    home.mkdir()
    t = LocalTransport(home=home)
    src = tmp_path / "model.onnx"
    src.write_bytes(b"m" * 1000)
    remote = Path(DeviceSession(t, python=sys.executable).ensure_file(src))
    cache = home / ".cache" / "edgeopt"
    for d in (cache, cache / "blobs", remote.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert stat.S_IMODE(remote.stat().st_mode) == 0o600
    # an existing, too open cache of ours is tightened
    os.chmod(cache, 0o755)
    DeviceSession(t, python=sys.executable).ensure_file(src)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    # a cache directory that is a symlink (someone else's directory, say) is refused, nothing written there
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "sym").mkdir()
    (home / "sym" / "blobs").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(RemoteError, match=r"unsafe or unusable cache on local: .*/sym/blobs is a symbolic link"):
        DeviceSession(t, python=sys.executable, cache_dir=str(home / "sym")).ensure_file(src)
    assert list(elsewhere.iterdir()) == []
    # a cache directory owned by another user is refused (root can hand one to another user)
    foreign = home / "foreign"
    foreign.mkdir()
    if os.geteuid() == 0:
        os.chown(foreign, 4242, 4242)
        with pytest.raises(RemoteError, match="foreign belongs to another user"):
            DeviceSession(t, python=sys.executable, cache_dir=str(foreign)).ensure_file(src)
        assert list(foreign.iterdir()) == []


def test_session_refuses_a_local_file_that_changed(tmp_path: Path) -> None:
    session = DeviceSession(LocalTransport(home=tmp_path), python=sys.executable)
    src = tmp_path / "m.tflite"
    src.write_bytes(b"new")
    with pytest.raises(AgentError, match="changed since it was built"):
        session.ensure_file(src, hashlib.sha256(b"old").hexdigest())
    with pytest.raises(AgentError, match="invalid sha256"):
        session.ensure_file(src, "../../etc")
    with pytest.raises(AgentError, match="no such file"):
        session.ensure_file(tmp_path / "missing")


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_json_on_local(tmp_path: Path) -> None:
    session = DeviceSession(LocalTransport(home=tmp_path), python=sys.executable)
    assert session.run_json(_py("print('log line'); print('{\"a\": [1, 2]}')"), timeout=30) == {"a": [1, 2]}
    doc = {"error": {"message": "arena too small", "hint": "raise arena_size"}}
    with pytest.raises(AgentFailed) as info:
        session.run_json(_py(f"import sys; print({json.dumps(json.dumps(doc))}); sys.exit(2)"), timeout=30)
    assert info.value.message.endswith("failed: arena too small") and info.value.hint == "raise arena_size"
    assert info.value.exit_code == 3  # the CLI's exit code is AgentError's, not the command's
    with pytest.raises(AgentFailed, match="killed by SIGKILL — out of memory"):
        session.run_json(_py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), timeout=30)
    with pytest.raises(AgentFailed, match="empty stdout"):
        session.run_json(["true"], timeout=30)
    with pytest.raises(AgentFailed, match="not found"):
        session.run_json(["/nonexistent/python3", "agent.pyz"], timeout=30)
    with pytest.raises(RemoteError, match="timed out"):
        session.run_json(["sleep", "5"], timeout=0.3)
