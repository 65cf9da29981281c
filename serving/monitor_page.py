"""The page ``taxifare monitor`` writes: the verdict, the table, both distributions per feature.

In the verification report's style (its stylesheet): one self-contained HTML file with a
viewport meta tag, tables that scroll inside their own box and inline SVG bars that scale to
the width, so it reads at 390 px. Grey: the version's training data (or, for the
predictions, the window before); orange: the logged requests of the window.
"""

from __future__ import annotations

import html
import math
import os
from typing import Any

from base import atomic
from base.page_style import PAGE_CSS
from trainer import divergence, schema, statistics


def bars_svg(
    feature: str, edges: list[float], then: list[float], now: list[float], names: tuple[str, str], width: int = 360, height: int = 90
) -> str:
    """Two distributions over the same bins as paired bars (grey ``then``, orange ``now``)."""
    top = max([*then, *now, 1e-9])
    slot = width / max(len(now), 1)
    bars = []
    for i, pair in enumerate(zip(then, now, strict=True)):
        for j, (share, colour) in enumerate(zip(pair, ("#9aa5b1", "#d9480f"), strict=True)):
            h = share / top * (height - 12)
            bars.append(
                f'<rect x="{i * slot + j * slot / 2:.1f}" y="{height - h:.1f}" width="{max(slot / 2 - 0.5, 0.5):.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{edges[i]:g}..{edges[i + 1]:g}: {names[j]} {share:.1%}</title></rect>'
            )
    label = html.escape(f"{feature}: {names[0]} (grey) vs {names[1]} (orange)")
    style = f"width:100%;max-width:{width}px;height:auto"
    return f'<svg viewBox="0 0 {width} {height}" style="{style}" role="img" aria-label="{label}">{"".join(bars)}</svg>'


def _fmt(value: Any) -> str:
    """A divergence with 3 decimals, a mean with 4 significant digits (-73.98), '–' for none."""
    if not isinstance(value, float) or not math.isfinite(value):
        return "–"
    return f"{value:.4g}" if abs(value) > 1 else f"{value:.3f}"


def _verdict_class(row: Any) -> str:
    return "fail" if row.moved else ("pass" if row.verdict == "ok" else "")


def render(report: Any) -> str:
    """The page of a :class:`serving.monitor.Report`."""
    from serving.monitor import shares

    moved = report.moved
    rows = "".join(
        f"<tr><td>{r.version}</td><td>{html.escape(r.feature)}</td><td class='num'>{_fmt(r.distance)}</td>"
        f"<td class='num'>{r.threshold:g}</td>"
        f"<td class='{_verdict_class(r)}'>{html.escape(r.verdict)}</td><td class='num'>{r.instances:,}</td></tr>"
        for r in report.rows
    )
    figures = []
    for version, result in sorted(report.results.items()):
        for row in divergence.report_rows(result):
            plot = bars_svg(row["feature"], row["edges"], row["share_deployed"], row["share_now"], ("training", "requests"))
            means = [
                f"{_fmt(m)} {where}" for m, where in ((row["mean_deployed"], "in training"), (row["mean_now"], "asked")) if m is not None
            ]
            caption = f"version {version}, {html.escape(row['feature'])}: divergence {row['divergence']:.3f}"
            caption += f"; mean {', '.join(means)}" if means else ""
            figures.append(f"<figure>{plot}<figcaption>{caption} (grey: training, orange: requests)</figcaption></figure>")
    for version, (now, before) in sorted(report.predictions.items()):
        edges = statistics.bin_edges(schema.LABEL)
        plot = bars_svg("prediction", edges, shares(before, schema.LABEL), shares(now, schema.LABEL), ("window before", "this window"))
        figures.append(
            f"<figure>{plot}<figcaption>version {version}, predicted fare: {len(before):,} in the window before (grey), "
            f"{len(now):,} in this one (orange)</figcaption></figure>"
        )
    cls, word = ("bad", "Moved") if moved else ("ok", "Nothing moved")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>taxifare monitor: {word}</title>
<style>{PAGE_CSS}</style></head>
<body>
<h1>taxifare monitor</h1>
<div id="verdict" class="verdict {cls}" data-moved="{str(bool(moved)).lower()}"><strong>{word}</strong>
<p>{html.escape(report.verdict())}</p></div>
<h2>Skew and drift</h2>
<div class="scroll"><table id="skew"><tr><th>version</th><th>feature</th><th class="num">distance</th><th class="num">limit</th>
<th>verdict</th><th class="num">n</th></tr>{rows}</table></div>
<p class="note">n: instances compared; limit: the threshold.
Distance: the drift gate's Jensen-Shannon divergence (base 2; 0 = the same distribution, 1 = no overlap) over bins
fixed by the schema. Skew rows compare the requests a version was asked with its training data; the prediction row compares
its predictions in this window with the window before.</p>
<h2>Distributions</h2>
<div class="plots">{"".join(figures)}</div>
</body></html>
"""


def write(path: str, report: Any) -> str:
    """Write the page to ``path`` (through a temporary name); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_text(path, render(report))
    return path
