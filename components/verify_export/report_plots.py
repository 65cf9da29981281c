"""The verification report's plots: inline SVG whose text a browser lays out, with clean dollar ticks.

* :func:`curve_svg`: RMSE over training steps on a log scale, the exported model's step marked.
* :func:`scatter_svg`: predicted against actual fare for every test trip, on log axes.

Tick labels are round dollar amounts at fixed places (:func:`base.html.log_ticks`); no minor tick
is labelled. ``tests/test_report_browser.py`` checks in Chromium that no two labels overlap.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

from base.html import log_ticks, svg_attributes


def plot_svg(fig: Any, label: str) -> str:
    """``fig`` as inline SVG whose text stays text (the browser lays it out; a test can measure it) and that scales to the width.

    Many-point layers are drawn ``rasterized`` (one embedded image) so the page stays small.
    Only ids something refers to are kept, so two plots on one page share none by accident.
    """
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "taxifare"}):
        fig.savefig(buf, format="svg", dpi=110, bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    referenced = set(re.findall(r"#([\w.-]+)", text))
    text = re.sub(r'\sid="([^"]+)"', lambda m: m.group(0) if m.group(1) in referenced else "", text)
    width = re.search(r'<svg[^>]*\swidth="([\d.]+)pt"', text)
    attributes = svg_attributes(label, float(width.group(1)) * 4 / 3 if width else None)  # points to CSS pixels
    return re.sub(r'<svg([^>]*?)\swidth="[^"]*"\s+height="[^"]*"', lambda m: f"<svg{m.group(1)} {attributes}", text, count=1)


def _dollar_log_axis(axis: Any, lo: float, hi: float) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    axis.set_major_locator(FixedLocator(log_ticks(lo, hi)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.2f}".rstrip("0").rstrip(".")))
    axis.set_minor_formatter(NullFormatter())


def exported_point(curves: dict[str, list[tuple[int, float]]], exported_step: int | None = None) -> tuple[int, float] | None:
    """The evaluation of the exported model: ``exported_step``'s, or the best one (the trainer exports the best evaluation)."""
    points = curves.get("eval") or []
    if exported_step is not None:
        return next(((s, r) for s, r in points if s == exported_step), None)
    finite = [(s, r) for s, r in points if math.isfinite(r)]
    return min(finite, key=lambda p: (p[1], p[0])) if finite else None


#: The training curve's axis stops at this multiple of the best RMSE: the first steps' $10+ would flatten the rest.
CURVE_TOP = 2.0


def curve_svg(curves: dict[str, list[tuple[int, float]]], exported_step: int | None = None) -> tuple[str, str]:
    """RMSE over steps on a log scale cut at :data:`CURVE_TOP` times the best, the exported step marked; and a note on the cut."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    values = [r for points in curves.values() for _, r in points if math.isfinite(r) and r > 0]
    for split, points in curves.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if split == "eval" else None, label=f"{split} RMSE")
    chosen = exported_point(curves, exported_step)
    if chosen:
        ax.axvline(chosen[0], color="#1a7f37", ls="--", lw=1)
        ax.plot([chosen[0]], [chosen[1]], "o", color="#1a7f37", label=f"exported: step {chosen[0]:,}, ${chosen[1]:.2f}")
    note = ""
    if values:
        lo, top = min(values) / 1.05, max(values) * 1.05
        hi = min(top, min(values) * CURVE_TOP)
        if hi < top:
            above = [s for points in curves.values() for s, r in points if r > hi]
            note = f" The axis stops at ${hi:,.2f}: the first steps (up to step {max(above):,}, at most ${max(values):,.2f}) are above it."
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        _dollar_log_axis(ax.yaxis, lo, hi)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("training step")
    ax.set_ylabel("RMSE (log scale)")
    ax.set_title("Training curve")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend(loc="upper right", fontsize=9)
    try:
        return plot_svg(fig, "training curve"), note
    finally:
        plt.close(fig)


def scatter_svg(label: Any, pred: Any) -> tuple[str, str]:
    """Predicted against actual for every trip on log axes; the caption counts what is not drawable."""
    import matplotlib.pyplot as plt
    import numpy as np

    drawable = np.isfinite(pred) & (pred > 0) & np.isfinite(label) & (label > 0)
    x, y = label[drawable], pred[drawable]
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.scatter(x, y, s=5, alpha=0.35, linewidths=0, color="#0969da", rasterized=True)
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
    for axis in (ax.xaxis, ax.yaxis):
        _dollar_log_axis(axis, lo, hi)
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
        return plot_svg(fig, "predicted against actual fare"), caption
    finally:
        plt.close(fig)
