"""The runs page, ``runs/index.html``: the table of :mod:`pipeline.runs` and test RMSE over runs.

Static HTML with an inline SVG plot; a viewport meta tag, and below 700 px each run is a card
instead of a table row, so it reads on a phone. Links are relative to the page.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import os
from collections.abc import Callable, Sequence

from pipeline.runs import Run, _fmt_params, defaults, table_row

INDEX = "index.html"


def _nice_ticks(lo: float, hi: float) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering ``lo``..``hi``."""
    span = hi - lo or max(abs(hi) * 0.2, 0.5)
    raw = span / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor((lo - (span * 0.05 if hi > lo else span / 2)) / step) * step
    last = math.ceil((hi + (span * 0.05 if hi > lo else span / 2)) / step) * step
    count = round((last - first) / step)
    return [max(0.0, round(first + i * step, 10)) for i in range(count + 1)]


def _svg_plot(runs: Sequence[Run]) -> str:
    """Test RMSE over runs (oldest left) as an inline SVG that scales to the width."""
    points = [(i, r) for i, r in enumerate(reversed(runs)) if r.test_rmse is not None]
    if not points:
        return '<p class="note">No run has a test RMSE yet.</p>'
    w, h, left, right, top, bottom = 480.0, 220.0, 58.0, 12.0, 12.0, 30.0
    values = [r.test_rmse or 0.0 for _, r in points]
    ticks = _nice_ticks(min(values), max(values))
    lo, hi = ticks[0], ticks[-1]
    n = max(len(runs) - 1, 1)

    def x(i: int) -> float:
        return left + (w - left - right) * (i / n if len(runs) > 1 else 0.5)

    def y(v: float) -> float:
        return top + (h - top - bottom) * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg id="rmse-plot" viewBox="0 0 {w:.0f} {h:.0f}" role="img" aria-label="test RMSE over runs">']
    for v in ticks:
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#d0d7de"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 5:.1f}" text-anchor="end" font-size="14">${v:.2f}</text>')
    series: dict[str, list[tuple[int, Run]]] = {}
    for i, r in points:  # one line per test set: figures measured on other rows are not joined
        series.setdefault(r.test_rows_id or "unknown", []).append((i, r))
    for k, (rows_id, members) in enumerate(series.items()):
        line = " ".join(f"{x(i):.1f},{y(r.test_rmse or 0):.1f}" for i, r in members)
        dash = ' stroke-dasharray="6 4"' if k % 2 else ""
        parts.append(
            f'<polyline class="series" data-test-rows="{html.escape(rows_id)}" points="{line}" fill="none" stroke="#57606a" '
            f'stroke-width="1.5"{dash}/>'
        )
    for i, r in points:
        colour = "#1a7f37" if r.blessed else "#bc4c00"
        rows_id = r.test_rows_id or "unknown"
        title = html.escape(f"{r.started.replace('T', ' ')}: ${r.test_rmse:.2f} on test set {rows_id} ({r.verdict})")
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(r.test_rmse or 0):.1f}" r="5" fill="{colour}"><title>{title}</title></circle>')
    parts.append(f'<text x="{left}" y="{h - 6}" font-size="14">oldest run</text>')
    parts.append(f'<text x="{w - right}" y="{h - 6}" font-size="14" text-anchor="end">newest run</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:12px 16px;max-width:1200px;color:#1f2328}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.4em}
svg{width:100%;height:auto;max-width:640px;display:block}
table{border-collapse:collapse;font-size:.9rem;width:100%}
th,td{border-bottom:1px solid #d0d7de;padding:5px 6px;text-align:left;vertical-align:top}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.params{overflow-wrap:anywhere;font-size:.85rem;color:#57606a;min-width:7em;max-width:24em}
.failed{color:#cf222e;font-weight:600}.blessed{color:#1a7f37;font-weight:600}
.note{font-size:.85rem;color:#57606a}
code.cmd{font-size:.8rem;overflow-wrap:anywhere;user-select:all}
a{color:#0969da}
@media (max-width:700px){
 body{padding:8px}
 table,thead,tbody,tr,td{display:block;width:100%}
 tr:first-child{display:none}
 tr{border:1px solid #d0d7de;border-radius:6px;margin:0 0 10px;padding:4px 8px}
 td{border:0;padding:2px 0;text-align:left}
 td.num{text-align:left}
 td[data-label]::before{content:attr(data-label) ": ";color:#57606a;font-weight:400}
}
"""


def _report_cell(run: Run, link: Callable[[str, str], str]) -> str:
    """The verification report; for a run without one, its run summary and its log (what to read about a failure)."""
    if run.report:
        return link(run.report, "report")
    found = [link(path, text) for path, text in ((run.summary_file, "run summary"), (run.log, "log")) if path and os.path.exists(path)]
    return " · ".join(found) or "-"


def _tensorboard_cell(run: Run) -> str:
    """The command that shows the run's loss curves (a browser cannot: TensorBoard is a server)."""
    if not run.tensorboard:
        return "-"
    return f'<code class="cmd">tensorboard --logdir {html.escape(run.tensorboard)}</code>'


def render_index(runs: Sequence[Run], index_path: str) -> str:
    """The HTML of the runs page (links are relative to ``index_path``)."""
    base = defaults()
    here = os.path.dirname(os.path.abspath(index_path))

    def link(path: str, text: str) -> str:
        if not path:
            return "-"
        return f'<a href="{html.escape(os.path.relpath(path, here))}">{html.escape(text)}</a>'

    rows = []
    for run in runs:
        r = table_row(run, base)
        status_cls = "failed" if run.status == "failed" else ""
        verdict_cls = "blessed" if run.blessed else ""
        cells = [
            ("time", html.escape(r["time"]), ""),
            ("source", html.escape(r["source"]), "params"),
            ("parameters", html.escape(r["parameters"]), "params"),
            ("test RMSE", r["test RMSE"], "num"),
            ("verdict", r["verdict"], verdict_cls),
            ("deployed", r["deployed"], "num"),
            ("duration", r["duration"], "num"),
            ("status", html.escape(r["status"]), status_cls),
            ("report", _report_cell(run, link), ""),
            ("loss curves", _tensorboard_cell(run), "params"),
        ]
        rows.append("<tr>" + "".join(f'<td data-label="{k}" class="{c}">{v}</td>' for k, v, c in cells) + "</tr>")
    head = "".join(
        f"<th>{k}</th>"
        for k in ("time", "source", "parameters", "test RMSE", "verdict", "deployed", "duration", "status", "report", "loss curves")
    )
    generated = dt.datetime.now().isoformat(timespec="seconds").replace("T", " ")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>taxifare runs</title><style>{_CSS}</style></head>
<body>
<h1>taxifare runs</h1>
<p class="note">{len(runs)} local runs, newest first; refreshed {generated} after each <code>taxifare run</code>.
Compare runs with <code>taxifare runs compare RUN RUN</code>.</p>
<h2>Test RMSE over runs</h2>
{_svg_plot(runs)}
<p class="note">Green: blessed, orange: not blessed; runs without a test RMSE are not drawn. One line per test set
(the id of its rows, in each point's tooltip and the table's test RMSE column): runs scored on different test sets are
not joined, since their figures were measured on different rows. A blessed model was better than the served one on the
same rows; see its report.</p>
<h2>Runs</h2>
<table id="runs"><tr>{head}</tr>{"".join(rows)}</table>
</body></html>
"""


def report_header(run: Run, report_path: str, index_path: str) -> str:
    """Which run a verification report belongs to (name, time, data, parameters) and a link to the runs page."""
    here = os.path.dirname(os.path.abspath(report_path))
    args = run.arguments
    source = str(args.get("source", "?"))
    if source == "synthetic":
        source = f"synthetic ({args.get('synthetic_rows', 0):,} generated trips, seed {args.get('seed', '?')})"
    staged = run.steps.get("stage_data", {}).get("summary", "")
    params = _fmt_params({k: v for k, v in run.differences(defaults()).items() if k != "source"})
    params = "the defaults" if params == "(defaults)" else f"{params}; the others are the defaults"
    index = os.path.relpath(index_path, here)
    return (
        f'<p id="run">Run <strong>{html.escape(run.name)}</strong>, started {html.escape(run.started.replace("T", " "))}. '
        f"Data: {html.escape(source)}{'; ' + html.escape(staged) if staged else ''}. Parameters: {html.escape(params)}. "
        f'<a href="{html.escape(index)}">All runs</a></p>'
    )


def stamp_report(run: Run, index_path: str) -> None:
    """Write :func:`report_header` into the run's verification report and its pipeline-UI copy (the ``report`` artifact)."""
    from components.impl.report import stamp_run

    if not run.report:
        return
    for path in (run.report, os.path.join(os.path.dirname(run.report), "report")):
        stamp_run(path, report_header(run, path, index_path))
