"""Build benchmark: ratios measured side by side in one run (issue 2).

  - the bundled example: int8/fp32 TFLite bytes (goal <= 0.27), int8 accuracy drop on the held-out MNIST split
    (goal <= 0.3 pp)
  - a MobileNetV2-class Keras model built in code (random weights): int8/fp32 TFLite bytes, p50 latency in LiteRT at
    1 thread (goal <= 0.5), and the same for ONNX Runtime — each latency measured by the edgeopt agent in a fresh
    process, the two artifacts alternated
  - cached-rebuild / cold-build wall time of `edgeopt build` for the example (goal <= 0.05)

Usage: .venv/bin/python bench/build.py [--runs 50] [--threads 1] [--skip-mobilenet]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import print_rows  # noqa: E402

from edgeopt.bench.zipapp import build_zipapp  # noqa: E402
from edgeopt.build import BuildRequest, build  # noqa: E402
from edgeopt.config import load_profile, load_target  # noqa: E402
from edgeopt.paths import cache_root  # noqa: E402


def artifact(result, fmt):  # type: ignore[no-untyped-def]
    return next(a for a in result.manifest["artifacts"] if a["format"] == fmt)


def agent_p50(pyz: Path, path: Path, sha: str, runs: int, threads: int) -> float:
    proc = subprocess.run([sys.executable, str(pyz), "run", "--model", str(path), "--sha256", sha,
                           "--runs", str(runs), "--warmup", "10", "--threads", str(threads)],
                          capture_output=True, text=True, check=True)
    return float(json.loads(proc.stdout)["latency_ms"]["p50"])


def mobilenet(tmp: Path) -> tuple[Path, Path]:
    model_path = cache_root() / "bench" / "mobilenetv2-224-random.keras"
    calib_path = cache_root() / "bench" / "mobilenetv2-calib32.npz"
    if not model_path.is_file():
        from edgeopt.tf_env import quiet_tensorflow

        quiet_tensorflow()
        import keras

        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), alpha=1.0)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model.save(model_path)
    if not calib_path.is_file():
        x = np.random.default_rng(0).uniform(-1, 1, (32, 224, 224, 3)).astype(np.float32)
        np.savez(calib_path, x=x)
    return model_path, calib_path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-mobilenet", action="store_true")
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-") as tmpdir:
        tmp = Path(tmpdir)
        local = load_target("local")
        fp32, int8 = load_profile("fp32"), load_profile("int8")

        # 1. the example: sizes and accuracy ----------------------------------------------------------------
        results = {r.profile: r for r in build(BuildRequest(target=local, profiles=[fp32, int8], out=tmp / "ex"))}
        b32, b8 = artifact(results["fp32"], "tflite")["bytes"], artifact(results["int8"], "tflite")["bytes"]
        m8 = artifact(results["int8"], "tflite")["metrics"]
        rows.append(("example int8/fp32 TFLite bytes", f"{b8:,} / {b32:,} = {b8 / b32:.3f}", "<= 0.27"))
        rows.append(("example int8 accuracy drop (held-out, 1000)",
                     f"{m8['float_accuracy']:.4f} -> {m8['accuracy']:.4f} = {m8['accuracy_drop_pp']:.2f} pp",
                     "<= 0.3 pp"))

        # 2. cached rebuild vs cold build, whole CLI process each ------------------------------------------
        cli = [str(ROOT / ".venv" / "bin" / "edgeopt"), "build", "-p", "fp32,int8", "--json", "--out",
               str(tmp / "cli")]
        t = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        out = subprocess.run(cli, check=True, capture_output=True, text=True)
        warm = time.perf_counter() - t
        assert all(r["cached"] for r in json.loads(out.stdout)["results"])
        rows.append(("cached rebuild / cold build (CLI wall time)", f"{warm:.2f} s / {cold:.2f} s = "
                     f"{warm / cold:.3f}", "<= 0.05"))

        # 3. MobileNetV2-class model: size and latency ----------------------------------------------------
        if not args.skip_mobilenet:
            model, calib = mobilenet(tmp)
            t = time.perf_counter()
            mres = {r.profile: r for r in build(BuildRequest(target=local, profiles=[fp32, int8], model=str(model),
                                                             data=str(calib), out=tmp / "mnv2"))}
            conv_s = time.perf_counter() - t
            pyz = build_zipapp(tmp / "agent.pyz")
            for fmt, runtime in (("tflite", "LiteRT"), ("onnx", "ONNX Runtime")):
                a32, a8 = artifact(mres["fp32"], fmt), artifact(mres["int8"], fmt)
                p32s, p8s = [], []
                for _ in range(3):  # alternate the two artifacts so drift hits both alike
                    p32s.append(agent_p50(pyz, mres["fp32"].directory / a32["file"], a32["sha256"], args.runs,
                                          args.threads))
                    p8s.append(agent_p50(pyz, mres["int8"].directory / a8["file"], a8["sha256"], args.runs,
                                         args.threads))
                p32, p8 = float(np.median(p32s)), float(np.median(p8s))
                rows.append((f"MobileNetV2 int8/fp32 {fmt} bytes", f"{a8['bytes']:,} / {a32['bytes']:,} = "
                             f"{a8['bytes'] / a32['bytes']:.3f}", "<= 0.27" if fmt == "tflite" else ""))
                rows.append((f"MobileNetV2 int8/fp32 p50 {runtime}, {args.threads} thread",
                             f"{p8:.2f} ms / {p32:.2f} ms = {p8 / p32:.3f}", "<= 0.5" if fmt == "tflite" else ""))
            rows.append(("MobileNetV2 fp32+int8 build (both formats)", f"{conv_s:.1f} s", ""))
        shutil.rmtree(tmp / "cli", ignore_errors=True)

    print_rows(rows, value_width=40)


if __name__ == "__main__":
    main()
