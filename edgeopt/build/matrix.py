"""A build matrix: several models x targets x profiles, one cell each, run serially here or as Ray tasks
(:mod:`.ray_cells`). ``edgeopt build --matrix matrix.yaml [--ray auto|local]`` (docs/scale.md).

``matrix.yaml``::

    targets: [local, rpi4]          # names or YAML paths (relative to this file)
    profiles: [fp32, int8]
    models:
      - {name: mnist, path: example}                        # the bundled example (its data comes with it)
      - {name: kws, path: models/kws.keras, data: data/calib.npz, eval: data/eval.npz, profiles: [int8]}

A lab file (``lab.yaml`` of ``edgeopt ci``) works too: its models, profiles and the targets of its devices, into
the lab's ``artifacts`` directory, so a later ``edgeopt ci`` finds every cell built.

Artifacts land in ``<out>/<model>/<target>/<profile>/`` (the layout of ``edgeopt ci``). Every cell is the pipeline
of one target x one profile (:func:`edgeopt.build.build`); the content cache is consulted here, before any work is
handed out, so an unchanged cell costs a hash and sends nothing. A failed cell fails alone with its one line.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from pydantic import Field, field_validator

from edgeopt.artifacts.manifest import Manifest
from edgeopt.build.pipeline import BuildRequest, BuildResult, build, build_key, cached_manifest, data_specs
from edgeopt.build.reporter import Reporter
from edgeopt.config import Profile, StrictModel, Target, load_model_file, load_profile, load_target
from edgeopt.config.lab import load_lab
from edgeopt.errors import ConfigError, EdgeoptError
from edgeopt.inputs.data import Dataset, load_dataset
from edgeopt.inputs.example_model import example_model_path
from edgeopt.inputs.model import SourceModel, open_model

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
EXAMPLE_DATA = {"data": "example:calibration", "eval": "example:eval", "train": "example:train"}


class MatrixModel(StrictModel):
    name: str = Field(pattern=_NAME)
    path: str = "example"  # a .keras/.h5/.onnx file, a SavedModel directory, or `example`
    data: str | None = None  # calibration data (int8 profiles)
    eval: str | None = None  # evaluation data (accuracy)
    train: str | None = None  # training data (pruned/distilled/qat profiles)
    profiles: list[str] | None = None  # this model's profiles instead of the matrix's


class Matrix(StrictModel):
    name: str = "matrix"
    targets: list[str] = Field(default_factory=lambda: ["local"], min_length=1)
    profiles: list[str] = Field(default_factory=lambda: ["fp32", "int8"], min_length=1)
    models: list[MatrixModel] = Field(min_length=1)
    out: str | None = None  # default output root (--out wins); relative to this file
    source_file: str | None = None

    @field_validator("targets", "profiles", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    def path(self, value: str | None) -> str | None:
        """A path of the file, relative to its directory; data sources that are no path (``mod:fn``) stay."""
        if value is None or self.source_file is None or Path(value).is_absolute():
            return value
        candidate = Path(self.source_file).resolve().parent / value
        return str(candidate) if candidate.exists() or ":" not in value else value


def load_matrix(path: str | Path) -> Matrix:
    """``matrix.yaml`` (or a lab file: its models, profiles and device targets); errors name the file and field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"matrix file {path} {'is not a file' if path.exists() else 'does not exist'}",
                          "pass --matrix PATH (see examples/matrix.yaml)")
    import yaml

    try:
        head = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace")[:1 << 20])
    except yaml.YAMLError:
        head = None  # load_model_file reports it with the line
    if isinstance(head, dict) and "devices" in head:
        return matrix_from_lab(path)
    matrix = load_model_file(path, Matrix)
    names = [m.name for m in matrix.models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: models: names must be unique ({', '.join(dupes)} repeated)")
    return matrix


def matrix_from_lab(path: Path) -> Matrix:
    """The builds ``edgeopt ci`` makes for a lab: models with a path x the targets of its devices that can run."""
    lab = load_lab(path)
    targets = []
    for device in lab.devices:
        name = lab.path(device.target) if Path(device.target).suffix in (".yaml", ".yml") else device.target
        assert name is not None
        if name not in targets and load_target(name).transport != "none":
            targets.append(name)
    models = [MatrixModel(name=m.name, path=lab.path(m.path) or "example" if m.path != "example" else "example",
                          data=lab.data_source(m.data), eval=lab.data_source(m.eval))
              for m in lab.models if m.artifacts is None]
    if not models or not targets:
        raise ConfigError(f"{path}: nothing to build (no model with a path, or no device target that can run)")
    return Matrix(name=lab.name, targets=targets, profiles=lab.profiles, models=models,
                  out=lab.path(lab.artifacts), source_file=None)


@dataclass
class Cell:
    """One model x target x profile: the pipeline's request for exactly one target and one profile."""

    model: str  # the matrix's model name ("" for a one-model build)
    request: BuildRequest
    key: str | None = None  # the content key, computed by :func:`plan_keys` before any work is sent

    @property
    def target(self) -> Target:
        return self.request.target

    @property
    def profile(self) -> Profile:
        return self.request.profiles[0]

    @property
    def directory(self) -> Path:
        return self.request.out / self.target.name / self.profile.name

    @property
    def label(self) -> str:
        return "/".join(x for x in (self.model, self.target.name, self.profile.name) if x)


@dataclass
class CellOutcome:
    cell: Cell
    result: BuildResult | None  # None: failed
    error: str | None = None  # the failure's one line
    seconds: float = 0.0
    sent: bool = False  # work was handed out (a Ray task or an in-process build)
    where: str = ""  # the node that built it (Ray)

    @property
    def cached(self) -> bool:
        return self.result is not None and self.result.cached


class MatrixProgress:
    """What a matrix run tells whoever watches it, one call per cell event (the CLI prints lines)."""

    def note(self, message: str) -> None: ...
    def cached(self, cell: Cell) -> None: ...
    def started(self, cell: Cell, where: str) -> None: ...
    def finished(self, cell: Cell, seconds: float, where: str) -> None: ...
    def failed(self, cell: Cell, error: str, seconds: float) -> None: ...


class CellRunner(Protocol):
    """Runs the cells the cache did not answer; one outcome per cell, in any order. It may also have
    ``prepare()`` (get ready: start Ray; :func:`run_matrix` calls it while it keys the cells) and ``close()``
    (called when the run ends, whether or not the runner ran)."""

    def __call__(self, cells: list[Cell], progress: MatrixProgress) -> list[CellOutcome]: ...


def _absolute(spec: str | None) -> str | None:
    """A path as an absolute path (a worker's current directory is not ours); ``mod:fn`` and names stay."""
    if spec is None or spec.startswith("example:") or not Path(spec).exists():
        return spec
    return str(Path(spec).resolve())


def expand(matrix: Matrix, out: Path, *, targets: list[str] | None = None, profiles: list[str] | None = None,
           force: bool = False, drop_non_finite: bool = False) -> list[Cell]:
    """Every cell of the matrix (``targets``/``profiles`` replace the file's); ``<out>/<model>/<t>/<p>``."""
    loaded_targets = [load_target((matrix.path(t) or t) if Path(t).suffix in (".yaml", ".yml") else t)
                      for t in (targets or matrix.targets)]
    cache: dict[str, Profile] = {}
    cells = []
    for m in matrix.models:
        example = m.path == "example"
        model = str(example_model_path()) if example else _absolute(matrix.path(m.path))
        specs = {k: _absolute(matrix.path(getattr(m, k))) or (EXAMPLE_DATA[k] if example else None)
                 for k in EXAMPLE_DATA}
        for target in loaded_targets:
            for name in profiles or m.profiles or matrix.profiles:
                if name not in cache:
                    cache[name] = load_profile(name)
                req = BuildRequest(target=target, profiles=[cache[name]], model=model, data=specs["data"],
                                   eval=specs["eval"], train=specs["train"], out=Path(out) / m.name, force=force,
                                   drop_non_finite=drop_non_finite)
                cells.append(Cell(m.name, req))
    return cells


def single_model_cells(req: BuildRequest) -> list[Cell]:
    """``edgeopt build [model] -p a,b --ray ...``: one cell per profile, in the plain layout ``<out>/<t>/<p>``."""
    example = req.model is None
    specs = {k: _absolute(getattr(req, k)) or (EXAMPLE_DATA[k] if example else None) for k in EXAMPLE_DATA}
    model = str(example_model_path()) if example else _absolute(req.model)
    return [Cell("", dataclasses.replace(req, profiles=[p], model=model, data=specs["data"], eval=specs["eval"],
                                         train=specs["train"])) for p in req.profiles]


class KeyPlanner:
    """Computes cells' content keys exactly as the pipeline does (hashes only: no TensorFlow), sharing the
    opened models and datasets between cells."""

    def __init__(self) -> None:
        self._models: dict[str, SourceModel] = {}
        self._data: dict[tuple[str, bool], Dataset] = {}

    def _dataset(self, spec: str | None, drop: bool) -> Dataset | None:
        if spec is None:
            return None
        if (spec, drop) not in self._data:
            self._data[(spec, drop)] = load_dataset(spec, drop)
        return self._data[(spec, drop)]

    def key(self, cell: Cell) -> str:
        req, profile = cell.request, cell.profile
        assert req.model is not None
        if req.model not in self._models:
            self._models[req.model] = open_model(req.model)
        drop = req.drop_non_finite
        calib, evalset, train = data_specs(req)
        return build_key(self._models[req.model], req.target, profile, self._dataset(calib, drop),
                         self._dataset(evalset, drop), self._dataset(train, drop) if profile.needs_training else None)


def heaviest_first(cells: list[Cell]) -> list[Cell]:
    """The cells in the order a pool of workers should take them: the longest first, so that no long cell starts
    last while the other workers have nothing left to do (longest-processing-time-first). When every cell's
    directory still holds a manifest (whatever its key), its ``build_seconds`` are the cell's expected time;
    otherwise a guess: the cells that train first (epochs x the model file's size), then the others by the model
    file's size. Equal guesses keep the matrix's order."""
    def last_seconds(cell: Cell) -> float | None:
        try:
            seconds = Manifest.read(cell.directory).get("build_seconds") if Manifest.exists(cell.directory) else None
        except (OSError, ValueError):
            return None
        return float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else None

    def size(cell: Cell) -> int:
        model = Path(cell.request.model or "")
        try:
            return model.stat().st_size if model.is_file() else sum(f.stat().st_size for f in model.rglob("*"))
        except OSError:
            return 0

    history = [last_seconds(c) for c in cells]
    ranks: dict[int, tuple[float, float]]
    if all(h is not None for h in history):
        ranks = {id(c): (float(h or 0), 0.0) for c, h in zip(cells, history)}
    else:
        sizes = {id(c): float(size(c)) for c in cells}
        ranks = {id(c): (epochs(c.profile) * sizes[id(c)], sizes[id(c)]) for c in cells}
    return sorted(cells, key=lambda c: tuple(-x for x in ranks[id(c)]))


def epochs(profile: Profile) -> int:
    """The epochs a profile's training transform runs (0: the profile only converts)."""
    return sum(getattr(profile, name).epochs for name in profile.transforms)


def run_serial(cells: list[Cell], progress: MatrixProgress, reporter: Reporter | None = None) -> list[CellOutcome]:
    """Each cell in this process, one after the other (the plain ``edgeopt build`` way)."""
    outcomes = []
    for cell in cells:
        progress.started(cell, "here")
        t0 = time.perf_counter()
        try:
            result = build(cell.request, reporter)[0]
        except EdgeoptError as exc:
            outcomes.append(fail(cell, exc.one_line(), time.perf_counter() - t0, progress, sent=True))
            continue
        except Exception as exc:  # noqa: BLE001 - a bug in one cell must not lose the others' work
            outcomes.append(fail(cell, internal_line(exc), time.perf_counter() - t0, progress, sent=True))
            continue
        dt = time.perf_counter() - t0
        progress.finished(cell, dt, "here")
        outcomes.append(CellOutcome(cell, result, None, dt, True, "here"))
    return outcomes


def internal_line(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return f"internal error: {text} — rerun with EDGEOPT_DEBUG=1 and report it"


def fail(cell: Cell, line: str, seconds: float, progress: MatrixProgress, sent: bool = False) -> CellOutcome:
    progress.failed(cell, line, seconds)
    return CellOutcome(cell, None, line, seconds, sent)


def run_matrix(cells: list[Cell], progress: MatrixProgress | None = None,
               runner: CellRunner | Callable[[list[Cell], MatrixProgress], list[CellOutcome]] | None = None,
               ) -> list[CellOutcome]:
    """Key every cell, answer the unchanged ones from the cache, hand the rest to ``runner`` (serial when None).
    Outcomes come back in the cells' order; a cell whose inputs cannot be read fails here, alone.

    A runner with ``prepare()`` (Ray) gets ready while the cells are keyed when some cell surely needs work (no
    manifest in its directory, or ``--force``): the keys are computed on a second thread meanwhile. Otherwise
    nothing is started before the cache has answered, so an all-cached matrix never starts Ray."""
    progress = progress or MatrixProgress()
    prepare = getattr(runner, "prepare", None)
    try:
        if prepare is not None and any(c.request.force or not Manifest.exists(c.directory) for c in cells):
            done, todo = _plan_while(prepare, cells, progress)
        else:
            done, todo = plan(cells, progress)
        if todo:
            ran = runner(todo, progress) if runner is not None else run_serial(todo, progress)
            index = {id(c): i for i, c in enumerate(cells)}
            for outcome in ran:
                done[index[id(outcome.cell)]] = outcome
    finally:
        close = getattr(runner, "close", None)  # e.g. keying failed after the runner got ready
        if close is not None:
            close()
    return [done[i] for i in range(len(cells))]


def plan(cells: list[Cell], progress: MatrixProgress,
         stop: threading.Event | None = None) -> tuple[dict[int, CellOutcome], list[Cell]]:
    """Every cell's content key; the outcomes of the cells answered here (cached, or inputs unreadable) by index,
    and the cells left to build. ``stop`` set: returns before the next cell."""
    planner = KeyPlanner()
    done: dict[int, CellOutcome] = {}
    todo: list[Cell] = []
    for i, cell in enumerate(cells):
        if stop is not None and stop.is_set():
            break
        try:
            cell.key = planner.key(cell)
        except EdgeoptError as exc:
            done[i] = fail(cell, exc.one_line(), 0.0, progress)
            continue
        hit = None if cell.request.force else cached_manifest(cell.directory, cell.key)
        if hit is not None:
            progress.cached(cell)
            done[i] = CellOutcome(cell, BuildResult(cell.target.name, cell.profile.name, cell.directory, hit,
                                                    True, 0.0))
        else:
            todo.append(cell)
    return done, todo


def _plan_while(prepare: Callable[[], None], cells: list[Cell],
                progress: MatrixProgress) -> tuple[dict[int, CellOutcome], list[Cell]]:
    """:func:`plan` on a second thread while ``prepare()`` runs on this one (hashing releases the GIL)."""
    box: dict[str, Any] = {}
    stop = threading.Event()

    def keys() -> None:
        try:
            box["plan"] = plan(cells, progress, stop)
        except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=keys, name="edgeopt-keys", daemon=True)
    thread.start()
    try:
        prepare()
    except BaseException:  # Ray could not start, Ctrl-C: stop keying after the cell at hand
        stop.set()
        thread.join()
        raise
    thread.join()
    if "error" in box:
        raise box["error"]
    result: tuple[dict[int, CellOutcome], list[Cell]] = box["plan"]
    return result
