"""The verification report, opened by a real browser from its printed path, at phone and laptop widths.

Headless Chromium loads ``report.html`` from a ``file://`` URL (what a person clicking the
printed path gets), and the test reads the DOM: the verdict, the checks, the comparison with
the baselines and the deployed model, the error by distance band and for airport trips, every
image loaded and within the width, and no horizontal overflow at 390 px. The screenshots are
kept under ``runs/test-artifacts/browser/`` (set ``TAXIFARE_TEST_ARTIFACTS`` to move them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _browser import check_page

from components.impl import report, slices, verify_export
from trainer import synthetic


@pytest.fixture(scope="module")
def trips(tmp_path_factory):
    """The test split of generated NYC trips (Manhattan, the airports, flat JFK fares, a long tail)."""
    out = tmp_path_factory.mktemp("trips")
    synthetic.generate(20_000, str(out), seed=7)
    (out / "test").mkdir()
    (out / "test.csv").rename(out / "test" / "test.csv")
    _variant, feats, label = verify_export.load_split(str(out / "test"))
    return feats, label


def page(trips, tmp_path, *, blessed: bool, deployed: bool) -> tuple[str, report.ReportInput]:
    """A report for a predictor of these trips (the distance rule, fitted by least squares, plus a flat charge)."""
    feats, label = trips
    km = report.trip_km(feats)
    slope, intercept = np.polyfit(km, label, 1)
    pred = intercept + slope * km
    rule = verify_export.distance_rule(feats)
    metrics = {
        "test_examples": len(label),
        "test_rmse": verify_export.rmse(pred, label),
        "distance_rule_rmse": verify_export.rmse(rule, label),
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
    return report.write_report(str(artifact), report.render_report(data)), data


def test_report_file_is_html_beside_the_artifact(trips, tmp_path):
    path, _ = page(trips, tmp_path, blessed=True, deployed=False)
    assert path.endswith("verify-export/report.html")
    assert Path(path).read_text() == (tmp_path / "verify-export" / "report").read_text()
    assert not list((tmp_path / "verify-export").glob("*.tmp-*"))


def test_segments_cover_every_trip(trips):
    feats, label = trips
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
    assert len(found["images"]) == 2
    assert f"Every test trip is drawn ({len(data.label):,})" in found["body"]
    # The long tail is on the plot: the axes reach the dearest fare.
    assert f"${data.label.max():,.2f}" in found["body"]
