"""edgeopt ci: lab parallelism and the gate's error rates, measured side by side in one run on loopback OpenSSH
devices (each its own sshd, port and home directory; the device Python is this interpreter: numpy + LiteRT).

    .venv/bin/python bench/ci.py [--repeats 3] [--identical 20] [--runs 200] [--profiles fp32,int8]

* Parallelism: wall time of one ``edgeopt ci`` run over a lab of 3 devices / the same lab with 1 device
  (goal <= 1.3). Warm (blobs already on the devices), alternating 1 and 3, repeated; medians. The machine's CPU
  use is printed too: all loopback devices share this host, so the CPU-bound floor of the ratio is shown.
* False alarms: the same artifacts measured ``--identical`` more times (each a full ``edgeopt ci`` run judged
  against the first run as baseline, every cell through the real gate) — runs that fail (goal 0 in 20).
* Detection: a 10 % slowdown made from those same real measurements: every latency sample of each identical
  run multiplied by 1.10 (the run-to-run noise stays real; only the 10 % is added), judged against the same
  baseline by the same gate — runs caught (goal >= 19 in 20).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _common import cpu_busy_seconds, example_artifacts  # noqa: E402
from sshd import SshServer  # noqa: E402

from edgeopt.ci import CIOptions, latency_gate, run_ci  # noqa: E402
from edgeopt.ci.gate import REGRESSION, compare_latency  # noqa: E402
from edgeopt.config.lab import Gates  # noqa: E402
from edgeopt.results.reader import samples  # noqa: E402

GOAL_RATIO = 1.3


def artifacts(profiles: list[str]) -> Path:
    return example_artifacts(profiles)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--identical", type=int, default=20)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--profiles", default="fp32,int8")
    args = ap.parse_args()
    profiles = args.profiles.split(",")
    built = artifacts(profiles)

    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-ci-") as tmp:
        root = Path(tmp)
        servers = [SshServer.start(root / f"sshd-{i}") for i in range(3)]
        try:
            known_hosts = root / "known_hosts"
            known_hosts.write_text("".join(s.known_hosts_line + "\n" for s in servers))
            devices = [{"name": f"dev{i}", "target": "local", "host": s.host, "port": s.port, "user": s.user,
                        "key": str(s.client_key), "python": sys.executable, "known_hosts": str(known_hosts)}
                       for i, s in enumerate(servers)]

            def lab(name: str, devs: list[dict]) -> Path:
                path = root / f"{name}.yaml"
                path.write_text(json.dumps({
                    "name": name, "devices": devs, "models": [{"name": "mnist", "artifacts": str(built)}],
                    "profiles": profiles, "formats": ["tflite"], "results": str(root / "results"),
                    "bench": {"runs": args.runs, "warmup": 20, "retries": 1, "max_other_load": 8.0}}))
                return path

            one_lab, three_lab = lab("one", devices[:1]), lab("three", devices)
            cpu: dict[int, list[float]] = {1: [], 3: []}

            def timed(path: Path, n: int, **kw):
                c0, t0 = cpu_busy_seconds(), time.perf_counter()
                result = run_ci(CIOptions(lab=path, agent_cache=root / "agent", **kw))
                seconds = time.perf_counter() - t0
                cpu[n].append(cpu_busy_seconds() - c0)
                if result.verdict == "error":
                    raise SystemExit(f"ci failed: {[c.message for c in result.cells if c.status == 'error']}")
                return result, seconds

            timed(three_lab, 3, baseline="none")  # cold: pushes the agent and the artifacts everywhere
            cpu[3].clear()
            one, many = [], []
            for _ in range(args.repeats):
                one.append(timed(one_lab, 1, baseline="none")[1])
                many.append(timed(three_lab, 3, baseline="none")[1])

            base, _ = timed(one_lab, 1, baseline="none")
            identical = [timed(one_lab, 1, baseline=base.run_id)[0] for _ in range(args.identical)]
        finally:
            for server in servers:
                server.stop()

    ratio = statistics.median(many) / statistics.median(one)
    ncpu = os.cpu_count() or 1
    print(f"lab: {len(profiles)} artifacts per device ({args.profiles}, tflite), --runs {args.runs}, "
          f"{ncpu} CPUs; each device its own sshd")
    print(f"wall time: 1 device median {statistics.median(one):.2f} s {[round(x, 2) for x in one]}; "
          f"3 devices median {statistics.median(many):.2f} s {[round(x, 2) for x in many]}")
    print(f"parallel ratio 3 devices / 1 device = {ratio:.2f} (goal <= {GOAL_RATIO}) -> "
          f"{'OK' if ratio <= GOAL_RATIO else 'MISSED'}")
    one_cpu, many_cpu = statistics.median(cpu[1][: args.repeats]), statistics.median(cpu[3])
    floor = max(statistics.median(one), many_cpu / ncpu)
    print(f"CPU (whole machine; the loopback devices share it): 1 device {one_cpu:.2f} CPU-s, 3 devices "
          f"{many_cpu:.2f} CPU-s; on {ncpu} CPUs 3 devices cannot finish in less than {many_cpu / ncpu:.2f} s "
          f"-> best possible ratio here ~{floor / statistics.median(one):.2f}")

    false_runs = [r for r in identical if r.verdict == "regression"]
    cells = [c for r in identical for c in r.cells]
    ratios = [c.check("latency").details["ratio"] for c in cells if c.check("latency")]
    print(f"false alarms: {len(false_runs)} of {len(identical)} identical runs failed "
          f"({sum(c.status == 'regression' for c in cells)} of {len(cells)} cells; goal 0) -> "
          f"{'OK' if not false_runs else 'MISSED'}; median ratios seen {min(ratios):.3f}..{max(ratios):.3f}; "
          f"{sum(1 for r in identical if any(d.get('confirmations') for d in r.devices.values()))} run(s) needed "
          f"a confirmation re-measurement (gates.latency.confirm)")
    gate = latency_gate(Gates())
    base_docs = {(c.profile, c.format): c.current for c in base.cells}
    caught = 0
    cell_hits = 0
    for r in identical:
        hits = [compare_latency(samples(base_docs[(c.profile, c.format)]), [x * 1.10 for x in samples(c.current)],
                                gate).status == REGRESSION for c in r.cells]
        cell_hits += sum(hits)
        caught += all(hits)
    print(f"detection of a 10% slowdown (real samples of each identical run x 1.10, same baseline and gate): "
          f"{caught} of {len(identical)} runs caught in every cell ({cell_hits} of {len(cells)} cells; "
          f"goal >= 19 of 20) -> {'OK' if caught >= 19 * len(identical) / 20 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
