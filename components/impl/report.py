"""The verification report: one self-contained HTML page that reads well on a phone and a laptop.

:func:`render_report` turns what ``verify_export`` measured into the page the pipeline UIs
render (kfp's ``HTML`` artifact) and ``taxifare run`` prints the path of (``report.html``):

* the verdict and the reason, the checks,
* the model's test RMSE beside each baseline's (the course's distance rule, the training-mean
  predictor) and the deployed version's, when there is one,
* the error by trip-distance band and for airport trips (where this model is worst),
* the training curve, and predicted against actual fare for **every** test trip on log axes
  (no trip is clipped; a trip that cannot be drawn on them is counted under the plot).

The page has a viewport meta tag, its tables scroll inside their own box and its images
scale to the width, so nothing overflows at 390 px. Images are PNG ``data:`` URIs: the page is
one file, which is what the Vertex and Kubeflow UIs need.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
from typing import Any

from components.impl.slices import AIRPORT_NAMES, AIRPORT_RADIUS_KM, airport_of, distance_and_airport_slices, trip_km

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
figure img{display:block;max-width:100%;height:auto}
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


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _curve_png(curves: dict[str, list[tuple[int, float]]]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for split, points in curves.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if split == "eval" else None, label=f"{split} RMSE")
    ax.set_xlabel("training step")
    ax.set_ylabel("RMSE ($)")
    ax.set_title("Training curve")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="upper right")
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def _scatter_png(label: Any, pred: Any) -> tuple[str, str]:
    """Predicted against actual for every trip on log axes; the caption counts what is not drawable."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter, LogLocator

    drawable = np.isfinite(pred) & (pred > 0) & np.isfinite(label) & (label > 0)
    x, y = label[drawable], pred[drawable]
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.scatter(x, y, s=5, alpha=0.35, linewidths=0, color="#0969da")
    if len(x):
        lo = float(min(x.min(), y.min())) / 1.15
        hi = float(max(x.max(), y.max())) * 1.15
    else:
        lo, hi = 1.0, 100.0
    ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="perfect prediction")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    dollars = FuncFormatter(lambda v, _: f"${v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(dollars)
    ax.set_xlabel("actual fare (log scale)")
    ax.set_ylabel("predicted fare (log scale)")
    ax.set_title(f"Test split: all {int(drawable.sum()):,} trips")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left")
    caption = (
        f"Every test trip is drawn ({len(x):,}); the axes span ${lo * 1.15:,.2f} to ${hi / 1.15:,.2f}."
        if drawable.all()
        else f"{int((~drawable).sum()):,} of {len(label):,} trips have a non-positive or non-finite fare or prediction "
        "and cannot be drawn on log axes; the others are all drawn."
    )
    try:
        return _png(fig), caption
    finally:
        plt.close(fig)


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
    figures = []
    if any(data.curves.values()):
        figures.append(
            f'<figure><img src="data:image/png;base64,{_curve_png(data.curves)}" alt="training curve">'
            "<figcaption>RMSE over training steps on the train and eval splits.</figcaption></figure>"
        )
    if len(data.label):
        scatter, caption = _scatter_png(data.label, data.pred)
        figures.append(
            f'<figure><img src="data:image/png;base64,{scatter}" alt="predicted against actual fare">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

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
