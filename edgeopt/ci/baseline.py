"""The baseline a CI run is compared with: a stored run (id, tag, latest-passing, latest) or a JSON export."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.results.store import Store

RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
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

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "source": self.source, "label": self.label, "run_id": self.run_id,
                "results": len(self.docs), "note": self.note}


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


def resolve_baseline(spec: str | None, store: Store, exclude: str | None = None) -> Baseline:
    """``spec``: a JSON file, ``latest-passing`` (default), ``latest``, a run id (or unique prefix), or a tag."""
    spec = spec or LATEST_PASSING
    if spec.endswith(".json") or Path(spec).is_file():
        return load_baseline_file(Path(spec))
    run: dict[str, Any] | None = None
    label = spec
    if spec == LATEST_PASSING:
        run = store.find_run(passing=True, exclude=exclude)
        label = "latest passing run"
    elif spec == LATEST:
        run = store.find_run(exclude=exclude)
        label = "latest run"
    else:
        run = store.find_run(tag=spec, exclude=exclude)
        if run is not None:
            label = f"tag {spec}"
        elif RUN_ID.match(spec) or len(spec) >= 8 and spec[:8].isdigit():
            run = store.run(spec)  # raises StoreError naming the latest runs when unknown
            label = "run"
    if run is None:
        return Baseline(spec, "none", f"none ({label}: no such run yet)",
                        note=f"no baseline found for {spec!r}: every cell is new")
    return Baseline(spec, "store", f"{label} {run['run_id']}" if label != "run" else f"run {run['run_id']}",
                    run["run_id"], store.results(run["run_id"]))
