"""The project's HTML pages, drawn one way: page shell and style, escaping, tables, links, inline SVG plots.

Standard library only. Every page goes through here: the verification report
(``components/verify_export/report.py``) with its drift section (``components/check_drift/logic.py``), the runs
page (``pipeline/runs_page.py``) and ``taxifare monitor``'s page (``serving/monitor_page.py``).
The report's two matplotlib plots (``components/verify_export/report_plots.py``) take their ticks from
:func:`log_ticks`.

A page is one self-contained file (what the Vertex and Kubeflow UIs need) with a viewport meta
tag; its tables scroll inside their own box (or, on the runs page, turn into cards on a phone)
and its plots are inline SVG that scales to the width, with their text as text, so nothing
overflows at 390 px and a browser test can check that no two labels overlap.

Content is HTML: the helpers do not escape what they are given, except where they say so; pass
user text through :func:`esc`.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable, Iterable, Sequence

#: The style sheet of the report (with its drift section) and the monitor page.
PAGE_CSS = """
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
#drift-table{table-layout:fixed;width:100%}#drift-table td,#drift-table th{overflow-wrap:anywhere}
#drift-table tr.dist td{border-top:0}#drift-table tr.dist small{display:block;color:#57606a;white-space:normal}
@media (max-width:600px){body{padding:8px 8px}table{font-size:.78rem}th,td{padding:3px 3px}}
"""

#: The style sheet of a page whose one table turns into a card per row below 700 px (the runs page).
CARDS_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:12px 16px;max-width:1200px;color:#1f2328}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.4em}
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

#: What a cell shows for a missing or non-finite number.
NONE = "–"


def esc(value: object) -> str:
    """``value`` as text safe inside HTML, attributes included."""
    return html.escape(str(value))


def number(value: object, spec: str, prefix: str = "") -> str:
    """``value`` formatted with ``spec`` (``prefix`` before it, e.g. ``$``); :data:`NONE` for anything but a finite number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return prefix + format(value, spec)
    return NONE


def page(title: str, body: str, *, css: str = PAGE_CSS) -> str:
    """A complete document: ``title`` (text), ``body`` (HTML) and the style sheet ``css``."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{css}</style></head>
<body>
{body}
</body></html>
"""


def link(href: str, text: str) -> str:
    """A link to ``href`` reading ``text`` (both escaped)."""
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def _attrs(cls: str, attrs: dict[str, object]) -> str:
    pairs: list[tuple[str, object]] = [("class", cls)] if cls else []
    pairs += [(k.replace("_", "-"), v) for k, v in attrs.items()]
    return "".join(f' {k}="{esc(v)}"' for k, v in pairs)


def td(content: object, cls: str = "", **attrs: object) -> str:
    """A cell of HTML ``content``; ``data_label="x"`` becomes ``data-label="x"``."""
    return f"<td{_attrs(cls, attrs)}>{content}</td>"


def th(content: object, cls: str = "") -> str:
    """A header cell of HTML ``content``."""
    return f"<th{_attrs(cls, {})}>{content}</th>"


def tr(cells: Iterable[str], cls: str = "") -> str:
    """A row of cells (:func:`td`, :func:`th`)."""
    return f"<tr{_attrs(cls, {})}>{''.join(cells)}</tr>"


def table(table_id: str, head: Iterable[str] | None, rows: Iterable[str], *, scroll: bool = True, colgroup: str = "") -> str:
    """A table: a header row of ``head`` cells (none for ``None``), then ``rows``; in a box that scrolls sideways when ``scroll``."""
    header = tr(head) if head is not None else ""
    out = f'<table id="{esc(table_id)}">{colgroup}{header}{"".join(rows)}</table>'
    return f'<div class="scroll">{out}</div>' if scroll else out


def verdict(ok: bool, word: str, text: str, **data: str) -> str:
    """The coloured box at the top of a page: green when ``ok``, ``word`` in bold, ``text`` (escaped) below; ``data`` as ``data-*``."""
    attrs = "".join(f' data-{k.replace("_", "-")}="{esc(v)}"' for k, v in data.items())
    return f'<div id="verdict" class="verdict {"ok" if ok else "bad"}"{attrs}><strong>{esc(word)}</strong>\n<p>{esc(text)}</p></div>'


def figure(content: str, caption: str) -> str:
    """A plot with its caption (HTML)."""
    return f"<figure>{content}<figcaption>{caption}</figcaption></figure>"


def svg_attributes(label: str, max_width: float | None) -> str:
    """The attributes that make an inline SVG scale to the page's width (up to ``max_width`` px) and name it for readers."""
    widest = f"max-width:{max_width:.0f}px;" if max_width else ""
    return f'style="width:100%;{widest}height:auto;display:block" role="img" aria-label="{esc(label)}"'


def svg(width: float, height: float, body: str, *, label: str, svg_id: str = "", max_width: float | None = None) -> str:
    """Inline SVG drawn on a ``width`` x ``height`` canvas that scales to the page's width (up to ``max_width``, default ``width``)."""
    ident = f' id="{esc(svg_id)}"' if svg_id else ""
    return f'<svg{ident} viewBox="0 0 {width:g} {height:g}" {svg_attributes(label, max_width or width)}>{body}</svg>'


def linear_ticks(lo: float, hi: float) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering ``lo``..``hi`` with a margin (not below 0 when ``lo`` is not)."""
    span = hi - lo or max(abs(hi) * 0.2, 0.5)
    raw = span / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor((lo - (span * 0.05 if hi > lo else span / 2)) / step) * step
    if lo >= 0:  # the margin never takes the axis below zero
        first = max(first, 0.0)
    last = math.ceil((hi + (span * 0.05 if hi > lo else span / 2)) / step) * step
    count = round((last - first) / step)
    return [round(first + i * step, 10) for i in range(count + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Round values for a log axis from ``lo`` to ``hi``: 1-2-5 per power of ten, finer when the span is short.

    At least three ticks fall inside, and no minor tick is labelled (matplotlib labels them
    when a log axis spans about one power of ten, and those labels overlap).
    """
    lo, hi = max(lo, 1e-9), max(hi, lo * 1.0001)
    ticks: list[float] = []
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [
            float(f"{m * 10.0**power:.6g}")
            for power in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
            for m in mantissas
            if lo <= m * 10.0**power <= hi
        ]
        if len(ticks) >= 3:
            break
    return ticks


@dataclasses.dataclass(frozen=True)
class Line:
    """One line of :func:`line_svg`: its ``(x, y)`` points, dashed or not, and ``data-*`` attributes (e.g. which test set)."""

    points: Sequence[tuple[float, float]]
    dashed: bool = False
    data: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Dot:
    """One marked point of :func:`line_svg`, with its colour and tooltip (text)."""

    x: float
    y: float
    colour: str
    title: str


@dataclasses.dataclass(frozen=True)
class LinePlot:
    """What :func:`line_svg` draws besides the lines: the x range, the y labels' format, the words at both ends of the x axis."""

    label: str
    x_range: tuple[float, float]
    y_format: Callable[[float], str] = "{:g}".format
    x_ends: tuple[str, str] = ("", "")
    svg_id: str = ""
    width: float = 480.0
    height: float = 220.0
    max_width: float = 640.0


def line_svg(plot: LinePlot, lines: Sequence[Line], dots: Sequence[Dot]) -> str:
    """Lines and dots over a linear y axis with round ticks (:func:`linear_ticks`) and grid lines."""
    w, h, left, right, top, bottom = plot.width, plot.height, 58.0, 12.0, 12.0, 30.0
    values = [d.y for d in dots] + [y for line in lines for _, y in line.points]
    ticks = linear_ticks(min(values), max(values))
    lo, hi = ticks[0], ticks[-1]
    x_lo, x_hi = plot.x_range

    def x(v: float) -> float:
        return left + (w - left - right) * ((v - x_lo) / (x_hi - x_lo) if x_hi > x_lo else 0.5)

    def y(v: float) -> float:
        return top + (h - top - bottom) * (1 - (v - lo) / (hi - lo))

    parts = []
    for v in ticks:
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#d0d7de"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 5:.1f}" text-anchor="end" font-size="14">{esc(plot.y_format(v))}</text>')
    for line in lines:
        points = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in line.points)
        data = "".join(f' data-{k}="{esc(v)}"' for k, v in line.data.items())
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        parts.append(f'<polyline class="series"{data} points="{points}" fill="none" stroke="#57606a" stroke-width="1.5"{dash}/>')
    for d in dots:
        parts.append(f'<circle cx="{x(d.x):.1f}" cy="{y(d.y):.1f}" r="5" fill="{d.colour}"><title>{esc(d.title)}</title></circle>')
    first, last = plot.x_ends
    parts.append(f'<text x="{left}" y="{h - 6}" font-size="14">{esc(first)}</text>')
    parts.append(f'<text x="{w - right}" y="{h - 6}" font-size="14" text-anchor="end">{esc(last)}</text>')
    return svg(w, h, "".join(parts), label=plot.label, svg_id=plot.svg_id, max_width=plot.max_width)


def bars_svg(
    edges: Sequence[float],
    then: Sequence[float],
    now: Sequence[float],
    *,
    names: tuple[str, str],
    label: str,
    width: int = 360,
    height: int = 120,
) -> str:
    """Two distributions over the same bins as paired bars (grey ``then``, orange ``now``), with axes.

    The y axis gives the largest share, the x axis the first, middle and last bin edges, so the
    values read without hovering (a phone cannot hover); each bar also has its exact share as
    a tooltip.
    """
    left, bottom, top_pad = 40.0, 18.0, 8.0
    plot_w, plot_h = width - left - 4, height - bottom - top_pad
    n = len(now)
    top = max([*now, *then, 1e-9])
    slot = plot_w / max(n, 1)
    parts = [
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - 4}" y2="{top_pad + plot_h}" stroke="#57606a"/>',
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="#57606a"/>',
        f'<text x="{left - 4}" y="{top_pad + 8}" text-anchor="end" font-size="10">{top:.0%}</text>',
        f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end" font-size="10">0%</text>',
    ]
    for k, anchor in ((0, "start"), (n // 2, "middle"), (n, "end")):
        edge = number(edges[k], ".4g")
        parts.append(f'<text x="{left + k * slot:.1f}" y="{height - 4}" text-anchor="{anchor}" font-size="10">{edge}</text>')
    for i, pair in enumerate(zip(then, now, strict=True)):
        for j, (share, colour) in enumerate(zip(pair, ("#9aa5b1", "#d9480f"), strict=True)):
            h = share / top * plot_h
            tip = esc(f"bin {edges[i]:g}..{edges[i + 1]:g}: {names[j]} {share:.1%}")
            parts.append(
                f'<rect x="{left + i * slot + j * slot / 2:.1f}" y="{top_pad + plot_h - h:.1f}" '
                f'width="{max(slot / 2 - 0.5, 0.5):.1f}" height="{h:.1f}" fill="{colour}"><title>{tip}</title></rect>'
            )
    return svg(width, height, "".join(parts), label=label)
