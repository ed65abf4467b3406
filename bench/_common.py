"""Helpers the benchmarks share (bench/transfer.py, bench/ci.py, bench/scale.py, bench/build.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cpu_busy_seconds() -> float:
    """CPU time spent by the whole machine (all processes: our client, every sshd, every agent) from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def example_artifacts(profiles: list[str]) -> Path:
    """The example build for target local, built once (``edgeopt build`` in a subprocess: it imports TensorFlow);
    returns the artifact root (``<root>/local/<profile>/``)."""
    out = Path(os.environ.get("EDGEOPT_TEST_CACHE") or Path.home() / ".cache" / "edgeopt-test") / "bench" / \
        "transfer-artifacts"
    if not all((out / "local" / p / "manifest.json").is_file() for p in profiles):
        subprocess.run([sys.executable, "-m", "edgeopt.cli", "build", "--target", "local", "--profile",
                        ",".join(profiles), "--out", str(out), "--json"], check=True, stdout=subprocess.DEVNULL)
    return out


def print_rows(rows: list[tuple[str, str, str]], value_width: int = 34) -> None:
    """The figures as a table: measure, measured, goal."""
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'measured':<{value_width}}  goal")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {goal}")
