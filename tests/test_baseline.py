"""The gradient-boosted baseline (components/verify_export/baseline.py) on the real samples."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from components.verify_export import baseline
from components.verify_export.evaluation import distance_rule, load_split, rmse
from trainer import geo, schema


def split_of(path: Path, tmp_path: Path, name: str):
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(path, folder / "part.csv")
    return load_split(str(folder))


def test_plain_features_are_the_documented_columns():
    jfk, lga = schema.AIRPORTS["jfk"], schema.AIRPORTS["lga"]
    feats = {
        "pickuplon": np.array([jfk[0], -73.99], np.float32),
        "pickuplat": np.array([jfk[1], 40.75], np.float32),
        "dropofflon": np.array([lga[0], -73.99], np.float32),
        "dropofflat": np.array([lga[1], 40.76], np.float32),
        "passengers": np.array([2, 1], np.float32),
    }
    x = baseline.plain_features(feats)
    assert x.shape == (2, len(baseline.PLAIN_FEATURES)) == (2, 15)
    col = {name: x[:, i] for i, name in enumerate(baseline.PLAIN_FEATURES)}
    assert col["passengers"].tolist() == [2, 1]
    assert col["pickup_jfk_km"][0] < 0.01 and col["dropoff_lga_km"][0] < 0.01  # JFK to LaGuardia
    expected = geo.haversine_km(*(feats[c].astype(np.float64) for c in schema.COORDINATES), np)
    np.testing.assert_allclose(col["haversine_km"], expected)
    assert col["haversine_km"][0] == pytest.approx(17, abs=1)  # JFK-LaGuardia is about 17 km
    np.testing.assert_allclose(col["manhattan_km"], np.abs(col["east_west_km"]) + np.abs(col["north_south_km"]))
    assert col["east_west_km"][1] == pytest.approx(0, abs=1e-3) and col["north_south_km"][1] == pytest.approx(1.112, abs=1e-3)


def test_datetime_adds_hour_and_weekday():
    feats = {c: np.array([-73.98, -73.98], np.float32) if "lon" in c else np.array([40.75, 40.75], np.float32) for c in schema.COORDINATES}
    feats["passengers"] = np.array([1, 1], np.float32)
    feats[schema.DATETIME] = np.array(["2013-01-03 14:21:00 UTC", "not a time"], dtype=object)
    x = baseline.plain_features(feats)
    assert x.shape == (2, 17)
    assert x[0, -2:].tolist() == [14, 3]  # 2013-01-03 was a Thursday
    assert x[1, -2:].tolist() == [0, 0]  # unparsable: hour 0, Monday (as the model's in-graph parser)


def test_beats_the_distance_rule_on_real_trips_and_is_deterministic(real_train, real_valid, tmp_path):
    _, train_feats, train_label = split_of(real_train, tmp_path, "train")
    _, test_feats, test_label = split_of(real_valid, tmp_path, "valid")
    pred = baseline.fit_predict(train_feats, train_label, test_feats, seed=1)
    assert pred.shape == test_label.shape and np.isfinite(pred).all()
    gbt, rule = rmse(pred, test_label), rmse(distance_rule(test_feats), test_label)
    assert gbt < rule - 0.5, (gbt, rule)  # $4.83 vs $5.86 measured
    assert math.isclose(gbt, 4.83, abs_tol=0.1), gbt  # the figure docs/quality.md reports
    again = baseline.fit_predict(train_feats, train_label, test_feats, seed=1)
    np.testing.assert_array_equal(pred, again)


def test_empty_training_split_is_refused():
    empty = {c: np.zeros(0, np.float32) for c in schema.NUMERIC_FEATURES}
    with pytest.raises(ValueError, match="training split is empty"):
        baseline.fit_predict(empty, np.zeros(0), empty, seed=1)


def test_quality_bench_runs_the_same_folds_for_every_model(tmp_path):
    # The benchmark's smoke mode, without the network (the trainer has its own tests): one command, a table.
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "folds.json"
    proc = subprocess.run(
        [sys.executable, str(root / "bench" / "bench_quality.py"), "--quick", "--models", "gbt", "linear", "rule", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["gbt", "linear", "rule"]
    assert "seed 1 fold 2/2      gbt: RMSE" in proc.stderr  # progress lines
    folds = json.loads(out.read_text())["folds"]
    assert [(f["seed"], f["fold"]) for f in folds["gbt"]] == [(f["seed"], f["fold"]) for f in folds["rule"]] == [(1, 0), (1, 1)]
    assert all(g["rmse"] < r["rmse"] for g, r in zip(folds["gbt"], folds["rule"], strict=True))
