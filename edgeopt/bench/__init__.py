"""``edgeopt bench`` as a library: plan devices (:mod:`.plan`), run one device (:mod:`.worker`), run them all
in parallel and store the results (:mod:`.run`); the result document (:mod:`.document`); the agent zipapp
built from ``edgeopt/agent/`` (:mod:`.zipapp`).

Flow per device (one worker thread and ONE transport per device; devices run in parallel, the artifacts of
one device one after the other):

1. connect (``LocalTransport`` for ``transport: local``, else ``SSHTransport``);
2. ``DeviceSession.ensure_file`` the agent zipapp, then for each artifact its model file and reference.npz:
   pushed by sha256 into ``<workdir>/blobs/<sha256>/``, skipped when the device holds a verified copy,
   re-pushed when the copy there is corrupt;
3. ``<python> agent.pyz run --model … --sha256 … --reference … --runs … --warmup … [--threads …]`` via
   ``run_json``; the agent's JSON plus host context becomes one result document (docs/bench.md);
4. every result — valid or failed — goes to the store (SQLite + one JSON file) as soon as it exists.

A device that cannot be reached (or loses its link) fails its own results as infrastructure errors with a
one-line message; the other devices carry on. The exit code is 0 when every result is valid, else 3.
"""

from edgeopt.bench.options import DEFAULT_TIMEOUT, BenchOptions, DevicePlan, Job
from edgeopt.bench.plan import find_artifacts, plan_device
from edgeopt.bench.progress import Progress, SilentProgress
from edgeopt.bench.run import BenchRun, bench

__all__ = ["DEFAULT_TIMEOUT", "BenchOptions", "BenchRun", "DevicePlan", "Job", "Progress", "SilentProgress",
           "bench", "find_artifacts", "plan_device"]
