"""Markdown summary for a CI step summary (``$GITHUB_STEP_SUMMARY``): the verdict first, then one table row per
cell, then the details of what failed."""

from __future__ import annotations

from typing import Any

from edgeopt.results.reader import get

ICON = {"pass": "✅", "improved": "🚀", "new": "🆕", "regression": "❌", "error": "⚠️", "invalid": "⚠️"}


def md_escape(text: Any) -> str:
    """A name or message in GitHub-flavoured Markdown: table pipes escaped, HTML shown as text (a lab or profile
    named ``<b>`` rendered as markup in a step summary)."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


def _ms(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "–"


def markdown_summary(result: Any) -> str:
    lines = [f"## edgeopt ci: {result.headline()}", ""]
    baseline = md_escape(result.baseline.get("label"))
    lines.append(f"Run `{result.run_id}` on lab **{md_escape(result.lab)}**; baseline: {baseline}.")
    if result.baseline.get("note"):
        lines.append(f"_{md_escape(result.baseline['note'])}_")
    lines += ["", "| | device | model | profile | format | p50 ms (base → now) | change | p-value | size B | "
                  "accuracy | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in result.cells:
        lat = cell.check("latency")
        d = (lat.details if lat else {}) or {}
        p50_now = get(cell.current, "agent", "latency_ms", "p50")
        p50_base = get(cell.baseline, "agent", "latency_ms", "p50")
        change = f"{(d['ratio'] - 1) * 100:+.1f}%" if d.get("ratio") else "–"
        pval = f"{d['p_value']:.2g}" if d.get("p_value") is not None else "–"
        size = get(cell.current, "artifact", "bytes")
        acc = get(cell.current, "artifact", "metrics", "accuracy")
        lines.append(
            f"| {ICON.get(cell.status, '')} | {md_escape(cell.device)} | {md_escape(cell.model)} | "
            f"{md_escape(cell.profile or '-')} | "
            f"{cell.format} | {_ms(p50_base)} → {_ms(p50_now)} | {change} | {pval} | "
            f"{f'{size:,}' if isinstance(size, int) else '–'} | {f'{acc:.4f}' if isinstance(acc, float) else '–'} | "
            f"{cell.status} |")
    bad = [c for c in result.cells if c.status in ("regression", "error", "invalid")]
    if bad:
        lines += ["", "### Details", ""]
        for cell in bad:
            lines.append(f"- **{md_escape(cell.name)}** ({cell.status}): {md_escape(cell.message)}")
    g = result.gates.get("latency") if isinstance(result.gates, dict) else None
    if g:
        lines += ["", f"Latency gate: one-sided Mann–Whitney U p < {g['alpha']} and the bootstrap "
                      f"{100 * (1 - 2 * g['alpha']):.0f}% CI of the median ratio above 1, and a median slowdown "
                      f"≥ {g['min_effect'] * 100:.0f}%."]
    return "\n".join(lines) + "\n"
