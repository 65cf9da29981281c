"""The step functions, called directly (no kfp)."""

import json
import math
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import stage

from base.errors import InputError
from components.contracts import SUMMARY_DIR_ENV, DatasetStats, Hyperparameters, StepSummary, read_events
from components.deploy import logic as deploy
from components.full_train import logic as full_train
from components.stage_data import logic as stage_data
from components.verify_export import evaluation, report
from components.verify_export import logic as verify_export
from pipeline import parameters

#: verify()'s pipeline settings, at the pipeline's defaults.
CHECKS = {name: parameters.BY_NAME[name].default for name in ("max_rmse", "model_name")}
GOOD = "12.0,-73.987625,40.750617,-73.971163,40.78518,1,{key}"


def outs(tmp_path: Path) -> dict[str, str]:
    return {split: str(tmp_path / split) for split in stage_data.SPLITS}


def test_stage_synthetic_writes_three_splits_with_statistics(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(SUMMARY_DIR_ENV, str(tmp_path / "summaries"))
    staged = stage("synthetic", outs(tmp_path / "out"), synthetic_rows=2000, seed=3)
    rows = {split: s.metadata["rows"] for split, s in staged.items()}
    assert sum(rows.values()) == 2000 and all(rows.values())
    meta = staged["train"].metadata
    assert meta["variant"] == "lab" and meta["dropped_rows"] == 0
    assert set(meta["columns"]) == {"fare_amount", "pickuplon", "pickuplat", "dropofflon", "dropofflat", "passengers"}
    assert len(meta["content_hash"]) == 64
    assert DatasetStats.from_metadata(meta).to_metadata() == meta
    assert sorted(os.listdir(tmp_path / "out")) == ["eval", "test", "train"]  # no temporary directory left
    written = StepSummary.read(str(tmp_path / "summaries"), "stage_data")
    assert written and written.figures["train"] == rows["train"] and written.text in capsys.readouterr().err


def test_stage_is_deterministic_and_carves_by_key_hash(tmp_path, real_train):
    a = stage(str(real_train), outs(tmp_path / "a"))
    b = stage(str(real_train), outs(tmp_path / "b"))
    assert {s: a[s].metadata["content_hash"] for s in a} == {s: b[s].metadata["content_hash"] for s in b}
    assert sum(s.metadata["rows"] for s in a.values()) == 7770
    keys = {split: {line.rsplit(",", 1)[1] for line in Path(a[split].path, "data.csv").read_text().splitlines()} for split in a}
    assert not keys["train"] & keys["test"] and not keys["eval"] & keys["test"]
    assert a["test"].metadata["source"].endswith("(carved by key hash)")


def test_stage_counts_and_reports_bad_rows(tmp_path):
    src = tmp_path / "src.csv"
    rows = [GOOD.format(key=i) for i in range(300)] + ["12.0,0,0,0,0,1,x", "oops", "1.0,-73.98,40.75,-73.97,40.78,1,y"]
    src.write_text("\n".join(rows) + "\n")
    staged = stage(str(src), outs(tmp_path / "out"))
    meta = staged["train"].metadata
    assert meta["dropped"] == {"outside_nyc": 1, "wrong_column_count": 1, "fare_below_minimum": 1}
    assert any(":302: wrong_column_count" in e for e in meta["dropped_examples"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": ""}, "source is empty"),
        ({"source": "synthetc"}, "no file matches the train data pattern 'synthetc'"),
        ({"source": "synthetic", "synthetic_rows": 5}, "synthetic_rows must be at least 100"),
        ({"source": "synthetic", "eval_fraction": 0.7}, "eval_fraction must be between 0 and 0.5"),
    ],
)
def test_stage_rejects_bad_parameters(tmp_path, kwargs, message):
    source = kwargs.pop("source")
    with pytest.raises(InputError, match=message):
        stage(source, outs(tmp_path), **kwargs)
    assert not list(tmp_path.iterdir())


def test_stage_fails_on_mostly_bad_data_and_leaves_no_output(tmp_path):
    src = tmp_path / "src.csv"
    src.write_text("12.0,0,0,0,0,1,1\n" * 50 + GOOD.format(key=2) + "\n")
    with pytest.raises(InputError, match=r"50 of 51 train data rows .* are bad \(outside_nyc=50\)") as exc:
        stage(str(src), outs(tmp_path / "out"))
    # The hint names the flag as `taxifare run` spells it (its --max_bad_fraction would be refused).
    assert "raise --max-bad-fraction (taxifare run; --param max_bad_fraction=" in str(exc.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_stage_fails_on_an_empty_split(tmp_path):
    src = tmp_path / "src.csv"
    src.write_text("\n".join(GOOD.format(key=i) for i in range(3)) + "\n")
    with pytest.raises(InputError, match="split is empty"):
        stage(str(src), outs(tmp_path / "out"))


def test_valid_rows_that_all_share_one_key_get_a_message_about_the_key_split(tmp_path):
    """Every valid row with the same key hashes into one split: the message says the split is by key."""
    src = tmp_path / "src.csv"
    src.write_text("\n".join(GOOD.format(key=7) for _ in range(300)) + "\n")
    with pytest.raises(InputError, match="split is empty") as err:
        stage(str(src), outs(tmp_path / "out"))
    message = str(err.value)
    assert "300 valid rows" in message and "split is by a hash of each row's key" in message and "distinct keys" in message


def test_stage_reads_the_dated_partitions_of_the_window(tmp_path):
    for day, n in (("2026-11-25", 100), ("2026-11-26", 120), ("2026-11-27", 130), ("2026-11-28", 999)):
        folder = tmp_path / "src" / f"dt={day}"
        folder.mkdir(parents=True)
        (folder / "part-0.csv").write_text("\n".join(GOOD.format(key=f"{day}-{i}") for i in range(n)) + "\n")
    staged = stage(str(tmp_path / "src"), outs(tmp_path / "out"), window_days=2, scheduled_time="2026-11-28T06:00:00Z")
    assert sum(s.metadata["rows"] for s in staged.values()) == 250  # the 26th and 27th, not the scheduled day
    with pytest.raises(InputError, match=r"no \*\.csv file under .*dt=YYYY-MM-DD"):
        stage(str(tmp_path / "src"), outs(tmp_path / "out2"), window_days=2, scheduled_time="2026-10-01T00:00:00Z")


def test_stage_bigquery_needs_a_window_and_a_gcs_destination(tmp_path):
    with pytest.raises(InputError, match="source 'bigquery' needs window_days"):
        stage("bigquery", outs(tmp_path))
    with pytest.raises(InputError, match="must be a gs://BUCKET/folder"):
        stage("bigquery", outs(tmp_path), window_days=3, bigquery_project="p", bigquery_export_prefix=str(tmp_path / "x"))


def test_hidden_units_parsing():
    assert full_train.parse_hidden_units("64,32") == (64, 32)
    assert full_train.parse_hidden_units("16 8") == (16, 8)
    for bad in ("", "a,b", "0", "-4,2"):
        with pytest.raises(InputError, match="hidden_units must be positive layer sizes"):
            full_train.parse_hidden_units(bad)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = tmp_path_factory.mktemp("staged")
    stage("synthetic", outs(root), synthetic_rows=6000, seed=11)
    return {split: str(root / split) for split in stage_data.SPLITS}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, staged):
    out = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SUMMARY_DIR_ENV, f"{out}-records")  # as `taxifare run` sets it
        result = full_train.train(
            staged["train"],
            staged["eval"],
            str(out),
            Hyperparameters("64,32", 0.003, 128),
            train_steps=200,
            seed=1,
            eval_steps=None,
            step_name="full_train",
        )
    return result, str(out)


def test_train_step_function_exports_and_reports(trained):
    result, out = trained
    assert math.isfinite(result["rmse"]) and result["steps"] == 200
    records = read_events(f"{out}-records")[0]  # what `taxifare run` reads: progress as it trains, then the summary
    progress = [r for r in records if r["event"] == "progress"]
    assert progress and progress[-1]["at"] == progress[-1]["of"] == 200 and progress[-1]["step"] == "full_train"
    assert all(r["rmse"] > 0 and r["examples_per_second"] > 0 for r in progress)
    assert records[-1]["event"] == "summary" and records[-1]["figures"]["steps"] == 200
    assert os.path.exists(os.path.join(result["export_dir"], "saved_model.pb"))
    assert list(Path(out, "tensorboard", "train").glob("events.*"))


def test_copy_export_is_complete_and_leaves_no_temporary(trained, tmp_path):
    result, _ = trained
    target = tmp_path / "model"
    target.mkdir()  # kfp may pre-create the output directory
    full_train.copy_export(result["export_dir"], str(target))
    assert (target / "saved_model.pb").exists() and (target / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def fare_mean(staged) -> float:
    return stage_data_stats(staged)["fare_amount"]["mean"]


def stage_data_stats(staged):
    from trainer import validation

    return validation.scan(os.path.join(staged["train"], "*.csv")).as_dict()["columns"]


def test_verify_blesses_a_good_model_and_writes_a_report(trained, staged, tmp_path):
    result, out = trained
    verdict = verify_export.verify(result["export_dir"], staged["test"], train_fare_mean=fare_mean(staged), training_dir=out, **CHECKS)
    assert verdict.blessed, verdict.reason
    assert verdict.metrics["test_rmse"] < verdict.metrics["distance_rule_rmse"] < verdict.metrics["mean_predictor_rmse"]
    assert verdict.metrics["test_json_fare"] > 0
    # Nothing deployed: the candidate alone per slice, recorded for deploy's record and Vertex's evaluation import.
    assert [row["slice"] for row in verdict.details["slices"][:2]] == ["all trips", "0-2 km"]
    assert all("champion" not in row for row in verdict.details["slices"])
    assert 'aria-label="training curve"' in verdict.report_html and "Blessed" in verdict.report_html
    assert 'aria-label="predicted against actual fare"' in verdict.report_html and report.RUN_MARKER in verdict.report_html
    assert len(verify_export.read_loss_curve(out)["train"]) >= 2


def test_verify_reports_the_gradient_boosted_baseline_and_can_require_it(trained, staged):
    result, _ = trained
    args = (result["export_dir"], staged["test"])
    verdict = verify_export.verify(*args, train_fare_mean=fare_mean(staged), train_path=staged["train"], **CHECKS)
    trees = verdict.metrics["gbt_baseline_rmse"]
    assert 0 < trees < verdict.metrics["mean_predictor_rmse"]
    detail = dict((name, d) for name, _, d in verdict.checks)[verify_export.BASELINE_CHECK]
    assert "reported only (require_beat_baseline is off)" in detail and f"${trees:.3f}" in detail
    assert "gradient-boosted trees" in verdict.report_html and f"gradient-boosted trees ${trees:.2f}" in verdict.reason
    required = verify_export.verify(
        *args, train_fare_mean=fare_mean(staged), train_path=staged["train"], require_beat_baseline=True, **CHECKS
    )
    assert required.blessed == (required.metrics["test_rmse"] < trees), required.reason


def test_verify_refuses_above_the_threshold(trained, staged):
    result, _ = trained
    verdict = verify_export.verify(result["export_dir"], staged["test"], train_fare_mean=fare_mean(staged), **{**CHECKS, "max_rmse": 0.5})
    assert not verdict.blessed
    assert "test RMSE at most max_rmse $0.50" in verdict.reason


def test_verify_compares_with_the_deployed_model(trained, staged, tmp_path):
    result, _ = trained
    serving = tmp_path / "serving"
    deploy.publish(result["export_dir"], str(serving), "taxifare", {"run": "first"})
    verdict = verify_export.verify(
        result["export_dir"], staged["test"], train_fare_mean=fare_mean(staged), serving_root=str(serving), **CHECKS
    )
    # The same model is not better than itself; both were scored on the same rows, and the line says so.
    assert not verdict.blessed and verdict.reason.startswith("not better overall: ")
    assert f"on the same {len(os.listdir(staged['test'])) and verdict.metrics['test_examples']:,} rows" in verdict.reason
    assert verdict.metrics["deployed_rmse"] == pytest.approx(verdict.metrics["test_rmse"])
    assert verdict.metrics["rmse_difference"] == 0.0


def test_verify_skips_and_names_a_broken_served_version(trained, staged, tmp_path):
    # As deploy's compare-and-publish: a served version that cannot be loaded is skipped and
    # named, the comparison uses the next good one, and no "$inf" appears anywhere.
    result, _ = trained
    serving = tmp_path / "serving"
    deploy.publish(result["export_dir"], str(serving), "taxifare", {"run": "good"})
    broken = deploy.publish(result["export_dir"], str(serving), "taxifare", {"run": "broken"})
    (Path(broken.path) / "saved_model.pb").write_bytes(b"not a SavedModel")
    (serving / "taxifare" / "3").mkdir()  # a numbered folder with no saved_model.pb at all
    assert deploy.latest_version_dir(str(serving), "taxifare") == broken.path  # the default route serves version 2
    args = (result["export_dir"], staged["test"])
    verdict = verify_export.verify(*args, train_fare_mean=fare_mean(staged), serving_root=str(serving), **CHECKS)
    # The same model as version 1: not strictly better than the next good one.
    assert not verdict.blessed and "inf" not in verdict.reason.lower()
    detail = dict((name, d) for name, _, d in verdict.checks)[verify_export.GATE_CHECK]
    assert "version 1's" in detail and "version 2: cannot be loaded" in detail and "version 3: no saved_model.pb" in detail
    assert verdict.metrics["deployed_rmse"] == pytest.approx(verdict.metrics["test_rmse"])

    shutil.rmtree(serving / "taxifare" / "1")  # nothing good left: nothing deployed to compare with
    verdict = verify_export.verify(*args, train_fare_mean=fare_mean(staged), serving_root=str(serving), **CHECKS)
    assert verdict.blessed, verdict.reason
    assert "nothing deployed" in verdict.reason and "version 2: cannot be loaded" in verdict.reason
    assert "deployed_rmse" not in verdict.metrics and "$inf" not in verdict.reason + verdict.report_html


def test_signature_check_names_the_problem(trained):
    import tensorflow as tf

    from trainer.schema import Variant

    fn = tf.saved_model.load(trained[0]["export_dir"]).signatures["serving_default"]
    assert evaluation.check_signature(fn, Variant.LAB) == []
    problems = evaluation.check_signature(fn, Variant.DATETIME)
    assert problems and "pickup_datetime" in problems[0]


def test_publish_numbers_versions_and_records_metadata(trained, tmp_path):
    export = trained[0]["export_dir"]
    first = deploy.publish(export, str(tmp_path), "taxifare", {"run": "a"})
    second = deploy.publish(export, str(tmp_path), "taxifare", {"run": "b"})
    assert (first.version, second.version) == (1, 2)
    record = json.loads((Path(second.path) / deploy.DEPLOY_FILE).read_text())
    assert record["run"] == "b" and record["version"] == 2
    assert deploy.latest_version_dir(str(tmp_path), "taxifare") == second.path
    assert sorted(os.listdir(tmp_path / "taxifare")) == [".deploy.lock", "1", "2"]


def test_concurrent_publishes_never_share_a_version(trained, tmp_path):
    export = trained[0]["export_dir"]
    results, errors = [], []

    def work(i: int) -> None:
        try:
            results.append(deploy.publish(export, str(tmp_path), "taxifare", {"run": i}).version)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results) == [1, 2, 3, 4, 5, 6]
    for v in results:
        assert (tmp_path / "taxifare" / str(v) / "saved_model.pb").exists()


@pytest.mark.parametrize(
    ("root", "name", "message"),
    [("", "taxifare", "serving_root is empty"), ("X", "../x", "model_name '../x' must be letters")],
)
def test_publish_rejects_bad_settings(trained, tmp_path, root, name, message):
    with pytest.raises(InputError, match=message):
        deploy.publish(trained[0]["export_dir"], str(tmp_path / root) if root else "", name, {})


@pytest.mark.slow
def test_verify_imports_no_tensorflow_in_its_own_process_and_reads_the_curve_as_tensorflow_does(trained, staged, tmp_path):
    # Its TensorFlow work runs in one child process (the stock loader first, then TF2) beside the
    # infra-validation server: the step's own process pays no TensorFlow start (2-4 s of CPU).
    import subprocess
    import sys

    from conftest import ROOT

    result, out = trained
    script = (
        "import json, sys\n"
        "from components.verify_export import logic as verify_export\n"
        f"v = verify_export.verify({result['export_dir']!r}, {staged['test']!r}, train_fare_mean=11.0, training_dir={out!r}, "
        f"max_rmse=100.0, model_name='taxifare', infra_validation=True, serving_root={str(tmp_path)!r})\n"
        "curve = verify_export.read_loss_curve(" + repr(out) + ")\n"
        "print(json.dumps({'tf': 'tensorflow.python' in sys.modules, 'checks': [[n, ok] for n, ok, _ in v.checks], 'curve': curve}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["tf"] is False
    checks = dict(answer["checks"])
    assert checks[verify_export.STOCK_CHECK] and checks["serves over REST and gRPC with in-process answers (infra validation)"]
    assert all(checks.values()), checks

    import tensorflow as tf

    expected = {}
    for split in ("train", "eval"):
        points = []
        for path in sorted((Path(out) / "tensorboard" / split).glob("events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                points += [[event.step, float(tf.make_ndarray(v.tensor))] for v in event.summary.value if v.tag == "rmse"]
        expected[split] = sorted(points)
    assert answer["curve"] == expected and expected["eval"]
