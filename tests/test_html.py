"""base/html.py, the one way the project draws its pages: cells, numbers, ticks and plots.

The pages themselves are checked in Chromium by test_report_browser.py, test_runs.py and
test_monitoring.py; these are the pieces' own rules.
"""

from __future__ import annotations

import itertools
import math
import re

import pytest

from base import html


def test_text_is_escaped_and_content_is_not():
    assert html.esc('<a href="x">') == "&lt;a href=&quot;x&quot;&gt;"
    assert html.td("<b>1</b>", "num", data_label='a "b"') == '<td class="num" data-label="a &quot;b&quot;"><b>1</b></td>'
    assert html.link("../a b/report.html?x=1&y=2", "<report>") == '<a href="../a b/report.html?x=1&amp;y=2">&lt;report&gt;</a>'
    assert html.table("t", None, [html.tr([html.td("1")])], scroll=False) == '<table id="t"><tr><td>1</td></tr></table>'
    page = html.page("a <title>", "<p>body</p>")
    assert "<title>a &lt;title&gt;</title>" in page and '<meta name="viewport"' in page and "<p>body</p>" in page


@pytest.mark.parametrize(("value", "shown"), [(3.14159, "$3.14"), (2, "$2.00"), (math.nan, "–"), (math.inf, "–"), (None, "–"), (True, "–")])
def test_numbers_show_a_dash_for_anything_not_finite(value, shown):
    assert html.number(value, ",.2f", "$") == shown


@pytest.mark.parametrize(("lo", "hi"), [(3.52, 3.97), (0.01, 0.013), (120.0, 120.0), (0.0, 0.0), (2.5, 1000.0)])
def test_linear_ticks_are_round_and_cover_the_values(lo, hi):
    ticks = html.linear_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and ticks[0] >= 0 and len(ticks) >= 2
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1, ticks  # evenly spaced
    (step,) = steps
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1, 2, 5), ticks


def test_log_ticks_are_round_and_never_fewer_than_three():
    assert html.log_ticks(2.5, 160) == [5.0, 10.0, 20.0, 50.0, 100.0]
    assert html.log_ticks(2.6, 40) == [5.0, 10.0, 20.0]
    assert html.log_ticks(2.9, 6.2) == [3.0, 4.0, 5.0, 6.0]
    assert html.log_ticks(3.0, 11.0) == [3.0, 5.0, 7.0, 10.0]


def test_a_line_plot_with_one_point_draws_it_in_the_middle():
    plot = html.LinePlot(label="one", x_range=(0, 0), y_format="${:.2f}".format, x_ends=("first", "last"), svg_id="p")
    svg = html.line_svg(plot, [html.Line([(0, 4.0)], data={"test-rows": "<x>"})], [html.Dot(0, 4.0, "#1a7f37", "a & b")])
    assert svg.startswith('<svg id="p" viewBox="0 0 480 220"') and 'aria-label="one"' in svg
    assert 'cx="263.0"' in svg and "<title>a &amp; b</title>" in svg and 'data-test-rows="&lt;x&gt;"' in svg
    assert re.findall(r">([^<>]+)</text>", svg) == ["$3.60", "$3.80", "$4.00", "$4.20", "$4.40", "first", "last"]


def test_bars_have_axes_and_a_tooltip_per_bar():
    svg = html.bars_svg([0.0, 1.0, 2.0], [0.25, 0.75], [0.5, 0.5], names=("then", "now"), label="f: then vs now")
    assert svg.count("<rect") == 4 and "bin 0..1: then 25.0%" in svg and "bin 1..2: now 50.0%" in svg
    assert ">75%</text>" in svg and ">0%</text>" in svg and ">0</text>" in svg and ">2</text>" in svg
