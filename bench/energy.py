"""Energy benchmark: accuracy of energy per inference and the cost of sampling, side by side in one run.

    .venv/bin/python bench/energy.py [--repeats 3] [--seconds 1.5] [--threads 1] [--python PY]

* Accuracy: for each sensor the agent runs on a synthetic sysfs tree (tests/sysfs_fixtures.py) while a driver
  thread plays the hardware (2.5 W while the agent computes, 0.5 W idle) and logs the true energy. Measured /
  true energy per inference over the windows the agent reports, total and above the idle baseline (goal: within
  2 %, i.e. 0.98-1.02).
* Overhead: latency p50 with energy sampling (hwmon at 50 Hz; Pi 5 PMIC via a `vcgencmd` process at 10 Hz)
  / p50 without (`--energy none`, same `--min-seconds`), fresh processes, alternating (goal <= 1.02).

Model: MobileNetV2 fp32 (bench/agent.py builds and caches it), LiteRT from the interpreter given by --python.
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
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from agent import cache_dir, mobilenet_v2  # noqa: E402 (bench/agent.py: the cached MobileNetV2)
from sysfs_fixtures import PowerDriver, SysfsTree  # noqa: E402

from edgeopt.bench.zipapp import build_zipapp  # noqa: E402

GOAL_ACCURACY = 0.02
GOAL_OVERHEAD = 1.02


def make_tree(base: Path, sensor: str) -> tuple[SysfsTree, list[str]]:
    tree = SysfsTree(base / sensor)
    tree.cpus()
    tree.thermal()
    args = ["--energy", sensor]
    if sensor == "hwmon":
        tree.hwmon(0, "ina226")
    elif sensor == "rapl":
        tree.rapl(max_range_uj=3_000_000, start_uj=2_500_000)  # wraps every ~1.2 s of work
    elif sensor == "power-supply":
        tree.battery(current_unit="mA", discharge_sign=1)  # both vendor quirks
    elif sensor == "rpi5-pmic":
        tree.vcgencmd()
    elif sensor == "command":
        tree.meter(joules=True)
        args += ["--energy-command", str(tree.bin / "meter"), "--energy-command-joules"]
    return tree, args


def run(python: str, pyz: Path, model: Path, sha: str, tree: SysfsTree, args: list[str], threads: int,
        driver: PowerDriver | None = None) -> dict:
    env = dict(os.environ, PATH=os.pathsep.join([str(tree.bin), str(Path(python).parent), "/usr/bin", "/bin"]))
    cmd = [python, str(pyz), "run", "--model", str(model), "--sha256", sha, "--sysfs-root", str(tree.root),
           "--threads", str(threads), "--runs", "10", "--warmup", "5", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if driver is not None:
        driver.watch(proc.pid)
    out, err = proc.communicate(timeout=600)
    doc = json.loads(out)
    if proc.returncode != 0:
        raise SystemExit("agent failed: %s\n%s" % (doc, err[-2000:]))
    return doc


def accuracy(python, pyz, model, sha, base, sensor, seconds, threads) -> tuple[float, float, dict]:
    tree, args = make_tree(base, sensor)
    driver = PowerDriver(tree)
    driver.start()
    try:
        doc = run(python, pyz, model, sha, tree, args + ["--energy-min-seconds", str(seconds)], threads, driver)
    finally:
        driver.stop()
    e = doc["energy"]
    lat = doc["latency_ms"]
    per = lat["measure_seconds"] / lat["count"]
    loop_w = driver.avg_power(*e["loop"]["window_monotonic"])
    idle_w = driver.avg_power(*e["idle"]["window_monotonic"])
    return (e["energy_per_inference_j"] / (loop_w * per),
            e["energy_per_inference_above_idle_j"] / ((loop_w - idle_w) * per), e)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="processes per side for the overhead (alternating)")
    parser.add_argument("--seconds", type=float, default=1.5, help="timed loop length (--energy-min-seconds)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--python", default=sys.executable, help="interpreter with ai-edge-litert")
    args = parser.parse_args()

    model = mobilenet_v2(cache_dir() / "mobilenetv2-224-fp32.tflite")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        pyz = build_zipapp(base / "agent.pyz")
        print("accuracy: measured / true energy per inference (goal %.2f-%.2f), %s s loop + idle baseline"
              % (1 - GOAL_ACCURACY, 1 + GOAL_ACCURACY, args.seconds))
        worst = 0.0
        for sensor in ("hwmon", "rapl", "power-supply", "rpi5-pmic", "command"):
            total, above, e = accuracy(args.python, pyz, model, sha, base, sensor, args.seconds, args.threads)
            worst = max(worst, abs(total - 1), abs(above - 1))
            print("  %-13s total %.4f  above idle %.4f   (%d + %d samples at %.1f Hz, %.3g J/inference, +- %.2g)"
                  % (sensor, total, above, e["loop"]["samples"], e["idle"]["samples"], e["loop"]["rate_hz"],
                     e["energy_per_inference_j"], e["energy_per_inference_uncertainty_j"]), flush=True)
        print("  worst deviation %.2f%% (goal <= %.0f%%: %s)" % (100 * worst, 100 * GOAL_ACCURACY,
                                                              "met" if worst <= GOAL_ACCURACY else "NOT met"))

        print("\noverhead: latency p50 with sampling / without (goal <= %.2f), %d processes per side"
              % (GOAL_OVERHEAD, args.repeats))
        secs = ["--min-seconds", str(args.seconds), "--energy-min-seconds", str(args.seconds)]
        for sensor in ("hwmon", "rpi5-pmic"):
            tree, eargs = make_tree(base / "overhead", sensor)
            driver = PowerDriver(tree)  # the files change during the run, as on a device
            driver.start()
            on, off = [], []
            try:
                for i in range(args.repeats):
                    for side in (("on", "off") if i % 2 == 0 else ("off", "on")):
                        a = eargs if side == "on" else ["--energy", "none"]
                        doc = run(args.python, pyz, model, sha, tree, a + secs, args.threads)
                        (on if side == "on" else off).append(doc["latency_ms"]["p50"])
            finally:
                driver.stop()
            ratio = statistics.median(on) / statistics.median(off)
            print("  %-10s p50 with %.3f ms, without %.3f ms: ratio %.4f (%s); paired %s"
                  % (sensor, statistics.median(on), statistics.median(off), ratio,
                     "met" if ratio <= GOAL_OVERHEAD else "NOT met", " ".join("%.3f" % (a / b) for a, b in zip(on, off))),
                  flush=True)
    print("load average now: %s (other work on this shared machine is noise on both sides)"
          % " ".join("%.2f" % v for v in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
