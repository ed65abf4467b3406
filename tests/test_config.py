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
