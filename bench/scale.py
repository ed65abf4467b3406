"""Scale benchmark (issue 14): ratios measured side by side in one run.

  - a 12-cell build matrix (the bundled example and two other small 28x28 CNNs, briefly trained, x fp32, fp16,
    dynamic, int8, target local: TFLite + ONNX per cell): `edgeopt build --matrix` wall time on a local Ray (one
    worker per core) / serial (goal <= 0.6 on a 2-core machine); ``--profiles int8,qat-int8,pruned-int8,
    distilled-int8`` gives a matrix whose cells train (3-50 s each); the cells' quality verdicts are printed
  - the same matrix again with a warm cache / cold (goal <= 0.05): every cell answered before anything is sent
  - the results store: 1,000 results written by 4 concurrent writer processes into PostgreSQL (a server started
    here, as the tests start it: Debian's postgresql) and into SQLite — time ratio, and results lost or doubled
    (goal 0); ``--store-only`` runs just this (seconds)

Each figure is the wall time of a whole `edgeopt build` process (interpreter, imports, Ray start-up included), with
fresh output directories for the cold runs. The machine's load average, and the CPU seconds other processes used
during each timed run, are printed with the figures: other work on the machine moves them. So is the timeline of
the runs compared (from their progress lines: Ray up, first cell started and finished, last finished, exit).

With --repeat N the serial and Ray runs alternate N times and the medians are compared (load from other work on
the machine then hits both alike).

Usage: .venv/bin/python bench/scale.py [--profiles fp32,fp16,dynamic,int8] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import cpu_busy_seconds, print_rows  # noqa: E402

from edgeopt.paths import cache_root  # noqa: E402

# the example's digits for the two other models; training data too, for --profiles with pruned/distilled/qat-int8
EXAMPLE_DATA = "data: example:calibration, eval: example:eval, train: example:train"


def small_models() -> list[Path]:
    """Two small CNNs for the example's 28x28x1 digits, trained briefly (6 epochs of batch 32 on the example's
    training digits, fixed seeds: real classifiers, held-out accuracy printed, so the profiles that prune, distil or
    fine-tune them have something to keep), made once and cached."""
    out = cache_root() / "bench"
    paths = [out / "scale-wide32-trained6.keras", out / "scale-separable-trained6.keras"]
    if all(p.is_file() for p in paths):
        return paths
    from edgeopt.inputs.data import example_split
    from edgeopt.inputs.example_model import build_example_architecture
    from edgeopt.tf_env import quiet_tensorflow

    quiet_tensorflow()
    import keras

    out.mkdir(parents=True, exist_ok=True)
    train, held_out = example_split("train"), example_split("eval")
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    for filters in (32, 64):
        x = keras.layers.SeparableConv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    models = [build_example_architecture(width=32),
              keras.Model(inp, keras.layers.Dense(10, name="logits")(x), name="separable")]
    for model, path in zip(models, paths):
        model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(train.x, train.y, batch_size=32, epochs=6, verbose=0)
        accuracy = float((model.predict(held_out.x, verbose=0).argmax(1) == held_out.y).mean())
        print(f"{path.name}: trained, held-out accuracy {accuracy:.3f}", file=sys.stderr)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.keras")
        model.save(tmp)
        tmp.replace(path)
    return paths


TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int, seen: dict[int, float]) -> None:
    """Record the CPU seconds (user + system) of ``root`` and every process below it (Ray's raylet, GCS and
    workers are the driver's descendants), keeping each pid's latest reading in ``seen``."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        stats[int(name)] = fields
        children.setdefault(int(fields[1]), []).append(int(name))
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            seen[pid] = (int(stats[pid][11]) + int(stats[pid][12])) / TICK
        todo.extend(children.get(pid, []))


def run(matrix: Path, out: Path, ray: bool) -> tuple[float, dict, float, dict[str, Any]]:
    """Wall seconds, the --json document, the CPU seconds of the whole process tree (sampled every 0.2 s) and the
    run's phases from its progress lines on stderr (seconds since the launch; ``others``: the CPU seconds the rest
    of the machine used meanwhile, an upper bound: a process of the tree gone between two samples counts there)."""
    # --allow-degraded: a cell whose artifact is judged broken still counts as built here (a timing figure; the
    # verdicts are printed with it)
    cmd = [str(ROOT / ".venv" / "bin" / "edgeopt"), "build", "--matrix", str(matrix), "--out", str(out), "--json",
           "--allow-degraded"]
    if ray:
        cmd += ["--ray", "local"]
    busy0 = cpu_busy_seconds()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append((time.perf_counter() - t, line.rstrip("\n")))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    seen: dict[int, float] = {}
    while proc.poll() is None:
        tree_cpu(proc.pid, seen)
        time.sleep(0.2)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    reader.join()
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {chr(10).join(x for _, x in lines)[-2000:]}")
    cpu = sum(seen.values())
    return seconds, json.loads(stdout), cpu, {**phases(lines, seconds), "others": cpu_busy_seconds() - busy0 - cpu}


def phases(lines: list[tuple[float, str]], wall: float) -> dict[str, Any]:
    """When Ray was up (its "Ray: N cell(s)" line), the first cell started, the first and the last finished."""
    def first(pred: Callable[[str], bool]) -> float:
        return next((t for t, x in lines if pred(x)), float("nan"))

    done = [t for t, x in lines if ": finished in " in x]
    return {"ray_up": first(lambda x: x.startswith("Ray: ")), "first_started": first(lambda x: ": started (" in x),
            "first_finished": min(done, default=float("nan")), "last_finished": max(done, default=float("nan")),
            "exit": wall, "order": [x.split("] ", 1)[-1].split(": started (")[0] for _, x in lines if ": started (" in x]}


STORE_WRITER = """
import sys, time
from edgeopt.results.store import open_store
results, location, name, count, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
with open_store(results, location) as store:
    while not __import__("os").path.exists(go):
        time.sleep(0.001)
    t = time.perf_counter()
    run = f"run-{name}"
    store.begin_run({"run_id": run, "created_at": "2026-12-03T00:00:00+00:00", "targets": ["dev"],
                     "command": "bench/scale.py"})
    for i in range(count):
        store.add_result({"schema": 1, "result_id": f"{run}-dev-{i:04d}", "run_id": run, "target": "dev",
                          "created_at": "2026-12-03T00:00:00+00:00", "profile": "int8", "format": "tflite",
                          "artifact": {"file": "model.tflite", "sha256": f"{i:064x}", "bytes": 1000 + i},
                          "valid": True, "error": None, "agent": {"latency_ms": {"p50": 1.0 + i / 1000, "count": 5}}})
    store.finish_run(run, "2026-12-03T00:00:01+00:00", "complete")
    print(time.perf_counter() - t)
"""


def store_figures(tmp: Path, writers: int = 4, total: int = 1000) -> list[tuple[str, str, str]]:
    """``writers`` processes write ``total`` results at once (each its own run) into SQLite and into PostgreSQL (a
    server started here, as the tests start it): wall time from the go signal to the last writer's finish, and
    how many results each store then holds (distinct ids) against what was written."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pg import PgServer

    from edgeopt.results.store import open_store

    server = PgServer()
    figures: dict[str, tuple[float, int, int]] = {}
    try:
        server.start()
        for name, location in (("SQLite", str(tmp / "store-sqlite" / "edgeopt.sqlite")),
                               ("PostgreSQL", server.new_database())):
            results = tmp / f"store-{name}"
            open_store(results, location).close()  # created (and migrated) before the clock starts
            go = tmp / f"go-{name}"
            procs = [subprocess.Popen([sys.executable, "-c", STORE_WRITER, str(results), location, f"w{i}",
                                       str(total // writers), str(go)], stdout=subprocess.PIPE, text=True,
                                      cwd=ROOT) for i in range(writers)]
            time.sleep(2.0)  # every writer imported edgeopt and opened the store
            t = time.perf_counter()
            go.write_text("go")
            for proc in procs:
                proc.wait(timeout=600)
                if proc.returncode != 0:
                    raise SystemExit(f"a {name} writer failed ({proc.returncode})")
            wall = time.perf_counter() - t
            with open_store(results, location, create=False) as store:
                docs = store.query(limit=10 * total)
                figures[name] = (wall, len(docs), len({d["result_id"] for d in docs}))
    finally:
        server.cleanup()
    (sq, sq_n, sq_ids), (pg, pg_n, pg_ids) = figures["SQLite"], figures["PostgreSQL"]
    lost_doubled = f"SQLite {total - sq_ids} / {sq_n - sq_ids}, PostgreSQL {total - pg_ids} / {pg_n - pg_ids}"
    return [(f"store: {total} results by {writers} concurrent writers, PostgreSQL / SQLite, wall",
             f"{pg:.2f} s / {sq:.2f} s = {pg / sq:.3f}", "(one history for many runners)"),
            ("  results lost / doubled", lost_doubled, "0 / 0")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", default="fp32,fp16,dynamic,int8")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--store-only", action="store_true", help="only the results-store figure (seconds)")
    args = ap.parse_args()
    profiles = args.profiles.split(",")
    rows: list[tuple[str, str, str]] = []
    if args.store_only:
        with tempfile.TemporaryDirectory(prefix="edgeopt-bench-scale-") as tmpdir:
            rows = store_figures(Path(tmpdir))
        print_rows(rows)
        return
    wide, separable = small_models()
    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-scale-") as tmpdir:
        tmp = Path(tmpdir)
        matrix = tmp / "matrix.yaml"
        matrix.write_text(f"targets: [local]\nprofiles: [{', '.join(profiles)}]\nmodels:\n"
                          f"  - {{name: mnist, path: example}}\n"
                          f"  - {{name: wide, path: {wide}, {EXAMPLE_DATA}}}\n"
                          f"  - {{name: separable, path: {separable}, {EXAMPLE_DATA}}}\n")
        cells = 3 * len(profiles)
        load0 = os.getloadavg()[0]
        serials, rays = [], []
        for i in range(args.repeat):  # alternate, fresh output directories: every run cold
            serials.append(run(matrix, tmp / f"serial{i}", ray=False))
            rays.append(run(matrix, tmp / f"ray{i}", ray=True))
            print(f"run {i + 1}: serial {serials[-1][0]:.1f} s ({serials[-1][2]:.1f} CPU s), Ray {rays[-1][0]:.1f} s "
                  f"({rays[-1][2]:.1f} CPU s), load {os.getloadavg()[0]:.1f}, CPU s of other processes meanwhile "
                  f"{serials[-1][3]['others']:.1f} and {rays[-1][3]['others']:.1f}", flush=True)
        serial, doc_s, cpu_s, ph_s = sorted(serials, key=lambda r: r[0])[len(serials) // 2]
        on_ray, doc_r, cpu_r, ph_r = sorted(rays, key=lambda r: r[0])[len(rays) // 2]
        warm, doc_w, _, _ = run(matrix, tmp / f"ray{args.repeat - 1}", ray=True)  # right after the last cold run
        load1 = os.getloadavg()[0]
        assert len(doc_s["results"]) == len(doc_r["results"]) == cells and doc_s["sent"] == doc_r["sent"] == cells
        assert doc_w["sent"] == 0 and all(r["cached"] for r in doc_w["results"])
        # each cell's wall time as its runner saw it: serially the whole in-process build, on Ray from the task's
        # submission to its landing (the first cell in each process imports TensorFlow: once serially, once per
        # worker on Ray)
        cell_s = sum(r["cell_seconds"] for r in doc_s["results"])
        cell_r = sum(r["cell_seconds"] for r in doc_r["results"])
        rows.append((f"{cells}-cell matrix: Ray local ({os.cpu_count()} workers) / serial, wall"
                     + (f" (median of {args.repeat})" if args.repeat > 1 else ""),
                     f"{on_ray:.1f} s / {serial:.1f} s = {on_ray / serial:.3f}", "<= 0.6"))
        rows.append(("  sum of the cells' wall times: on Ray / serial", f"{cell_r:.1f} s / {cell_s:.1f} s = "
                     f"{cell_r / cell_s:.3f}", "(a TensorFlow import per worker)"))
        rows.append(("  each cell's wall time, serial / Ray (s)", ", ".join(
            f"{a['model']}/{a['profile']} {a['cell_seconds']:.1f}/{b['cell_seconds']:.1f}"
            for a, b in zip(doc_s["results"], doc_r["results"])), ""))
        rows.append(("  the order Ray started them in", ", ".join(ph_r["order"]), "(the longest expected first)"))
        for name, ph in (("serial", ph_s), ("Ray", ph_r)):
            up = f"Ray up {ph['ray_up']:.1f}, " if name == "Ray" else ""
            rows.append((f"  timeline of that {name} run (s since launch)",
                         f"{up}first cell started {ph['first_started']:.1f}, first finished {ph['first_finished']:.1f}, "
                         f"last finished {ph['last_finished']:.1f}, exit {ph['exit']:.1f}", ""))
        rows.append(("  CPU seconds of the process tree: Ray / serial", f"{cpu_r:.1f} s / {cpu_s:.1f} s = "
                     f"{cpu_r / cpu_s:.3f}", "(Ray's own overhead)"))
        rows.append(("  cores used on average (CPU s / wall s): serial, Ray", f"{cpu_s / serial:.2f}, "
                     f"{cpu_r / on_ray:.2f}", f"of {os.cpu_count()}"))
        verdicts = {(r["model"], r["profile"]): r["verdict"] for r in doc_s["results"]}
        assert verdicts == {(r["model"], r["profile"]): r["verdict"] for r in doc_r["results"]}, "Ray built otherwise"
        not_ok = ", ".join(f"{m}/{p} {v}" for (m, p), v in verdicts.items() if v != "ok")
        rows.append(("  the cells' quality verdicts (the same serially and on Ray)",
                     f"{sum(v == 'ok' for v in verdicts.values())} ok" + (f"; {not_ok}" if not_ok else ""), ""))
        rows.append((f"{cells}-cell matrix: warm cache / cold (Ray), wall", f"{warm:.2f} s / {on_ray:.1f} s = "
                     f"{warm / on_ray:.3f}", "<= 0.05"))
        rows.append(("  tasks sent on the warm run", f"{doc_w['sent']}", "0"))
        rows.append(("load average (1 min) before / after", f"{load0:.2f} / {load1:.2f}", "shared machine"))
        rows.append(("CPU s of other processes during those serial / Ray runs", f"{ph_s['others']:.1f} / "
                     f"{ph_r['others']:.1f}", "0 on a quiet machine"))
        rows += store_figures(tmp)
    print_rows(rows)


if __name__ == "__main__":
    main()
