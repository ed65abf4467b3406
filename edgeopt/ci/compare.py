"""Judge a stored run against another (``edgeopt report --compare``): the same verdict as ``edgeopt ci``."""

from __future__ import annotations

from typing import Any

from edgeopt.ci.baseline import Baseline, recorded_baseline, resolve_baseline
from edgeopt.ci.judge import evaluate
from edgeopt.ci.model import CIResult
from edgeopt.config.lab import Gates
from edgeopt.results.store import Store


def recorded_gates(run: dict[str, Any]) -> Gates:
    """The gates the run was judged with (recorded by ``edgeopt ci``); the defaults for runs that recorded none
    (plain bench runs, older runs) or whose record no longer validates."""
    recorded = (run.get("ci") or {}).get("gates")
    if isinstance(recorded, dict):
        try:
            return Gates.model_validate(recorded)
        except ValueError:
            pass
    return Gates()


def compare_runs(store: Store, current: str, baseline: str | None, gates: Gates | None = None) -> CIResult:
    """Judge stored run ``current`` against run/tag/file ``baseline`` (default: the baseline that run used), with
    ``gates`` (default: those the run was judged with)."""
    run = store.run(current)
    gates = gates or recorded_gates(run)
    base: Baseline | None = None
    if baseline is None:
        recorded = (run.get("ci") or {}).get("baseline") or {}
        base = recorded_baseline(recorded, store)  # taken per device from several runners' runs
        baseline = recorded.get("run_id") or (recorded.get("spec") if recorded.get("source") == "file" else None)
    if base is None:
        devices = [str(t) for t in run.get("targets") or []]
        models = [str(c.get("model")) for c in (run.get("ci") or {}).get("cells") or [] if isinstance(c, dict)]
        base = resolve_baseline(baseline, store, exclude=run["run_id"], devices=devices, models=models or None,
                                lab=(run.get("ci") or {}).get("lab")) if baseline else Baseline(None, "none", "none")
    cells = evaluate(store.results(run["run_id"]), base.docs, gates)
    infra = (run.get("ci") or {}).get("infra_errors_fail", True)
    return CIResult(run["run_id"], (run.get("ci") or {}).get("lab") or "-", cells, base.to_json(), infra,
                    (run.get("ci") or {}).get("devices") or {}, gates=gates.model_dump(),
                    store_path=store.where)
