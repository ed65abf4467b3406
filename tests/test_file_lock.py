"""artifacts.files.file_lock: the one cross-process lock of the host caches (TFLM library, emulated images)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from edgeopt.artifacts.files import file_lock


def test_a_second_process_waits_and_says_so_once(tmp_path: Path) -> None:
    lock = tmp_path / "cache" / "lib.lock"  # parents are created
    hold = ("import sys, time; from pathlib import Path; from edgeopt.artifacts.files import file_lock\n"
            "with file_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(1.0)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    waits: list[float] = []
    t0 = time.monotonic()
    with file_lock(lock, on_wait=lambda: waits.append(time.monotonic() - t0)):
        got = time.monotonic() - t0
    holder.wait(timeout=30)
    assert len(waits) == 1 and waits[0] < 0.5 and got >= 0.5  # told at once, then waited for the holder
    with file_lock(lock, on_wait=lambda: waits.append(-1.0)):  # free now: no wait, no call
        pass
    assert len(waits) == 1
