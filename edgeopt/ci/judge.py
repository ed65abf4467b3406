"""Judge measured cells against their baseline with the lab's gates (latency statistics, accuracy, size,
memory, energy)."""

from __future__ import annotations

from typing import Any, Iterable

from edgeopt.ci.gate import (
    IMPROVED,
    PASS,
    REGRESSION,
    SKIPPED,
    Check,
    LatencyGate,
    accuracy_drop,
    compare_latency,
    relative_increase,
)
from edgeopt.ci.model import ERROR, INVALID, NEW, Cell
from edgeopt.config.lab import Gates
from edgeopt.results.reader import (
    accuracy,
    agent_valid,
    build_quality,
    cell_key,
    document_problem,
    energy_per_inference,
    get,
    invalid_reasons,
    is_emulated,
    mapping,
    number,
    quality_worst,
    samples,
    usable,
)
from edgeopt.results.reader import error as result_error


def latency_gate(gates: Gates) -> LatencyGate | None:
    g = gates.latency
    if g is None:
        return None
    return LatencyGate(min_effect=g.min_effect, alpha=g.alpha, method=g.method, bootstrap=g.bootstrap,
                       min_samples=g.min_samples)


def emulated_latency(current: dict[str, Any], baseline: dict[str, Any] | None) -> Check | None:
    """A skipped latency check when either side ran on an emulated device (``edgeopt emulate``: qemu-user,
    20-340x slower than the host and nothing like the real device): such latency is never judged and never
    serves as a baseline. None when both are real devices."""
    sides = [name for name, doc in (("this result", current), ("the baseline", baseline)) if is_emulated(doc)]
    if not sides:
        return None
    p50 = get(current, "agent", "latency_ms", "p50")
    shown = f" (p50 {p50:.4g} ms emulated)" if isinstance(p50, float) and is_emulated(current) else ""
    return Check("latency", SKIPPED, f"latency not judged: {' and '.join(sides)} ran on an emulated device "
                 f"(qemu-user): its latency is not hardware latency{shown}", None, None,
                 {"status": SKIPPED, "reason": "emulated"})


def judge(current: dict[str, Any], baseline: dict[str, Any] | None, gates: Gates,
          measured: bool = True) -> list[Check]:
    """Every configured gate on one measured cell. Latency is not judged when either side is emulated.
    ``measured=False`` (the device's measurement is invalid): only what the host knows without it, the
    artifact's size, its build quality and its build accuracy."""
    checks: list[Check] = []
    lat = latency_gate(gates) if measured else None
    skipped = emulated_latency(current, baseline) if lat is not None else None
    if skipped is not None:
        checks.append(skipped)
    elif lat is not None and baseline is not None:
        verdict = compare_latency(samples(baseline), samples(current), lat)
        checks.append(Check("latency", verdict.status, verdict.message, verdict.median_baseline,
                            verdict.median_current, verdict.to_json()))
    if build_quality(current) == "broken":  # a dead model fails its cell, baseline or not
        quality = mapping(current, "artifact", "quality")
        checks.append(Check("quality", REGRESSION, f"quality: the artifact is broken against the float model "
                            f"({quality_worst(quality)}); its build exits 1 (int8-auto keeps the failing layers "
                            f"float)", None, None, {"verdict": "broken", "worst": mapping(quality, "worst")}))
    if gates.accuracy is not None and (measured or gates.accuracy.source == "build"):
        checks.append(accuracy_drop(accuracy(baseline, gates.accuracy.source),
                                    accuracy(current, gates.accuracy.source), gates.accuracy.max_drop,
                                    gates.accuracy.min))
    for gate, what, unit, getter in (
        ("size", "size", "B", lambda d: number(get(d, "artifact", "bytes"))),
        ("peak_memory", "peak RSS", "KiB", lambda d: number(get(d, "agent", "memory", "peak_rss_kib"))),
        ("energy", "energy per inference", "J", energy_per_inference),
    ):
        settings = getattr(gates, gate)
        if settings is None or not measured and gate != "size":
            continue
        check = relative_increase(gate, what, unit, getter(baseline) if baseline else None, getter(current),
                                  settings.max_increase, settings.max)
        if gate == "energy" and check.current is None:
            check.message = "energy: no sensor reading on this device"
        checks.append(check)
    return checks


def evaluate(current_docs: Iterable[dict[str, Any]], baseline_docs: Iterable[dict[str, Any]], gates: Gates,
             attempts: dict[tuple[str, str, str, str], int] | None = None) -> list[Cell]:
    """One cell per current (latest, not superseded) result; compared with the usable baseline result of the
    same device × model × profile × format."""
    base: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for doc in baseline_docs:
        if usable(doc):
            base[cell_key(doc)] = doc  # later (retried) results win
    latest: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for doc in current_docs:
        if not mapping(doc, "ci").get("superseded"):
            latest[cell_key(doc)] = doc
    cells = []
    for key in sorted(latest):
        doc = latest[key]
        device, model, profile, fmt = key
        stored_attempt = number(mapping(doc, "ci").get("attempt"))
        cell = Cell(device, model, str(doc.get("profile") or profile), fmt, PASS, "", current=doc,
                    attempts=(attempts or {}).get(key, int(stored_attempt) if stored_attempt else 1))
        failure = result_error(doc)
        problem = document_problem(doc)
        if not doc.get("valid"):
            cell.status = ERROR
            cell.message = (f"{failure['kind']} error: {failure['message']}" if failure is not None
                            else "error: no result")
        elif problem is not None:  # a damaged stored document: shown, never compared
            cell.status = INVALID
            cell.message = f"invalid result document, not compared: {problem}"
        elif not agent_valid(doc):  # what the host knows without the measurement is still judged
            cell.baseline = base.get(key)
            cell.checks = judge(doc, cell.baseline, gates, measured=False)
            reasons = "; ".join(invalid_reasons(doc)) or "the agent says so"
            if str(mapping(doc, "ci").get("measured") or "").startswith("c"):  # a confirmation's re-measure
                invalid = ("measurement regressed, and the re-measure to confirm it was invalid, so not "
                           f"compared: {reasons}")
            else:
                invalid = f"measurement invalid after {cell.attempts} attempt(s), not compared: {reasons}"
            bad = [c for c in cell.checks if c.status == REGRESSION]
            cell.status = REGRESSION if bad else INVALID
            cell.message = "; ".join([c.message for c in bad] + [f"latency {invalid}" if bad else invalid])
        else:
            cell.baseline = base.get(key)
            cell.checks = judge(doc, cell.baseline, gates)
            bad = [c for c in cell.checks if c.status == REGRESSION]
            if bad:
                cell.status = REGRESSION
                cell.message = "; ".join(c.message for c in bad)
            else:
                latc = cell.check("latency")
                if cell.baseline is None:
                    cell.status = NEW
                    p50 = get(doc, "agent", "latency_ms", "p50")
                    cell.message = f"no baseline for this cell (p50 {p50:.4g} ms)" if isinstance(p50, float) \
                        else "no baseline for this cell"
                    if latc is not None and latc.status == SKIPPED:  # emulated: say so, not only the p50
                        cell.message = f"no baseline for this cell; {latc.message}"
                elif latc is not None and latc.status == IMPROVED:
                    cell.status = IMPROVED
                    cell.message = latc.message
                else:
                    cell.status = PASS
                    cell.message = latc.message if latc is not None else "ok"
        cells.append(cell)
    return cells
