"""edgeopt bench transfer and parallelism, measured side by side in one run on loopback OpenSSH devices.

    .venv/bin/python bench/transfer.py [--devices 4] [--repeats 3] [--runs 20] [--profiles fp32,int8]

* Dedupe: bytes sent by a second, unchanged ``edgeopt bench`` of the same artifacts (goal 0), next to the
  bytes the first one sent.
* Parallelism: wall time of one ``bench`` call over N devices in parallel / the same call over 1 device
  (goal <= 1.3 for N = 4). Both measured warm (blobs already on the devices), alternating 1 and N, repeated;
  medians are reported. Each device is its own real sshd (tests/sshd.py) with its own home and blob cache.

Devices use this interpreter as their Python (it has numpy + ai-edge-litert + onnxruntime). Artifacts: the
bundled example built for target ``local`` (cached under ``$EDGEOPT_TEST_CACHE`` or ``~/.cache/edgeopt-test``).
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

from edgeopt.bench import BenchOptions, bench  # noqa: E402

GOAL_RATIO = 1.3


def artifacts(profiles: list[str]) -> Path:
    return example_artifacts(profiles) / "local"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--profiles", default="fp32,int8")
    args = ap.parse_args()
    profiles = args.profiles.split(",")
    built = artifacts(profiles)

    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-transfer-") as tmp:
        root = Path(tmp)
        (root / "artifacts").mkdir()
        known_hosts = root / "known_hosts"
        ssh_config = root / "ssh_config"
        ssh_config.write_text("")
        servers = [SshServer.start(root / f"sshd-{i}") for i in range(args.devices)]
        try:
            known_hosts.write_text("".join(s.known_hosts_line + "\n" for s in servers))
            targets = []
            for i, server in enumerate(servers):
                name = f"dev{i}"
                path = root / f"{name}.yaml"
                path.write_text(json.dumps({
                    "arch": "native", "transport": "ssh", "formats": ["tflite", "onnx"],
                    "runtimes": ["litert", "onnxruntime"], "threads": 1,
                    "connection": {"host": server.host, "port": server.port, "user": server.user,
                                   "key": str(server.client_key), "python": sys.executable}}))
                (root / "artifacts" / name).symlink_to(built, target_is_directory=True)
                targets.append(str(path))

            def run(names: list[str]):
                opts = BenchOptions(targets=names, artifacts=root / "artifacts", results=root / "results",
                                    profiles=profiles, runs=args.runs, warmup=5, known_hosts=str(known_hosts),
                                    ssh_config=str(ssh_config), agent_cache=root / "agent")
                c0, t0 = cpu_busy_seconds(), time.perf_counter()
                result = bench(opts)
                seconds = time.perf_counter() - t0
                cpu.setdefault(len(names), []).append(cpu_busy_seconds() - c0)
                bad = [r["error"] for r in result.results if not r["valid"]]
                if bad:
                    raise SystemExit(f"bench failed: {bad[0]}")
                return result, seconds

            cpu: dict[int, list[float]] = {}
            first, cold_all = run(targets)
            second, _ = run(targets)
            sent_first = first.summary()["bytes_sent"]
            sent_second = second.summary()["bytes_sent"]
            model_second = sum(r["transfer"]["model"] for r in second.results)

            one, many = [], []
            for _ in range(args.repeats):
                one.append(run(targets[:1])[1])
                many.append(run(targets)[1])
        finally:
            for server in servers:
                server.stop()

    results_per_device = len(first.results) // args.devices
    ratio = statistics.median(many) / statistics.median(one)
    print(f"artifacts per device: {results_per_device} ({args.profiles}, tflite+onnx), --runs {args.runs}, "
          f"{os.cpu_count()} CPUs")
    print(f"dedupe: first bench sent {sent_first:,} bytes to {args.devices} devices; "
          f"second unchanged bench sent {sent_second:,} bytes (model bytes {model_second}) "
          f"(goal 0) -> {'OK' if sent_second == 0 else 'MISSED'}")
    print(f"parallel: 1 device median {statistics.median(one):.2f} s {[round(x, 2) for x in one]}; "
          f"{args.devices} devices median {statistics.median(many):.2f} s {[round(x, 2) for x in many]}")
    print(f"parallel ratio {args.devices} devices / 1 device = {ratio:.2f} (goal <= {GOAL_RATIO}) -> "
          f"{'OK' if ratio <= GOAL_RATIO else 'MISSED'}")
    ncpu = os.cpu_count() or 1
    one_cpu = statistics.median(cpu[1])
    many_cpu = statistics.median(cpu[args.devices][2:])  # the warm repeats (the first two are cold/dedupe)
    floor = max(statistics.median(one), many_cpu / ncpu)
    print(f"CPU (whole machine, loopback devices share it): 1 device {one_cpu:.2f} CPU-s, {args.devices} devices "
          f"{many_cpu:.2f} CPU-s; on {ncpu} CPUs {args.devices} devices cannot finish in less than "
          f"{many_cpu / ncpu:.2f} s -> best possible ratio here ~{floor / statistics.median(one):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
