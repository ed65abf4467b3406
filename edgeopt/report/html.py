"""The HTML report of ``edgeopt ci`` / ``edgeopt report --html``: ONE self-contained file (no scripts, no
external resources; the plots are embedded as base64 PNG ``<img>`` tags)."""

from __future__ import annotations

import base64
import html
from typing import Any

from edgeopt.report import plots
from edgeopt.results.reader import get

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#212121;max-width:1200px}
h1{font-size:1.4em} .verdict{padding:10px 14px;border-radius:6px;font-weight:600;margin-bottom:16px}
.pass{background:#e8f5e9;color:#1b5e20} .regression{background:#ffebee;color:#b71c1c}
.error{background:#fff3e0;color:#e65100}
table{border-collapse:collapse;font-size:0.85em;margin:12px 0} td,th{border:1px solid #ddd;padding:4px 8px}
th{background:#f5f5f5;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.regression td{background:#ffebee} tr.error td,tr.invalid td{background:#fff3e0}
figure{margin:18px 0} figcaption{font-size:0.85em;color:#555} img{max-width:100%}
code{background:#f5f5f5;padding:1px 4px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _img(png: bytes | None, alt: str, caption: str) -> str:
    if not png:
        return f"<p><em>{_e(alt)}: nothing to plot ({_e(caption)})</em></p>"
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def html_report(result: Any) -> str:
    verdict = result.verdict
    gates = result.gates if isinstance(result.gates, dict) else {}
    min_effect = (gates.get("latency") or {}).get("min_effect")
    rows = []
    for cell in result.cells:
        lat = cell.check("latency")
        d = (lat.details if lat else {}) or {}
        cur = get(cell.current, "agent", "latency_ms") or {}
        base = get(cell.baseline, "agent", "latency_ms") or {}
        change = f"{(d['ratio'] - 1) * 100:+.1f}%" if d.get("ratio") else "–"
        pval = f"{d['p_value']:.2g}" if d.get("p_value") is not None else "–"
        rows.append(
            f'<tr class="{_e(cell.status)}"><td>{_e(cell.device)}</td><td>{_e(cell.model)}</td>'
            f"<td>{_e(cell.profile or '-')}</td><td>{_e(cell.format)}</td>"
            f'<td class="num">{_e(_fmt(base.get("p50")))}</td><td class="num">{_e(_fmt(cur.get("p50")))}</td>'
            f'<td class="num">{_e(change)}</td>'
            f'<td class="num">{_e(pval)}</td>'
            f'<td class="num">{_e(cur.get("count", "–"))}</td>'
            f'<td class="num">{_e(get(cell.current, "artifact", "bytes") or "–")}</td>'
            f'<td class="num">{_e(_fmt(get(cell.current, "artifact", "metrics", "accuracy")))}</td>'
            f"<td><b>{_e(cell.status)}</b><br>{_e(cell.message)}</td></tr>")
    figures = [
        _img(plots.latency_distributions(result.cells), "latency distributions",
             "Raw latency samples of every artifact on every device; grey boxes are the baseline's."),
        _img(plots.pareto(result.cells), "accuracy vs latency vs size",
             "Accuracy (build evaluation) against p50 latency; marker area is the artifact size; the red step "
             "line and rings mark the Pareto front."),
        _img(plots.per_device(result.cells), "per-device comparison",
             "p50 latency of each artifact on each device (whiskers: p10–p90)."),
        _img(plots.baseline_vs_current(result.cells, min_effect), "baseline vs current",
             "Median latency change against the baseline with its bootstrap confidence interval; the dashed line "
             "is the minimum effect that counts as a regression."),
    ]
    devices = "".join(
        f"<li><code>{_e(name)}</code>: "
        + (f"lock waited {info['lock'].get('waited_s', 0)} s" if info.get("lock") else "no lock")
        + (f", {info.get('attempts')} attempts" if info.get("attempts", 1) > 1 else "") + "</li>"
        for name, info in sorted((result.devices or {}).items()))
    effect_text = f"{min_effect * 100:.0f}%" if min_effect is not None else "-"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgeopt ci {_e(result.run_id)}</title>
<style>{CSS}</style></head><body>
<h1>edgeopt ci — lab {_e(result.lab)}, run <code>{_e(result.run_id)}</code></h1>
<div class="verdict {_e(verdict)}">{_e(result.headline())}</div>
<p>Baseline: {_e(result.baseline.get('label'))}. {_e(result.baseline.get('note') or '')}</p>
<table><thead><tr><th>device</th><th>model</th><th>profile</th><th>format</th><th>p50 base ms</th>
<th>p50 now ms</th><th>change</th><th>p-value</th><th>samples</th><th>bytes</th><th>accuracy</th><th>status</th>
</tr></thead><tbody>
{''.join(rows)}
</tbody></table>
<h2>Plots</h2>
{''.join(figures)}
<h2>Devices</h2><ul>{devices}</ul>
<p style="font-size:0.8em;color:#777">Latency gate: one-sided Mann–Whitney U (normal approximation, tie-corrected)
and a bootstrap CI of the median ratio, together with a minimum effect size
({_e(effect_text)}). Invalid measurements are never compared.</p>
</body></html>
"""


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "–"


def search_report_html(result: Any, plot_png: bytes | None) -> str:
    """`edgeopt build --search --html FILE`: the candidates table (Pareto front and recommendation marked) and
    the accuracy-vs-latency plot, in one self-contained file."""
    data = result.to_json()
    best = (data.get("recommended") or {}).get("candidate")
    head = ["candidate", data.get("metric", "accuracy"), "drop pp", "bytes", "gzip bytes", "sparsity", "p50 ms",
            "mJ/inference", "Pareto front", ""]
    rows = []
    for r in sorted(data["rows"], key=lambda r: (not r["pareto"], r["candidate"])):
        energy = r.get("energy_per_inference_j")
        status = "recommended" if r["candidate"] == best else ("" if r.get("within_budget") else "over budget")
        cells = [r["candidate"], _fmt(r["accuracy"]), _fmt(r["accuracy_drop_pp"]), f"{r['bytes']:,}",
                 f"{r['bytes_gzip']:,}" if r.get("bytes_gzip") is not None else "–",
                 f"{r['weight_sparsity']:.1%}" if r.get("weight_sparsity") is not None else "–",
                 _fmt(r["latency_p50_ms"]), _fmt(energy * 1e3) if energy is not None else "–",
                 "yes" if r["pareto"] else "", status]
        css = "pass" if r["candidate"] == best else ""
        rows.append(f'<tr class="{css}">' + "".join(
            f'<td{"" if i in (0, 8, 9) else " class=num"}>{_e(c)}</td>' for i, c in enumerate(cells)) + "</tr>")
    verdict = (f"recommended: <b>{_e(best)}</b> — {_e(data['recommended'].get('why', ''))}" if best
               else "no candidate meets the accuracy budget")
    notes = "".join(f"<li>{_e(n)}</li>" for n in data.get("notes") or [])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>edgeopt search — {_e(data['target'])}"
            f"</title><style>{CSS}</style></head><body>"
            f"<h1>edgeopt search — target {_e(data['target'])}</h1>"
            f"<p>objective <code>{_e(data['objective'])}</code>, accuracy budget "
            f"{_e(data['max_accuracy_drop_pp'])} pp below the float model; benchmark run "
            f"<code>{_e(data.get('bench_run_id') or '–')}</code></p><p>{verdict}</p>"
            f"<table><tr>{''.join(f'<th>{_e(h)}</th>' for h in head)}</tr>{''.join(rows)}</table>"
            + (f"<ul>{notes}</ul>" if notes else "")
            + _img(plot_png, "accuracy vs latency", "each candidate (marker area ~ bytes); the Pareto front joined, "
                   "the recommendation circled")
            + "</body></html>")
