"""One row per result: what ``edgeopt bench`` prints after a run and ``edgeopt report`` prints from the store.

:func:`result_row` flattens a result document (see docs/bench.md) into the reported figures; the table and the
JSON output use the same rows, so they can never disagree.
"""

from __future__ import annotations

from typing import Any, Iterable

from edgeopt.results.reader import (
    accuracy,
    agent_valid,
    build_quality,
    document_problem,
    energy_per_inference,
    energy_sensor,
    error,
    figure,
    get,
    invalid_reasons,
    is_emulated,
    latency_p50,
    mapping,
    parity_exact,
    parity_sqnr,
    quality_worst,
    text,
)

COLUMNS: tuple[tuple[str, str, str], ...] = (
    # key, header, justify
    ("target", "target", "left"),
    ("profile", "profile", "left"),
    ("format", "format", "left"),
    ("runtime", "runtime", "left"),
    ("bytes", "bytes", "right"),
    ("p50_ms", "p50 ms", "right"),
    ("p90_ms", "p90 ms", "right"),
    ("init_ms", "init ms", "right"),
    ("peak_rss_kib", "peak RSS", "right"),
    ("top1_agreement", "parity top-1, dB", "right"),
    ("quality", "quality", "left"),
    ("accuracy", "accuracy", "right"),
    ("energy_per_inference_j", "mJ/inf", "right"),
    ("status", "status", "left"),
)


def result_row(doc: dict[str, Any]) -> dict[str, Any]:
    """The reported figures of one result document (``None`` where unknown). A stored document is untrusted:
    every figure is read type-safely, and one with a field of the wrong type is shown as invalid."""
    runtime = text(doc, "agent", "runtime", "name")
    version = text(doc, "agent", "runtime", "version")
    failure = error(doc)
    problem = document_problem(doc)
    inputs_source = text(doc, "agent", "inputs", "source")
    if failure:
        status = f"FAILED ({failure['kind']}): {failure['message']}"
    elif problem:
        status = f"INVALID DOCUMENT: {problem}"
    elif not agent_valid(doc):  # measured, but under disturbed conditions (throttling, load, clocks)
        status = "disturbed: " + "; ".join(invalid_reasons(doc) or ["conditions not met"])
    elif inputs_source == "random":
        status = "ok (random inputs)"
    else:
        status = "ok"
    verdict = build_quality(doc) if not problem else None
    emulated = is_emulated(doc) if not problem else False
    if emulated and not failure:  # qemu-user: its latency must never be read as the device's
        status = status.replace("ok", "emulated", 1) + (" — latency is not hardware latency"
                                                         if status.startswith("ok") else " (emulated)")
    return {
        "result_id": text(doc, "result_id"),
        "run_id": text(doc, "run_id"),
        "target": text(doc, "target"),
        "profile": text(doc, "profile") or text(doc, "artifact", "file"),
        "format": text(doc, "format"),
        "runtime": f"{runtime} {version}" if runtime and version else runtime,
        "bytes": _count(get(doc, "artifact", "bytes")),
        "p50_ms": latency_p50(doc),
        "p90_ms": figure(doc, "agent", "latency_ms", "p90"),
        "init_ms": figure(doc, "agent", "latency_ms", "init"),
        "peak_rss_kib": figure(doc, "agent", "memory", "peak_rss_kib"),
        "top1_agreement": figure(doc, "agent", "parity", "top1_agreement"),
        "parity_sqnr_db": parity_sqnr(doc),
        "parity_exact": parity_exact(doc),
        "quality": verdict if verdict in (None, "ok") else
        f"{verdict}: {quality_worst(mapping(doc, 'artifact', 'quality'))}",
        "quality_verdict": verdict,
        "accuracy": accuracy(doc),
        "device_accuracy": accuracy(doc, "device"),
        "inputs": inputs_source,
        "threads": _count(get(doc, "agent", "runtime", "threads")),
        "bytes_sent": _count(get(doc, "transfer", "total")),
        "energy_per_inference_j": energy_per_inference(doc),
        "energy_sensor": energy_sensor(doc),
        "conditions_valid": mapping(doc, "agent").get("valid") if not problem else None,
        "emulated": emulated,
        "valid": doc.get("valid") is True and not problem,
        "error": failure,
        "problem": problem,
        "status": status,
    }


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def rows_json(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [result_row(d) for d in docs]


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "bytes":
        return f"{value:,}"
    if key in ("p50_ms", "p90_ms", "init_ms"):
        return f"{value:.3f}"
    if key == "peak_rss_kib":
        return f"{value / 1024:.1f} MiB"
    if key in ("top1_agreement", "accuracy"):
        return f"{value:.4f}"
    if key == "parity_sqnr_db":
        return f"{value:.1f}"
    if key == "energy_per_inference_j":
        return f"{value * 1e3:.4g}"
    return str(value)


def _parity(row: dict[str, Any]) -> str:
    """``1.0000, exact`` / ``0.9990, 41.2`` / ``-, 38.5``: the worst output's top-1 agreement with the host's run
    of the artifact, and the lowest SQNR (dB) over every output (``-`` where nothing was compared)."""
    db = "exact" if row["parity_exact"] else _fmt("parity_sqnr_db", row["parity_sqnr_db"])
    top1 = _fmt("top1_agreement", row["top1_agreement"])
    return "-" if top1 == "-" and db == "-" else f"{top1}, {db}"


def render_table(docs: Iterable[dict[str, Any]], console: Any, title: str = "edgeopt bench") -> None:
    """Print the results as a rich table on ``console``."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), title_justify="left")
    for key, header, justify in COLUMNS:
        table.add_column(header, justify=justify,  # type: ignore[arg-type]
                         overflow="fold", no_wrap=key not in ("status", "profile", "runtime", "quality"))
    for row in rows_json(docs):
        # a broken artifact is red even when it ran well: the device computed faithfully what int8 destroyed
        style = None if row["valid"] and row["quality_verdict"] != "broken" else "red"
        # device strings are text, never Rich markup: a "[/x]" from a device prints as it is
        table.add_row(*(Text(_parity(row) if key == "top1_agreement" else _fmt(key, row[key]))
                        for key, _, _ in COLUMNS), style=style)
    console.print(table)


def render_runs(runs: Iterable[dict[str, Any]], console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="edgeopt runs", title_justify="left")
    for header in ("run", "created", "status", "targets", "results", "valid"):
        table.add_column(header)
    for r in runs:
        table.add_row(*(Text(str(cell)) for cell in (r["run_id"], r["created_at"], r["status"],
                                                     ", ".join(str(t) for t in r["targets"]), r["results"],
                                                     r["valid"])))
    console.print(table)
