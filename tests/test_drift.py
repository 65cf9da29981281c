"""The drift gate: statistics over shared bins, Jensen-Shannon per feature, flagged on exactly the features that moved."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import stage

from base import layout
from base.errors import InputError
from components.check_drift import logic as drift
from trainer import divergence, schema, statistics, synthetic
from trainer.schema import Variant

LAB = Variant.LAB.columns


def _generated(tmp_path, name: str, seed: int, rows: int = 20_000) -> str:
    return synthetic.generate(rows, str(tmp_path / name), seed=seed, fractions=(1.0, 0.0, 0.0)).paths["train"]


def _shifted(path: str, out: str, *, fare_factor: float = 1.0, pickup_shift: float = 0.0) -> str:
    """The same trips with the fares scaled and/or the pickups moved (nothing else touched)."""
    with open(path) as src, open(out, "w") as dst:
        for line in src:
            cols = line.rstrip("\n").split(",")
            fare = min(float(cols[0]) * fare_factor, schema.MAX_FARE)
            cols[0] = f"{fare:.2f}"
            cols[1] = f"{float(cols[1]) + pickup_shift:.6f}"
            cols[2] = f"{float(cols[2]) + pickup_shift:.6f}"
            dst.write(",".join(cols) + "\n")
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift")
    deployed = _generated(tmp, "deployed", seed=1)
    fresh = _generated(tmp, "fresh", seed=2)  # new trips from the same distribution
    return {
        "deployed": statistics.describe(deployed, LAB),
        "fresh": statistics.describe(fresh, LAB),
        "fares": statistics.describe(_shifted(fresh, str(tmp / "fares.csv"), fare_factor=1.5), LAB),
        "pickups": statistics.describe(_shifted(fresh, str(tmp / "pickups.csv"), pickup_shift=0.03), LAB),
    }


def test_bins_are_fixed_by_the_schema_and_cover_the_valid_ranges():
    for name in statistics.features():
        edges = statistics.bin_edges(name)
        assert edges == sorted(edges) and len(set(edges)) == len(edges)
        assert edges[0] <= schema.RANGES[name].low and edges[-1] >= schema.RANGES[name].high
    assert statistics.bin_edges("pickuplon")[1:-1] == list(schema.GRID_LON)
    assert len(statistics.bin_edges(schema.PASSENGERS)) - 1 == 9


def test_describe_counts_every_row_and_gets_quantiles_right(tmp_path):
    values = np.linspace(3.0, 103.0, 1001)
    path = tmp_path / "split.csv"
    path.write_text("".join(f"{v:.4f},-73.98,40.75,-73.95,40.78,2,k{i}\n" for i, v in enumerate(values)))
    stats = statistics.describe(str(path), LAB)
    fare = stats["fare_amount"]
    assert fare["count"] == 1001 and sum(fare["histogram"]["counts"]) == 1001
    assert fare["quantiles"]["p50"] == pytest.approx(53.0)
    assert fare["quantiles"]["p01"] == pytest.approx(np.quantile(values, 0.01))
    assert stats["passengers"]["histogram"]["counts"][1] == 1001  # the bin of 2 passengers


def test_same_distribution_is_not_flagged(data):
    result = divergence.compare(data["fresh"], data["deployed"], reference_version="3")
    assert len(result.features) == len(statistics.features()) and not result.skipped
    assert result.largest < 0.01, result.line()
    assert divergence.compare(data["deployed"], data["deployed"]).largest == 0.0
    drift.gate(result, 0.05)  # does not raise


def test_shifted_fares_are_flagged_on_the_fare_only(data):
    result = divergence.compare(data["fares"], data["deployed"], reference_version="3")
    assert [f.feature for f in result.over(0.05)] == ["fare_amount"]
    assert result.ranked()[0].feature == "fare_amount"
    assert "fare_amount" in result.line()


def test_shifted_pickups_are_flagged_on_the_pickup_coordinates_only(data):
    result = divergence.compare(data["pickups"], data["deployed"], reference_version="3")
    assert sorted(f.feature for f in result.over(0.05)) == ["pickuplat", "pickuplon"]


def test_gate_stops_with_one_line_that_says_how_to_accept(data):
    result = divergence.compare(data["fares"], data["deployed"], reference_version="3")
    with pytest.raises(drift.DriftError) as err:
        drift.gate(result, 0.05)
    message = str(err.value)
    assert "\n" not in message and "fare_amount" in message and "pickuplon" not in message
    accept = float(message.split("--max-drift ")[-1].split()[0])
    assert accept >= result.largest
    drift.gate(result, accept)  # the suggested threshold accepts the data
    drift.gate(result, 0.0)  # off


@pytest.mark.parametrize("value", ["abc", -0.1, float("nan"), float("inf"), 1.5, None])
def test_bad_threshold_is_one_line(value):
    with pytest.raises(InputError, match="max_drift must be 0 \\(off\\) or a Jensen-Shannon divergence"):
        divergence.check_max_drift(value)


def test_statistics_without_histograms_are_skipped_not_failed(data):
    old = {name: {"min": 1.0, "mean": 2.0, "max": 3.0} for name in statistics.features()}
    result = divergence.compare(data["fresh"], old)
    assert result.features == [] and result.skipped == list(statistics.features())
    assert result.line() == "no feature could be compared"


def test_check_reads_the_deployed_version_and_gates(tmp_path, data, capsys):
    version = tmp_path / "serving" / "taxifare" / "4"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")  # a complete version, as the serving layout counts them
    drift.write_stats({"rows": 20_000, "variant": "lab", "columns": data["deployed"]}, str(version))
    assert json.loads((version / layout.TRAIN_STATS_FILE).read_text())["format"] == drift.STATS_FORMAT
    same = drift.check({"columns": data["fresh"]}, serving_root=str(tmp_path / "serving"), model_name="taxifare", max_drift=0.05)
    assert same is not None and same.reference_version == "4"
    assert "largest drift vs deployed version 4" in "".join(capsys.readouterr())
    with pytest.raises(drift.DriftError, match="fare_amount"):
        drift.check({"columns": data["fares"]}, serving_root=str(tmp_path / "serving"), model_name="taxifare", max_drift=0.05)
    # Vertex: the deployed model's artifact folder
    assert drift.check({"columns": data["fresh"]}, deployed_stats_uri=str(version), max_drift=0.0) is not None


def test_check_with_nothing_deployed_reports_and_passes(tmp_path, capsys):
    assert drift.check({"columns": {}}, serving_root=str(tmp_path), model_name="taxifare", max_drift=0.01) is None
    assert "nothing deployed yet" in "".join(capsys.readouterr())
    (tmp_path / "taxifare" / "1").mkdir(parents=True)
    (tmp_path / "taxifare" / "1" / "saved_model.pb").write_bytes(b"")
    assert drift.check({"columns": {}}, serving_root=str(tmp_path), model_name="taxifare", max_drift=0.01) is None
    assert "deployed version 1 kept no training statistics" in "".join(capsys.readouterr())


def test_report_rows_hold_both_distributions(data):
    rows = divergence.report_rows(divergence.compare(data["fares"], data["deployed"]))
    assert rows[0]["feature"] == "fare_amount"
    assert len(rows[0]["share_now"]) == len(rows[0]["edges"]) - 1 == len(rows[0]["share_deployed"])
    assert sum(rows[0]["share_now"]) == pytest.approx(1.0) and rows[0]["median_now"] > rows[0]["median_deployed"]


def test_stage_data_writes_the_statistics(tmp_path):
    out = {split: str(tmp_path / split) for split in ("train", "eval", "test")}
    staged = stage("synthetic", out, synthetic_rows=2000, seed=3)
    columns = staged["train"].metadata["columns"]
    fare = columns["fare_amount"]
    assert {"min", "mean", "max", "count", "quantiles", "histogram"} <= set(fare)
    assert fare["count"] == staged["train"].metadata["rows"] == sum(fare["histogram"]["counts"])
    assert fare["min"] <= fare["quantiles"]["p50"] <= fare["max"]
    json.dumps(staged["train"].metadata)  # artifact metadata must be JSON
    assert os.listdir(out["train"]) == ["data.csv"]


def test_report_section_shows_both_distributions(tmp_path, data):
    version = tmp_path / "serving" / "taxifare" / "2"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")  # a complete version, as the serving layout counts them
    drift.write_stats({"rows": 20_000, "variant": "lab", "columns": data["deployed"]}, str(version))
    html = drift.report_section({"columns": data["fares"]}, serving_root=str(tmp_path / "serving"), model_name="taxifare", max_drift=0.05)
    assert html.index("fare_amount") < html.index("pickuplon")  # largest first
    assert html.count("<svg") == len(statistics.features()) and "deployed version 2" in html
    assert "fare_amount</td><td>0.1" in html and "(above max_drift)" in html and "--max-drift" in html
    page = drift.with_section("<html><body><h1>Verdict</h1></body></html>", html)
    assert page.startswith('<html><body><h1>Verdict</h1><section id="drift">') and page.endswith("</div></section></body></html>")
    assert "No comparison" in drift.report_section({"columns": data["fares"]}, serving_root=str(tmp_path / "none"), model_name="taxifare")
