"""The runs page, ``runs/index.html``: the table of :mod:`pipeline.runs` and test RMSE over runs.

Static HTML drawn with :mod:`base.html` (its line plot, its card-table style sheet): an inline
SVG plot, a viewport meta tag, and below 700 px each run is a card instead of a table row, so it
reads on a phone. Links are relative to the page. :func:`record` saves a run's record and
refreshes the page at the end of ``taxifare run``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from typing import Any

from base import atomic
from base import html as h
from pipeline import runs
from pipeline.runs import Run, RunResult, defaults, fmt_params, table_row


def _svg_plot(runs: Sequence[Run]) -> str:
    """Test RMSE over runs (oldest left) as an inline SVG that scales to the width."""
    points = [(i, r) for i, r in enumerate(reversed(runs)) if r.test_rmse is not None]
    if not points:
        return '<p class="note">No run has a test RMSE yet.</p>'
    series: dict[str, list[tuple[float, float]]] = {}
    for i, r in points:  # one line per test set: figures measured on other rows are not joined
        series.setdefault(r.test_rows_id or "unknown", []).append((i, r.test_rmse or 0.0))
    lines = [h.Line(members, dashed=bool(k % 2), data={"test-rows": rows_id}) for k, (rows_id, members) in enumerate(series.items())]
    dots = [
        h.Dot(
            i,
            r.test_rmse or 0.0,
            "#1a7f37" if r.blessed else "#bc4c00",
            f"{r.started.replace('T', ' ')}: ${r.test_rmse:.2f} on test set {r.test_rows_id or 'unknown'} ({r.verdict})",
        )
        for i, r in points
    ]
    plot = h.LinePlot(
        label="test RMSE over runs",
        x_range=(0, max(len(runs) - 1, 0)),
        y_format="${:.2f}".format,
        x_ends=("oldest run", "newest run"),
        svg_id="rmse-plot",
    )
    return h.line_svg(plot, lines, dots)


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
    return f'<code class="cmd">tensorboard --logdir {h.esc(run.tensorboard)}</code>'


#: The runs table's columns, in order.
COLUMNS = ("time", "source", "parameters", "test RMSE", "verdict", "deployed", "duration", "status", "report", "loss curves")


def render_index(runs: Sequence[Run], index_path: str) -> str:
    """The HTML of the runs page (links are relative to ``index_path``)."""
    base = defaults()
    here = os.path.dirname(os.path.abspath(index_path))

    def link(path: str, text: str) -> str:
        return h.link(os.path.relpath(path, here), text) if path else "-"

    rows = []
    for run in runs:
        r = table_row(run, base)
        cells = {
            "time": (h.esc(r["time"]), ""),
            "source": (h.esc(r["source"]), "params"),
            "parameters": (h.esc(r["parameters"]), "params"),
            "test RMSE": (r["test RMSE"], "num"),
            "verdict": (r["verdict"], "blessed" if run.blessed else ""),
            "deployed": (r["deployed"], "num"),
            "duration": (r["duration"], "num"),
            "status": (h.esc(r["status"]), "failed" if run.status == "failed" else ""),
            "report": (_report_cell(run, link), ""),
            "loss curves": (_tensorboard_cell(run), "params"),
        }
        rows.append(h.tr(h.td(cells[k][0], cells[k][1], data_label=k) for k in COLUMNS))
    generated = dt.datetime.now().isoformat(timespec="seconds").replace("T", " ")
    body = f"""<h1>taxifare runs</h1>
<p class="note">{len(runs)} local runs, newest first; refreshed {generated} after each <code>taxifare run</code>.
Compare runs with <code>taxifare runs compare RUN RUN</code>.</p>
<h2>Test RMSE over runs</h2>
{_svg_plot(runs)}
<p class="note">Green: blessed, orange: not blessed; runs without a test RMSE are not drawn. One line per test set
(the id of its rows, in each point's tooltip and the table's test RMSE column): runs scored on different test sets are
not joined, since their figures were measured on different rows. A blessed model was better than the served one on the
same rows; see its report.</p>
<h2>Runs</h2>
{h.table("runs", [h.th(k) for k in COLUMNS], rows, scroll=False)}"""
    return h.page("taxifare runs", body, css=h.CARDS_CSS)


def report_header(run: Run, report_path: str, index_path: str) -> str:
    """Which run a verification report belongs to (name, time, data, parameters) and a link to the runs page."""
    here = os.path.dirname(os.path.abspath(report_path))
    args = run.arguments
    source = str(args.get("source", "?"))
    if source == "synthetic":
        source = f"synthetic ({args.get('synthetic_rows', 0):,} generated trips, seed {args.get('seed', '?')})"
    staged = run.steps.get("stage_data", {}).get("summary", "")
    params = fmt_params({k: v for k, v in run.differences(defaults()).items() if k != "source"})
    params = "the defaults" if params == "(defaults)" else f"{params}; the others are the defaults"
    return (
        f'<p id="run">Run <strong>{h.esc(run.name)}</strong>, started {h.esc(run.started.replace("T", " "))}. '
        f"Data: {h.esc(source)}{'; ' + h.esc(staged) if staged else ''}. Parameters: {h.esc(params)}. "
        f"{h.link(os.path.relpath(index_path, here), 'All runs')}</p>"
    )


def stamp_report(run: Run, index_path: str) -> None:
    """Write :func:`report_header` into the run's verification report and its pipeline-UI copy (the ``report`` artifact)."""
    from components.verify_export.report import stamp_run

    if not run.report:
        return
    for path in (run.report, os.path.join(os.path.dirname(run.report), "report")):
        stamp_run(path, report_header(run, path, index_path))


def write_index(pipeline_root: str) -> str:
    """Refresh the runs page from every run under ``pipeline_root`` (atomically); return its path."""
    path = runs.index_path(pipeline_root)
    page = render_index(runs.list_runs(pipeline_root), path)
    atomic.write_text(path, page)
    return path


def record(
    result: RunResult,
    arguments: dict[str, Any],
    *,
    before: set[str],
    started: float,
    name: str = "",
    window: tuple[float, float] | None = None,
) -> tuple[str, str]:
    """After a run: find its folder (see :func:`new_run_dir`), save its record, refresh the runs page.

    Returns:
        The run's folder and the runs page.
    """
    run_dir = runs.new_run_dir(result.pipeline_root, before, started, name, window)
    run = runs.save_record(
        run_dir,
        arguments=arguments,
        steps=result.steps,
        ok=result.ok,
        failed_step=result.failed_step,
        started=started,
        seconds=result.seconds,
        log_path=result.log_path,
    )
    index = write_index(result.pipeline_root)
    stamp_report(run, index)  # which run the report is, now that the run has ended
    return run_dir, index
