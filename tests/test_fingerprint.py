"""The data fingerprint: what the sources resolve to, cheap, and sensitive to exactly the changes that matter."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from _gcs import make_bucket, upload

from base.errors import InputError
from components.stage_data.fingerprint import data_fingerprint, describe_sources

ROW = "12.5,-73.98,40.75,-73.95,40.78,1,k{}\n"
NOW = dt.datetime(2026, 11, 28, 6, 0, tzinfo=dt.UTC)


def _files(tmp_path):
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text(ROW.format(name) * 5)
    return str(tmp_path / "*.csv")


def test_unchanged_files_keep_the_fingerprint(tmp_path):
    pattern = _files(tmp_path)
    assert data_fingerprint({"source": pattern}) == data_fingerprint({"source": pattern})


def test_rewritten_file_changes_it_even_with_the_same_size(tmp_path):
    pattern = _files(tmp_path)
    before = data_fingerprint({"source": pattern})
    path = tmp_path / "a.csv"
    stat = os.stat(path)
    path.write_text(path.read_text().replace("12.5", "37.5"))  # same size: the tripled fares
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert os.stat(path).st_size == stat.st_size
    assert data_fingerprint({"source": pattern}) != before


def test_added_file_changes_it(tmp_path):
    pattern = _files(tmp_path)
    before = data_fingerprint({"source": pattern})
    (tmp_path / "c.csv").write_text(ROW.format("c"))
    assert data_fingerprint({"source": pattern}) != before


def test_eval_and_test_sources_count(tmp_path):
    pattern = _files(tmp_path)
    (tmp_path / "valid.txt").write_text(ROW.format("v"))
    with_eval = data_fingerprint({"source": pattern, "eval_source": str(tmp_path / "valid.txt")})
    assert with_eval != data_fingerprint({"source": pattern})
    (tmp_path / "valid.txt").write_text(ROW.format("v") * 2)
    assert data_fingerprint({"source": pattern, "eval_source": str(tmp_path / "valid.txt")}) != with_eval


def test_synthetic_is_constant_and_reads_nothing():
    assert describe_sources({"source": "synthetic"}) == {"source": {"kind": "synthetic"}, "eval_source": None, "test_source": None}
    assert data_fingerprint({"source": "synthetic"}) == data_fingerprint({"source": " synthetic "})


def test_bigquery_is_the_window_bounds():
    described = describe_sources({"source": "bigquery", "window_days": 7}, now=NOW)
    assert described["source"] == {"kind": "bigquery", "first_day": "2026-11-21", "last_day": "2026-11-27"}
    same_day = data_fingerprint({"source": "bigquery", "window_days": 7, "scheduled_time": "2026-11-28T23:00:00Z"})
    assert data_fingerprint({"source": "bigquery", "window_days": 7, "scheduled_time": "2026-11-28T06:00:00Z"}) == same_day
    assert data_fingerprint({"source": "bigquery", "window_days": 7, "scheduled_time": "2026-11-29T06:00:00Z"}) != same_day
    assert data_fingerprint({"source": "bigquery", "window_days": 6, "scheduled_time": "2026-11-28T06:00:00Z"}) != same_day


def test_dated_window_holds_bounds_and_files(tmp_path):
    for day in ("2026-11-26", "2026-11-27"):
        (tmp_path / f"dt={day}").mkdir()
        (tmp_path / f"dt={day}" / "part-0.csv").write_text(ROW.format(day))
    described = describe_sources({"source": str(tmp_path), "window_days": 2}, now=NOW)["source"]
    assert (described["first_day"], described["last_day"]) == ("2026-11-26", "2026-11-27")
    assert [os.path.basename(os.path.dirname(f[0])) for f in described["files"]] == ["dt=2026-11-26", "dt=2026-11-27"]
    before = data_fingerprint({"source": str(tmp_path), "window_days": 2}, now=NOW)
    (tmp_path / "dt=2026-11-27" / "part-1.csv").write_text(ROW.format("late"))  # a late file in the window
    assert data_fingerprint({"source": str(tmp_path), "window_days": 2}, now=NOW) != before


def test_missing_files_give_the_stage_data_message(tmp_path):
    with pytest.raises(InputError, match="no file matches the training data pattern"):
        data_fingerprint({"source": str(tmp_path / "nothing*.csv")})
    with pytest.raises(InputError, match="no file matches the eval data pattern"):
        data_fingerprint({"source": "synthetic", "eval_source": str(tmp_path / "nothing*.csv")})


def test_gcs_objects_by_generation_on_the_emulator(gcs):
    make_bucket(gcs, "fp")
    upload(gcs, "gs://fp/taxi/a.csv", ROW.format("a") * 3)
    upload(gcs, "gs://fp/taxi/b.csv", ROW.format("b") * 3)
    upload(gcs, "gs://fp/other/c.csv", ROW.format("c"))
    described = describe_sources({"source": "gs://fp/taxi/*.csv"})["source"]
    assert [f[0] for f in described["files"]] == ["gs://fp/taxi/a.csv", "gs://fp/taxi/b.csv"]
    assert all(f[1] == len(ROW.format("a")) * 3 and f[2] > 0 for f in described["files"])
    before = data_fingerprint({"source": "gs://fp/taxi/*.csv"})
    assert data_fingerprint({"source": "gs://fp/taxi/*.csv"}) == before
    upload(gcs, "gs://fp/taxi/a.csv", ROW.format("a") * 3)  # same bytes, a new generation
    assert data_fingerprint({"source": "gs://fp/taxi/*.csv"}) != before


@pytest.mark.e2e
@pytest.mark.slow  # four kfp.local runs of the whole DAG: 4-7 minutes on this 2-core machine
def test_tripled_fares_retrain_and_the_drift_gate_through_kfp_local(tmp_path, real_train):
    """The issue's case: same glob, one file's fares tripled -> stage_data, smoke_train, full_train run again."""
    from pipeline.local_run import run_local

    data = tmp_path / "data"
    data.mkdir()
    rows = real_train.read_text().splitlines(keepends=True)
    (data / "a.csv").write_text("".join(rows[: len(rows) // 2]))
    (data / "b.csv").write_text("".join(rows[len(rows) // 2 :]))
    serving = tmp_path / "serving"

    # about the cache and the drift gate: the served-model check (infra validation) is test_pipeline_local's
    def run(**extra):
        lines: list[str] = []
        result = run_local(
            {
                "source": str(data / "*.csv"),
                "train_steps": 100,
                "smoke_steps": 5,
                "serving_root": str(serving),
                "infra_validation": False,
                **extra,
            },
            pipeline_root=str(tmp_path / "root"),
            log_path=str(tmp_path / "run.log"),
            console=lines.append,
        )
        return result, lines

    first, lines = run()
    assert first.ok, (first.failed_step, lines)
    assert first.steps["full_train"].status == "succeeded" and first.steps["deploy"].status == "succeeded"
    assert first.steps["check_drift"].summary == "no comparison: nothing deployed yet"
    assert (serving / "taxifare" / "1" / "assets.extra" / "taxifare_train_stats.json").exists()  # the statistics travel with the version

    again, lines = run()  # untouched data: still cached
    assert again.ok, (again.failed_step, lines)
    assert [again.steps[s].status for s in ("stage_data", "smoke_train", "tune", "full_train")] == ["cached"] * 4
    assert again.steps["check_drift"].status == "succeeded"  # never cached
    assert again.steps["check_drift"].figures["largest"] == 0.0

    a = data / "a.csv"
    a.write_text("".join(",".join([f"{float(r.split(',')[0]) * 3:.2f}", *r.split(",")[1:]]) for r in a.read_text().splitlines(True)))
    gated, lines = run(max_drift=0.05)
    assert not gated.ok and gated.failed_step == "check_drift"
    assert gated.steps["stage_data"].status == "succeeded"  # the new data missed the cache
    error = gated.steps["check_drift"].error
    assert "fare_amount" in error and "pickuplon" not in error and "--max-drift" in error, error
    assert gated.steps["full_train"].status != "succeeded" and not (serving / "taxifare" / "2").exists()

    accepted, lines = run()  # accept the new data: drift gate off (the default)
    assert accepted.ok, (accepted.failed_step, lines)
    assert accepted.steps["stage_data"].status == "cached"  # staged by the gated run, same data
    assert accepted.steps["smoke_train"].status == "succeeded" and accepted.steps["full_train"].status == "succeeded"
    assert "fare_amount" in accepted.steps["check_drift"].summary
    assert accepted.figure("full_train", "rmse") != pytest.approx(first.figure("full_train", "rmse"), abs=0.01)
    reports = sorted((tmp_path / "root").glob("taxifare-*/verify-export/report"), key=os.path.getmtime)
    page = reports[-1].read_text()  # the verification report shows both distributions, the fare first
    assert "<h2>Data drift</h2>" in page and page.index("<td>fare_amount</td>") < page.index("<td>pickuplon</td>")
