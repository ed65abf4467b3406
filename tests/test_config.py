"""Targets and profiles: every shipped file validates; errors name file, field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeopt.config import (
    Target,
    apply_connection_overrides,
    available,
    list_profiles,
    list_targets,
    load_model_file,
    load_profile,
    load_target,
)
from edgeopt.errors import ConfigError

REQUIRED_TARGETS = {"local", "rpi4", "rpi5", "android-arm64", "cortex-m7"}
REQUIRED_PROFILES = {"fp32", "fp16", "dynamic", "int8", "int8-float-io"}


def test_shipped_targets_and_profiles_validate() -> None:
    targets = {t.name: t for t in list_targets()}
    profiles = {p.name: p for p in list_profiles()}
    assert REQUIRED_TARGETS <= set(targets)
    assert REQUIRED_PROFILES <= set(profiles)
    assert targets["cortex-m7"].static_batch and targets["cortex-m7"].formats == ["tflite"]
    assert targets["cortex-m7"].memory.flash_bytes and targets["cortex-m7"].memory.ram_bytes
    assert targets["rpi4"].transport == "ssh" and targets["rpi4"].machine == "aarch64"
    assert targets["local"].transport == "local"
    int8 = profiles["int8"]
    assert int8.tflite.inference_input_type == "int8" and int8.tflite.require_full_integer
    assert int8.onnx.quantization == "static" and int8.onnx.calibrate_method in ("MinMax", "Entropy", "Percentile")
    assert profiles["int8-float-io"].tflite.inference_input_type == "float32"
    assert profiles["dynamic"].onnx.quantization == "dynamic" and not profiles["dynamic"].needs_calibration
    assert profiles["fp16"].tflite.supported_types == ["float16"]
    assert profiles["fp32"].onnx.quantization == "none"


def test_unknown_names_suggest_the_closest() -> None:
    with pytest.raises(ConfigError) as e:
        load_target("rpi6")
    assert "unknown target 'rpi6'" in e.value.one_line()
    assert "did you mean 'rpi" in e.value.one_line()
    with pytest.raises(ConfigError) as e:
        load_profile("int9")
    assert "did you mean 'int8'" in e.value.one_line()


def test_typo_field_names_file_field_and_suggestion(tmp_path: Path) -> None:
    f = tmp_path / "mypi.yaml"
    f.write_text("arch: aarch64\nformats: [tflite]\nruntimes: [litert]\nthreds: 4\n")
    with pytest.raises(ConfigError) as e:
        load_model_file(f, Target)
    line = e.value.one_line()
    assert str(f) in line and "threds: unknown field" in line and "did you mean 'threads'" in line


def test_nested_typo_and_bad_literal(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("onnx:\n  calibrate_methd: MinMax\n")
    with pytest.raises(ConfigError) as e:
        load_profile(str(f))
    assert "onnx.calibrate_methd: unknown field" in e.value.one_line()
    assert "calibrate_method" in e.value.one_line()
    f.write_text("onnx:\n  calibrate_method: Average\n")
    with pytest.raises(ConfigError) as e:
        load_profile(str(f))
    assert "onnx.calibrate_method" in e.value.one_line() and "'MinMax'" in e.value.one_line()


def test_invalid_yaml_and_inconsistent_profile(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("arch: [aarch64\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_model_file(f, Target)
    f.write_text("tflite:\n  inference_input_type: int8\n")
    with pytest.raises(ConfigError, match="representative_dataset"):
        load_profile(str(f))


def test_connection_overrides() -> None:
    t = apply_connection_overrides(load_target("rpi4"), host="alice@10.1.2.3:2222", key="/k/id_ed25519")
    assert (t.connection.user, t.connection.host, t.connection.port, t.connection.key) == (
        "alice", "10.1.2.3", 2222, "/k/id_ed25519")
    t = apply_connection_overrides(load_target("rpi4"), host="lab-pi", port=2200)
    assert (t.connection.user, t.connection.host, t.connection.port) == ("pi", "lab-pi", 2200)
    with pytest.raises(ConfigError, match="port"):
        apply_connection_overrides(load_target("rpi4"), host="pi@h:ssh")


def test_user_config_dir_overrides_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "rpi4.yaml").write_text(
        "arch: aarch64\nformats: [tflite]\nruntimes: [litert]\nthreads: 2\n")
    monkeypatch.setenv("EDGEOPT_CONFIG_DIR", str(tmp_path))
    assert available("targets")["rpi4"].parent == tmp_path / "targets"
    assert load_target("rpi4").threads == 2


@pytest.mark.parametrize("address", ["user@@host:port:x", "a@b@c", "host:", "host:0", "host:65536", "host:22:x",
                                     "h:+22", "::1", "[::1", "[not-v6]:22", "[::1]x", "-oProxyCommand=x", "",
                                     "@host", "host name", "pi@", "h:٢٢"])
def test_connection_overrides_parse_addresses_strictly(address: str) -> None:
    with pytest.raises(ConfigError) as e:
        apply_connection_overrides(load_target("rpi4"), host=address)
    line = e.value.one_line()
    assert line.startswith(f"--host {address!r}") and "expected [user@]host[:port]" in line and "\n" not in line


@pytest.mark.parametrize("address", ["root:hunter2@127.0.0.1:42222", "pi:p@ss@host", "pi:s3cret:x@h"])
def test_a_password_in_the_address_is_refused_and_never_echoed(address: str) -> None:
    with pytest.raises(ConfigError) as e:
        apply_connection_overrides(load_target("rpi4"), host=address)
    line = e.value.one_line()
    secret = address.rpartition("@")[0].split(":", 1)[1]
    assert "a password in the address" in line and secret not in line and ":***@" in line and "ssh-agent" in line


def test_connection_overrides_accept_every_valid_form() -> None:
    rpi4 = load_target("rpi4")
    for address, expected in [("pi@10.0.0.7:2222", ("pi", "10.0.0.7", 2222)), ("[fe80::1]:22", ("pi", "fe80::1", 22)),
                              ("me@[::1]", ("me", "::1", 22)), ("my_pi", ("pi", "my_pi", 22)),
                              ("pi.local:65535", ("pi", "pi.local", 65535))]:
        conn = apply_connection_overrides(rpi4, host=address).connection
        assert (conn.user, conn.host, conn.port) == expected, address
    with pytest.raises(ConfigError, match="says user alice, but user bob"):
        apply_connection_overrides(rpi4, host="alice@h", user="bob")
    with pytest.raises(ConfigError, match="says port 2222, but port 22"):
        apply_connection_overrides(rpi4, host="h:2222", port=22)
    assert apply_connection_overrides(rpi4, host="alice@h:2222", user="alice", port=2222).connection.port == 2222


def test_connection_endpoint_keeps_the_target_values_below_the_ssh_config() -> None:
    """The command line is explicit; the target's YAML user/port/key are only defaults (``~/.ssh/config`` sits
    between them, see tests/test_remote_ssh.py)."""
    from edgeopt.config.target import connection_endpoint

    rpi4 = load_target("rpi4")
    end = connection_endpoint(rpi4, host="mypi")
    assert (end.host, end.user, end.port, end.key) == ("mypi", None, None, None)
    assert (end.default_user, end.default_port) == ("pi", 22)
    end = connection_endpoint(rpi4, host="me@mypi:2200", key="/k")
    assert (end.user, end.port, end.key) == ("me", 2200, "/k")
    assert connection_endpoint(rpi4).host == rpi4.connection.host and connection_endpoint(rpi4).user is None
    with pytest.raises(ConfigError, match=r"^lab.yaml: devices.a.host 'x@@y'"):
        connection_endpoint(rpi4, host="x@@y", what="lab.yaml: devices.a.host")


# -- issue 12: bad YAML is one line naming the file and the field, never a traceback ----------------------------------
def test_non_utf8_and_unparseable_yaml_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "mypi.yaml"
    f.write_bytes(b"arch: aarch64\nformats: [tflite]\ndescription: caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        load_target(str(f))
    assert f"{f} line 3: not UTF-8 text (byte 0xe9" in e.value.one_line() and "save the file as UTF-8" in e.value.hint
    for text in ("arch: aarch64\ndescription: 2001-13-01\n", "threads: !!float abc\n", "arch: " + "[" * 3000):
        f.write_text(text)
        with pytest.raises(ConfigError, match=f"{f}.*invalid YAML"):
            load_model_file(f, Target)
    f.write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_model_file(f, Target)
    f.write_text("arch: aarch64\ndescription: " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="too large for a config file"):
        load_model_file(f, Target)


def test_nan_inf_and_huge_values_are_refused_naming_the_field(tmp_path: Path) -> None:
    from edgeopt.config.lab import Lab

    base = "arch: aarch64\nformats: [tflite]\nruntimes: [litert]\n"
    f = tmp_path / "t.yaml"
    for extra, field in (("threads: .nan\n", "threads"), ("memory: {ram_bytes: .inf}\n", "memory.ram_bytes"),
                         ("threads: 1000000000\n", "threads")):
        f.write_text(base + extra)
        with pytest.raises(ConfigError) as e:
            load_model_file(f, Target)
        assert f"{f}: {field}:" in e.value.one_line()
    p = tmp_path / "p.yaml"
    for text, field in (("distill: {width_multiplier: 0.5, temperature: .inf}\n", "distill.temperature"),
                        ("calibration: {samples: 100000000000}\n", "calibration.samples"),
                        ("prune: {sparsity: 0.5, batch_size: 1000000000000}\n", "prune.batch_size"),
                        ("seed: 99999999999999\n", "seed")):
        p.write_text(text)
        with pytest.raises(ConfigError, match=f"{p}: {field}:"):
            load_profile(str(p))
    lab = tmp_path / "lab.yaml"
    for text, field in (("gates:\n  latency: {bootstrap: 1000000000000}\n", "gates.latency.bootstrap"),
                        ("bench: {runs: 100000000000}\n", "bench.runs"), ("bench: {timeout: .inf}\n", "bench.timeout")):
        lab.write_text("devices: [{name: a, target: local}]\n" + text)
        with pytest.raises(ConfigError, match=f"{lab}: {field}:"):
            load_model_file(lab, Lab)


def test_many_errors_stay_one_short_line(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("arch: aarch64\nformats: [tflite]\nruntimes: [litert]\n" + "".join(f"k{i}: {i}\n" for i in range(50))
                 + "? " + "x" * 5000 + "\n: 1\n")
    with pytest.raises(ConfigError) as e:
        load_model_file(f, Target)
    line = e.value.one_line()
    assert "k0: unknown field" in line and "and 47 more" in line and len(line) < 600


def test_config_dir_pointing_at_junk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEOPT_CONFIG_DIR", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=f"EDGEOPT_CONFIG_DIR={tmp_path / 'nope'}: not a directory"):
        load_target("local")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "profiles").write_text("x")
    monkeypatch.setenv("EDGEOPT_CONFIG_DIR", str(tmp_path / "cfg"))
    with pytest.raises(ConfigError, match="profiles is not a directory"):
        load_profile("fp32")
    assert load_target("local").name == "local"  # targets/ absent: the shipped ones
