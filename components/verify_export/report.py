"""The verification report: one self-contained HTML page that reads well on a phone and a laptop.

:func:`render_report` turns what ``verify_export`` measured into the page the pipeline UIs
render (kfp's ``HTML`` artifact) and ``taxifare run`` prints the path of (``report.html``):

* the verdict and the reason, the checks,
* the model's test RMSE beside each baseline's (the course's distance rule, the training-mean
  predictor) and the deployed version's, when there is one,
* the error by trip-distance band and for airport trips (where this model is worst),
* the training curve, and predicted against actual fare for **every** test trip on log axes
  (no trip is clipped; a trip that cannot be drawn on them is counted under the plot).

The page is drawn with :mod:`base.html` (shell, style, tables): it has a viewport meta tag, its
tables scroll inside their own box and its plots scale to the width, so nothing overflows at
390 px. Plots are inline SVG with their text as text (the thousands of points of the scatter
plot as one embedded image): the page is one file, which is what the Vertex and Kubeflow UIs
need, and a test can check in a browser that no two labels overlap. ``taxifare run`` adds which
run it is, and a link to the runs page, at the top (:func:`stamp_run`, where :data:`RUN_MARKER`
stands).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from base import atomic
from base import html as h
from components.verify_export.slices import AIRPORT_NAMES, AIRPORT_RADIUS_KM, airport_of, distance_and_airport_slices, trip_km

#: Where :func:`stamp_run` puts the run's identity (under the title).
RUN_MARKER = "<!-- taxifare:run -->"

__all__ = ["AIRPORT_NAMES", "ReportInput", "airport_of", "render_report", "segments", "trip_km", "write_report"]


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
    #: (:func:`components.verify_export.slices.compare`, overall first).
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


def _comparison_rows(data: ReportInput) -> list[str]:
    model = float(data.metrics.get("test_rmse", _rmse(data.pred, data.label)))
    rows = [("this model", model, True)]
    rows += [(name, _rmse(values, data.label), False) for name, values in data.baselines.items()]
    if data.deployed_pred is not None:
        rows.append((f"deployed {data.deployed_name}".strip(), _rmse(data.deployed_pred, data.label), False))
    elif data.deployed_rmse is not None:
        rows.append(("deployed model (RMSE recorded at deploy)", float(data.deployed_rmse), False))
    out = []
    for name, value, is_model in rows:
        diff = "" if is_model or not math.isfinite(value) else h.number(model - value, "+,.2f")
        out.append(h.tr([h.td(h.esc(name)), h.td(h.number(value, ",.2f", "$"), "num"), h.td(diff, "num")], "model" if is_model else ""))
    return out


def _plain(value: Any) -> str:
    return h.number(value, ",.2f")


def _signed(value: Any) -> str:
    return h.number(value, "+,.2f")


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
            f"Dollars, this model over the served one ({h.esc(data.deployed_name)}), on the same test rows, per slice. "
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
        name = f"{h.esc(r.name)}<br><small>n={r.count:,}</small>"
        rows.append(h.tr([h.td(name), *(h.td(c, "num") for c in cells)]))
    title = "Against the served model, by slice" if with_champion else "By slice"
    head = [h.th("slice"), *(h.th(c, "num") for c in heads)]
    return f'<h2>{title}</h2><p class="note">{intro}</p>' + h.table("slices", head, rows)


def segment_section(data: ReportInput) -> str:
    """The error by trip-distance band and for airport trips: mean fare and every predictor's RMSE per segment."""
    if not (data.feats and len(data.label)):
        return ""
    heads = ["model", *data.baselines, *(["deployed"] if data.deployed_pred is not None else [])]
    rows = [
        h.tr(
            [
                h.td(f"{h.esc(r['segment'])}<br><small>n={r['trips']:,}</small>"),
                h.td(_plain(r["mean_fare"]), "num"),
                *(h.td(_plain(r[name]), "num") for name in heads),
            ]
        )
        for r in segment_table(data)
    ]
    head = [h.th("trips"), h.th("mean fare", "num"), *(h.th(h.esc(name), "num") for name in heads)]
    return (
        "<h2>Error by trip distance and for airport trips</h2>"
        f'<p class="note">Mean fare and RMSE in dollars on each part of the test split; airport trips start or end within '
        f"{AIRPORT_RADIUS_KM:g} km of JFK, LaGuardia or Newark.</p>" + h.table("segments", head, rows)
    )


def _figures(data: ReportInput) -> list[str]:
    """The training curve (when there is one) and predicted against actual fare."""
    import matplotlib

    matplotlib.use("Agg")
    from components.verify_export.report_plots import curve_svg, scatter_svg

    figures = []
    if any(data.curves.values()):
        curve, cut = curve_svg(data.curves, data.exported_step)
        caption = (
            "RMSE over training steps on the train and eval splits, on a log scale; the green line "
            f"marks the evaluation whose model was exported.{h.esc(cut)}"
        )
        figures.append(h.figure(curve, caption))
    if len(data.label):
        scatter, caption = scatter_svg(data.label, data.pred)
        figures.append(h.figure(scatter, h.esc(caption)))
    return figures


def render_report(data: ReportInput) -> str:
    """The HTML page (a complete document, one file)."""
    checks = [
        h.tr([h.td("pass" if ok else "FAIL", "pass" if ok else "fail"), h.td(h.esc(name)), h.td(h.esc(detail), "detail")])
        for name, ok, detail in data.checks
    ]
    metrics = [
        h.tr([h.td(h.esc(k)), h.td(f"{v:,.4f}" if isinstance(v, float) else f"{v:,}", "num")])
        for k, v in data.metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    word = "Blessed" if data.blessed else "Not blessed"
    comparison_head = [h.th("predictor"), h.th("test RMSE", "num"), h.th("model minus it", "num")]
    body = f"""<h1>taxifare verification report</h1>
{RUN_MARKER}
{h.verdict(data.blessed, word, data.verdict_text, blessed=str(data.blessed).lower())}
<h2>Checks</h2>
{h.table("checks", [h.th("result"), h.th("check"), h.th("detail")], checks)}
<h2>Test RMSE beside the baselines</h2>
{h.table("comparison", comparison_head, _comparison_rows(data))}
<p class="note">The distance rule is the course's rule of thumb, 2.616 $/km of straight-line distance; the training mean
predicts the mean fare of the train split for every trip. A negative difference: the model is better by that many dollars.</p>
{slice_section(data)}
{segment_section(data)}
<h2>Plots</h2>
<div class="plots">{"".join(_figures(data))}</div>
<h2>All metrics</h2>
{h.table("metrics", None, metrics)}"""
    return h.page(f"taxifare verification: {word}", body)


#: The file name of the report beside the HTML artifact (browsers need the extension).
REPORT_FILE = "report.html"


def report_file(artifact_path: str) -> str:
    """Where the browsable copy of the HTML artifact at ``artifact_path`` lives."""
    return os.path.join(os.path.dirname(artifact_path), REPORT_FILE)


def write_report(artifact_path: str, page: str) -> str:
    """Write ``page`` as the HTML artifact (for the pipeline UIs) and as ``report.html`` beside it; return the latter.

    Each file is written under a temporary name and renamed into place, so a reader never sees
    half a page.
    """
    target = report_file(artifact_path)
    for path in (artifact_path, target):
        atomic.write_text(path, page)
    return target


def stamp_run(report_path: str, block: str) -> bool:
    """Put ``block`` (which run this is, a link to the runs page) where :data:`RUN_MARKER` stands, in place.

    ``taxifare run`` knows the run's name, time, data and parameters only when it ends, after
    verify_export wrote the page. The file is rewritten under a temporary name and renamed.
    Returns whether the page had the marker.
    """
    try:
        with open(report_path, encoding="utf-8") as fh:
            page = fh.read()
    except OSError:
        return False
    if RUN_MARKER not in page:
        return False
    atomic.write_text(report_path, page.replace(RUN_MARKER, block, 1))
    return True
