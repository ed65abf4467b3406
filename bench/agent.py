"""Agent benchmark: what the agent's measurement costs, and how repeatable its figures are.

    .venv/bin/python bench/agent.py [--threads 1] [--runs 100] [--warmup 10] [--repeats 5] [--python PY]

* Overhead: p50 reported by the agent / p50 of a bare ``interpreter.invoke()`` loop, same model, same runtime,
  same threads, each in a fresh process, the two alternating (goal <= 1.02).
* Stability: coefficient of variation (std / mean) of the agent's p50 over the repeated agent runs.

Model: MobileNetV2 (alpha 1.0, 224x224x3, random weights, built in code), fp32 TFLite, cached under
``$EDGEOPT_TEST_CACHE`` or ``~/.cache/edgeopt-test``/bench (building it imports TensorFlow once, ~20 s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeopt.bench.zipapp import build_zipapp  # noqa: E402 (host side: builds the zipapp)

GOAL_OVERHEAD = 1.02

# The bare loop: what a person would write to time invoke(); same percentile definition as the agent.
BARE_LOOP = r"""
import json, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
path, threads, warmup, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
interp = Interpreter(model_path=path, num_threads=threads)
interp.allocate_tensors()
inp = interp.get_input_details()[0]
interp.set_tensor(inp["index"], np.random.RandomState(0).random_sample(inp["shape"]).astype(inp["dtype"]))
for _ in range(warmup):
    interp.invoke()
samples = []
for _ in range(runs):
    t0 = time.perf_counter_ns()
    interp.invoke()
    samples.append((time.perf_counter_ns() - t0) / 1e6)
samples.sort()
pos = (len(samples) - 1) * 0.5
lo = int(pos)
hi = min(lo + 1, len(samples) - 1)
print(json.dumps({"p50": samples[lo] + (samples[hi] - samples[lo]) * (pos - lo)}))
"""


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEOPT_TEST_CACHE") or Path.home() / ".cache" / "edgeopt-test") / "bench"


def mobilenet_v2(path: Path) -> Path:
    if path.is_file():
        return path
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path


def run_bare(python: str, model: Path, threads: int, warmup: int, runs: int) -> float:
    out = subprocess.run([python, "-c", BARE_LOOP, str(model), str(threads), str(warmup), str(runs)],
                         capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["p50"])


def run_agent(python: str, pyz: Path, model: Path, sha: str, threads: int, warmup: int, runs: int) -> float:
    out = subprocess.run([python, str(pyz), "run", "--model", str(model), "--sha256", sha, "--threads", str(threads),
                          "--warmup", str(warmup), "--runs", str(runs)], capture_output=True, text=True)
    doc = json.loads(out.stdout)
    if out.returncode != 0:
        raise SystemExit("agent failed: %s" % doc)
    return float(doc["latency_ms"]["p50"])


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--python", default=sys.executable, help="interpreter with ai-edge-litert (both sides)")
    args = parser.parse_args()

    model = mobilenet_v2(cache_dir() / "mobilenetv2-224-fp32.tflite")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        pyz = build_zipapp(Path(tmp) / "agent.pyz")
        bare, agent = [], []
        for i in range(args.repeats):
            order = ("bare", "agent") if i % 2 == 0 else ("agent", "bare")  # alternate: drift hits both
            for side in order:
                if side == "bare":
                    bare.append(run_bare(args.python, model, args.threads, args.warmup, args.runs))
                else:
                    agent.append(run_agent(args.python, pyz, model, sha, args.threads, args.warmup, args.runs))
            print("repeat %d: bare p50 %.3f ms, agent p50 %.3f ms" % (i + 1, bare[-1], agent[-1]), flush=True)

    overhead = statistics.median(agent) / statistics.median(bare)
    print()
    print("model: %s (%.2f MB), threads %d, %d runs + %d warm-up per process, %d processes per side"
          % (model.name, model.stat().st_size / 1e6, args.threads, args.runs, args.warmup, args.repeats))
    print("bare invoke() loop   p50 median %.3f ms  (CV %.2f%%)" % (statistics.median(bare), 100 * cv(bare)))
    print("agent                p50 median %.3f ms  (CV %.2f%%)" % (statistics.median(agent), 100 * cv(agent)))
    print("overhead ratio agent/bare p50: %.4f  (goal <= %.2f: %s)"
          % (overhead, GOAL_OVERHEAD, "met" if overhead <= GOAL_OVERHEAD else "NOT met"))
    print("paired ratios agent/bare per repeat: %s (median %.4f)"
          % (" ".join("%.3f" % (a / b) for a, b in zip(agent, bare)),
             statistics.median(a / b for a, b in zip(agent, bare))))
    print("stability: CV of agent p50 over %d runs: %.2f%%" % (args.repeats, 100 * cv(agent)))
    print("load average now: %s (other work on the machine shows up as noise on both sides)"
          % " ".join("%.2f" % v for v in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
