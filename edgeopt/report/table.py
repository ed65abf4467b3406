"""One row per result: what ``edgeopt bench`` prints after a run and ``edgeopt report`` prints from the store.

:func:`result_row` flattens a result document (see docs/bench.md) into the reported figures; the table and the
JSON output use the same rows, so they can never disagree.
"""

from __future__ import annotations

from typing import Any, Iterable

from edgeopt.results.reader import (
    accuracy,
    agent_valid,
    energy_per_inference,
    energy_sensor,
    get,
    invalid_reasons,
    latency_p50,
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
    ("top1_agreement", "parity top-1", "right"),
    ("accuracy", "accuracy", "right"),
    ("energy_per_inference_j", "mJ/inf", "right"),
    ("status", "status", "left"),
)


def result_row(doc: dict[str, Any]) -> dict[str, Any]:
    """The reported figures of one result document (``None`` where unknown)."""
    agent = doc.get("agent") or {}
    runtime = get(agent, "runtime", "name")
    version = get(agent, "runtime", "version")
    error = doc.get("error")
    inputs_source = get(agent, "inputs", "source")
    if error:
        status = f"FAILED ({error.get('kind', 'error')}): {error.get('message', '')}"
    elif not agent_valid(doc):  # measured, but under disturbed conditions (throttling, load, clocks)
        status = "disturbed: " + "; ".join(invalid_reasons(doc) or ["conditions not met"])
    elif inputs_source == "random":
        status = "ok (random inputs)"
    else:
        status = "ok"
    artifact = doc.get("artifact") or {}
    return {
        "result_id": doc.get("result_id"),
        "run_id": doc.get("run_id"),
        "target": doc.get("target"),
        "profile": doc.get("profile") or artifact.get("file"),
        "format": doc.get("format"),
        "runtime": f"{runtime} {version}" if runtime and version else runtime,
        "bytes": artifact.get("bytes"),
        "p50_ms": latency_p50(doc),
        "p90_ms": get(agent, "latency_ms", "p90"),
        "init_ms": get(agent, "latency_ms", "init"),
        "peak_rss_kib": get(agent, "memory", "peak_rss_kib"),
        "top1_agreement": get(agent, "parity", "top1_agreement"),
        "accuracy": accuracy(doc),
        "device_accuracy": accuracy(doc, "device"),
        "inputs": inputs_source,
        "threads": get(agent, "runtime", "threads"),
        "bytes_sent": get(doc, "transfer", "total"),
        "energy_per_inference_j": energy_per_inference(doc),
        "energy_sensor": energy_sensor(doc),
        "conditions_valid": agent.get("valid"),
        "valid": bool(doc.get("valid")),
        "error": error,
        "status": status,
    }


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
    if key == "energy_per_inference_j":
        return f"{value * 1e3:.4g}"
    return str(value)


def render_table(docs: Iterable[dict[str, Any]], console: Any, title: str = "edgeopt bench") -> None:
    """Print the results as a rich table on ``console``."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for key, header, justify in COLUMNS:
        table.add_column(header, justify=justify,  # type: ignore[arg-type]
                         overflow="fold", no_wrap=key not in ("status", "profile", "runtime"))
    for row in rows_json(docs):
        style = None if row["valid"] else "red"
        table.add_row(*(_fmt(key, row[key]) for key, _, _ in COLUMNS), style=style)
    console.print(table)


def render_runs(runs: Iterable[dict[str, Any]], console: Any) -> None:
    from rich.table import Table

    table = Table(title="edgeopt runs", title_justify="left")
    for header in ("run", "created", "status", "targets", "results", "valid"):
        table.add_column(header)
    for r in runs:
        table.add_row(r["run_id"], r["created_at"], r["status"], ", ".join(r["targets"]), str(r["results"]),
                      str(r["valid"]))
    console.print(table)
