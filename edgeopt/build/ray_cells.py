"""The cells of a build matrix as Ray tasks: ``edgeopt build --matrix m.yaml --ray local|auto``.

Where things go (docs/scale.md):

- the driver (the machine that asked) keys every cell and answers unchanged ones from its cache
  (:func:`edgeopt.build.matrix.run_matrix`); Ray is started or joined only when some cell needs work (at once,
  while the keys are computed, when a cell's directory holds no manifest yet);
- each remaining cell is one task (1 CPU) running the same pipeline as ``edgeopt build`` for one target x one
  profile. The task gets the request (target and profile as loaded here) and, for every input file or directory,
  its sha256 and a reference to its bytes in Ray's object store: a node that sees the same path with the same
  content uses it, any other node fetches the bytes once (cached per node by hash) and the manifest still names
  the path the user gave. On a local Ray (this machine only) the inputs go by path, nothing is copied;
- the task builds into a scratch directory and returns the cell's directory as tar bytes (or, with
  ``--ray-shared-dir``, leaves it under that directory, which every node mounts at the same path); the driver
  unpacks it atomically into ``<out>/<model>/<target>/<profile>/`` and checks every file against the manifest;
- a task's failure comes back as its one line; the other cells go on. A node whose tool versions differ from the
  driver's makes artifacts under another content key: that cell fails, naming the versions.

Ray is optional (``pip install 'edgeopt[ray]'``): started, joined and stopped by :mod:`edgeopt.build.ray_session`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt import __version__
from edgeopt.artifacts.files import sha256_tree, staged_directory
from edgeopt.artifacts.manifest import Manifest
from edgeopt.build.matrix import Cell, CellOutcome, MatrixProgress, fail, heaviest_first, internal_line
from edgeopt.build.pipeline import BuildRequest, BuildResult, build, tool_versions
from edgeopt.build.ray_session import MODES, import_ray, ray_session
from edgeopt.errors import ConfigError, EdgeoptError, OutputError

INPUT_FIELDS = ("model", "data", "eval", "train")


# --- inputs: by path where the node sees them, else by content --------------------------------------------
@dataclass(frozen=True)
class Shipped:
    path: str  # the driver's path
    sha256: str | None  # sha256_tree of it (None: not shipped, every node sees the path: a local Ray)
    is_file: bool
    ref: Any  # ObjectRef of its tar bytes: fetched only by a node that lacks the path (None: not shipped)


_hashes: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}  # (path, its files' stats) -> sha256_tree


def tree_sha256(path: Path) -> str:
    """``sha256_tree`` once per path and content in a process (a worker checks every task's inputs; the files'
    sizes and modification times say whether it changed since)."""
    files = [path] if path.is_file() else sorted(q for q in path.rglob("*") if q.is_file())
    stats = tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in (f.stat(),))
    key = (str(path), stats)
    if key not in _hashes:
        _hashes[key] = sha256_tree(path)
    return _hashes[key]


def tar_bytes(path: Path) -> bytes:
    """A file or a directory's contents as an uncompressed tar (a file under its own name, a directory as .)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(path), arcname=path.name if path.is_file() else ".")
    return buf.getvalue()


def untar(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data")


def ship_inputs(ray: Any, cells: list[Cell], by_content: bool = True) -> dict[str, Shipped]:
    """Every input path of the cells, once each, into the object store; with ``by_content=False`` (a local Ray:
    every worker sees the driver's files) only named, nothing hashed or copied — a file changed meanwhile is
    caught by the content key the driver checks when the cell lands."""
    out: dict[str, Shipped] = {}
    for cell in cells:
        for name in INPUT_FIELDS:
            spec = getattr(cell.request, name)
            if spec and spec not in out and Path(spec).exists():
                path = Path(spec)
                out[spec] = Shipped(spec, tree_sha256(path), path.is_file(), ray.put(tar_bytes(path))) \
                    if by_content else Shipped(spec, None, path.is_file(), None)
    return out


def localise(req: BuildRequest, shipped: list[Shipped]) -> tuple[BuildRequest, dict[str, str]]:
    """The request with each input this node cannot see (or sees with other content) replaced by its shipped
    copy (unpacked once per node and hash); returns the replacements (local path -> the driver's path)."""
    moved: dict[str, str] = {}
    for s in shipped:
        p = Path(s.path)
        if s.ref is None or p.exists() and tree_sha256(p) == s.sha256:
            continue
        import ray

        home = Path(tempfile.gettempdir()) / "edgeopt-ray-inputs" / str(s.sha256)
        if not home.is_dir():
            with staged_directory(home) as stage:
                untar(ray.get(s.ref), stage)
        local = home / p.name if s.is_file else home
        moved[str(local)] = s.path
    back = {v: k for k, v in moved.items()}
    return dataclasses.replace(req, **{n: back.get(getattr(req, n), getattr(req, n)) for n in INPUT_FIELDS}), moved


def restore_paths(doc: Any, moved: dict[str, str]) -> Any:
    """The manifest with every value naming a shipped copy put back to the path the user gave."""
    if isinstance(doc, dict):
        return {k: restore_paths(v, moved) for k, v in doc.items()}
    if isinstance(doc, list):
        return [restore_paths(v, moved) for v in doc]
    return moved.get(doc, doc) if isinstance(doc, str) else doc


# --- the task ----------------------------------------------------------------------------------------------
def task_threads() -> int:
    """The CPUs Ray gave this task: TensorFlow's thread pools are sized to it. With its default (every core) two
    workers on 2 cores spin against each other: the 12-cell bench matrix took 2.2x the CPU time and 2.3x the wall
    time (bench/scale.py)."""
    import ray

    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


TASK_ROOT = "edgeopt-ray-task-"


def task_scratch_root() -> str:
    """A task on a joined cluster (no driver-owned scratch directory on its node): its temporary files go under
    ``<tmp>/edgeopt-ray-task-<pid>-*``, removed when it ends; those a killed worker left (its pid gone, the
    directory ours) are removed first."""
    base = Path(tempfile.gettempdir())
    for old in base.glob(f"{TASK_ROOT}*"):
        pid = old.name[len(TASK_ROOT):].split("-")[0]
        try:
            if not pid.isdigit() or old.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except OSError:  # alive under another user, or the directory just went
            continue
    return tempfile.mkdtemp(prefix=f"{TASK_ROOT}{os.getpid()}-", dir=base)


def build_cell(req: BuildRequest, shipped: list[Shipped], shared_dir: str | None = None,
               scratch_root: str | None = None) -> dict[str, Any]:
    """Runs ON A RAY WORKER: the pipeline for one target x one profile, in a scratch directory. Returns the
    cell's directory (tar bytes, or its path under ``shared_dir``), its manifest, or the failure's one line.
    ``scratch_root`` (a local Ray: the driver's, removed when it stops Ray; else :func:`task_scratch_root`) holds
    every temporary file of the task, so a worker killed mid-cell leaves nothing behind in the temp directory."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    threads = task_threads()
    for var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):  # read once, at TensorFlow's import
        os.environ.setdefault(var, str(threads))
    t0 = time.perf_counter()
    node = socket.gethostname()
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    own_root = not (scratch_root and Path(scratch_root).is_dir())
    root = task_scratch_root() if own_root else str(scratch_root)
    tempfile.tempdir = os.environ["TMPDIR"] = root  # this process's and its children's temporary files
    scratch = Path(tempfile.mkdtemp(prefix=".edgeopt-cell-", dir=shared_dir or root))
    keep = False
    try:
        local_req, moved = localise(req, shipped)
        result = build(dataclasses.replace(local_req, out=scratch, force=True))[0]
        manifest = Manifest(restore_paths(dict(result.manifest), moved)) if moved else result.manifest
        if moved:
            manifest.write(result.directory)
        doc: dict[str, Any] = {"ok": True, "manifest": dict(manifest), "passes": result.passes, "node": node}
        if shared_dir:
            doc["dir"], keep = str(result.directory), True
        else:
            doc["tar"] = tar_bytes(result.directory)
        return {**doc, "seconds": time.perf_counter() - t0}
    except EdgeoptError as exc:
        return {"ok": False, "error": exc.one_line(), "node": node, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - one cell's bug comes back as its line, the others go on
        return {"ok": False, "error": internal_line(exc), "node": node, "seconds": time.perf_counter() - t0}
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
        tempfile.tempdir = saved[0]
        os.environ.pop("TMPDIR") if saved[1] is None else os.environ.update(TMPDIR=saved[1])
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


def land(cell: Cell, doc: dict[str, Any], progress: MatrixProgress, wall: float) -> CellOutcome:
    """The driver's side of a finished task: check the key, put the directory in place atomically, verify."""
    node = str(doc.get("node", "?"))
    if not doc.get("ok"):
        return fail(cell, f"{doc.get('error')} (on {node})", wall, progress, sent=True)
    manifest = Manifest(doc["manifest"])
    if manifest.get("build_key") != cell.key:
        mine = tool_versions()
        theirs = manifest.get("tools") or {}
        diff = ", ".join(f"{k} {theirs.get(k)} there vs {v} here" for k, v in mine.items() if theirs.get(k) != v)
        if not diff and manifest.get("edgeopt_version") == __version__:  # same code: the inputs moved under it
            inputs = ", ".join(str(getattr(cell.request, n)) for n in INPUT_FIELDS
                               if getattr(cell.request, n) and Path(str(getattr(cell.request, n))).exists())
            return fail(cell, f"its inputs changed while the matrix ran ({inputs}: built from other content than "
                              "was keyed) — rerun once they are written", wall, progress, sent=True)
        return fail(cell, f"built on {node} under another content key ({diff or 'another edgeopt version there'}) "
                          "— install the same lock (constraints.txt) on every node", wall, progress, sent=True)
    try:
        with staged_directory(cell.directory) as stage:
            if "tar" in doc:
                untar(doc["tar"], stage)
            else:
                source = Path(doc["dir"])
                if not source.is_dir():
                    raise OutputError(f"--ray-shared-dir: {source} (written on {node}) is not visible here",
                                      "name a directory every node mounts at the same path")
                shutil.copytree(source, stage, dirs_exist_ok=True)
                shutil.rmtree(source.parent.parent, ignore_errors=True)  # the task's scratch directory
            bad = manifest.verify(stage)
            if bad:
                raise OutputError(f"{cell.label}: files differ from the manifest after transfer: {', '.join(bad)}",
                                  "rerun; check the disk and the shared directory")
    except EdgeoptError as exc:
        return fail(cell, exc.one_line(), wall, progress, sent=True)
    progress.finished(cell, wall, node)
    result = BuildResult(cell.target.name, cell.profile.name, cell.directory, manifest, False,
                         float(doc["seconds"]), list(doc.get("passes") or []))
    return CellOutcome(cell, result, None, wall, True, node)


# what a lost worker or node raises (Ray's own retry would resend it without a word): one more attempt, said
LOST_WORKER = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "OutOfMemoryError")
ATTEMPTS = 2


def run_on_ray(ray: Any, cells: list[Cell], progress: MatrixProgress, shared_dir: str | None = None,
               ship: bool = True, scratch_root: str | None = None) -> list[CellOutcome]:
    """One task per cell, as many in flight as the cluster has CPUs (so "started" means running), the longest
    expected first (:func:`edgeopt.build.matrix.heaviest_first`). ``ship=False``: the inputs go by path only (a
    local Ray)."""
    task = ray.remote(num_cpus=1, max_retries=0)(build_cell)  # a lost worker is sent again here, and said
    lost = tuple(getattr(ray.exceptions, n) for n in LOST_WORKER if hasattr(ray.exceptions, n))
    slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
    shipped = ship_inputs(ray, cells, by_content=ship)
    queue, outcomes = [(cell, 1) for cell in heaviest_first(cells)], []
    pending: dict[Any, tuple[Cell, float, int]] = {}
    while queue or pending:
        while queue and len(pending) < slots:
            cell, attempt = queue.pop(0)
            mine = [shipped[s] for s in (getattr(cell.request, n) for n in INPUT_FIELDS) if s in shipped]
            pending[task.remote(cell.request, mine, shared_dir, scratch_root)] = (cell, time.perf_counter(), attempt)
            if attempt == 1:
                progress.started(cell, "ray")
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            cell, t0, attempt = pending.pop(ref)
            try:
                doc = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a worker or node lost: this cell fails, not the run
                line = " ".join(str(exc).split())[:300]
                if isinstance(exc, lost) and attempt < ATTEMPTS:
                    progress.note(f"{cell.label}: its Ray worker was lost ({type(exc).__name__}) after "
                                  f"{time.perf_counter() - t0:.1f} s; sending it again (attempt {attempt + 1} of "
                                  f"{ATTEMPTS})")
                    queue.insert(0, (cell, attempt + 1))
                    continue
                tried = f", {attempt} attempts" if attempt > 1 else ""
                outcomes.append(fail(cell, f"Ray task lost ({type(exc).__name__}{tried}: {line})",
                                     time.perf_counter() - t0, progress, sent=True))
                continue
            outcomes.append(land(cell, doc, progress, time.perf_counter() - t0))
    return outcomes


class RayRunner:
    """A :class:`edgeopt.build.matrix.CellRunner` on Ray, started (``local``) or joined (``auto``) only when some
    cell needs work. :func:`edgeopt.build.matrix.run_matrix` calls :meth:`prepare` (on its own thread: Ray's
    driver API must be used from the thread that called ``ray.init``) while it keys the cells on another; the call
    runs the cells and stops (or leaves) Ray; :meth:`close` does that when the run ends early."""

    def __init__(self, mode: str, shared_dir: str | None = None, num_cpus: int | None = None) -> None:
        self.mode, self.shared_dir, self.num_cpus = mode, shared_dir, num_cpus
        self._session: Any = None  # the entered ray_session
        self._ray: Any = None
        self._scratch: str | None = None  # a local Ray's workers' temporary files, removed after it stops

    def prepare(self) -> None:
        if self._session is None:
            session = ray_session(self.mode, self.num_cpus)
            self._ray = session.__enter__()
            self._session = session
            if self.mode == "local":
                self._scratch = tempfile.mkdtemp(prefix="edgeopt-ray-scratch-")

    def close(self) -> None:
        """Stop (local) or leave (auto) Ray if it was started; again is a no-op."""
        session, self._session = self._session, None
        try:
            if session is not None:
                session.__exit__(None, None, None)
        finally:
            scratch, self._scratch = self._scratch, None
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    def __call__(self, cells: list[Cell], progress: MatrixProgress) -> list[CellOutcome]:
        try:
            self.prepare()
            ray = self._ray
            progress.note(f"Ray: {len(cells)} cell(s) to build on {int(ray.cluster_resources().get('CPU', 0))} "
                          f"CPU(s) ({'started here' if self.mode == 'local' else 'joined'})")
            return run_on_ray(ray, cells, progress, self.shared_dir, ship=self.mode != "local",
                              scratch_root=self._scratch)
        finally:
            self.close()


def ray_runner(mode: str, shared_dir: str | None = None, num_cpus: int | None = None) -> RayRunner:
    """The Ray runner of ``--ray MODE`` (checked here: Ray installed, the shared directory exists)."""
    import importlib.util

    if mode not in MODES:
        raise ConfigError(f"--ray {mode!r}: allowed {', '.join(MODES)}")
    if importlib.util.find_spec("ray") is None:  # said up front, even when every cell turns out cached
        import_ray()
    if shared_dir is not None:
        shared = Path(shared_dir).expanduser().resolve()
        if not shared.is_dir():
            raise ConfigError(f"--ray-shared-dir {shared_dir}: not a directory",
                              "name a directory every Ray node mounts at the same path")
        shared_dir = str(shared)
    return RayRunner(mode, shared_dir, num_cpus)
