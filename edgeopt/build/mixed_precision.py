"""Mixed precision (``int8-auto``): start from full int8 and keep in float, one at a time, the layer the int8
debugger ranks worst *given the layers already kept in float*, until every output's quality verdict reaches the
profile's target; then drop again any float layer the target does not need.

The ranking is redone after each step because quantisation parameters move: TFLite pushes a Concat's scale back
through the Reshape/Transpose before it, so keeping the Concat alone in float changes nothing and the next
culprit only shows once it is. Each step costs one conversion, one judgement and one debugger run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

VERDICT_RANK = {"ok": 0, "degraded": 1, "broken": 2}
PRUNE_AT_MOST = 8  # float layers tried for removal after the target is reached (one conversion each)


@dataclass
class Trial:
    float_layers: tuple[str, ...]
    path: Path
    quality: dict[str, Any]

    @property
    def rank(self) -> int:
        return VERDICT_RANK.get(str(self.quality.get("verdict")), 3)


def search(convert: Callable[[list[str], Path], Any], judge: Callable[[Path], dict[str, Any]],
           rank: Callable[[list[str]], list[str]], out: Path, workdir: Path, *, target: str = "ok",
           max_float: int = 16, note: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Writes the chosen model to ``out``; returns the facts for the manifest.

    ``convert(float_layers, path)`` converts keeping those layers in float; ``judge(path)`` is the quality dict
    (``verdict``, ``worst``) of a converted model; ``rank(float_layers)`` the debugger's layer names, worst first,
    for a conversion that keeps ``float_layers`` in float."""
    goal = VERDICT_RANK[target]
    trials: list[Trial] = []

    def attempt(layers: list[str]) -> Trial:
        path = workdir / f"mixed-{len(trials)}{out.suffix}"
        convert(layers, path)
        trial = Trial(tuple(layers), path, judge(path))
        trials.append(trial)
        note(f"int8-auto ({out.suffix.lstrip('.')}): {len(layers)} layer(s) in float -> {trial.quality.get('verdict')}")
        return trial

    best = attempt([])
    layers: list[str] = []
    ranked: list[str] = []
    refused: dict[str, str] = {}  # layers the converter would not keep in float, and why
    stuck = ""
    while best.rank > goal and len(layers) < max_float:
        try:
            ranked = rank(layers)
        except Exception as exc:  # noqa: BLE001 - the debugger refusing this layer set: go on with its last ranking
            debugger_error = ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:200]
            stuck = f"the int8 debugger failed ({debugger_error}) and its last ranking is used up"
        fresh = [name for name in ranked if name not in layers and name not in refused]
        if not fresh:
            stuck = stuck or "the debugger ranks no further layer"
            break
        stuck = ""
        layers.append(fresh[0])
        try:
            trial = attempt(layers)
        except Exception as exc:  # noqa: BLE001 - the converter refusing to keep this layer in float: skip it
            refused[layers.pop()] = ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:200]
            continue
        if trial.rank < best.rank:  # strictly better: with no gain the fewer float layers stand
            best = trial
    reached = best.rank <= goal
    if reached:
        for name in list(best.float_layers)[:PRUNE_AT_MOST]:  # a layer added early may be needless once later ones are
            fewer = [n for n in best.float_layers if n != name]
            try:
                trial = attempt(fewer)
            except Exception:  # noqa: BLE001 - a set the converter refuses is simply not smaller
                continue
            if trial.rank <= goal:
                best = trial
    shutil.copyfile(best.path, out)
    full = trials[0]
    return {
        "target": target, "reached": reached,
        **({} if reached else {"why_not": stuck or f"still {best.quality.get('verdict')} with {len(layers)} "
                                                   f"layers in float (max_float_layers {max_float})"}),
        "float_layers": list(best.float_layers),
        **({"refused": refused} if refused else {}),
        "full_int8": {"verdict": full.quality.get("verdict"), "worst": full.quality.get("worst"),
                      "bytes": full.path.stat().st_size},
        "bytes_vs_full_int8": round(out.stat().st_size / max(full.path.stat().st_size, 1), 4),
        "trials": [{"float_layers": len(t.float_layers), "verdict": t.quality.get("verdict"),
                    "bytes": t.path.stat().st_size} for t in trials],
    }
