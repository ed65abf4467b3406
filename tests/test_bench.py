"""edgeopt bench end to end: real artifacts (the example build), real loopback OpenSSH devices (tests/sshd.py)
whose Python is a minimal device virtualenv (tests/device_envs.py), the real agent zipapp. No mocks.

Each test gives its device a private ``workdir`` (the remote blob cache), so push/dedupe counts never depend on
what another test already pushed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from device_envs import DeviceEnv, EnvUnavailable, ensure_env
from sshd import SshServer, free_port

from edgeopt.bench import BenchOptions, bench
from edgeopt.cli import main, parser
from edgeopt.cli.console import RichProgress
from edgeopt.errors import ArtifactMissing, ConfigError
from edgeopt.results.store import open_store

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

RUNS = 5
WARMUP = 1
WEIRD = "we ird 'q\" ;touch INJECTED;$(touch INJECTED2)`touch INJECTED3`&|>x.tflite"


# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------
def _env(name: str) -> DeviceEnv:
    try:
        return ensure_env(name)
    except EnvUnavailable as exc:  # pragma: no cover - litert/rpios/bare exist wherever pip works
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def envs() -> dict[str, DeviceEnv]:
    return {name: _env(name) for name in ("litert", "rpios", "bare")}


@pytest.fixture(scope="session")
def built(example_build) -> Path:
    """The example build's artifacts for target `local` (fp32, fp16, dynamic, int8, int8-float-io)."""
    return Path(example_build["out"]) / "local"


@pytest.fixture(scope="session")
def agent_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("agent-cache")


@pytest.fixture
def lab(tmp_path: Path, built: Path, agent_cache: Path):
    """Makes device targets: a target YAML per device, its artifacts (the example build, linked under the
    target's name), one known_hosts file and an empty ssh config (nothing from the real ~/.ssh)."""
    return Lab(tmp_path, built, agent_cache)


class Lab:
    def __init__(self, root: Path, built: Path, agent_cache: Path) -> None:
        self.root = root
        self.built = built
        self.agent_cache = agent_cache
        self.artifacts = root / "artifacts"
        self.artifacts.mkdir()
        self.targets = root / "targets"
        self.targets.mkdir()
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text("")
        self.ssh_config = root / "ssh_config"
        self.ssh_config.write_text("")
        self.results = root / "results"

    def device(self, name: str, server: SshServer | None, python: str, *, port: int | None = None,
               workdir: str | None = None) -> Path:
        """A target YAML for ``server`` (or, with ``port``, for a loopback port where nothing listens)."""
        if server is not None:
            with open(self.known_hosts, "a") as fh:
                fh.write(server.known_hosts_line + "\n")
            host, user, key, port = server.host, server.user, str(server.client_key), server.port
            workdir = workdir or f"{server.home}/wd/{self.root.name}-{name}"
        else:
            host, user, key = "127.0.0.1", "nobody", str(self.root / "no-key")
            Path(key).write_text("")
            workdir = workdir or "~/.cache/edgeopt"
        path = self.targets / f"{name}.yaml"
        path.write_text(json.dumps({  # JSON is YAML
            "description": "loopback test device", "arch": "native", "transport": "ssh",
            "connection": {"host": host, "user": user, "port": port, "key": key, "python": python,
                           "workdir": workdir},
            "formats": ["tflite", "onnx"], "runtimes": ["litert", "tflite-runtime", "onnxruntime"], "threads": 1,
        }))
        link = self.artifacts / name
        if not link.exists():
            link.symlink_to(self.built, target_is_directory=True)
        return path

    def options(self, *targets: Path | str, **kw) -> BenchOptions:
        base = dict(targets=[str(t) for t in targets], artifacts=self.artifacts, results=self.results,
                    runs=RUNS, warmup=WARMUP, known_hosts=str(self.known_hosts), ssh_config=str(self.ssh_config),
                    connect_timeout=5.0, timeout=120.0, agent_cache=self.agent_cache)
        base.update(kw)
        return BenchOptions(**base)


def blob_dir(server: SshServer, lab: Lab, name: str, sha256: str) -> Path:
    return Path(f"{server.home}/wd/{lab.root.name}-{name}") / "blobs" / sha256


def manifest(built: Path, profile: str) -> dict:
    return json.loads((built / profile / "manifest.json").read_text())


def artifact(built: Path, profile: str, fmt: str) -> dict:
    return next(a for a in manifest(built, profile)["artifacts"] if a["format"] == fmt)


def check_valid(doc: dict, built: Path) -> None:
    """A valid result carries the agent's measurements and the host context that makes it a result."""
    assert doc["valid"] is True and doc["error"] is None, doc["error"]
    art = artifact(built, doc["profile"], doc["format"])
    assert doc["artifact"]["sha256"] == art["sha256"] == doc["agent"]["model"]["sha256"]
    assert doc["artifact"]["metrics"] == art["metrics"]
    lat = doc["agent"]["latency_ms"]
    assert lat["count"] == RUNS == len(lat["samples"]) and lat["warmup"] == WARMUP
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["max"]
    assert doc["agent"]["runtime"]["threads"] == 1 == doc["request"]["threads"]
    assert doc["agent"]["inputs"]["source"] == "reference" and doc["flags"] == []
    assert doc["run_id"] and doc["created_at"] and doc["target"]
    assert doc["transfer"]["total"] == sum(doc["transfer"][k] for k in ("agent", "model", "reference"))


def cli(*argv: object) -> int:
    """The real command line (edgeopt.cli.main): parse, call, one line + exit code on an EdgeoptError."""
    return main([str(a) for a in argv])


def lab_args(lab: Lab) -> list[str]:
    return ["--artifacts", str(lab.artifacts), "--results", str(lab.results), "--known-hosts", str(lab.known_hosts),
            "--ssh-config", str(lab.ssh_config), "--runs", str(RUNS), "--warmup", str(WARMUP),
            "--connect-timeout", "5"]


# ---------------------------------------------------------------------------------------------------------------
# push + run + parse over SSH
# ---------------------------------------------------------------------------------------------------------------
def test_tflite_over_ssh_on_litert_matches_host_reference(sshd, envs, lab, built):
    dev = lab.device("pi-litert", sshd, envs["litert"].python)
    run = bench(lab.options(dev, profiles=["fp32", "int8"], formats=["tflite"]))
    assert run.exit_code == 0
    assert [(r["profile"], r["format"]) for r in run.results] == [("fp32", "tflite"), ("int8", "tflite")]
    for doc in run.results:
        check_valid(doc, built)
        assert doc["agent"]["runtime"]["name"] == "litert"
        assert doc["transport"]["kind"] == "ssh" and str(sshd.port) in doc["transport"]["description"]
        # same artifact, same runtime as the host build: the device reproduces the host's outputs
        parity = doc["agent"]["parity"]
        assert parity["artifact"]["key"] == "y_tflite" and parity["artifact"]["top1_agreement"] == 1.0
        assert parity["artifact"]["max_abs_diff"] <= 1e-5
        art = artifact(built, doc["profile"], "tflite")
        assert doc["transfer"]["model"] == art["bytes"]  # first bench: the model went over the wire
        remote = blob_dir(sshd, lab, "pi-litert", art["sha256"]) / "model.tflite"
        assert remote.read_bytes() == (built / doc["profile"] / "model.tflite").read_bytes()
    # the agent and the (shared) reference go once per file: agent with the first result only
    assert run.results[0]["transfer"]["agent"] > 0 and run.results[1]["transfer"]["agent"] == 0
    # stored: SQLite and one JSON file per result
    with open_store(lab.results) as store:
        assert store.latest_run_id() == run.run_id
        assert store.results(run.run_id) == run.results
    files = sorted(p.name for p in (lab.results / run.run_id).iterdir())
    assert "run.json" in files and len(files) == 3


def test_second_bench_sends_zero_bytes(sshd, envs, lab, built):
    dev = lab.device("pi-dedupe", sshd, envs["litert"].python)
    first = bench(lab.options(dev, profiles=["int8"], formats=["tflite"]))
    assert first.exit_code == 0 and first.summary()["bytes_sent"] > artifact(built, "int8", "tflite")["bytes"]
    second = bench(lab.options(dev, profiles=["int8"], formats=["tflite"]))
    assert second.exit_code == 0 and second.run_id != first.run_id
    doc = second.results[0]
    check_valid(doc, built)
    assert doc["transfer"] == {"agent": 0, "model": 0, "reference": 0, "total": 0}
    assert second.summary()["bytes_sent"] == 0


def test_corrupt_blob_on_device_is_detected_and_repushed(sshd, envs, lab, built):
    dev = lab.device("pi-corrupt", sshd, envs["litert"].python)
    assert bench(lab.options(dev, profiles=["int8"], formats=["tflite"])).exit_code == 0
    art = artifact(built, "int8", "tflite")
    blob = blob_dir(sshd, lab, "pi-corrupt", art["sha256"]) / "model.tflite"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte: only the hash can tell
    blob.write_bytes(bytes(data))
    run = bench(lab.options(dev, profiles=["int8"], formats=["tflite"]))
    doc = run.results[0]
    check_valid(doc, built)
    assert doc["transfer"]["model"] == art["bytes"] and doc["transfer"]["reference"] == 0
    assert blob.read_bytes() == (built / "int8" / "model.tflite").read_bytes()


@pytest.mark.parametrize("fmt,runtime,key", [("tflite", "tflite-runtime", "y_tflite"),
                                             ("onnx", "onnxruntime", "y_onnx")])
def test_rpios_device_runs_tflite_runtime_and_onnxruntime(sshd, envs, lab, built, fmt, runtime, key):
    dev = lab.device(f"rpios-{fmt}", sshd, envs["rpios"].python)
    run = bench(lab.options(dev, profiles=["fp32", "int8"], formats=[fmt]))
    assert run.exit_code == 0, [r["error"] for r in run.results]
    for doc in run.results:
        check_valid(doc, built)
        assert doc["format"] == fmt and doc["agent"]["runtime"]["name"] == runtime
        assert doc["agent"]["device"]["numpy"].startswith("1.")  # the Raspberry Pi OS situation
        assert doc["agent"]["parity"]["artifact"]["key"] == key
        assert doc["agent"]["parity"]["top1_agreement"] == 1.0


# ---------------------------------------------------------------------------------------------------------------
# local target, ready model files
# ---------------------------------------------------------------------------------------------------------------
def test_local_target_runs_without_ssh(tmp_path, built, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the local blob cache lands in this test's home
    results = tmp_path / "results"
    code = cli("bench", "--target", "local", "--artifacts", built.parent, "--results", results, "--profile", "int8",
               "--runs", RUNS, "--warmup", WARMUP, "--json")
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert {(r["profile"], r["format"]) for r in out["results"]} == {("int8", "tflite"), ("int8", "onnx")}
    for doc in out["results"]:
        check_valid(doc, built)
        assert doc["transport"] == {"kind": "local", "description": "local", "python": sys.executable}
    blobs = tmp_path / "home" / ".cache" / "edgeopt" / "blobs"
    assert (blobs / artifact(built, "int8", "onnx")["sha256"] / "model.onnx").is_file()
    # `edgeopt report` shows the same run
    assert cli("report", "--results", results, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["run_id"] == out["run_id"] and len(report["rows"]) == 2
    assert all(row["valid"] and row["p50_ms"] > 0 for row in report["rows"])


def test_any_ready_tflite_file_with_a_hostile_name(sshd, envs, lab, built, tmp_path):
    model = tmp_path / "models" / WEIRD
    model.parent.mkdir()
    model.write_bytes((built / "fp32" / "model.tflite").read_bytes())
    dev = lab.device("pi-file", sshd, envs["litert"].python)
    before = set(os.listdir(sshd.home))
    run = bench(lab.options(dev, models=[model]))
    assert run.exit_code == 0, run.results[0]["error"]
    doc = run.results[0]
    assert doc["valid"] and doc["profile"] is None and doc["source"] == "file"
    assert doc["flags"] == ["random-inputs"] and doc["agent"]["inputs"]["source"] == "random"
    assert doc["agent"]["parity"] is None
    assert doc["artifact"]["file"] == WEIRD and doc["agent"]["model"]["path"].endswith("/" + WEIRD)
    assert Path(doc["agent"]["model"]["path"]).read_bytes() == model.read_bytes()  # named literally
    for root in (sshd.home, Path.cwd(), Path("/")):
        assert not any((root / n).exists() for n in ("INJECTED", "INJECTED2", "INJECTED3", "x"))
    assert set(os.listdir(sshd.home)) - before <= {"wd"}


def test_ready_file_must_be_tflite_or_onnx(lab, tmp_path):
    junk = tmp_path / "model.pb"
    junk.write_bytes(b"x")
    with pytest.raises(ConfigError) as info:
        bench(lab.options("local", models=[junk]))
    assert "cannot benchmark a .pb" in info.value.one_line() and ".tflite or .onnx" in info.value.one_line()


# ---------------------------------------------------------------------------------------------------------------
# failures: missing runtime, missing artifacts, timeouts, killed agent, unreachable device
# ---------------------------------------------------------------------------------------------------------------
def test_device_without_runtime_fails_clearly(sshd, envs, lab, capsys):
    dev = lab.device("pi-bare", sshd, envs["bare"].python)
    code = cli("bench", "--target", dev, *lab_args(lab), "--profile", "int8", "--format", "tflite")
    err = capsys.readouterr().err
    assert code == 3
    assert "runtime_missing" in err and "pip install ai-edge-litert" in err, err
    with open_store(lab.results) as store:
        rows = store.query(target="pi-bare")
    assert len(rows) == 1 and rows[0]["valid"] == 0 and "runtime_missing" in rows[0]["error"]


def test_missing_artifacts_name_the_build_command(lab, tmp_path):
    with pytest.raises(ArtifactMissing) as info:
        bench(lab.options("local", artifacts=tmp_path / "nowhere", profiles=["int8"]))
    assert "`edgeopt build --target local --profile int8`" in info.value.one_line()
    with pytest.raises(ArtifactMissing) as info:
        bench(lab.options("local", artifacts=tmp_path / "nowhere"))
    assert "`edgeopt build --target local`" in info.value.one_line()
    half = tmp_path / "half" / "local" / "fp32"
    half.mkdir(parents=True)
    (half / "model.tflite").write_bytes(b"x")  # a build that died before manifest.json
    with pytest.raises(ArtifactMissing) as info:
        bench(lab.options("local", artifacts=tmp_path / "half", profiles=["fp32"]))
    assert "incomplete" in info.value.one_line() and "edgeopt build --target local --profile fp32" in \
        info.value.one_line()
    assert not lab.results.exists()  # nothing ran, nothing stored


def test_agent_timeout_is_a_clear_error_and_never_a_valid_result(sshd, envs, lab):
    dev = lab.device("pi-slow", sshd, envs["litert"].python)
    started = time.monotonic()
    run = bench(lab.options(dev, profiles=["int8"], formats=["tflite"], min_seconds=60.0, max_runs=10**9, timeout=3.0))
    assert time.monotonic() - started < 30
    assert run.exit_code == 3
    doc = run.results[0]
    assert doc["valid"] is False and doc["agent"] is None
    assert doc["error"]["kind"] == "timeout" and "timed out after 3 s (killed)" in doc["error"]["message"]
    assert "\n" not in doc["error"]["message"]
    assert _gone(f"{sshd.home}/wd/{lab.root.name}-pi-slow")  # killed on the device, not left running
    with open_store(lab.results) as store:
        assert store.query(target="pi-slow", valid_only=True) == []
        assert store.run(run.run_id)["status"] == "failed"


def agent_processes(marker: str) -> list[int]:
    """PIDs of agent processes (``<python> -I -c <verifying stub> <marker>/…/edgeopt-agent.pyz <sha> <package>
    run …``), not the shells around them."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if len(argv) > 7 and argv[1:3] == ["-I", "-c"] and argv[4].startswith(marker) \
                    and argv[4].endswith("/edgeopt-agent.pyz") and argv[7] == "run":
                pids.append(int(entry))
    return pids


def _gone(marker: str, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while agent_processes(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_agent_killed_on_the_device_is_a_clear_error(sshd, envs, lab):
    dev = lab.device("pi-kill", sshd, envs["litert"].python)
    marker = f"{sshd.home}/wd/{lab.root.name}-pi-kill"
    killed: list[int] = []

    def killer() -> None:  # plays the OOM killer: SIGKILL the real agent process on the device
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for pid in agent_processes(marker):
                time.sleep(0.5)  # let it get into the timing loop
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        run = bench(lab.options(dev, profiles=["int8"], formats=["tflite"], min_seconds=60.0, max_runs=10**9,
                                timeout=120.0))
    finally:
        thread.join()
    assert killed
    doc = run.results[0]
    assert run.exit_code == 3 and doc["valid"] is False and doc["agent"] is None
    assert doc["error"]["kind"] == "agent" and "killed by SIGKILL" in doc["error"]["message"]
    assert "out of memory" in doc["error"]["message"]


def test_unreachable_device_fails_alone(sshd_factory, envs, lab, built, capsys):
    good_server = sshd_factory("lab-good")
    good = lab.device("pi-good", good_server, envs["litert"].python)
    dead = lab.device("pi-dead", None, envs["litert"].python, port=free_port())  # nothing listens there
    code = cli("bench", "--target", good, "--target", dead, *lab_args(lab), "--profile", "fp32,int8",
               "--format", "tflite", "--json")
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert code == 3
    by_target: dict[str, list] = {}
    for doc in out["results"]:
        by_target.setdefault(doc["target"], []).append(doc)
    assert len(by_target["pi-good"]) == 2 and len(by_target["pi-dead"]) == 2
    for doc in by_target["pi-good"]:
        check_valid(doc, built)
    for doc in by_target["pi-dead"]:
        assert doc["valid"] is False and doc["error"]["kind"] == "infrastructure"
        assert "connection refused" in doc["error"]["message"] and "\n" not in doc["error"]["message"]
    assert out["summary"]["failed_devices"] == ["pi-dead"]
    lines = [line for line in captured.err.splitlines() if "pi-dead" in line]
    assert len(lines) == 1 and "connection refused" in lines[0]  # one line for the failed device


def test_unknown_host_key_fails_the_device_until_accepted(sshd, envs, lab, built):
    dev = lab.device("pi-newkey", sshd, envs["litert"].python)
    lab.known_hosts.write_text("")  # the device's key is not known
    run = bench(lab.options(dev, profiles=["int8"], formats=["tflite"]))
    doc = run.results[0]
    assert run.exit_code == 3 and doc["error"]["kind"] == "infrastructure"
    assert "host key" in doc["error"]["message"] and "--accept-new-host-key" in doc["error"]["message"]
    run = bench(lab.options(dev, profiles=["int8"], formats=["tflite"], accept_new_host_key=True))
    check_valid(run.results[0], built)
    assert sshd.known_hosts_line.split()[2] in lab.known_hosts.read_text()


def test_bad_options_fail_before_anything_runs(lab):
    with pytest.raises(ConfigError, match="--host"):
        bench(lab.options("local", "rpi4", host="pi@10.0.0.7"))
    with pytest.raises(ConfigError, match="unknown target"):
        bench(lab.options("no-such-target"))
    assert not lab.results.exists()
    with pytest.raises(SystemExit):
        parser().parse_args(["bench", "--runs", "0"])  # edgeopt.cli.parser


def test_parity_figures_match_a_host_recomputation(sshd, envs, lab, built):
    """The device's parity numbers agree with the host's own recomputation from reference.npz."""
    dev = lab.device("pi-parity", sshd, envs["litert"].python)
    doc = bench(lab.options(dev, profiles=["fp32"], formats=["tflite"])).results[0]
    ref = np.load(built / "fp32" / "reference.npz")
    host_top1 = float(np.mean(np.argmax(ref["y_tflite"], axis=1) == np.argmax(ref["y_float"], axis=1)))
    assert doc["agent"]["parity"]["float"]["top1_agreement"] == pytest.approx(host_top1)
    if "labels" in ref:
        acc = float(np.mean(np.argmax(ref["y_tflite"], axis=1) == ref["labels"]))
        assert doc["agent"]["parity"]["accuracy"] == pytest.approx(acc)


def test_progress_on_a_terminal_and_format_filter(tmp_path, built, agent_cache):
    """The rich progress (as the CLI shows it on a terminal) and --format: only onnx runs."""
    from io import StringIO

    from rich.console import Console

    target = tmp_path / "here.yaml"
    target.write_text(json.dumps({"arch": "native", "transport": "local", "formats": ["tflite", "onnx"],
                                  "runtimes": ["litert", "onnxruntime"],
                                  "connection": {"workdir": str(tmp_path / "device")}}))
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "here").symlink_to(built, target_is_directory=True)
    buffer = StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    opts = BenchOptions(targets=[str(target)], artifacts=tmp_path / "artifacts", results=tmp_path / "results",
                        profiles=["fp32", "int8"], formats=["onnx"], runs=RUNS, warmup=WARMUP,
                        agent_cache=agent_cache)
    with RichProgress(verbose=True, console=console) as progress:
        run = bench(opts, progress)
    assert run.exit_code == 0 and [r["format"] for r in run.results] == ["onnx", "onnx"]
    text = buffer.getvalue()
    assert "here fp32/onnx: p50" in text and "here int8/onnx: p50" in text
    assert (tmp_path / "device" / "blobs" / artifact(built, "fp32", "onnx")["sha256"] / "model.onnx").is_file()
    only_tflite = tmp_path / "tfl.yaml"
    only_tflite.write_text(target.read_text().replace('"formats": ["tflite", "onnx"]', '"formats": ["tflite"]'))
    (tmp_path / "artifacts" / "tfl").symlink_to(built, target_is_directory=True)
    with pytest.raises(ArtifactMissing) as info:
        bench(BenchOptions(targets=[str(only_tflite)], artifacts=tmp_path / "artifacts", formats=["onnx"],
                           profiles=["int8"], results=tmp_path / "results"))
    assert "the target takes tflite" in info.value.one_line()


# ---------------------------------------------------------------------------------------------------------------
# connection precedence (command line > ~/.ssh/config > target YAML), strict addresses, ready-file checks
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_models():
    from agent_models import ensure_agent_models

    return ensure_agent_models()


def pi_like_target(tmp_path: Path, python: str, workdir: str, host: str = "raspberrypi.invalid") -> Path:
    """A target shaped like the shipped rpi4 (user pi, a fixed port, a key file) whose own values must lose to
    an ~/.ssh/config alias: nothing listens on its port and its key file does not exist."""
    path = tmp_path / "pi-like.yaml"
    path.write_text(json.dumps({
        "arch": "native", "transport": "ssh", "formats": ["tflite", "onnx"], "runtimes": ["litert", "onnxruntime"],
        "connection": {"host": host, "user": "pi", "port": free_port(), "key": str(tmp_path / "no-such-key"),
                       "python": python, "workdir": workdir}}))
    return path


def test_ssh_config_alias_beats_the_target_yaml_and_the_command_line_beats_both(sshd, envs, tiny_models, tmp_path,
                                                                                capsys):
    target = pi_like_target(tmp_path, envs["litert"].python, f"{sshd.home}/wd/{tmp_path.name}-alias")
    config = tmp_path / "ssh_config"
    config.write_text(sshd.ssh_config_block("mypi"))  # Port, User, IdentityFile of the loopback device
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    common = ["--ssh-config", config, "--known-hosts", known, "--results", tmp_path / "results", "--runs", RUNS,
              "--warmup", WARMUP, "--connect-timeout", 5]
    code = cli("bench", tiny_models.fp32_tflite, "--target", target, "--host", "mypi", *common, "--json")
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["results"][0]["error"]
    [doc] = out["results"]
    assert doc["valid"] and f"mypi ({sshd.user}@127.0.0.1:{sshd.port})" == doc["transport"]["description"]
    # the command line wins over the alias: --port sends it where nothing listens
    dead = free_port()
    code = cli("bench", tiny_models.fp32_tflite, "--target", target, "--host", "mypi", "--port", dead, *common)
    err = capsys.readouterr().err
    assert code == 3 and f"connection refused by 127.0.0.1:{dead}" in err


def test_ci_lab_device_alias_beats_the_target_yaml(sshd, tiny_models, tmp_path):
    from edgeopt.ci import CIOptions
    from edgeopt.ci.plan import plan_lab
    from edgeopt.config.lab import load_lab
    from edgeopt.remote.ssh import SSHTransport

    target = pi_like_target(tmp_path, "python3", f"{sshd.home}/wd/{tmp_path.name}-ci")
    built = tmp_path / "built" / "pi-like" / "p1"
    built.mkdir(parents=True)
    (built / "model.tflite").write_bytes(tiny_models.fp32_tflite.read_bytes())
    (built / "manifest.json").write_text(json.dumps({"profile": "p1", "target": "pi-like", "artifacts": [
        {"file": "model.tflite", "format": "tflite", "sha256": "0" * 64, "bytes": 1}]}))
    config = tmp_path / "ssh_config"
    config.write_text(sshd.ssh_config_block("lab-pi"))
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(json.dumps({
        "name": "alias", "profiles": ["p1"], "formats": ["tflite"],
        "models": [{"name": "m", "artifacts": str(tmp_path / "built")}],
        "devices": [{"name": "pi-a", "target": str(target), "host": "lab-pi", "ssh_config": str(config),
                     "known_hosts": str(sshd.write_known_hosts(tmp_path / "known_hosts"))}]}))
    [cell] = plan_lab(load_lab(lab_file), CIOptions(lab=lab_file, build=False))
    with SSHTransport(cell.plan.spec) as transport:
        assert transport.description == f"lab-pi ({sshd.user}@127.0.0.1:{sshd.port})"
        assert transport.run(["echo", "ok"], timeout=10).stdout == b"ok\n"
    lab_file.write_text(lab_file.read_text().replace('"host": "lab-pi"', '"host": "pi@@lab-pi:x"'))
    with pytest.raises(ConfigError) as info:
        plan_lab(load_lab(lab_file), CIOptions(lab=lab_file, build=False))
    assert "lab.yaml: devices.pi-a.host 'pi@@lab-pi:x'" in info.value.one_line()
    assert "expected [user@]host[:port]" in info.value.one_line()


@pytest.mark.parametrize("address", ["user@@host:port:x", "pi@h:70000", "fe80::1:22", "pi@h:22:"])
def test_bad_host_address_is_one_line_naming_the_option(address, tmp_path, capsys):
    code = cli("bench", "--target", "rpi4", "--host", address, "--results", tmp_path / "results",
               "--artifacts", tmp_path / "artifacts")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"--host {address!r}" in err and "expected [user@]host[:port]" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_host_for_a_local_target_is_refused(tmp_path, capsys):
    code = cli("bench", "--target", "local", "--host", "pi@127.0.0.1:2222", "--results", tmp_path / "results",
               "--artifacts", tmp_path / "artifacts")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--host" in err and "transport: local" in err and "--target rpi4" in err and "drop --host" in err
    assert not (tmp_path / "results").exists()


def test_ready_model_check_accepts_real_models(tiny_models):
    from edgeopt.analyze.check import check_model_file

    for good, fmt in [(tiny_models.fp32_tflite, "tflite"), (tiny_models.int8_tflite, "tflite"),
                      (tiny_models.fp32_onnx, "onnx")]:
        check_model_file(good, fmt)


def test_corrupt_or_empty_ready_models_fail_on_the_host_before_any_push(sshd, tiny_models, tmp_path, capsys):
    workdir = Path(f"{sshd.home}/wd/{tmp_path.name}-corrupt")
    target = tmp_path / "dev.yaml"
    target.write_text(json.dumps({
        "arch": "native", "transport": "ssh", "formats": ["tflite", "onnx"], "runtimes": ["litert", "onnxruntime"],
        "connection": {"host": sshd.host, "user": sshd.user, "port": sshd.port, "key": str(sshd.client_key),
                       "workdir": str(workdir)}}))
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    (tmp_path / "ssh_config").write_text("")
    tflite = tiny_models.fp32_tflite.read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    cases = {"empty.tflite": b"", "empty.onnx": b"", "truncated.tflite": tflite[: len(tflite) // 2],
             "no-identifier.tflite": b"\0" * 64, "text.tflite": b"not a model at all\n" * 10,
             "truncated.onnx": tiny_models.fp32_onnx.read_bytes()[:200], "tflite-bytes.onnx": tflite,
             "junk.onnx": os.urandom(4096)}
    for name, data in cases.items():
        model = bad / name
        model.write_bytes(data)
        code = cli("bench", model, "--target", target, "--known-hosts", known, "--ssh-config", tmp_path / "ssh_config",
                   "--results", tmp_path / "results", "--connect-timeout", 5)
        err = capsys.readouterr().err.strip()
        assert code == 2, (name, err)
        assert len(err.splitlines()) == 1 and str(model) in err and "Traceback" not in err, (name, err)
        assert ("empty" in err) if not data else ("not a" in err), (name, err)
    assert not workdir.exists()  # nothing was pushed, no device contacted
    assert not (tmp_path / "results").exists()


def test_agent_swapped_on_the_device_mid_run_is_refused_never_run(sshd, envs, lab):
    """Check-then-use: the agent is verified once per session, then launched for every artifact. A zipapp swapped
    at that path in between (here one that would leave a mark) is refused by the launcher's own hash check —
    `hash_mismatch`, an agent error — and never executes."""
    from edgeopt.bench.zipapp import agent_zipapp

    dev = lab.device("pi-swap", sshd, envs["litert"].python)
    marker = f"{sshd.home}/wd/{lab.root.name}-pi-swap"
    _, agent_sha = agent_zipapp(lab.agent_cache)
    pushed = Path(marker) / "blobs" / agent_sha / "edgeopt-agent.pyz"
    mark = lab.root / "EVIL-RAN"
    swapped: list[bool] = []

    def swapper() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not agent_processes(marker):
            time.sleep(0.05)
        time.sleep(1.0)  # the first agent has read its zipapp: swap it for the next launch
        import zipfile

        evil = pushed.with_name("evil.pyz")
        with zipfile.ZipFile(evil, "w") as zf:
            zf.writestr("edgeopt_agent/__init__.py", "")
            zf.writestr("edgeopt_agent/__main__.py", f"def main():\n    open({str(mark)!r}, 'w').write('x')\n")
        os.replace(evil, pushed)
        swapped.append(True)

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        run = bench(lab.options(dev, profiles=["int8"], min_seconds=3.0))
    finally:
        thread.join()
    assert swapped and not mark.exists()
    first, second = run.results
    assert first["valid"] is True and first["agent"]["model"]["sha256"] == first["artifact"]["sha256"]
    assert second["valid"] is False and second["error"]["kind"] == "agent"
    assert second["error"]["type"] == "hash_mismatch" and "sha256 mismatch" in second["error"]["message"]
