"""Plan a device before anything runs: its target, transport, Python, SSH connection and the jobs (built
artifacts, found through their manifests, or ready model files, each checked to load). Every missing-artifact,
bad-model or option error surfaces here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from edgeopt.analyze.check import check_model_file
from edgeopt.artifacts import MANIFEST_FILE, Manifest, sha256_file
from edgeopt.bench.options import MODEL_SUFFIXES, BenchOptions, DevicePlan, Job, split_values
from edgeopt.config import Target, apply_connection_overrides, load_target
from edgeopt.config.target import connection_endpoint
from edgeopt.errors import ArtifactMissing, ConfigError


def build_command(target: str, profiles: Sequence[str] | None = None) -> str:
    cmd = f"edgeopt build --target {target}"
    if profiles:
        cmd += f" --profile {','.join(profiles)}"
    return cmd


def find_artifacts(target: Target, root: Path, profiles: list[str] | None, formats: list[str] | None) -> list[Job]:
    """The jobs for the artifacts built for ``target`` under ``root/<target>/<profile>/manifest.json``."""
    base = Path(root) / target.name
    if profiles:
        names = profiles
    else:
        names = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if base.is_dir() else []
        names = [n for n in names if Manifest.exists(base / n)]
        if not names:
            raise ArtifactMissing(f"nothing built for target {target.name} under {base}",
                                  f"run `{build_command(target.name)}` first (or pass --artifacts DIR)")
    jobs: list[Job] = []
    for name in names:
        directory = base / name
        manifest_path = directory / MANIFEST_FILE
        if not Manifest.exists(directory):
            state = "incomplete (no manifest.json)" if directory.is_dir() else "not built"
            raise ArtifactMissing(f"profile {name} for target {target.name} is {state}: {directory}",
                                  f"run `{build_command(target.name, [name])}` first")
        try:
            manifest = Manifest.read(directory)
        except (OSError, ValueError) as exc:
            raise ArtifactMissing(f"cannot read {manifest_path}: {exc}",
                                  f"rebuild it: `{build_command(target.name, [name])}`") from exc
        reference = None
        reference_sha = None
        ref = manifest.reference
        if ref is not None:
            reference = directory / ref["file"]
            reference_sha = ref.get("sha256")
            if not reference.is_file():
                raise ArtifactMissing(f"{reference} is missing (listed in {manifest_path})",
                                      f"rebuild it: `{build_command(target.name, [name])}`")
        found = 0
        for art in manifest.artifacts:
            if formats and art.get("format") not in formats or art.get("format") not in target.formats:
                continue
            model = directory / art["file"]
            if not model.is_file():
                raise ArtifactMissing(f"{model} is missing (listed in {manifest_path})",
                                      f"rebuild it: `{build_command(target.name, [name])}`")
            jobs.append(Job(target=target.name, profile=manifest.get("profile", name), format=art["format"],
                            model=model, sha256=art["sha256"], bytes=int(art.get("bytes") or model.stat().st_size),
                            reference=reference, reference_sha256=reference_sha, manifest_path=manifest_path,
                            manifest_target=manifest.get("target"), runtime_hint=art.get("runtime"),
                            metrics=art.get("metrics"), build_key=manifest.get("build_key")))
            found += 1
        if not found:
            usable = [f for f in target.formats if not formats or f in formats]
            raise ArtifactMissing(
                f"profile {name} for target {target.name} has no {' or '.join(usable) or 'usable'} artifact "
                f"({directory}; the target takes {', '.join(target.formats)})",
                f"check --format, or rebuild: `{build_command(target.name, [name])}`")
    return jobs


def model_jobs(target: Target, models: list[Path]) -> list[Job]:
    """Jobs for ready model files given on the command line (random inputs: no reference)."""
    jobs = []
    for model in models:
        model = Path(model)
        if not model.is_file():
            what = "is not a regular file" if model.exists() else "does not exist"
            raise ArtifactMissing(f"model file {model} {what}", "give the path of a .tflite or .onnx file")
        fmt = MODEL_SUFFIXES.get(model.suffix.lower())
        if fmt is None:
            raise ConfigError(f"{model}: cannot benchmark a {model.suffix or 'file without extension'}",
                              "give a ready .tflite or .onnx file (for other models run `edgeopt build` first)")
        check_model_file(model, fmt)  # a corrupt file fails here, before anything is pushed
        jobs.append(Job(target=target.name, profile=None, format=fmt, model=model.resolve(), sha256=sha256_file(model),
                        bytes=model.stat().st_size))
    return jobs


def is_default_python(target: Target, python_override: str | None) -> bool:
    return python_override is None and target.connection.python == "python3"


def plan_device(name: str, opts: BenchOptions) -> DevicePlan:
    base = load_target(name)
    target = apply_connection_overrides(base, host=opts.host, user=opts.user, port=opts.port, key=opts.key,
                                        python=opts.python)
    if opts.host is not None and base.transport == "local":
        raise ConfigError(f"--host {opts.host!r} names an SSH device, but target {base.name} runs on this machine "
                          "(transport: local)",
                          f"use an ssh target for that device, e.g. --target rpi4 --host {opts.host}, or drop --host")
    if target.transport in ("local", "ssh"):
        kind = target.transport
    elif target.transport == "adb" and opts.host is not None:
        kind = "ssh"  # the phone's address was given: reach it over SSH (e.g. Termux sshd)
    elif target.transport == "adb":
        raise ConfigError(f"target {target.name}: transport adb is not supported by edgeopt bench yet",
                          "reach the phone over SSH (e.g. Termux sshd) with transport: ssh")
    else:
        raise ConfigError(f"target {target.name} has no transport (a microcontroller)",
                          "edgeopt bench runs on devices with an OS; use the TFLM harness for MCUs")
    if kind == "ssh" and not target.connection.host:
        raise ConfigError(f"target {target.name} has no connection.host",
                          f"pass --host user@host:port or set connection.host in {target.source_file}")
    jobs = model_jobs(target, opts.models) if opts.models else find_artifacts(
        target, opts.artifacts, split_values(opts.profiles) or None, split_values(opts.formats) or None)
    python = target.connection.python
    if kind == "local" and is_default_python(target, opts.python):
        python = sys.executable  # this machine: the Python running edgeopt has numpy and the runtimes
    spec = None
    if kind == "ssh":
        from edgeopt.remote.ssh import ConnectionSpec

        # OpenSSH precedence: the command line > ~/.ssh/config (the alias) > the target YAML's defaults
        end = connection_endpoint(base, host=opts.host, user=opts.user, port=opts.port, key=opts.key)
        spec = ConnectionSpec(
            host=end.host or "", user=end.user, port=end.port, key_filename=end.key,
            default_user=end.default_user, default_port=end.default_port, default_key_filename=end.default_key,
            connect_timeout=opts.connect_timeout, command_timeout=opts.timeout,
            accept_new_host_key=opts.accept_new_host_key, known_hosts=opts.known_hosts,
            ssh_config=opts.ssh_config)
    return DevicePlan(target=target, jobs=jobs, transport_kind=kind, python=python, spec=spec)


def open_transport(plan: DevicePlan) -> Any:
    if plan.transport_kind == "local":
        from edgeopt.remote.local import LocalTransport

        return LocalTransport()
    from edgeopt.remote.ssh import SSHTransport

    return SSHTransport(plan.spec)
