"""The page ``taxifare monitor`` writes: the verdict, the table, both distributions per feature.

Drawn like the verification report, with :mod:`base.html`: one self-contained HTML file with a
viewport meta tag, tables that scroll inside their own box and inline SVG bars (with axes) that
scale to the width, so it reads at 390 px. Grey: the version's training data (or, for the
predictions, the window before); orange: the logged requests of the window.
"""

from __future__ import annotations

import os
from typing import Any

from base import atomic
from base import html as h
from trainer import divergence, schema, statistics


def _fmt(value: Any) -> str:
    """A mean with 4 significant digits (-73.98), a divergence with 3 decimals, '–' for none."""
    if not isinstance(value, float):
        return h.NONE
    return h.number(value, ".4g" if abs(value) > 1 else ".3f")


def _verdict_class(row: Any) -> str:
    return "fail" if row.moved else ("pass" if row.verdict == "ok" else "")


def _figures(report: Any) -> list[str]:
    """Both distributions per feature of each version's requests, then of its predictions."""
    figures = []
    for version, result in sorted(report.results.items()):
        for row in divergence.report_rows(result):
            label = f"{row['feature']}: training (grey) vs requests (orange)"
            plot = h.bars_svg(row["edges"], row["share_deployed"], row["share_now"], names=("training", "requests"), label=label)
            means = [
                f"{_fmt(m)} {where}" for m, where in ((row["mean_deployed"], "in training"), (row["mean_now"], "asked")) if m is not None
            ]
            caption = f"version {version}, {h.esc(row['feature'])}: divergence {row['divergence']:.3f}"
            caption += f"; mean {', '.join(means)}" if means else ""
            figures.append(h.figure(plot, f"{caption} (grey: training, orange: requests)"))
    for version, (now, before) in sorted(report.predictions.items()):
        edges = statistics.bin_edges(schema.LABEL)
        label = "prediction: window before (grey) vs this window (orange)"
        plot = h.bars_svg(
            edges, shares(before, schema.LABEL), shares(now, schema.LABEL), names=("window before", "this window"), label=label
        )
        caption = f"version {version}, predicted fare: {len(before):,} in the window before (grey), {len(now):,} in this one (orange)"
        figures.append(h.figure(plot, caption))
    return figures


def render(report: Any) -> str:
    """The page of a :class:`serving.monitor.Report`."""
    rows = [
        h.tr(
            [
                h.td(h.esc(r.version)),
                h.td(h.esc(r.feature)),
                h.td(_fmt(r.distance), "num"),
                h.td(f"{r.threshold:g}", "num"),
                h.td(h.esc(r.verdict), _verdict_class(r)),
                h.td(f"{r.instances:,}", "num"),
            ]
        )
        for r in report.rows
    ]
    head = [h.th("version"), h.th("feature"), h.th("distance", "num"), h.th("limit", "num"), h.th("verdict"), h.th("n", "num")]
    moved = bool(report.moved)
    word = "Moved" if moved else "Nothing moved"
    body = f"""<h1>taxifare monitor</h1>
{h.verdict(not moved, word, report.verdict(), moved=str(moved).lower())}
<h2>Skew and drift</h2>
{h.table("skew", head, rows)}
<p class="note">n: instances compared; limit: the threshold.
Distance: the drift gate's Jensen-Shannon divergence (base 2; 0 = the same distribution, 1 = no overlap) over bins
fixed by the schema. Skew rows compare the requests a version was asked with its training data; the prediction row compares
its predictions in this window with the window before.</p>
<h2>Distributions</h2>
<div class="plots">{"".join(_figures(report))}</div>"""
    return h.page(f"taxifare monitor: {word}", body)


def write(path: str, report: Any) -> str:
    """Write the page to ``path`` (through a temporary name); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_text(path, render(report))
    return path


def shares(values: list[float], feature: str) -> list[float]:
    """Normalised histogram of ``values`` over ``feature``'s fixed bins (the page's prediction plot)."""
    import numpy as np

    found = statistics.counts(values, statistics.bin_edges(feature)) if values else np.zeros(len(statistics.bin_edges(feature)) - 1)
    total = float(np.sum(found)) or 1.0
    return [float(c) / total for c in found]
