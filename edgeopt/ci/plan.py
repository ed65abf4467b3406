"""Plan a lab before any device is contacted: targets, builds (the build pipeline and its cache) and each
device's jobs."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeopt.bench import DevicePlan, Job, find_artifacts
from edgeopt.build import BuildRequest, build
from edgeopt.ci.model import CIOptions
from edgeopt.ci.progress import CIProgress
from edgeopt.config import Target, apply_connection_overrides, load_profile, load_target
from edgeopt.config.lab import Lab
from edgeopt.config.target import connection_endpoint
from edgeopt.errors import ConfigError


@dataclass
class CellPlan:
    plan: DevicePlan
    models: dict[str, str]  # artifact path -> model name


def load_device_target(lab: Lab, name: str) -> Target:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        resolved = lab.path(name)
        assert resolved is not None
        return load_target(resolved)
    return load_target(name)


def plan_lab(lab: Lab, opts: CIOptions, progress: CIProgress | None = None) -> list[CellPlan]:
    """Targets, builds and jobs for every device (raises ConfigError/ArtifactMissing before anything runs)."""
    from edgeopt.remote.ssh import ConnectionSpec  # paramiko: only when a lab is planned

    kinds: dict[str, Target] = {}
    for device in lab.devices:
        if device.target not in kinds:
            try:
                kinds[device.target] = load_device_target(lab, device.target)
            except ConfigError as exc:
                raise ConfigError(f"{lab.source_file}: devices.{device.name}.target: {exc.message}", exc.hint) \
                    from exc
    artifacts_root = Path(opts.artifacts) if opts.artifacts else Path(lab.path(lab.artifacts) or "artifacts/ci")
    roots: dict[str, Path] = {}
    for model in lab.models:
        if model.artifacts:
            roots[model.name] = Path(lab.path(model.artifacts) or "")
            continue
        roots[model.name] = artifacts_root / model.name
        if not opts.build:
            continue
        path = None if model.path in (None, "example") else lab.path(model.path)
        profiles = [load_profile(p) for p in lab.profiles]
        for kind in kinds.values():
            if kind.transport == "none":
                continue
            if progress is not None:
                progress.note(f"build {model.name} for {kind.name}: {', '.join(lab.profiles)}")
            build(BuildRequest(target=kind, profiles=profiles, model=path, data=lab.data_source(model.data),
                               eval=lab.data_source(model.eval), out=roots[model.name]))
    plans = []
    for device in lab.devices:
        kind = kinds[device.target]
        where = f"{lab.source_file}: devices.{device.name}.host"
        key = lab.path(device.key) if device.key else None
        target = apply_connection_overrides(kind, host=device.host, user=device.user, port=device.port, key=key,
                                            python=device.python, what=where)
        conn = target.connection
        if device.workdir:
            conn = conn.model_copy(update={"workdir": device.workdir})
        target = target.model_copy(update={"name": device.name, "connection": conn,
                                           "threads": device.threads or target.threads})
        if device.host:
            transport = "ssh"
        elif target.transport in ("local", "ssh"):
            transport = target.transport
        else:
            raise ConfigError(f"{lab.source_file}: devices.{device.name}: target {kind.name} has transport "
                              f"{target.transport}; edgeopt ci runs devices over ssh or locally")
        if transport == "ssh" and not target.connection.host:
            raise ConfigError(f"{lab.source_file}: devices.{device.name}: no host",
                              f"set host: in the lab or connection.host in {kind.source_file}")
        jobs: list[Job] = []
        models: dict[str, str] = {}
        for model in lab.models:
            found = find_artifacts(kind, roots[model.name], list(lab.profiles), list(lab.formats or []) or None)
            for job in found:
                jobs.append(dataclasses.replace(job, target=device.name))
                models[str(job.model)] = model.name
        python = target.connection.python
        if transport == "local" and python == "python3" and not device.python:
            python = sys.executable
        spec = None
        if transport == "ssh":
            # OpenSSH precedence: the lab's device entry > ~/.ssh/config (the alias) > the target YAML's defaults
            end = connection_endpoint(kind, host=device.host, user=device.user, port=device.port, key=key,
                                      what=where)
            spec = ConnectionSpec(
                host=end.host or "", user=end.user, port=end.port, key_filename=end.key,
                default_user=end.default_user, default_port=end.default_port, default_key_filename=end.default_key,
                connect_timeout=lab.bench.connect_timeout,
                command_timeout=lab.bench.timeout, accept_new_host_key=device.accept_new_host_key,
                known_hosts=lab.path(device.known_hosts), ssh_config=lab.path(device.ssh_config) or opts.ssh_config)
        plans.append(CellPlan(DevicePlan(target=target, jobs=jobs, transport_kind=transport, python=python,
                                         spec=spec), models))
    return plans
