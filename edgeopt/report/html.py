"""The HTML reports: ``edgeopt ci`` / ``edgeopt report --html`` and ``edgeopt build --search --html``.

Each is ONE self-contained file: the plots are embedded as base64 PNG ``<img>`` tags, the style and one small
script (click a column header to sort a table; Enter/Space on a focused header too) are inline, and a
Content-Security-Policy allows nothing else: no request can leave the file (``default-src 'none'``, images
only from ``data:``, the inline style and script only by their SHA-256 hashes). Numeric cells carry their raw
value in ``data-v``, so a table sorts by number, not by the text shown; missing values sort last.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any, Sequence

from edgeopt.report import plots
from edgeopt.results.reader import get

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#212121;max-width:1200px}
h1{font-size:1.4em} .verdict{padding:10px 14px;border-radius:6px;font-weight:600;margin-bottom:16px}
.pass{background:#e8f5e9;color:#1b5e20} .regression{background:#ffebee;color:#b71c1c}
.error{background:#fff3e0;color:#e65100}
table{border-collapse:collapse;font-size:0.85em;margin:12px 0} td,th{border:1px solid #ddd;padding:4px 8px}
th{background:#f5f5f5;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none} table.sortable th:focus{outline:2px solid #0072B2}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
tr.regression td{background:#ffebee} tr.error td,tr.invalid td{background:#fff3e0}
figure{margin:18px 0} figcaption{font-size:0.85em;color:#555} img{max-width:100%;height:auto}
code{background:#f5f5f5;padding:1px 4px} .small{font-size:0.8em;color:#555} caption{text-align:left;color:#555}
"""

SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.tabIndex = 0;
    function key(row) {
      var cell = row.cells[col];
      var v = cell.getAttribute("data-v");
      if (v === null) { return cell.textContent.trim(); }
      return v === "" ? null : parseFloat(v);
    }
    function sort() {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        var d = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
    });
  });
});
"""


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (f"default-src 'none'; img-src data:; style-src {_sha(CSS)}; script-src {_sha(SORT_JS)}; "
       "base-uri 'none'; form-action 'none'")


def page(title: str, body: str) -> str:
    """A complete self-contained HTML page (CSP, inline style, the sort script at the end)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="icon" href="data:,"><title>{_e(title)}</title>\n<style>{CSS}</style></head>\n<body>\n'
            f"{body}\n<script>{SORT_JS}</script>\n</body></html>\n")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _img(png: bytes | None, alt: str, caption: str) -> str:
    if not png:
        return f"<p><em>{_e(alt)}: nothing to plot ({_e(caption)})</em></p>"
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "–"


def _num(shown: str, value: Any) -> str:
    """A numeric cell: shown text, raw value for sorting."""
    raw = repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return f'<td class="num" data-v="{raw}">{_e(shown)}</td>'


def sortable_table(head: Sequence[str], rows: Sequence[str], caption: str = "click a column header to sort") -> str:
    """A table that sorts when a header is clicked (rows: ``<tr>…</tr>`` strings, numeric cells from _num)."""
    return (f'<table class="sortable"><caption class="small">{_e(caption)}</caption><thead><tr>'
            + "".join(f'<th scope="col">{_e(h)}</th>' for h in head)
            + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


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
        ratio = d.get("ratio")
        size = get(cell.current, "artifact", "bytes")
        acc = get(cell.current, "artifact", "metrics", "accuracy")
        rows.append(
            f'<tr class="{_e(cell.status)}"><td>{_e(cell.device)}</td><td>{_e(cell.model)}</td>'
            f"<td>{_e(cell.profile or '-')}</td><td>{_e(cell.format)}</td>"
            + _num(_fmt(base.get("p50")), base.get("p50")) + _num(_fmt(cur.get("p50")), cur.get("p50"))
            + _num(f"{(ratio - 1) * 100:+.1f}%" if ratio else "–", (ratio - 1) * 100 if ratio else None)
            + _num(f"{d['p_value']:.2g}" if d.get("p_value") is not None else "–", d.get("p_value"))
            + _num(str(cur.get("count", "–")), cur.get("count"))
            + _num(f"{size:,}" if isinstance(size, int) else "–", size)
            + _num(_fmt(acc), acc)
            + f"<td><b>{_e(cell.status)}</b><br>{_e(cell.message)}</td></tr>")
    figures = [
        _img(plots.latency_distributions(result.cells), "latency distributions",
             "Raw latency samples of every artifact on every device (one colour per device in every plot); grey "
             "boxes are the baseline's."),
        _img(plots.pareto(result.cells), "accuracy vs latency vs size",
             "Accuracy (build evaluation) against p50 latency; marker area is the artifact size; the dashed step "
             "line is each device's own Pareto front (a model runs on one device, so fronts are never drawn "
             "across devices)."),
        _img(plots.per_device(result.cells), "per-device comparison",
             "p50 latency of each artifact on each device (whiskers: p10–p90); log axis when the range spans "
             "more than 10x."),
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
    head = ["device", "model", "profile", "format", "p50 base ms", "p50 now ms", "change", "p-value", "samples",
            "bytes", "accuracy", "status"]
    body = f"""<h1>edgeopt ci — lab {_e(result.lab)}, run <code>{_e(result.run_id)}</code></h1>
<div class="verdict {_e(verdict)}">{_e(result.headline())}</div>
<p>Baseline: {_e(result.baseline.get('label'))}. {_e(result.baseline.get('note') or '')}</p>
{sortable_table(head, rows)}
<h2>Plots</h2>
{''.join(figures)}
<h2>Devices</h2><ul>{devices}</ul>
<p class="small">Latency gate: one-sided Mann–Whitney U (normal approximation, tie-corrected)
and a bootstrap CI of the median ratio, together with a minimum effect size
({_e(effect_text)}). Invalid measurements are never compared.</p>"""
    return page(f"edgeopt ci {result.run_id}", body)


def _tie_section(rec: dict[str, Any]) -> str:
    """What the recommendation compared on latency: each candidate against the fastest, with the evidence."""
    tie = rec.get("tie") or {}
    if not tie:
        return ""
    if not tie.get("tested"):
        return (f"<p class='small'>Latency ties: not tested ({_e(tie.get('reason', ''))}); the lowest p50 "
                "won.</p>")
    rows = []
    for ev in tie.get("evidence") or []:
        ratio, low, high = ev.get("ratio"), ev.get("ci_low"), ev.get("ci_high")
        pct = lambda v: f"{100 * (v - 1):+.1f}%" if isinstance(v, (int, float)) else "–"  # noqa: E731
        rows.append(f"<tr><td>{_e(ev['candidate'])}</td>"
                    + _num(pct(ratio), 100 * (ratio - 1) if ratio else None)
                    + f'<td class="num">{_e(pct(low))} … {_e(pct(high))}</td>'
                    + _num(f"{ev['p_value']:.2g}" if ev.get("p_value") is not None else "–", ev.get("p_value"))
                    + f'<td class="num">{_e(ev.get("n_fastest", "–"))} / {_e(ev.get("n_candidate", "–"))}</td>'
                    + f"<td>{'tie' if ev['tie'] else 'slower'}</td><td class='small'>{_e(ev.get('message', ''))}"
                    "</td></tr>")
    head = ["candidate", f"median vs {tie['fastest']}", "CI", "p-value", "samples (fastest / it)", "verdict",
            "gate's message"]
    verdict = (f"a tie was called: {', '.join(tie.get('with') or [])} not really slower than {tie['fastest']}; "
               f"the tie went to {tie.get('decided_by')}") if tie.get("called") else \
        f"no tie: {tie['fastest']} is really faster than every other candidate in budget"
    return (f"<h2>Latency ties</h2><p>Each candidate within budget on the front against the fastest "
            f"(<code>{_e(tie['fastest'])}</code>), raw samples, {_e(tie.get('test'))}: {_e(verdict)}.</p>"
            + (sortable_table(head, rows) if rows else ""))


def search_report_html(result: Any, plot_png: bytes | None) -> str:
    """`edgeopt build --search --html FILE`: the candidates table (Pareto front and recommendation marked), the
    latency-tie evidence and the accuracy-vs-latency plot, in one self-contained file."""
    data = result.to_json()
    rec = data.get("recommended") or {}
    best = rec.get("candidate")
    head = ["candidate", data.get("metric", "accuracy"), "drop pp", "bytes", "gzip bytes", "sparsity", "p50 ms",
            "mJ/inference", "Pareto front", "status"]
    rows = []
    for r in sorted(data["rows"], key=lambda r: (not r["pareto"], r["candidate"])):
        energy = r.get("energy_per_inference_j")
        status = "recommended" if r["candidate"] == best else ("" if r.get("within_budget") else "over budget")
        css = "pass" if r["candidate"] == best else ""
        rows.append(
            f'<tr class="{css}"><td>{_e(r["candidate"])}</td>' + _num(_fmt(r["accuracy"]), r["accuracy"])
            + _num(_fmt(r["accuracy_drop_pp"]), r["accuracy_drop_pp"]) + _num(f"{r['bytes']:,}", r["bytes"])
            + _num(f"{r['bytes_gzip']:,}" if r.get("bytes_gzip") is not None else "–", r.get("bytes_gzip"))
            + _num(f"{r['weight_sparsity']:.1%}" if r.get("weight_sparsity") is not None else "–",
                   r.get("weight_sparsity"))
            + _num(_fmt(r["latency_p50_ms"]), r["latency_p50_ms"])
            + _num(_fmt(energy * 1e3) if energy is not None else "–", energy)
            + f"<td>{'yes' if r['pareto'] else ''}</td><td>{_e(status)}</td></tr>")
    verdict = (f"recommended: <b>{_e(best)}</b> — {_e(rec.get('why', ''))}" if best
               else "no candidate meets the accuracy budget")
    notes = "".join(f"<li>{_e(n)}</li>" for n in data.get("notes") or [])
    body = (f"<h1>edgeopt search — target {_e(data['target'])}</h1>"
            f"<p>objective <code>{_e(data['objective'])}</code>, accuracy budget "
            f"{_e(data['max_accuracy_drop_pp'])} pp below the float model; benchmark run "
            f"<code>{_e(data.get('bench_run_id') or '–')}</code></p><p>{verdict}</p>"
            + sortable_table(head, rows)
            + (f"<ul>{notes}</ul>" if notes else "")
            + _tie_section(rec)
            + _img(plot_png, "accuracy vs latency", "each candidate (marker area ~ bytes, one colour and marker per "
                   "format); ringed: the Pareto front; shaded: candidates tied on latency with the fastest; "
                   "star: the recommendation"))
    return page(f"edgeopt search — {data['target']}", body)
