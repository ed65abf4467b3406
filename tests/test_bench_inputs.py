"""edgeopt bench of ready models with real inputs and shapes, multi-input/-output models on the device.

Models are built here with onnx.helper (and one TFLite with the real converter); devices are the loopback
OpenSSH server (tests/sshd.py) with a device virtualenv (tests/device_envs.py), or ``transport: local``. The
agent zipapp is the real one; ONNX Runtime and LiteRT are the real runtimes. No mocks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from device_envs import DeviceEnv, EnvUnavailable, ensure_env

from edgeopt.bench import BenchOptions, bench
from edgeopt.bench.schema import schema_problem
from edgeopt.cli import main

RUNS = 3
WARMUP = 1


def _env(name: str) -> DeviceEnv:
    try:
        return ensure_env(name)
    except EnvUnavailable as exc:  # pragma: no cover - only py39 may be missing (no Python 3.9 interpreter)
        pytest.skip(str(exc))


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------
def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # loads in ONNX Runtime 1.19 (the Python 3.9 device) too
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    from onnx import TensorProto as T
    from onnx import helper as h

    root = tmp_path_factory.mktemp("bench-inputs-models")
    out = {}
    # ['N', 3, 'H', 'W'] -> per-channel mean: runs at any H, W
    out["dyn"] = _save(h.make_graph(
        [h.make_node("Relu", ["x"], ["r"]), h.make_node("ReduceMean", ["r"], ["y"], axes=[2, 3], keepdims=0)], "dyn",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, "H", "W"])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])]), root / "dyn.onnx")
    # a float state and an int64 scalar (a sample rate); two outputs
    out["two"] = _save(h.make_graph(
        [h.make_node("Cast", ["sr"], ["srf"], to=T.FLOAT), h.make_node("Mul", ["x", "srf"], ["y1"]),
         h.make_node("ReduceSum", ["x"], ["y2"], keepdims=1)], "two",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 4]), h.make_tensor_value_info("sr", T.INT64, [])],
        [h.make_tensor_value_info("y1", T.FLOAT, ["N", 4]), h.make_tensor_value_info("y2", T.FLOAT, [1, 1])]),
        root / "two.onnx")
    # an embedding lookup: its int64 indices must be < 10
    table = h.make_tensor("table", T.FLOAT, [10, 4], np.arange(40, dtype=np.float32).tolist())
    out["gather"] = _save(h.make_graph(
        [h.make_node("Gather", ["table", "idx"], ["y"], axis=0)], "gather",
        [h.make_tensor_value_info("idx", T.INT64, ["N"])], [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])],
        [table]), root / "gather.onnx")
    return out


@pytest.fixture(scope="session")
def dyn_tflite(tmp_path_factory) -> Path:
    """A TFLite model with dynamic dims ([-1, -1, 3]) from the real converter."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32, name="x")])
    def f(x):
        return {"y": tf.reduce_mean(tf.nn.relu(x), axis=1)}

    path = tmp_path_factory.mktemp("bench-inputs-tflite") / "dyn.tflite"
    converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    path.write_bytes(converter.convert())
    return path


# ---------------------------------------------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------------------------------------------
class Device:
    def __init__(self, tmp_path: Path, server, python: str, agent_cache: Path) -> None:
        self.root = tmp_path
        self.workdir = Path(f"{server.home}/wd/{tmp_path.name}")
        self.target = tmp_path / "dev.yaml"
        self.target.write_text(json.dumps({
            "arch": "native", "transport": "ssh", "formats": ["tflite", "onnx"],
            "runtimes": ["litert", "tflite-runtime", "onnxruntime"], "threads": 1,
            "connection": {"host": server.host, "user": server.user, "port": server.port,
                           "key": str(server.client_key), "python": python, "workdir": str(self.workdir)}}))
        self.known_hosts = server.write_known_hosts(tmp_path / "known_hosts")
        self.ssh_config = tmp_path / "ssh_config"
        self.ssh_config.write_text("")
        self.results = tmp_path / "results"
        self.agent_cache = agent_cache

    def options(self, **kw) -> BenchOptions:
        base = dict(targets=[str(self.target)], results=self.results, runs=RUNS, warmup=WARMUP,
                    known_hosts=str(self.known_hosts), ssh_config=str(self.ssh_config), connect_timeout=5.0,
                    timeout=120.0, agent_cache=self.agent_cache)
        base.update(kw)
        return BenchOptions(**base)

    def args(self) -> list[str]:
        return ["--target", str(self.target), "--known-hosts", str(self.known_hosts), "--ssh-config",
                str(self.ssh_config), "--results", str(self.results), "--runs", str(RUNS), "--warmup", str(WARMUP),
                "--connect-timeout", "5"]


@pytest.fixture(scope="session")
def agent_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("agent-cache")


@pytest.fixture
def py39_device(sshd, tmp_path, agent_cache) -> Device:
    """A Python 3.9 device (numpy<2, onnxruntime 1.19.2): the agent must run there."""
    return Device(tmp_path, sshd, _env("py39").python, agent_cache)


@pytest.fixture
def rpios_device(sshd, tmp_path, agent_cache) -> Device:
    return Device(tmp_path, sshd, _env("rpios").python, agent_cache)


def cli(*argv: object) -> int:
    return main([str(a) for a in argv])


def one(run) -> dict:
    [doc] = run.results
    assert doc["valid"] and doc["error"] is None, doc["error"]
    assert schema_problem(doc["agent"]) is None
    return doc


# ---------------------------------------------------------------------------------------------------------------
# dynamic dims: default shape, --shape, --inputs
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.ssh
def test_dynamic_dims_run_with_a_reported_default_shape(py39_device, models):
    doc = one(bench(py39_device.options(models=[models["dyn"]])))
    inputs = doc["agent"]["inputs"]
    assert doc["flags"] == ["random-inputs"] and inputs["source"] == "random" and inputs["generated"] is True
    assert inputs["tensors"] == [{"name": "x", "shape": [1, 3, 224, 224], "dtype": "float32",
                                  "signature": [-1, 3, -1, -1], "shape_from": "default"}]
    assert "batch 1 and 224" in inputs["dynamic_dims"] and inputs["int_range"] == [0, 127]
    assert doc["agent"]["io"]["inputs"][0]["shape"] == [1, 3, 224, 224]
    assert doc["agent"]["runtime"]["name"] == "onnxruntime" and doc["agent"]["parity"] is None


@pytest.mark.ssh
def test_shape_option_fixes_dynamic_dims(py39_device, models, capsys):
    code = cli("bench", models["dyn"], *py39_device.args(), "--shape", "x=2x3x16x8", "--json")
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["results"][0]["error"]
    [doc] = out["results"]
    assert doc["agent"]["inputs"]["tensors"][0]["shape"] == [2, 3, 16, 8]
    assert doc["agent"]["inputs"]["tensors"][0]["shape_from"] == "--shape"
    assert doc["request"]["shapes"] == ["x=2x3x16x8"]
    # no NAME for a single-input model; a shorter run than the default 224x224 one
    code = cli("bench", models["dyn"], *py39_device.args(), "--shape", "1x3x4x4", "--json")
    [doc] = json.loads(capsys.readouterr().out)["results"]
    assert code == 0 and doc["agent"]["inputs"]["tensors"][0]["shape"] == [1, 3, 4, 4]


@pytest.mark.ssh
def test_inputs_file_is_pushed_by_hash_and_fed(py39_device, models, tmp_path):
    real = tmp_path / "real.npz"
    np.savez(real, x=np.random.default_rng(0).random((3, 3, 20, 30)).astype(np.float64))  # float64: castable
    doc = one(bench(py39_device.options(models=[models["dyn"]], inputs=real)))
    inputs = doc["agent"]["inputs"]
    assert doc["flags"] == [] and inputs["source"] == "inputs" and inputs["generated"] is False
    assert inputs["sha256"] == sha256(real) == doc["artifact"]["inputs_sha256"]
    assert inputs["samples"] == 3 and inputs["keys"] == ["x"]
    assert inputs["tensors"][0]["shape"] == [1, 3, 20, 30] and inputs["tensors"][0]["shape_from"] == "file"
    blob = py39_device.workdir / "blobs" / sha256(real) / "real.npz"
    assert blob.read_bytes() == real.read_bytes()
    assert doc["transfer"]["inputs"] == real.stat().st_size
    assert doc["transfer"]["total"] == sum(doc["transfer"][k] for k in ("agent", "model", "reference", "inputs"))
    again = one(bench(py39_device.options(models=[models["dyn"]], inputs=real)))
    assert again["transfer"]["total"] == 0  # verified on the device, nothing sent
    # one sample without the N axis
    single = tmp_path / "single.npz"
    np.savez(single, x=np.ones((3, 5, 7), np.float32))
    doc = one(bench(py39_device.options(models=[models["dyn"]], inputs=single)))
    assert doc["agent"]["inputs"]["samples"] == 1 and doc["agent"]["inputs"]["tensors"][0]["shape"] == [1, 3, 5, 7]


@pytest.mark.ssh
def test_the_values_of_the_inputs_file_are_what_runs(py39_device, models, tmp_path):
    """Generated int64 indices (0..127) break the Gather; the file's (all < 10) must be the ones fed."""
    good = tmp_path / "idx.npz"
    np.savez(good, idx=np.array([0, 9, 4], np.int64))
    doc = one(bench(py39_device.options(models=[models["gather"]], inputs=good)))
    assert doc["agent"]["inputs"]["samples"] == 3 and doc["agent"]["inputs"]["keys"] == ["idx"]


# ---------------------------------------------------------------------------------------------------------------
# several inputs (one an int64 scalar) and outputs
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.ssh
def test_two_inputs_with_an_int64_scalar_and_two_outputs(rpios_device, models, tmp_path):
    doc = one(bench(rpios_device.options(models=[models["two"]])))
    tensors = {t["name"]: t for t in doc["agent"]["inputs"]["tensors"]}
    assert tensors["x"]["shape"] == [1, 4] and tensors["x"]["shape_from"] == "default"
    assert tensors["sr"] == {"name": "sr", "shape": [], "dtype": "int64", "signature": [], "shape_from": "model"}
    assert [o["name"] for o in doc["agent"]["io"]["outputs"]] == ["y1", "y2"]
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, x=np.ones((2, 4), np.float32), sr=np.array([16000, 8000], np.int64))
    doc = one(bench(rpios_device.options(models=[models["two"]], inputs=feeds)))
    assert doc["agent"]["inputs"]["samples"] == 2 and doc["agent"]["inputs"]["keys"] == ["x", "sr"]


@pytest.mark.ssh
def test_generated_values_the_model_rejects_say_so_and_int_range_fixes_it(rpios_device, models, capsys):
    code = cli("bench", models["gather"], *rpios_device.args())
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("edgeopt:"))
    assert code == 3
    assert "the model rejected generated inputs for idx shape [1]:" in line, line
    assert "--inputs" in line and "--int-range" in line and "--shape" in line
    assert "agent bug" not in err and "Traceback" not in err
    code = cli("bench", models["gather"], *rpios_device.args(), "--int-range", "0:9", "--json")
    [doc] = json.loads(capsys.readouterr().out)["results"]
    assert code == 0, doc["error"]
    assert doc["agent"]["inputs"]["int_range"] == [0, 9] and doc["request"]["int_range"] == "0:9"


# ---------------------------------------------------------------------------------------------------------------
# a bad --inputs file or --shape: exit 2, one line, nothing pushed
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.ssh
def test_bad_inputs_files_fail_on_the_host_before_any_push(rpios_device, models, tmp_path, capsys):
    cases = {
        "missing": ({"x": np.ones((2, 4), np.float32)}, "two", ["no array for input 'sr'"]),
        "extra": ({"x": np.ones((2, 4), np.float32), "sr": np.ones(2, np.int64), "rate": np.ones(2)}, "two",
                  ["'rate' names no input"]),
        "shape": ({"x": np.ones((2, 5), np.float32), "sr": np.ones(2, np.int64)}, "two",
                  ["'x' has shape [2, 5]", "takes (N, 4)"]),
        "channels": ({"x": np.ones((1, 4, 8, 8), np.float32)}, "dyn", ["'x' has shape [1, 4, 8, 8]",
                                                                        "takes (N, 3, any, any)"]),
        "float-index": ({"idx": np.ones(2, np.float32)}, "gather", ["'idx' holds float32 values",
                                                                         "takes int64"]),
        "counts": ({"x": np.ones((2, 4), np.float32), "sr": np.ones(3, np.int64)}, "two",
                   ["different numbers of samples"]),
    }
    for name, (arrays, model, needles) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        code = cli("bench", models[model], *rpios_device.args(), "--inputs", path)
        err = capsys.readouterr().err.strip()
        assert code == 2, (name, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert str(path) in err and all(n in err for n in needles), (name, err)
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("x = 1\n")
    assert cli("bench", models["dyn"], *rpios_device.args(), "--inputs", not_npz) == 2
    assert "not a readable .npz" in capsys.readouterr().err
    for shape, needle in [("y=1x3x4x4", "has no input 'y'"), ("x=1x4x4x4", "takes [-1, 3, -1, -1]"),
                          ("x=1x3x4", "takes [-1, 3, -1, -1]"), ("x=1xAx4", "expected NAME=1x3x224x224")]:
        assert cli("bench", models["dyn"], *rpios_device.args(), "--shape", shape) == 2, shape
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (shape, err)
    assert cli("bench", models["two"], *rpios_device.args(), "--shape", "1x4") == 2
    assert "names no input" in capsys.readouterr().err
    assert not rpios_device.workdir.exists()  # nothing pushed, the device never contacted
    assert not rpios_device.results.exists()


def test_input_options_that_cannot_apply_are_refused(models, tmp_path, capsys):
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, x=np.ones((1, 3, 4, 4), np.float32))
    common = ["--results", tmp_path / "results", "--artifacts", tmp_path / "artifacts"]
    for argv, needle in [(["--inputs", feeds], "apply to ready model files"),
                         ([models["dyn"], "--inputs", feeds, "--shape", "1x3x4x4"], "exclude each other"),
                         ([models["dyn"], "--inputs", tmp_path / "nope.npz"], "no such file"),
                         ([models["gather"], "--int-range", "9:0"], "LO is above HI"),
                         ([models["gather"], "--int-range", "zero"], "expected LO:HI")]:
        assert cli("bench", *argv, *common) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------------------------------
# TFLite: resize_tensor_input before allocate_tensors (transport: local)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tflite_dynamic_dims_are_resized_on_litert(dyn_tflite, tmp_path, agent_cache, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the local blob cache lands in this test's home
    base = dict(targets=["local"], results=tmp_path / "results", runs=RUNS, warmup=WARMUP, agent_cache=agent_cache,
                models=[dyn_tflite])
    doc = one(bench(BenchOptions(**base)))
    assert doc["agent"]["runtime"]["name"] == "litert"
    assert doc["agent"]["inputs"]["tensors"][0]["shape"] == [1, 224, 3]
    doc = one(bench(BenchOptions(**base, shapes=["2x5x3"])))
    io = doc["agent"]["io"]
    assert io["inputs"][0]["shape"] == [2, 5, 3] and io["inputs"][0]["shape_signature"] == [-1, -1, 3]
    assert io["outputs"][0]["shape"] == [2, 3]  # the interpreter was allocated again for the new shape
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, x=np.ones((4, 6, 3), np.float32))  # 4 samples of (6, 3)
    doc = one(bench(BenchOptions(**base, inputs=feeds)))
    assert doc["agent"]["inputs"]["samples"] == 4 and doc["agent"]["io"]["inputs"][0]["shape"] == [1, 6, 3]


# ---------------------------------------------------------------------------------------------------------------
# multi-input/-output reference.npz (docs/artifacts.md): per-output parity
# ---------------------------------------------------------------------------------------------------------------
def _built(root: Path, model: Path, reference: dict[str, np.ndarray]) -> Path:
    """artifacts/<target>/p1/{model.onnx, reference.npz, manifest.json}, as the build pipeline lays them out."""
    directory = root / "artifacts" / "local" / "p1"
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(model.read_bytes())
    np.savez(directory / "reference.npz", **reference)
    (directory / "manifest.json").write_text(json.dumps({
        "schema": 1, "target": "local", "profile": "p1",
        "reference": {"file": "reference.npz", "sha256": sha256(directory / "reference.npz"), "samples": 5},
        "artifacts": [{"file": "model.onnx", "format": "onnx", "runtime": "onnxruntime",
                       "sha256": sha256(directory / "model.onnx"), "bytes": model.stat().st_size}]}))
    return root / "artifacts"


def test_multi_output_reference_gives_parity_per_output(models, tmp_path, agent_cache, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    rng = np.random.default_rng(1)
    x = rng.random((5, 4)).astype(np.float32)
    sr = np.array([1, 2, 3, 4, 5], np.int64)
    session = ort.InferenceSession(str(models["two"]), providers=["CPUExecutionProvider"])
    y1, y2 = zip(*(session.run(None, {"x": x[i:i + 1], "sr": np.asarray(sr[i])}) for i in range(5)))
    y1, y2 = np.concatenate(y1), np.stack(y2)
    assert y1.shape == (5, 4) and y2.shape == (5, 1, 1)
    off = np.float32(0.25)
    artifacts = _built(tmp_path, models["two"], {
        "x_onnx:0": x, "x_onnx:1": sr, "y_float_onnx:0": y1, "y_float_onnx:1": y2,
        "y_onnx:0": y1, "y_onnx:1": y2 + off})  # the host's run of output 1 disagrees by 0.25
    run = bench(BenchOptions(targets=["local"], artifacts=artifacts, results=tmp_path / "results", runs=RUNS,
                             warmup=WARMUP, agent_cache=agent_cache))
    doc = one(run)
    parity = doc["agent"]["parity"]
    assert doc["agent"]["inputs"]["source"] == "reference" and doc["agent"]["inputs"]["samples"] == 5
    assert doc["agent"]["inputs"]["keys"] == ["x_onnx:0", "x_onnx:1"]
    assert [(o["index"], o["name"]) for o in parity["outputs"]] == [(0, "y1"), (1, "y2")]
    first, second = parity["outputs"]
    assert first["artifact"]["key"] == "y_onnx:0" and first["artifact"]["max_abs_diff"] < 1e-6
    assert first["artifact"]["top1_agreement"] == 1.0 and first["float"]["key"] == "y_float_onnx:0"
    assert second["artifact"]["key"] == "y_onnx:1" and abs(second["artifact"]["max_abs_diff"] - off) < 1e-6
    assert second["artifact"]["top1_agreement"] is None  # one value per sample
    assert second["float"]["max_abs_diff"] < 1e-6 and first["artifact"]["sqnr_db"] is None  # identical: no noise
    expected_sqnr = 10 * np.log10(np.sum((y2 + off).astype(np.float64) ** 2) / (5 * float(off) ** 2))
    assert abs(second["artifact"]["sqnr_db"] - expected_sqnr) < 1e-3
    # the headline figures (old readers, the gate) are the worst output's
    assert parity["worst_output"] == 1 and parity["output"] == "y2"
    assert parity["artifact"] == second["artifact"] and parity["max_abs_diff"] == second["artifact"]["max_abs_diff"]
    assert parity["samples"] == 5 and doc["agent"]["warnings"] == []


def test_schema_types_the_per_output_parity(models):
    doc = {"command": "run", "model": {"sha256": "0" * 64}, "latency_ms": {"p50": 1.0, "count": 1},
           "inputs": {"source": "inputs", "generated": False, "tensors": [{"name": "x", "shape": [1, 3]}]},
           "parity": {"worst_output": 1, "outputs": [
               {"index": 0, "name": "a", "artifact": {"all_finite": True, "max_abs_diff": 0.0}, "float": None},
               {"index": 1, "name": "b", "artifact": {"all_finite": True, "max_abs_diff": 0.5}, "float": None}]}}
    assert schema_problem(doc) is None
    doc["parity"]["outputs"][1]["artifact"]["max_abs_diff"] = "0.5"
    assert schema_problem(doc).startswith("parity.outputs.1.artifact.max_abs_diff")
    doc["parity"]["outputs"][1]["artifact"]["max_abs_diff"] = 0.5
    doc["inputs"]["tensors"][0]["shape"] = [1, "3"]
    assert schema_problem(doc).startswith("inputs.tensors.0.shape.1")
