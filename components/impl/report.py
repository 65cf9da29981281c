"""The verification report: one self-contained HTML page that reads well on a phone and a laptop.

:func:`render_report` turns what ``verify_export`` measured into the page the pipeline UIs
render (kfp's ``HTML`` artifact) and ``taxifare run`` prints the path of (``report.html``):

* the verdict and the reason, the checks,
* the model's test RMSE beside each baseline's (the course's distance rule, the training-mean
  predictor) and the deployed version's, when there is one,
* the error by trip-distance band and for airport trips (where this model is worst),
* the training curve, and predicted against actual fare for **every** test trip on log axes
  (no trip is clipped; a trip that cannot be drawn on them is counted under the plot).

The page has a viewport meta tag, its tables scroll inside their own box and its plots
scale to the width, so nothing overflows at 390 px. Plots are inline SVG with their text as
text (the thousands of points of the scatter plot as one embedded image): the page is one
file, which is what the Vertex and Kubeflow UIs need, and a test can check in a browser that no
two labels overlap. ``taxifare run`` adds which run it is, and a link to the runs page, at the
top (:func:`stamp_run`, where :data:`RUN_MARKER` stands).
"""

from __future__ import annotations

import dataclasses
import html
import math
from typing import Any

from components.impl.slices import AIRPORT_NAMES, AIRPORT_RADIUS_KM, airport_of, distance_and_airport_slices, trip_km

#: Where :func:`stamp_run` puts the run's identity (under the title).
RUN_MARKER = "<!-- taxifare:run -->"

__all__ = ["AIRPORT_NAMES", "ReportInput", "airport_of", "render_report", "segments", "trip_km", "write_report"]

_CSS = """
:root{color-scheme:light}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:12px 16px;max-width:1100px;
line-height:1.45;color:#1f2328;background:#fff}
h1{font-size:1.5rem;margin:.4em 0}h2{font-size:1.15rem;margin:1.4em 0 .5em}
.verdict{border-radius:8px;padding:10px 14px;color:#fff}
.ok{background:#1a7f37}.bad{background:#cf222e}
.verdict p{margin:.3em 0 0;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.92rem}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.num{white-space:nowrap}
td.detail{overflow-wrap:anywhere;min-width:8em}
tr.model td{font-weight:600}
.pass{color:#1a7f37;font-weight:700}.fail{color:#cf222e;font-weight:700}
figure{margin:12px 0;max-width:100%}
figure img,figure svg{display:block;max-width:100%;height:auto}
#run{font-size:.9rem;color:#57606a;overflow-wrap:anywhere;margin:.2em 0 .8em}
figcaption{font-size:.85rem;color:#57606a}
.plots{display:flex;flex-wrap:wrap;gap:16px}
.plots figure{flex:1 1 320px;min-width:0}
.note{font-size:.85rem;color:#57606a}
td small{color:#57606a;white-space:nowrap}
@media (max-width:600px){body{padding:8px 8px}table{font-size:.78rem}th,td{padding:3px 3px}}
"""


@dataclasses.dataclass
class ReportInput:
    """What the report shows; arrays are numpy arrays over the test split, in the same order."""

    verdict_text: str
    blessed: bool
    metrics: dict[str, Any]
    checks: list[tuple[str, bool, str]]
    label: Any
    pred: Any
    #: ``{"distance rule": predictions, "training mean": predictions}`` (explained under the table).
    baselines: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The test split's features by name (for distance bands and airport trips); empty for none.
    feats: dict[str, Any] = dataclasses.field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = dataclasses.field(default_factory=dict)
    #: The deployed version's name (e.g. "version 3") and its predictions, when there is one.
    deployed_name: str = ""
    deployed_pred: Any = None
    #: The deployed model's RMSE when only the figure is known (recorded at deploy).
    deployed_rmse: float | None = None
    #: The candidate (beside the champion, when there is one) per slice of the same rows
    #: (:func:`components.impl.slices.compare`, overall first).
    comparison: list[Any] = dataclasses.field(default_factory=list)
    #: The step of the exported model (marked on the training curve); ``None``: the best evaluation's, the trainer's rule.
    exported_step: int | None = None


def _rmse(pred: Any, label: Any) -> float:
    import numpy as np

    return float(np.sqrt(np.mean((pred - label) ** 2))) if len(label) else math.nan


def segments(feats: dict[str, Any]) -> list[tuple[str, Any]]:
    """``[(name, boolean mask)]``: the distance bands, then airport trips (each airport, then all) and the rest."""
    return distance_and_airport_slices(feats)


def segment_table(data: ReportInput) -> list[dict[str, Any]]:
    """One row per segment: trips, mean fare, and the RMSE of the model, each baseline and the deployed model."""
    import numpy as np

    rows = []
    for name, mask in segments(data.feats):
        n = int(np.sum(mask))
        row: dict[str, Any] = {"segment": name, "trips": n, "mean_fare": float(np.mean(data.label[mask])) if n else math.nan}
        row["model"] = _rmse(data.pred[mask], data.label[mask])
        for base, values in data.baselines.items():
            row[base] = _rmse(values[mask], data.label[mask])
        if data.deployed_pred is not None:
            row["deployed"] = _rmse(data.deployed_pred[mask], data.label[mask])
        rows.append(row)
    return rows


def _money(value: Any) -> str:
    return f"${value:,.2f}" if isinstance(value, float) and math.isfinite(value) else "&ndash;"


def _plain(value: Any) -> str:
    return f"{value:,.2f}" if isinstance(value, float) and math.isfinite(value) else "&ndash;"


def _comparison_rows(data: ReportInput) -> str:
    model = float(data.metrics.get("test_rmse", _rmse(data.pred, data.label)))
    rows = [("this model", model, True)]
    rows += [(name, _rmse(values, data.label), False) for name, values in data.baselines.items()]
    if data.deployed_pred is not None:
        rows.append((f"deployed {data.deployed_name}".strip(), _rmse(data.deployed_pred, data.label), False))
    elif data.deployed_rmse is not None:
        rows.append(("deployed model (RMSE recorded at deploy)", float(data.deployed_rmse), False))
    out = []
    for name, value, is_model in rows:
        diff = "" if is_model or not math.isfinite(value) else f"{model - value:+,.2f}"
        cls = ' class="model"' if is_model else ""
        out.append(f'<tr{cls}><td>{html.escape(name)}</td><td class="num">{_money(value)}</td><td class="num">{diff}</td></tr>')
    return "".join(out)


def _signed(value: float) -> str:
    return f"{value:+,.2f}" if math.isfinite(value) else "&ndash;"


def slice_section(data: ReportInput) -> str:
    """The candidate beside the champion per slice of the same rows, with the paired bootstrap's intervals.

    Four narrow columns (a phone shows them without scrolling): the slice and its trips, RMSE
    (this model over the served one), the difference with its 95% interval, and MAE and bias.
    """
    if not data.comparison:
        return ""
    with_champion = data.comparison[0].champion is not None
    if with_champion:
        heads = ["RMSE<br><small>served</small>", "change<br><small>95% interval</small>", "MAE, bias<br><small>served</small>"]
        intro = (
            f"Dollars, this model over the served one ({html.escape(data.deployed_name)}), on the same test rows, per slice. "
            "The interval of the RMSE change comes from a paired bootstrap over the rows (1,000 resamples): an interval "
            "below zero means this model is better beyond the noise of the rows drawn. Bias: mean of predicted minus actual."
        )
    else:
        heads = ["RMSE", "MAE", "bias"]
        intro = "Nothing is deployed to compare with: this model alone, per slice (dollars; bias: mean of predicted minus actual)."
    rows = []
    for r in data.comparison:
        if with_champion and r.champion is not None:
            lo, hi = r.interval or (math.nan, math.nan)
            cells = [
                f"{_plain(r.candidate.rmse)}<br><small>{_plain(r.champion.rmse)}</small>",
                f"{_signed(r.difference)}<br><small>{_signed(lo)}..{_signed(hi)}</small>",
                f"{_plain(r.candidate.mae)}, {_signed(r.candidate.bias)}"
                f"<br><small>{_plain(r.champion.mae)}, {_signed(r.champion.bias)}</small>",
            ]
        else:
            cells = [_plain(r.candidate.rmse), _plain(r.candidate.mae), _signed(r.candidate.bias)]
        name = f"{html.escape(r.name)}<br><small>n={r.count:,}</small>"
        rows.append(f"<tr><td>{name}</td>" + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>")
    head_html = "".join(f'<th class="num">{h}</th>' for h in heads)
    title = "Against the served model, by slice" if with_champion else "By slice"
    return (
        f'<h2>{title}</h2><p class="note">{intro}</p>'
        f'<div class="scroll"><table id="slices"><tr><th>slice</th>{head_html}</tr>{"".join(rows)}</table></div>'
    )


def render_report(data: ReportInput) -> str:
    """The HTML page (a complete document, one file)."""
    import matplotlib

    matplotlib.use("Agg")

    check_rows = "".join(
        f'<tr><td class="{"pass" if ok else "fail"}">{"pass" if ok else "FAIL"}</td><td>{html.escape(name)}</td>'
        f'<td class="detail">{html.escape(detail)}</td></tr>'
        for name, ok, detail in data.checks
    )
    from components.impl.report_plots import curve_svg, scatter_svg

    figures = []
    if any(data.curves.values()):
        curve, cut = curve_svg(data.curves, data.exported_step)
        figures.append(
            f"<figure>{curve}<figcaption>RMSE over training steps on the train and eval splits, on a log scale; the green line "
            f"marks the evaluation whose model was exported.{html.escape(cut)}</figcaption></figure>"
        )
    if len(data.label):
        scatter, caption = scatter_svg(data.label, data.pred)
        figures.append(f"<figure>{scatter}<figcaption>{html.escape(caption)}</figcaption></figure>")

    segment_html = ""
    if data.feats and len(data.label):
        rows = segment_table(data)
        heads = ["model", *data.baselines, *(["deployed"] if data.deployed_pred is not None else [])]
        head_html = "".join(f'<th class="num">{html.escape(h)}</th>' for h in heads)
        body = "".join(
            f'<tr><td>{html.escape(r["segment"])}<br><small>n={r["trips"]:,}</small></td><td class="num">{_plain(r["mean_fare"])}</td>'
            + "".join(f'<td class="num">{_plain(r[h])}</td>' for h in heads)
            + "</tr>"
            for r in rows
        )
        segment_html = (
            "<h2>Error by trip distance and for airport trips</h2>"
            f'<p class="note">Mean fare and RMSE in dollars on each part of the test split; airport trips start or end within '
            f"{AIRPORT_RADIUS_KM:g} km of JFK, LaGuardia or Newark.</p>"
            f'<div class="scroll"><table id="segments"><tr><th>trips</th><th class="num">mean fare</th>'
            f"{head_html}</tr>{body}</table></div>"
        )

    metric_rows = "".join(
        f'<tr><td>{html.escape(k)}</td><td class="num">{v:,.4f}</td></tr>'
        if isinstance(v, float)
        else f'<tr><td>{html.escape(k)}</td><td class="num">{v:,}</td></tr>'
        for k, v in data.metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    )
    verdict_cls, verdict_word = ("ok", "Blessed") if data.blessed else ("bad", "Not blessed")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>taxifare verification: {verdict_word}</title>
<style>{_CSS}</style></head>
<body>
<h1>taxifare verification report</h1>
{RUN_MARKER}
<div id="verdict" class="verdict {verdict_cls}" data-blessed="{str(data.blessed).lower()}"><strong>{verdict_word}</strong>
<p>{html.escape(data.verdict_text)}</p></div>
<h2>Checks</h2>
<div class="scroll"><table id="checks"><tr><th>result</th><th>check</th><th>detail</th></tr>{check_rows}</table></div>
<h2>Test RMSE beside the baselines</h2>
<div class="scroll"><table id="comparison"><tr><th>predictor</th><th class="num">test RMSE</th><th class="num">model minus it</th></tr>
{_comparison_rows(data)}</table></div>
<p class="note">The distance rule is the course's rule of thumb, 2.616 $/km of straight-line distance; the training mean
predicts the mean fare of the train split for every trip. A negative difference: the model is better by that many dollars.</p>
{slice_section(data)}
{segment_html}
<h2>Plots</h2>
<div class="plots">{"".join(figures)}</div>
<h2>All metrics</h2>
<div class="scroll"><table id="metrics">{metric_rows}</table></div>
</body></html>
"""


#: The file name of the report beside the HTML artifact (browsers need the extension).
REPORT_FILE = "report.html"


def report_file(artifact_path: str) -> str:
    """Where the browsable copy of the HTML artifact at ``artifact_path`` lives."""
    import os

    return os.path.join(os.path.dirname(artifact_path), REPORT_FILE)


def write_report(artifact_path: str, page: str) -> str:
    """Write ``page`` as the HTML artifact (for the pipeline UIs) and as ``report.html`` beside it; return the latter.

    Each file is written under a temporary name and renamed into place, so a reader never sees
    half a page.
    """
    import os

    target = report_file(artifact_path)
    for path in (artifact_path, target):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.replace(tmp, path)
    return target


def stamp_run(report_path: str, block: str) -> bool:
    """Put ``block`` (which run this is, a link to the runs page) where :data:`RUN_MARKER` stands, in place.

    ``taxifare run`` knows the run's name, time, data and parameters only when it ends, after
    verify_export wrote the page. The file is rewritten under a temporary name and renamed.
    Returns whether the page had the marker.
    """
    import os

    try:
        with open(report_path, encoding="utf-8") as fh:
            page = fh.read()
    except OSError:
        return False
    if RUN_MARKER not in page:
        return False
    tmp = f"{report_path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page.replace(RUN_MARKER, block, 1))
    os.replace(tmp, report_path)
    return True
