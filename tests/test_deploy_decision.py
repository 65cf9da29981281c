"""The deploy decision: the serving contract, champion and challenger on the same rows, slices and noise."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from _serving_helpers import export_untrained

from components.deploy import logic as deploy
from components.verify_export import gate, slices
from components.verify_export import logic as verify_export
from components.verify_export.gate import GateSettings

#: The pipeline's defaults (pipeline/parameters.py).
DEFAULTS = GateSettings(min_improvement=0.01, require_significant=True, max_slice_regression=0.1, min_slice_rows=200)
LAX = GateSettings(max_slice_regression=math.inf)


# -- the contract ------------------------------------------------------------------------------------
LAB = {
    "inputs": {k: {"dtype": "float32", "shape": [-1]} for k in ("dropofflat", "pickuplon")},
    "outputs": {"fare_amount": {"dtype": "float32", "shape": [-1]}},
}


def test_contract_changes_name_each_difference():
    assert gate.contract_changes(LAB, LAB) == []
    wider = json.loads(json.dumps(LAB))
    wider["inputs"]["pickup_datetime"] = {"dtype": "string", "shape": [-1]}
    assert gate.contract_changes(LAB, wider) == ["adds input pickup_datetime"]
    assert gate.contract_changes(wider, LAB) == ["drops input pickup_datetime"]
    other = json.loads(json.dumps(LAB))
    other["inputs"]["pickuplon"] = {"dtype": "float64", "shape": [-1]}
    other["inputs"]["dropofflat"]["shape"] = [-1, 1]
    other["outputs"] = {"fare": {"dtype": "float32", "shape": [-1]}}
    assert gate.contract_changes(LAB, other) == [
        "input dropofflat has shape (None, 1), was (None,)",
        "input pickuplon is float64, was float32",
        "adds output fare",
        "drops output fare_amount",
    ]
    ok, detail = gate.contract_verdict(["adds input pickup_datetime"], "version 4, served by the default route", False)
    assert not ok and detail.startswith("incompatible signature: adds input pickup_datetime (version 4")
    assert "--model-name" in detail and "--allow-signature-change" in detail


# -- slices, the bootstrap and the gate ---------------------------------------------------------------
@pytest.fixture(scope="module")
def rows(real_valid):
    from trainer import schema

    table = np.loadtxt(real_valid, delimiter=",", usecols=range(6), dtype=np.float64)
    feats = {name: table[:, i + 1].astype(np.float32) for i, name in enumerate(schema.Variant.LAB.features)}
    return feats, table[:, 0]


def test_slices_cover_every_trip_and_passengers(rows):
    feats, label = rows
    parts = dict(slices.slices(feats))
    assert sum(int(m.sum()) for name, m in parts.items() if name.endswith(" km")) == len(label)
    assert int(parts["airport trips"].sum()) + int(parts["no airport"].sum()) == len(label)
    assert sum(int(parts[n].sum()) for n in ("1 passenger", "2 passengers", "3+ passengers")) == len(label)
    assert not any(name.endswith(" h") for name in parts)  # no pickup time in the lab layout


def test_time_slices_when_the_data_has_pickup_datetime():
    feats = {
        "pickuplon": np.full(3, -73.98, np.float32), "pickuplat": np.full(3, 40.75, np.float32),
        "dropofflon": np.full(3, -73.97, np.float32), "dropofflat": np.full(3, 40.76, np.float32),
        "passengers": np.ones(3, np.float32),
        "pickup_datetime": np.array(["2011-01-28 20:42:59 UTC", "2014-06-01 07:00:00 UTC", "garbage"], dtype=object),
    }  # fmt: skip
    parts = dict(slices.slices(feats))
    assert parts["20-24 h"].tolist() == [True, False, False] and parts["06-10 h"].tolist() == [False, True, False]
    assert parts["Fri"].tolist() == [True, False, False] and parts["Sun"].tolist() == [False, True, False]


def test_the_same_predictions_are_not_an_improvement(rows):
    feats, label = rows
    pred = label * 0.9 + 1.0
    results = slices.compare(feats, label, pred, pred.copy())
    assert results[0].name == "all trips" and results[0].count == len(label)
    assert results[0].interval == (0.0, 0.0)
    decision = gate.decide(results, DEFAULTS, "version 1")
    assert not decision.ok and decision.reason.startswith("not better overall: ")
    assert f"on the same {len(label):,} rows" in decision.reason


def test_better_by_noise_is_refused_only_when_significance_is_required(rows):
    feats, label = rows
    rng = np.random.default_rng(7)
    champion = label + rng.normal(0, 3.0, len(label))
    candidate = champion.copy()  # the same model...
    champion[0] = label[0] + 40.0  # ...but the champion misses one trip badly: the whole difference is one row
    results = slices.compare(feats, label, candidate, champion)
    overall = results[0]
    assert overall.difference < 0 and overall.interval[0] < 0 <= overall.interval[1]  # the interval reaches zero
    lenient = GateSettings(max_slice_regression=math.inf)
    assert gate.decide(results, lenient, "version 1").ok
    strict = gate.decide(results, GateSettings(require_significant=True, max_slice_regression=math.inf), "version 1")
    assert not strict.ok and "within the noise of the test rows" in strict.reason


def test_a_candidate_worse_on_one_slice_is_refused_by_name(rows):
    feats, label = rows
    airport = dict(slices.slices(feats))["airport trips"]
    champion = label + np.where(airport, 4.0, 2.5)
    candidate = label + np.where(airport, 6.0, 1.0)  # much better overall, much worse at airports
    results = slices.compare(feats, label, candidate, champion)
    assert results[0].interval[1] < 0
    settings = GateSettings(require_significant=True, max_slice_regression=0.1, min_slice_rows=20)
    decision = gate.decide(results, settings, "version 2")
    n = int(airport.sum())
    assert not decision.ok and f"airport trips worse by 50% (n={n:,})" in decision.reason
    # Slices with fewer trips than min_slice_rows do not count.
    assert gate.decide(results, GateSettings(max_slice_regression=0.1, min_slice_rows=n + 1), "v").ok


def test_min_improvement_is_in_dollars(rows):
    feats, label = rows
    results = slices.compare(feats, label, label + 2.0, label + 2.005)
    assert not gate.decide(results, GateSettings(min_improvement=0.01), "v").ok
    assert gate.decide(results, GateSettings(min_improvement=0.001), "v").ok


# -- verify_export and deploy on real exports ---------------------------------------------------------
@pytest.fixture(scope="module")
def datetime_candidate(tmp_path_factory, real_train):
    """A datetime-layout model trained briefly on real trips, and a datetime test split."""
    from trainer.model import TrainConfig, train_and_evaluate

    root = tmp_path_factory.mktemp("datetime")
    data = Path(real_train).parent
    train = root / "train.csv"
    train.write_text("".join((data / "taxi-datetime-train.csv").read_text().splitlines(keepends=True)[:2000]))
    config = TrainConfig(str(train), str(data / "taxi-datetime-valid.csv"), str(root / "out"), train_steps=300, batch_size=128, seed=3)
    result = train_and_evaluate(config, progress=lambda line: None)
    test = root / "test"
    test.mkdir()
    shutil.copy(data / "taxi-datetime-valid.csv", test / "data.csv")
    return result.export_dir, str(test)


def _verify(model: str, test: str, serving: Path, settings: GateSettings):
    return verify_export.verify(
        model, test, train_fare_mean=11.0, max_rmse=100.0, serving_root=str(serving), model_name="taxifare", gate=settings
    )


def test_a_new_signature_never_replaces_the_served_contract(datetime_candidate, tmp_path):
    model, test = datetime_candidate
    serving = tmp_path / "serving"
    lab = export_untrained(tmp_path / "lab", seed=1)  # the lab layout, served by callers sending its instance
    first = deploy.publish(lab, str(serving), "taxifare", {"run": "lab"})
    assert first.version == 1

    verdict = _verify(model, test, serving, DEFAULTS)
    assert not verdict.blessed
    assert verdict.reason.startswith("incompatible signature: adds input pickup_datetime (version 1, served by the default route)")
    assert "--allow-signature-change" in verdict.reason and "broken" not in verdict.reason
    assert verdict.details["signature_change"] == "adds input pickup_datetime"

    # deploy refuses too (under the lock), even when asked directly with what verify_export found
    judged = deploy.Judged(verdict.details["signature"], 1, DEFAULTS)
    refused = deploy.publish(model, str(serving), "taxifare", {"run": "dt"}, judged=judged)
    assert not refused.deployed and refused.reason.startswith("not deployed: incompatible signature: adds input pickup_datetime")
    assert sorted(p.name for p in (serving / "taxifare").iterdir() if not p.name.startswith(".")) == ["1"]

    # With the opt-in the champion is scored on the same rows (the datetime split has every lab column) and it deploys.
    allowed = GateSettings(allow_signature_change=True, max_slice_regression=math.inf)
    verdict = _verify(model, test, serving, allowed)
    assert verdict.blessed, verdict.reason
    assert "signature change allowed (adds input pickup_datetime)" in verdict.reason and "on the same rows" in verdict.reason
    judged = deploy.Judged(verdict.details["signature"], 1, allowed)
    published = deploy.publish(model, str(serving), "taxifare", {"run": "dt"}, judged=judged)
    assert published.version == 2 and published.signature_change == "adds input pickup_datetime"
    record = json.loads((serving / "taxifare" / "2" / "taxifare_deploy.json").read_text())
    assert record["signature_change"]["change"] == "adds input pickup_datetime"
    assert "pickup_datetime" in record["signature"]["inputs"]


def test_deploy_judges_again_when_another_version_is_served_now(trained_model, real_valid, tmp_path):
    serving = tmp_path / "serving"
    good = trained_model.export_dir
    weak = export_untrained(tmp_path / "weak", seed=2)
    assert deploy.publish(weak, str(serving), "taxifare", {"run": "weak"}).version == 1
    assert deploy.publish(good, str(serving), "taxifare", {"run": "good"}).version == 2  # deployed meanwhile by another run
    test = tmp_path / "test"
    test.mkdir()
    shutil.copy(real_valid, test / "data.csv")
    signature = gate.read_signature(weak)
    # verify_export judged a candidate (the weak model again) against version 1; version 2 is served now: judged anew, refused.
    judged = deploy.Judged(signature, 1, DEFAULTS, deploy.judger(weak, str(test), DEFAULTS))
    refused = deploy.publish(weak, str(serving), "taxifare", {"run": "again"}, judged=judged)
    assert not refused.deployed and refused.reason.startswith("not deployed: against version 2, served now: not better overall")
    # Against the version it was judged against, verify_export's judgement stands.
    judged = deploy.Judged(signature, 2, DEFAULTS, deploy.judger(weak, str(test), DEFAULTS))
    assert deploy.publish(weak, str(serving), "taxifare", {"run": "judged"}, judged=judged).version == 3


def test_canary_on_an_empty_root_says_it_serves_the_default_route(trained_model, tmp_path):
    published = deploy.publish(trained_model.export_dir, str(tmp_path), "taxifare", {}, mode="canary")
    assert published.version == 1 and published.labels == {"canary": 1}
    assert "None" not in published.reason
    assert "as the first version, the default route too (nothing was served before)" in published.reason
