"""``edgeopt ci`` as a library: hardware-in-the-loop over a device lab and a noise-aware regression gate.

Flow (docs/ci.md):

1. ``lab.yaml`` (:mod:`edgeopt.config.lab`) is validated; devices, profiles and the baseline
   (:mod:`.baseline`) are resolved before any device is contacted.
2. Each model is built for each target kind in the lab (:mod:`.plan`: ``edgeopt build``'s pipeline and its
   content cache, so an unchanged model costs nothing), or taken from prebuilt ``artifacts:``.
3. Devices run in parallel (:mod:`.run`, one worker thread each), each device's cells one after the other, with
   ``edgeopt.bench``'s device worker. Before measuring, a worker takes the device's lock (on the device:
   :class:`edgeopt.remote.lock.DeviceLock`) and keeps it until its last retry is done. Results the agent marks
   ``valid: false`` are measured again (``bench.retries``) and, if still invalid, reported as such.
4. Every cell (device x model x profile x format) is compared with the same cell of the baseline by the gates
   (:mod:`.judge`, statistics in :mod:`.gate`). Verdict and exit code (:mod:`.model`): 0 pass, 1 regression,
   2 infrastructure error (``infra_errors_fail: false`` turns 2 into 0).
5. Results go to the store; the run carries its verdict and can be tagged (``--tag main``). Reports are
   written from the :class:`~.model.CIResult` by :mod:`edgeopt.report`.
"""

from edgeopt.ci.baseline import Baseline, load_baseline_file, resolve_baseline
from edgeopt.ci.compare import compare_runs
from edgeopt.ci.judge import evaluate, judge, latency_gate
from edgeopt.ci.model import ERROR, EXIT_INFRA, EXIT_PASS, EXIT_REGRESSION, INVALID, NEW, Cell, CIOptions, CIResult
from edgeopt.ci.progress import CIProgress
from edgeopt.ci.run import run_ci

__all__ = ["ERROR", "EXIT_INFRA", "EXIT_PASS", "EXIT_REGRESSION", "INVALID", "NEW", "Baseline", "CIOptions",
           "CIProgress", "CIResult", "Cell", "compare_runs", "evaluate", "judge", "latency_gate",
           "load_baseline_file", "resolve_baseline", "run_ci"]
