"""The verification report, opened by a real browser from its printed path, at phone and laptop widths.

Headless Chromium loads ``report.html`` from a ``file://`` URL (what a person clicking the
printed path gets), and the test reads the DOM: the verdict, the checks, the comparison with
the baselines and the deployed model, the error by distance band and for airport trips, the
drift table, which run it is, every plot within the width, no horizontal overflow at 390 px,
nothing cut off at a box's edge and no two plot labels on top of each other. The screenshots are
kept under ``runs/test-artifacts/browser/`` (set ``TAXIFARE_TEST_ARTIFACTS`` to move them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _browser import check_page

from components.check_drift import logic as drift
from components.verify_export import evaluation, report, slices
from pipeline import runs
from pipeline.runs_page import report_header
from trainer import divergence, statistics, synthetic
from trainer.schema import Variant


@pytest.fixture(scope="module")
def trips(tmp_path_factory):
    """The test split of generated NYC trips (Manhattan, the airports, flat JFK fares, a long tail)."""
    out = tmp_path_factory.mktemp("trips")
    synthetic.generate(20_000, str(out), seed=7)
    (out / "test").mkdir()
    (out / "test.csv").rename(out / "test" / "test.csv")
    _variant, feats, label = evaluation.load_split(str(out / "test"))
    return feats, label, (out / "test" / "test.csv", out / "train.csv")


def page(trips, tmp_path, *, blessed: bool, deployed: bool) -> tuple[str, report.ReportInput]:
    """A report for a predictor of these trips (the distance rule, fitted by least squares, plus a flat charge)."""
    feats, label, _ = trips
    km = report.trip_km(feats)
    slope, intercept = np.polyfit(km, label, 1)
    pred = intercept + slope * km
    rule = evaluation.distance_rule(feats)
    metrics = {
        "test_examples": len(label),
        "test_rmse": evaluation.rmse(pred, label),
        "distance_rule_rmse": evaluation.rmse(rule, label),
    }
    checks = [
        ("signature matches the schema", True, "inputs pickuplon, pickuplat, dropofflon, dropofflat, passengers -> fare_amount"),
        ("strictly better than the deployed model", blessed, "a detail long enough to wrap on a phone " * 4),
    ]
    data = report.ReportInput(
        verdict_text="test RMSE passes every check" if blessed else "failed: strictly better than the deployed model",
        blessed=blessed,
        metrics=metrics,
        checks=checks,
        label=label,
        pred=pred,
        baselines={"distance rule": rule, "training mean": np.full(len(label), float(label.mean()))},
        feats=feats,
        curves={
            "train": [(s, 10.0 / (1 + s / 100)) for s in range(0, 2000, 50)],
            "eval": [(s, 9.0 / (1 + s / 100)) for s in range(0, 2001, 100)],
        },
        deployed_name="version 3" if deployed else "",
        deployed_pred=pred * 1.05 if deployed else None,
        comparison=slices.compare(feats, label, pred, pred * 1.05 if deployed else None),
    )
    artifact = tmp_path / "verify-export" / "report"
    artifact.parent.mkdir(parents=True)
    page = report.render_report(data)
    if deployed:  # the drift section: this split's statistics against the training split's (as the deployed model kept them)
        now, then = ({"columns": statistics.describe(str(path), Variant.LAB.columns)} for path in trips[2])
        page = drift.with_section(page, drift.report_html(divergence.compare(now, then, reference_version="3"), 0.05))
    return report.write_report(str(artifact), page), data


def test_report_file_is_html_beside_the_artifact(trips, tmp_path):
    path, _ = page(trips, tmp_path, blessed=True, deployed=False)
    assert path.endswith("verify-export/report.html")
    assert Path(path).read_text() == (tmp_path / "verify-export" / "report").read_text()
    assert not list((tmp_path / "verify-export").glob("*.tmp-*"))


def test_segments_cover_every_trip(trips):
    feats, label, _ = trips
    parts = dict(report.segments(feats))
    bands = [mask for name, mask in parts.items() if name.endswith(" km")]
    assert sum(int(m.sum()) for m in bands) == len(label)  # the bands partition the split
    assert int(parts["airport trips"].sum()) + int(parts["no airport"].sum()) == len(label)
    assert parts["JFK"].sum() > 0 and parts["LaGuardia"].sum() > 0


@pytest.mark.parametrize("width", [390, 1280])
def test_report_reads_well_in_chromium(browser, trips, tmp_path, width):
    path, data = page(trips, tmp_path, blessed=False, deployed=True)
    found = browser.measure(Path(path).as_uri(), width, name="report")
    check_page(found, width)
    assert found["verdict"][0].startswith("Not blessed")
    assert len(found["checks"]) == 1 + len(data.checks) and "FAIL" in found["checks"][2]
    comparison = " ".join(found["comparison"])
    assert "distance rule" in comparison and "training mean" in comparison and "deployed version 3" in comparison
    # Candidate beside the served model per slice of the same rows, with the bootstrap's interval.
    by_slice = {row.split("\n")[0]: row for row in found["slices"][1:]}
    assert {"all trips", "airport trips", "1 passenger", "over 20 km"} <= set(by_slice)
    assert ".." in by_slice["all trips"] and "served" in found["slices"][0] and "n=" in by_slice["airport trips"]
    segments = found["segments"]
    assert any(row.startswith("JFK") for row in segments) and any(row.startswith("over 20 km") for row in segments)
    assert browser.evaluate("document.querySelectorAll('figure svg').length") == 2
    assert found["svgs"] == 2 + len(statistics.features())  # the two plots, and a distribution per feature
    assert f"Every test trip is drawn ({len(data.label):,})" in found["body"]
    # The long tail is on the plot: the axes reach the dearest fare.
    assert f"${data.label.max():,.2f}" in found["body"]
    # The training curve marks the exported model (the best evaluation) and says where its axis is cut.
    assert "exported: step 2,000" in found["body"] and "The axis stops at $" in found["body"]
    # The drift table: values in words, without hovering.
    assert "Largest change:" in found["body"] and "of the deployed model's rows" in found["body"]


def test_the_report_says_which_run_it_is_and_links_the_runs_page(browser, trips, tmp_path):
    path, _ = page(trips, tmp_path / "runs" / "pipeline" / "taxifare-2026-12-01-06-00-00-000001", blessed=True, deployed=False)
    (tmp_path / "runs" / "index.html").write_text("<!doctype html><title>taxifare runs</title>")
    run = runs.Run(
        name="taxifare-2026-12-01-06-00-00-000001",
        path=str(Path(path).parents[1]),
        started="2026-12-01T06:00:00",
        arguments={**runs.defaults(), "train_steps": 4000, "data_fingerprint": "abc"},
        steps={"stage_data": {"summary": "39,947 train / 5,068 eval / 4,985 test rows (lab layout), 0 dropped"}},
        report=path,
    )
    assert report.stamp_run(path, report_header(run, path, str(tmp_path / "runs" / "index.html")))
    found = browser.measure(Path(path).as_uri(), 390, name="report-run")
    check_page(found, 390)
    header = browser.evaluate("document.querySelector('#run').innerText")
    assert header.startswith("Run taxifare-2026-12-01-06-00-00-000001, started 2026-12-01 06:00:00.")
    assert "Data: synthetic (50,000 generated trips, seed 42); 39,947 train" in header
    assert "Parameters: train_steps=4000; the others are the defaults." in header and "data_fingerprint" not in header
    href = browser.evaluate("document.querySelector('#run a').href")
    assert href == (tmp_path / "runs" / "index.html").as_uri()


def test_the_checks_catch_overlapping_labels_and_clipped_content(browser, tmp_path):
    """The page checks can fail: two labels on one spot, content cut off inside a box, a wide table."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!doctype html><meta name="viewport" content="width=device-width, initial-scale=1"><body>'
        '<svg viewBox="0 0 200 50" style="width:100%" aria-label="ticks"><text x="10" y="20">3×10⁰</text>'
        '<text x="22" y="22">4×10⁰</text></svg>'
        '<div style="overflow:hidden;width:100px"><div style="width:300px">cut off</div></div></body>'
    )
    found = browser.measure(bad.as_uri(), 390, name="bad")
    assert found["textOverlaps"] == ["ticks: '3×10⁰' on '4×10⁰'"]
    assert found["clipped"] and found["clipped"][0].startswith("DIV 300>100")
    with pytest.raises(AssertionError, match=r"cut off|labels overlap"):
        check_page(found, 390)
