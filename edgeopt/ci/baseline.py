"""The baseline a CI run is compared with: a stored run (id, tag, latest-passing, latest) or a JSON export."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.results.reader import cell_key
from edgeopt.results.store import Store

RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
RUN_ID_PREFIX = re.compile(r"^\d{8}(T[\dZ-]*[0-9a-f]*)?$")  # a run id's date at least: 20261203, 20261203T2241
LATEST_PASSING = "latest-passing"
LATEST = "latest"


@dataclass
class Baseline:
    spec: str | None
    source: str  # store | file | none
    label: str
    run_id: str | None = None
    docs: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None
    runs: dict[str, list[str]] = field(default_factory=dict)  # run id -> the devices taken from it (store)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spec": self.spec, "source": self.source, "label": self.label,
                               "run_id": self.run_id, "results": len(self.docs), "note": self.note}
        if self.runs:
            out["runs"] = self.runs
        return out


def load_baseline_file(path: Path) -> Baseline:
    """A JSON export: ``edgeopt ci --json`` / ``edgeopt report --json --full`` ({"results": [...]}) or a list
    of result documents. Only full result documents carry the raw latency samples the gate needs."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read baseline file {path}: {exc}",
                          "export one with `edgeopt ci --json FILE` or `edgeopt report --json --full`") from exc
    docs = data.get("results") if isinstance(data, dict) else data
    if not isinstance(docs, list) or not all(isinstance(d, dict) and "result_id" in d for d in docs):
        raise ConfigError(f"baseline file {path} holds no result documents",
                          "use `edgeopt ci --json FILE` or `edgeopt report --json --full` (with --full: the raw "
                          "samples are needed)")
    run_id = (data.get("run") or {}).get("run_id") if isinstance(data, dict) else None
    run_id = run_id or (data.get("run_id") if isinstance(data, dict) else None)
    return Baseline(str(path), "file", f"file {Path(path).name}" + (f" (run {run_id})" if run_id else ""),
                    run_id, docs)


def looks_like_typo(spec: str, tag: str) -> bool:
    """``spec`` is ``tag`` mistyped: two neighbouring letters swapped (``mian``), a letter more or less (``mainn``,
    ``man``), or another case (``Main``). Digits never make a typo: ``pr-10`` beside ``pr-1``, ``rc12`` beside
    ``rc21``, ``release-2`` beside ``release-1`` are tags of their own, as is ``feature-b`` beside ``feature-a``."""
    if spec == tag or any(c.isdigit() for c in spec + tag) and spec.lower() != tag.lower():
        return False
    if spec.lower() == tag.lower():
        return True
    if len(spec) == len(tag):
        diff = [i for i in range(len(spec)) if spec[i] != tag[i]]
        return len(diff) == 2 and diff[1] == diff[0] + 1 and spec[diff[0]] == tag[diff[1]] \
            and spec[diff[1]] == tag[diff[0]]
    short, long_ = sorted((spec, tag), key=len)
    return len(long_) - len(short) == 1 and len(short) >= 3 and any(
        long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def check_tag(spec: str, store: Store) -> None:
    """A tag no run has: the first run of a new tag passes (every cell new), but a mistyped tag the store has
    (:func:`looks_like_typo`) would pass every change and could move the real tag: refused."""
    tags = sorted({t for run in store.find_runs() for t in run.get("tags") or []})
    close = next((t for t in tags if looks_like_typo(spec, t)), None)
    if close:
        raise ConfigError(f"--baseline {spec!r}: no run is tagged so, but the store has the tag {close!r}",
                          f"did you mean --baseline {close}? (tags: {', '.join(tags[:10])})")


def resolve_baseline(spec: str | None, store: Store, exclude: str | None = None,
                     devices: Collection[str] | None = None, models: Collection[str] | None = None,
                     lab: str | None = None) -> Baseline:
    """``spec``: a JSON file, ``latest-passing`` (default), ``latest``, a run id (or unique prefix), or a tag.

    With ``devices`` (the lab's), a tag / ``latest`` / ``latest-passing`` is resolved per device: each device's
    baseline is the newest matching run that measured it. Several CI runners (one per site or rack) share one
    store; the newest ``main`` run may be another runner's, measured on other devices. A run that never finished
    (``running``: in progress elsewhere, or its writer died) is never a baseline."""
    spec = spec or LATEST_PASSING
    if spec.endswith(".json") or Path(spec).is_file():
        return load_baseline_file(Path(spec))
    candidates: list[dict[str, Any]] = []
    label = spec
    if spec == LATEST_PASSING:
        candidates = store.find_runs(passing=True, exclude=exclude)
        label = "latest passing run"
    elif spec == LATEST:
        candidates = store.find_runs(exclude=exclude)
        label = "latest run"
    else:
        candidates = store.find_runs(tag=spec, exclude=exclude)
        if candidates:
            label = f"tag {spec}"
        elif RUN_ID.match(spec) or RUN_ID_PREFIX.match(spec):
            run = store.run(spec)  # raises StoreError naming the latest runs when unknown
            return Baseline(spec, "store", f"run {run['run_id']}", run["run_id"], store.results(run["run_id"]))
        else:
            check_tag(spec, store)
    candidates = [r for r in candidates if r.get("status", "running") != "running"]
    if not candidates:
        return Baseline(spec, "none", f"none ({label}: no such run yet)",
                        note=f"no baseline found for {spec!r}: every cell is new")
    runs = per_device_runs(candidates, devices, models, lab)
    if not runs:  # no run measured these devices: the newest run, every cell new (as with one runner)
        first = candidates[0]
        return Baseline(spec, "store", f"{label} {first['run_id']}", first["run_id"], store.results(first["run_id"]))
    docs = [d for run_id, names in runs.items() for d in store.results(run_id) if cell_key(d)[0] in names]
    first_id = next(iter(runs))
    more = f" (+{len(runs) - 1} more run(s) for other devices)" if len(runs) > 1 else ""
    return Baseline(spec, "store", f"{label} {first_id}{more}", first_id, docs, runs=runs)


def measured(run: dict[str, Any], models: Collection[str] | None, lab: str | None = None) -> list[str]:
    """The devices a run measured (its ``targets``: a CI run's device names); with ``models`` (the lab's), only
    those on which it measured one of them, by the cells its verdict lists: another lab sharing the store and a
    device name is not this lab's baseline. A run of the same ``lab``, or without cells (a plain bench run, older
    runs), counts whole."""
    targets = list(run.get("targets") or [])
    cells = (run.get("ci") or {}).get("cells")
    if not models or not isinstance(cells, list) or not cells or (lab and (run.get("ci") or {}).get("lab") == lab):
        return targets
    return [t for t in targets if any(isinstance(c, dict) and c.get("device") == t and c.get("model") in models
                                      for c in cells)]


def per_device_runs(candidates: list[dict[str, Any]], devices: Collection[str] | None,
                    models: Collection[str] | None = None, lab: str | None = None) -> dict[str, list[str]]:
    """Run id -> devices, taking each of ``devices`` from the newest candidate run that measured it (for one of
    ``models``: :func:`measured`)."""
    if not devices:
        return {}
    wanted = list(dict.fromkeys(devices))
    runs: dict[str, list[str]] = {}
    for run in candidates:
        have = [d for d in wanted if d in measured(run, models, lab)]
        if have:
            runs[run["run_id"]] = have
            wanted = [d for d in wanted if d not in have]
        if not wanted:
            break
    return runs


def recorded_baseline(recorded: dict[str, Any], store: Store) -> Baseline | None:
    """The baseline a stored CI run recorded, when it was taken from several runs (per device); else None."""
    runs = recorded.get("runs")
    if not isinstance(runs, dict) or len(runs) < 2:
        return None
    docs = [d for run_id, names in runs.items() for d in store.results(str(run_id))
            if cell_key(d)[0] in (names or [])]
    return Baseline(recorded.get("spec"), "store", str(recorded.get("label") or "recorded baseline"),
                    recorded.get("run_id"), docs, runs={str(k): list(v or []) for k, v in runs.items()})
