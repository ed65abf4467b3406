"""The build matrix (models x targets x profiles) serially and on a real local Ray: the same manifests and
artifacts either way, the cache answered before any task is sent, a broken cell failing alone with its line,
inputs a node cannot see shipped by content, and no Ray process left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeopt.artifacts.manifest import Manifest
from edgeopt.build.matrix import Cell, CellOutcome, MatrixProgress, expand, heaviest_first, load_matrix, run_matrix
from edgeopt.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EDGEOPT = [sys.executable, "-m", "edgeopt.cli"]


def ray_processes() -> set[int]:
    """Pids of Ray's own processes (raylet, GCS, workers) on this machine."""
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if any(w in cmd for w in (b"raylet", b"gcs_server", b"ray::", b"ray/_private/workers", b"dashboard/agent")):
            out.add(int(pid))
    return out


def tiny_model(path: Path, seed: int) -> Path:
    """A small CNN for 28x28x1 digits (random weights, 10 logits): fits the example's data."""
    from edgeopt.tf_env import quiet_tensorflow

    quiet_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, name="logits")(x)
    keras.Model(inp, out).save(path)
    return path


class Recorder(MatrixProgress):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def cached(self, cell: Cell) -> None:
        self.events.append(("cached", cell.label))

    def started(self, cell: Cell, where: str) -> None:
        self.events.append(("started", cell.label))

    def finished(self, cell: Cell, seconds: float, where: str) -> None:
        assert seconds > 0
        self.events.append(("finished", cell.label))

    def failed(self, cell: Cell, error: str, seconds: float) -> None:
        self.events.append(("failed", cell.label))


@pytest.fixture(scope="module")
def matrix_files(tmp_path_factory: pytest.TempPathFactory, example_model: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("matrix")
    tiny_model(root / "tiny.keras", 1)
    (root / "broken.keras").write_bytes(b"PK\x03\x04 this is not a Keras archive")
    good = {"profiles": ["fp32", "int8"], "models": [
        {"name": "mnist", "path": "example"},
        {"name": "tiny", "path": "tiny.keras", "data": "example:calibration", "eval": "example:eval"}]}
    (root / "good.yaml").write_text(yaml.safe_dump(good))
    with_broken = {**good, "models": good["models"] + [{"name": "broken", "path": "broken.keras",
                                                         "data": "example:calibration", "profiles": ["fp32"]}]}
    (root / "matrix.yaml").write_text(yaml.safe_dump(with_broken))
    return {"root": root, "good": root / "good.yaml", "matrix": root / "matrix.yaml"}


def onnx_content(path: Path) -> tuple[list[str], list[bytes]]:
    """An ONNX graph up to tf2onnx's node names (a process-wide counter: the n-th conversion in a process gets
    other suffixes): op types in order, initializer values sorted."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    ops = [n.op_type for n in m.graph.node]
    values = sorted(numpy_helper.to_array(i).tobytes() + str(numpy_helper.to_array(i).shape).encode()
                    for i in m.graph.initializer)
    return ops, values


EXACT = ("verdict", "output", "figure", "samples", "accuracy", "float_accuracy", "top1_agreement", "accuracy_drop_pp",
         "classifier", "shape", "channels", "format", "file", "sha256_x")


def assert_same_figures(a: object, b: object, where: str = "") -> None:
    """Quality figures and metrics: verdicts, accuracies, names and shapes exactly; measured numbers to rounding
    (a Ray task runs TensorFlow on its 1 CPU, the serial build on every core: float predictions differ in the
    last bits, and figures such as the SQNR of a near-perfect fp32 artifact amplify that: two SQNRs over 100 dB both
    say "float rounding" and count as equal)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        decibels = str(a.get("figure", "")).endswith("_db")
        for k in a:
            if ("_db" in k or k == "value" and decibels) and min(a[k], b[k]) >= 100:
                continue
            if k == "worst_channel" and min(a.get("channel_snr_db_min", 0), b.get("channel_snr_db_min", 0)) >= 100:
                continue  # every channel at float rounding: which one is "worst" is noise
            if k in EXACT:
                assert a[k] == b[k], f"{where}.{k}: {a[k]} != {b[k]}"
            else:
                assert_same_figures(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_figures(x, y, f"{where}[{i}]")
    elif isinstance(a, (int, float)) and not isinstance(a, bool):
        assert b == pytest.approx(a, rel=2e-3, abs=1e-4), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_reference(a: Path, b: Path) -> None:
    """reference.npz: inputs, labels and every artifact's outputs exactly; the float model's outputs to float
    rounding (TensorFlow's thread count, see assert_same_figures)."""
    ra, rb = np.load(a), np.load(b)
    assert sorted(ra.files) == sorted(rb.files)
    for k in ra.files:
        if k.startswith("y_float"):
            np.testing.assert_allclose(ra[k], rb[k], rtol=1e-5, atol=1e-5, err_msg=k)
        else:
            np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)


def by_label(outcomes: list[CellOutcome]) -> dict[str, CellOutcome]:
    return {o.cell.label: o for o in outcomes}


@pytest.mark.slow
def test_matrix_on_ray_matches_serial_then_is_all_cached(matrix_files: dict[str, Path], tmp_path: Path) -> None:
    from edgeopt.build.ray_cells import ray_runner

    before = ray_processes()
    matrix = load_matrix(matrix_files["matrix"])
    serial_rec, ray_rec = Recorder(), Recorder()
    serial = by_label(run_matrix(expand(matrix, tmp_path / "serial"), serial_rec))
    on_ray = by_label(run_matrix(expand(matrix, tmp_path / "ray"), ray_rec, ray_runner("local")))
    assert sorted(serial) == sorted(on_ray) == ["broken/local/fp32", "mnist/local/fp32", "mnist/local/int8",
                                                "tiny/local/fp32", "tiny/local/int8"]
    # the broken model fails alone, with its one line, in the Ray worker as in-process
    for outcomes in (serial, on_ray):
        bad = outcomes.pop("broken/local/fp32")
        assert bad.result is None and bad.sent and "broken.keras" in bad.error and "\n" not in bad.error
        assert all(o.result is not None and not o.cached and o.sent for o in outcomes.values())
    assert on_ray["tiny/local/int8"].where  # the node that built it
    assert ("failed", "broken/local/fp32") in ray_rec.events and ray_rec.events.count(("started", "mnist/local/fp32")) == 1
    for label, s in serial.items():
        r = on_ray[label]
        ms, mr = s.result.manifest, r.result.manifest
        assert r.result.directory == tmp_path / "ray" / Path(label) and not r.result.manifest.verify(r.result.directory)
        assert ms["build_key"] == mr["build_key"] == s.cell.key == r.cell.key
        assert ms["source"] == mr["source"] and ms["data"] == mr["data"] and ms["skipped"] == mr["skipped"]
        assert {k: v for k, v in ms["reference"].items() if k != "sha256"} == \
               {k: v for k, v in mr["reference"].items() if k != "sha256"}
        assert_same_reference(s.result.directory / "reference.npz", r.result.directory / "reference.npz")
        assert ms["verdict"] == mr["verdict"] is not None
        for a_s, a_r in zip(ms["artifacts"], mr["artifacts"], strict=True):
            assert a_s["file"] == a_r["file"]
            assert_same_figures(a_s["quality"], a_r["quality"], f"{label}/{a_s['file']}.quality")
            assert_same_figures(a_s["metrics"], a_r["metrics"], f"{label}/{a_s['file']}.metrics")
            if a_s["format"] == "tflite":  # the TFLite converter is byte-deterministic
                assert a_s["sha256"] == a_r["sha256"], label
            else:
                assert onnx_content(s.result.directory / a_s["file"]) == onnx_content(r.result.directory / a_r["file"])
    assert ray_processes() - before == set(), "Ray processes left after the run"

    # second run of the good cells: all cached, the runner (Ray) is never called, nothing is sent
    calls: list[list[Cell]] = []

    def runner(cells: list[Cell], progress: MatrixProgress) -> list[CellOutcome]:
        calls.append(cells)
        return ray_runner("local")(cells, progress)

    rec = Recorder()
    again = run_matrix(expand(load_matrix(matrix_files["good"]), tmp_path / "ray"), rec, runner)
    assert calls == [] and len(again) == 4 and all(o.cached and not o.sent for o in again)
    assert [e for e, _ in rec.events] == ["cached"] * 4
    import ray

    assert not ray.is_initialized()


@pytest.mark.slow
def test_cli_matrix_cached_run_sends_nothing_and_a_failed_cell_exits_1(matrix_files: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = subprocess.run([*EDGEOPT, "build", "--matrix", str(matrix_files["matrix"]), "-p", "fp32", "--out",
                            str(out), "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    doc = json.loads(first.stdout)
    assert [f["cell"] for f in doc["failed"]] == ["broken/local/fp32"] and doc["sent"] == 3
    assert sorted((r["model"], r["profile"], r["cached"]) for r in doc["results"]) == [
        ("mnist", "fp32", False), ("tiny", "fp32", False)]
    assert "edgeopt: error: cell broken/local/fp32 failed: " in first.stderr
    assert (out / "mnist" / "local" / "fp32" / "manifest.json").is_file()
    # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." (printed by C++ on fd 2) is kept out
    assert "XNNPACK" not in first.stderr and not any(x.startswith("INFO:") for x in first.stderr.splitlines())

    before = ray_processes()
    second = subprocess.run([*EDGEOPT, "build", "--matrix", str(matrix_files["good"]), "-p", "fp32", "--out", str(out),
                             "--ray", "local", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["sent"] == 0 and doc["failed"] == [] and all(r["cached"] for r in doc["results"])
    assert second.stderr.count("cached: nothing sent") == 2 and "Ray:" not in second.stderr  # Ray never started
    assert ray_processes() - before == set()


@pytest.mark.slow
def test_a_node_without_the_input_path_gets_it_by_content(matrix_files: dict[str, Path], tmp_path: Path) -> None:
    """What a worker on another machine does: the model's path does not exist there, so it builds from the
    shipped bytes, and the manifest still names the path the user gave. The result comes back through a shared
    directory (--ray-shared-dir): the driver moves it into place and the worker's scratch directory goes."""
    import shutil

    from edgeopt.build.matrix import KeyPlanner, Matrix, MatrixModel
    from edgeopt.build.ray_cells import build_cell, land, ship_inputs
    from edgeopt.build.ray_session import ray_session

    src = tmp_path / "models"
    src.mkdir()
    shutil.copy(matrix_files["root"] / "tiny.keras", src / "tiny.keras")
    matrix = Matrix(profiles=["fp32"], models=[MatrixModel(name="tiny", path=str(src / "tiny.keras"),
                                                           data="example:calibration", eval="example:eval")])
    (cell,) = expand(matrix, tmp_path / "out")
    cell.key = KeyPlanner().key(cell)
    shared = tmp_path / "shared"
    shared.mkdir()
    before = ray_processes()
    with ray_session("local") as ray:
        shipped = ship_inputs(ray, [cell])
        src.rename(tmp_path / "elsewhere")  # the path is gone: only the object store has the bytes
        doc = ray.get(ray.remote(build_cell).remote(cell.request, list(shipped.values()), str(shared)))
    assert doc["ok"], doc.get("error")
    assert "tar" not in doc and Path(doc["dir"]).is_relative_to(shared)
    outcome = land(cell, doc, MatrixProgress(), 1.0)
    assert list(shared.iterdir()) == []
    assert outcome.result is not None, outcome.error
    manifest = outcome.result.manifest
    assert manifest["source"]["path"] == str(src / "tiny.keras") and manifest["build_key"] == cell.key
    assert not manifest.verify(cell.directory)
    assert ray_processes() - before == set()


def autoscaler_monitors() -> set[int]:
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"autoscaler/_private/monitor.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.add(int(pid))
        except OSError:
            continue
    return out


@pytest.mark.slow
def test_local_ray_stops_its_autoscaler_monitor_before_the_gcs() -> None:
    """ray.shutdown() stops the GCS before the autoscaler monitor, whose SIGTERM handler then waits for the gone
    GCS until Ray kills it a second later; a local Ray's monitor is stopped first (through Ray's private node
    object: this test says so when a Ray upgrade moves it), and Ray goes on working without it."""
    from edgeopt.build.ray_session import ray_session, stop_autoscaler_monitor

    before, monitors = ray_processes(), autoscaler_monitors()
    with ray_session("local") as ray:
        mine = autoscaler_monitors() - monitors
        assert len(mine) == 1, "a local Ray starts one autoscaler monitor"
        stop_autoscaler_monitor(ray)
        assert autoscaler_monitors() & mine == set()
        assert ray.get(ray.remote(num_cpus=1)(lambda: 42).remote()) == 42
    assert ray_processes() - before == set() and autoscaler_monitors() - monitors == set()


def test_a_runner_gets_ready_while_the_cells_are_keyed_and_is_closed(tmp_path: Path) -> None:
    """A runner with prepare() (Ray) is readied on the caller's thread while the keys are computed on another, as
    soon as some cell surely needs work (no manifest yet); it is closed at the end even when no cell was left to
    hand it (here the only cell's model cannot be read: it fails in the driver, alone)."""
    import threading

    from edgeopt.build.matrix import Matrix, MatrixModel

    class Runner:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []

        def prepare(self) -> None:
            self.calls.append(("prepare", threading.get_ident()))

        def close(self) -> None:
            self.calls.append(("close", threading.get_ident()))

        def __call__(self, cells: list[Cell], progress: MatrixProgress) -> list[CellOutcome]:
            self.calls.append(("run", threading.get_ident()))
            return []

    class Where(MatrixProgress):
        thread = 0

        def failed(self, cell: Cell, error: str, seconds: float) -> None:
            self.thread = threading.get_ident()

    matrix = Matrix(profiles=["fp32"], models=[MatrixModel(name="gone", path=str(tmp_path / "gone.keras"),
                                                           data="example:calibration")])
    runner, where = Runner(), Where()
    (outcome,) = run_matrix(expand(matrix, tmp_path / "out"), where, runner)
    assert outcome.result is None and "gone.keras" in outcome.error and not outcome.sent
    me = threading.get_ident()
    assert runner.calls == [("prepare", me), ("close", me)]
    assert where.thread not in (0, me)  # keyed on the second thread


def test_matrix_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("models:\n  - {name: a, pth: x.keras}\n")
    with pytest.raises(ConfigError, match=r"m.yaml.*models.0.pth.*unknown field") as exc:
        load_matrix(bad)
    assert "path" in (exc.value.hint or "")
    bad.write_text("models:\n  - {name: a}\n  - {name: a}\n")
    with pytest.raises(ConfigError, match="names must be unique"):
        load_matrix(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_matrix(tmp_path / "missing.yaml")


def test_matrix_cells_layout_and_lab_file(tmp_path: Path, example_model: Path) -> None:
    (tmp_path / "m.yaml").write_text("targets: local, rpi4\nprofiles: [fp32]\nout: built\nmodels:\n"
                                     "  - {name: a, path: example}\n  - {name: b, path: b.onnx, profiles: [int8]}\n")
    cells = expand(load_matrix(tmp_path / "m.yaml"), tmp_path / "out")
    assert [c.label for c in cells] == ["a/local/fp32", "a/rpi4/fp32", "b/local/int8", "b/rpi4/int8"]
    assert cells[2].directory == tmp_path / "out" / "b" / "local" / "int8"
    assert cells[0].request.data == "example:calibration" and cells[2].request.model == str(tmp_path / "b.onnx")
    assert load_matrix(tmp_path / "m.yaml").path("built") == str(tmp_path / "built")
    lab = ROOT / "examples" / "lab.yaml"
    m = load_matrix(lab)  # the lab's models x the targets of its devices, into the lab's artifacts directory
    assert [x.name for x in m.models] == ["mnist"] and m.targets == ["rpi4", "rpi5", "android-arm64"]
    assert m.out == str(ROOT / "examples" / "artifacts" / "ci")


def test_cells_go_out_longest_expected_first(tmp_path: Path) -> None:
    """A pool takes the longest cells first (no long cell left to start last): by their last build's seconds when
    every cell has one, else the training cells by epochs x model size, then the others by model size."""
    (tmp_path / "big.onnx").write_bytes(b"x" * 3000)
    (tmp_path / "small.onnx").write_bytes(b"x" * 1000)
    (tmp_path / "m.yaml").write_text("profiles: [fp32, qat-int8, int8, distilled-int8, pruned-int8]\nmodels:\n"
                                     "  - {name: small, path: small.onnx}\n  - {name: big, path: big.onnx}\n")
    cells = expand(load_matrix(tmp_path / "m.yaml"), tmp_path / "out")
    labels = [c.label.replace("/local", "") for c in heaviest_first(cells)]
    # epochs x bytes: distil 8 x 3000, prune 4 x 3000, distil 8 x 1000, prune 4 x 1000, qat 1 x 3000, 1 x 1000;
    # then the conversions, the big model's first, each model's in the matrix's order
    assert labels == ["big/distilled-int8", "big/pruned-int8", "small/distilled-int8", "small/pruned-int8",
                      "big/qat-int8", "small/qat-int8", "big/fp32", "big/int8", "small/fp32", "small/int8"]
    assert [c.label for c in cells][0] == "small/local/fp32"  # the matrix itself is left in its order

    seconds = {c.label: float(i + 1) for i, c in enumerate(cells)}  # the matrix's order: the last built longest
    for cell in cells:
        cell.directory.mkdir(parents=True)
    for cell in cells[:-1]:
        Manifest({"build_key": "an older key", "build_seconds": seconds[cell.label]}).write(cell.directory)
    # one cell never built: no history for all, so the guess still decides
    assert [c.label.replace("/local", "") for c in heaviest_first(cells)] == labels
    Manifest({"build_key": "an older key", "build_seconds": seconds[cells[-1].label]}).write(cells[-1].directory)
    assert heaviest_first(cells) == cells[::-1]
    (cells[0].directory / "manifest.json").write_text("{not json")  # unreadable: no history, the guess
    assert [c.label.replace("/local", "") for c in heaviest_first(cells)] == labels


def lines_of(proc: subprocess.Popen[str]) -> list[str]:
    """stderr's lines as they come (a thread appends them), for a test that acts on progress."""
    import threading

    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def wait_until(check: object, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended (or hung) before the moment"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("ray", [False, True], ids=["serial", "ray-local"])
def test_sigterm_is_an_interrupt_no_staging_left(matrix_files: dict[str, Path], tmp_path: Path, ray: bool) -> None:
    """A CI job cancelled (SIGTERM) mid-matrix: one line, exit 130 as for Ctrl-C, no half-built directory in the
    output tree, the landed cells intact, no Ray process left (and no stack dump from Ray's own handler)."""
    before = ray_processes()
    # its own temporary directory (short: Ray puts its sockets there), so that other edgeopt processes on the
    # machine cannot be taken for its leftovers
    temp = Path(tempfile.mkdtemp(prefix="eo-"))
    scratch_before: set[Path] = set()
    out = tmp_path / "out"
    proc = subprocess.Popen([*EDGEOPT, "build", "--matrix", str(matrix_files["good"]), "--out", str(out),
                             *(["--ray", "local"] if ray else [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env={**os.environ, "TMPDIR": str(temp)})
    lines = lines_of(proc)
    wait_until(lambda: any(": finished in " in x for x in lines), proc)  # one cell landed, others under way
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    err = "".join(lines)
    assert proc.returncode == 130, err
    assert "edgeopt: interrupted; nothing half-written was left in place" in err and "SIGTERM received" not in err
    assert not [p for p in out.rglob("*") if "staging" in p.name]
    landed = [m.parent for m in out.rglob("manifest.json")]
    assert landed and all(not Manifest.read(d).verify(d) for d in landed)
    time.sleep(1.0)
    assert ray_processes() - before == set(), "Ray processes left after SIGTERM"
    left = {p for p in temp.iterdir() if p.name.startswith((".edgeopt-cell-", "edgeopt-"))} - scratch_before
    shutil.rmtree(temp, ignore_errors=True)
    assert not left, f"temporary files of the killed cells left: {sorted(left)}"


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_json_stays_clean(matrix_files: dict[str, Path], tmp_path: Path) -> None:
    """Ray prints its raylet's news ("a worker died…") on the driver's stdout: with --json it goes to stderr."""
    proc = subprocess.Popen([*EDGEOPT, "build", "--matrix", str(matrix_files["good"]), "--out", str(tmp_path / "o"),
                             "--ray", "local", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    lines = lines_of(proc)
    victims: list[int] = []

    def a_cell_is_running() -> bool:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::build_cell"):
                    victims.append(int(pid))
                    return True
            except OSError:
                continue
        return False

    wait_until(a_cell_is_running, proc)
    os.kill(victims[0], signal.SIGKILL)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    proc.wait(timeout=600)
    err = "".join(lines)
    doc = json.loads(stdout)  # nothing but the JSON on stdout
    assert proc.returncode == 0 and len(doc["results"]) == 4 and doc["failed"] == [], err
    assert "A worker died or was killed while executing a task" in err  # Ray's line, on stderr
    # the cell is sent again once, and the user is told which one and why
    assert re.search(r"\S+/local/\S+: its Ray worker was lost \(WorkerCrashedError\) after [0-9.]+ s; sending it "
                     r"again \(attempt 2 of 2\)", err), err


def test_a_task_on_a_joined_cluster_removes_what_killed_workers_left(tmp_path: Path, monkeypatch) -> None:
    """No driver-owned scratch directory on a joined cluster's nodes: each task's temporary files go under one
    directory named after its worker's pid, and a later task removes those of workers that are gone."""
    from edgeopt.build.ray_cells import TASK_ROOT, task_scratch_root

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{TASK_ROOT}{gone.stdout.strip()}-x1"
    (dead / ".edgeopt-cell-y" / "edgeopt-export-z").mkdir(parents=True)
    alive = tmp_path / f"{TASK_ROOT}{os.getppid()}-x2"  # a live worker's (this test's parent process)
    alive.mkdir()
    other = tmp_path / "edgeopt-ray-task-notapid"
    other.mkdir()
    root = Path(task_scratch_root())
    assert root.parent == tmp_path and root.name.startswith(f"{TASK_ROOT}{os.getpid()}-") and root.is_dir()
    assert not dead.exists() and alive.is_dir() and other.is_dir()


def test_a_cell_built_from_inputs_changed_meanwhile_says_so(tmp_path: Path) -> None:
    """Same edgeopt and tools on the node, another content key: the inputs moved under the matrix (not a lock to
    install)."""
    from edgeopt import __version__
    from edgeopt.build.pipeline import tool_versions
    from edgeopt.build.ray_cells import land

    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "m.yaml").write_text("profiles: [fp32]\nmodels:\n  - {name: m, path: m.onnx}\n")
    (cell,) = expand(load_matrix(tmp_path / "m.yaml"), tmp_path / "out")
    cell.key = "the key the driver computed"
    recorder = Recorder()
    doc = {"ok": True, "node": "n1", "seconds": 1.0,
           "manifest": {"build_key": "another", "edgeopt_version": __version__, "tools": tool_versions()}}
    outcome = land(cell, doc, recorder, 1.0)
    assert outcome.result is None and recorder.events == [("failed", "m/local/fp32")]
    assert outcome.error is not None and outcome.error.startswith("its inputs changed while the matrix ran (")
    assert str(tmp_path / "m.onnx") in outcome.error and "constraints.txt" not in outcome.error
    other = {**doc, "manifest": {**doc["manifest"], "tools": {**tool_versions(), "tensorflow": "0.0"}}}
    assert "tensorflow 0.0 there vs" in (land(cell, other, recorder, 1.0).error or "")
    assert not (tmp_path / "out").exists()


def test_ray_flags_errors_are_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    auto = subprocess.run([*EDGEOPT, "build", "-p", "fp32", "--ray", "auto", "--out", str(tmp_path), "--force"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert auto.returncode == 3 and auto.stderr.count("\n") == 1, auto.stderr
    assert "--ray auto: no running Ray cluster found" in auto.stderr and "ray start --head" in auto.stderr
    # RAY_ADDRESS naming a port where nothing listens: said at once (Ray itself retries for minutes)
    from pg import free_port

    t0 = time.monotonic()
    nowhere = subprocess.run([*EDGEOPT, "build", "-p", "fp32", "--ray", "auto", "--out", str(tmp_path), "--force"],
                             capture_output=True, text=True, env={**env, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"},
                             cwd=tmp_path, timeout=120)
    assert nowhere.returncode == 3 and nowhere.stderr.count("\n") == 1, nowhere.stderr
    assert "--ray auto: nothing answers at RAY_ADDRESS=127.0.0.1:" in nowhere.stderr and time.monotonic() - t0 < 60
    missing = subprocess.run([sys.executable, "-c", "import sys; sys.modules['ray'] = None\n"
                              "from edgeopt.cli.main import main\n"
                              f"sys.exit(main(['build', '-p', 'fp32', '--ray', 'local', '--out', {str(tmp_path)!r}]))"],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "pip install 'edgeopt[ray]'" in missing.stderr, missing.stderr
    assert missing.stderr.count("\n") == 1
    shared = subprocess.run([*EDGEOPT, "build", "--ray-shared-dir", str(tmp_path)], capture_output=True, text=True)
    assert shared.returncode == 2 and "--ray-shared-dir needs --ray" in shared.stderr
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.zeros((1, 28, 28, 1), np.float32))
    both = subprocess.run([*EDGEOPT, "build", "--matrix", str(tmp_path / "m.yaml"), "--data", str(npz)],
                          capture_output=True, text=True)
    assert both.returncode == 2 and "drop data" in both.stderr
