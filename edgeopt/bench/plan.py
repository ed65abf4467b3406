"""Plan a device before anything runs: its target, transport, Python, SSH connection and the jobs (built
artifacts, found through their manifests, or ready model files, each checked to load). Every missing-artifact,
bad-model or option error surfaces here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeopt.analyze.check import check_model_file
from edgeopt.artifacts import MANIFEST_FILE, Manifest, sha256_file
from edgeopt.bench.options import MODEL_SUFFIXES, BenchOptions, DevicePlan, Job, parse_shape, split_values
from edgeopt.config import Target, apply_connection_overrides, load_target
from edgeopt.config.target import connection_endpoint
from edgeopt.errors import ArtifactMissing, ConfigError, DataError
from edgeopt.inputs.tensors import TensorSpec


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
        for skip in manifest.get("skipped") or []:  # a format the build failed to make is no format to leave out
            wanted = skip.get("format") in target.formats and (not formats or skip.get("format") in formats)
            if skip.get("failed") and wanted:
                raise ArtifactMissing(f"profile {name} for target {target.name} has no {skip['format']} artifact: "
                                      f"{skip.get('reason')}", "fix the conversion, or benchmark the other format "
                                      "alone (--format, or a lab's formats:)")
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
                            metrics=art.get("metrics"), build_key=manifest.get("build_key"),
                            quality=quality_summary(art.get("quality"))))
            found += 1
        if not found:
            usable = [f for f in target.formats if not formats or f in formats]
            raise ArtifactMissing(
                f"profile {name} for target {target.name} has no {' or '.join(usable) or 'usable'} artifact "
                f"({directory}; the target takes {', '.join(target.formats)})",
                f"check --format, or rebuild: `{build_command(target.name, [name])}`")
    return jobs


def model_jobs(target: Target, models: list[Path], inputs: Path | None = None,
               shapes: Sequence[str] = ()) -> list[Job]:
    """Jobs for ready model files given on the command line: generated inputs (``shapes`` fix dynamic dims), or
    the real ``inputs`` (.npz); both checked against each model here, before anything is pushed."""
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
        specs = input_specs(model, fmt) if inputs is not None or shapes else None
        if specs is not None:
            check_shapes(model, specs[0], shapes)
            if inputs is not None:
                check_inputs_file(Path(inputs), model, *specs)
        jobs.append(Job(target=target.name, profile=None, format=fmt, model=model.resolve(), sha256=sha256_file(model),
                        bytes=model.stat().st_size, inputs=Path(inputs).resolve() if inputs is not None else None,
                        inputs_sha256=sha256_file(Path(inputs)) if inputs is not None else None))
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
    jobs = model_jobs(target, opts.models, opts.inputs, opts.shapes) if opts.models else find_artifacts(
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


def input_specs(model: Path, fmt: str) -> tuple[list[TensorSpec], set[str]] | None:
    """The model's inputs (None for a dynamic dimension) and the names of its quantised ones (which take float
    values too); None when this host cannot read them (a TFLite op the host's LiteRT lacks): the agent checks."""
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        specs = []
        for v in graph.input:
            if v.name in inits:
                continue
            dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                         for d in v.type.tensor_type.shape.dim)
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name
            specs.append(TensorSpec(v.name, dims, dtype))
        return specs, set()
    from edgeopt.analyze.tflite import interpreter, tensor_io

    try:
        details = [tensor_io(d) for d in interpreter(str(model)).get_input_details()]
    except (RuntimeError, ValueError):
        return None
    return ([TensorSpec(d["name"], tuple(x if x >= 0 else None for x in d["shape_signature"]), d["dtype"])
             for d in details], {d["name"] for d in details if d["quantization"]})


def _sig(spec: TensorSpec) -> list[int]:
    return [d if d is not None else -1 for d in spec.shape]


def check_shapes(model: Path, specs: list[TensorSpec], shapes: Sequence[str]) -> None:
    names = [s.name for s in specs]
    for text in shapes:
        name, shape = parse_shape(text)
        if name is None and len(specs) != 1:
            raise ConfigError(f"--shape {text!r} names no input, and {model.name} has {len(specs)}: "
                              f"{', '.join(names)}", "write --shape NAME=1x3x224x224")
        spec = specs[0] if name is None else next((s for s in specs if s.name == name), None)
        if spec is None:
            raise ConfigError(f"--shape {text!r}: {model.name} has no input {name!r} (inputs: {', '.join(names)})",
                              "name one of the model's inputs")
        if len(shape) != len(spec.shape) or any(d is not None and d != g for d, g in zip(spec.shape, shape)):
            raise ConfigError(f"--shape {text!r}: input {spec.name!r} of {model.name} takes {_sig(spec)} "
                              "(-1: dynamic)", "give one dimension per axis; fixed ones as the model has them")


def check_inputs_file(path: Path, model: Path, specs: list[TensorSpec], quantized: set[str]) -> None:
    """Refuse an --inputs file that cannot feed ``model``: keys, shapes against the fixed dims, dtypes."""
    names = [s.name for s in specs]
    hint = f"save one (N, *sample) array per input: numpy.savez(FILE, {', '.join(f'{n}=…' for n in names)})"
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - not a zip, pickled objects, a truncated member …
        raise DataError(f"--inputs {path}: not a readable .npz ({type(exc).__name__}: {exc})", hint) from exc
    keys = {s.name: s.name if s.name in data or not (len(specs) == 1 and "x" in data) else "x" for s in specs}
    for name, key in keys.items():
        if key not in data:
            raise DataError(f"--inputs {path}: no array for input {name!r} of {model.name}", hint)
    for key in sorted(set(data) - set(keys.values())):
        raise DataError(f"--inputs {path}: {key!r} names no input of {model.name} (inputs: {', '.join(names)})", hint)
    counts = {}
    for spec in specs:
        key = keys[spec.name]
        a = data[key]
        if a.ndim == max(len(spec.shape) - 1, 0):
            a = a[None]  # one sample without the N axis
        want = ["N", *[d if d is not None else "any" for d in spec.sample_shape]]
        if a.ndim != len(want) or any(d is not None and d != g for d, g in zip(spec.sample_shape, a.shape[1:])):
            raise DataError(f"--inputs {path}: {key!r} has shape {list(a.shape)}; input {spec.name!r} of "
                            f"{model.name} takes ({', '.join(map(str, want))}{',' if len(want) == 1 else ''})",
                            f"give {key!r} as (N, *sample) or one sample; the model's input is {_sig(spec)}")
        problem = _dtype_problem(a, np.dtype(spec.dtype), spec.name in quantized)
        if problem:
            raise DataError(f"--inputs {path}: {key!r} {problem}; input {spec.name!r} of {model.name} takes "
                            f"{spec.dtype}", f"save {key!r} as {spec.dtype}")
        counts[key] = int(a.shape[0])
    if len(set(counts.values())) > 1 or 0 in counts.values():
        raise DataError(f"--inputs {path}: the arrays hold different numbers of samples "
                        f"({', '.join(f'{k}: {n}' for k, n in counts.items())})", "give every input the same N ≥ 1")


def _dtype_problem(a: np.ndarray, dtype: np.dtype, quantized: bool) -> str | None:
    if a.dtype.kind not in "biuf":
        return f"holds {a.dtype} values"
    if dtype.kind == "f":
        return None
    if dtype.kind == "b":
        return None if a.dtype.kind == "b" or (a.dtype.kind in "iu" and np.isin(a, (0, 1)).all()) else \
            f"holds {a.dtype} values other than 0/1"
    if a.dtype.kind == "f" and not quantized:
        return f"holds {a.dtype} values (an integer input cannot take floats)"
    if a.dtype.kind in "iu" and a.size:
        limits = np.iinfo(dtype)
        if int(a.min()) < limits.min or int(a.max()) > limits.max:
            return f"holds values in [{int(a.min())}, {int(a.max())}], beyond {dtype.name}'s range"
    return None


def quality_summary(quality: Any) -> dict[str, Any] | None:
    """The build's verdict on an artifact (``ok``/``degraded``/``broken``, worst output and figure), carried into
    every result so a report or a CI gate never has to reopen the manifest."""
    if not isinstance(quality, dict) or "verdict" not in quality:
        return None
    return {"verdict": quality["verdict"], "worst": quality.get("worst"), "reasons": quality.get("reasons", [])[:5]}
