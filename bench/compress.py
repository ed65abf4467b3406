"""Compression benchmark (issue 6): for the bundled example, one run, side by side —
profile -> bytes, gzip -9 bytes, weight sparsity, accuracy (1,000 held-out digits), p50 latency on `local`
(the edgeopt agent in a fresh process, LiteRT / ONNX Runtime, 1 thread), build (training + conversion) seconds,
and the search's Pareto front / recommendation over them.

Usage: .venv/bin/python bench/compress.py [--runs 200] [--out DIR] [--keep-cache] [--plot pareto.png] [--json]
By default every profile is rebuilt (--force) so the build seconds are real; --keep-cache reuses earlier builds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeopt.build import Reporter  # noqa: E402
from edgeopt.build.search import run_search  # noqa: E402
from edgeopt.report.search import plot_pareto  # noqa: E402

PROFILES = ["fp32", "int8", "pruned-int8", "distilled-int8", "qat-int8"]


class Timer(Reporter):
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def done(self, profile: str, what: str, seconds: float, detail: str = "") -> None:
        self.seconds[profile] = self.seconds.get(profile, 0.0) + seconds

    def note(self, message: str) -> None:
        if " epoch " in message and ("/" in message):
            print(f"  {message}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep-cache", action="store_true")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-compress-") as tmp:
        out = a.out or Path(tmp) / "artifacts"
        timer = Timer()
        t0 = time.perf_counter()
        result = run_search("local", out=out, results=Path(tmp) / "results", profiles=PROFILES,
                            max_accuracy_drop=1.0, objective="latency", runs=a.runs, warmup=20,
                            force=not a.keep_cache, reporter=timer)
        wall = time.perf_counter() - t0
        if a.plot:
            plot_pareto(result, a.plot)
    rows = sorted(result.rows, key=lambda r: (r["format"], PROFILES.index(r["profile"])))
    if a.json:
        print(json.dumps({**result.to_json(), "build_seconds": timer.seconds, "wall_seconds": wall}, indent=2))
        return 0
    base = {r["format"]: r for r in rows if r["profile"] == "int8"}
    head = (f"{'profile/format':<22} {'bytes':>9} {'gzip':>9} {'gzip/int8':>9} {'sparsity':>8} {'accuracy':>8} "
            f"{'p50 ms':>8} {'p50/int8':>8} {'build s':>7}  front")
    print(head)
    print("-" * len(head))
    for r in rows:
        b = base.get(r["format"])
        gz = r["bytes_gzip"] / b["bytes_gzip"] if b else float("nan")
        lat = r["latency_p50_ms"] / b["latency_p50_ms"] if b and r["latency_p50_ms"] else float("nan")
        mark = ("*" if r["pareto"] else "") + (" recommended" if r["candidate"] == (result.recommended or {})
                                                .get("candidate") else "")
        print(f"{r['candidate']:<22} {r['bytes']:>9,} {r['bytes_gzip']:>9,} {gz:>9.3f} "
              f"{(r['weight_sparsity'] or 0):>8.1%} {r['accuracy']:>8.4f} {r['latency_p50_ms']:>8.4f} {lat:>8.2f} "
              f"{timer.seconds.get(r['profile'], 0):>7.1f}  {mark}")
    print(f"\nrecommended (latency, <= 1 pp drop): {(result.recommended or {}).get('candidate')}; "
          f"wall {wall:.0f} s for {len(PROFILES)} profiles built + {len(rows)} artifacts measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
