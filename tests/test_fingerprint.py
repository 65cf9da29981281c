"""The data fingerprint: what the sources resolve to, cheap, and sensitive to exactly the changes that matter."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from _gcs import make_bucket, upload

from components.impl.fingerprint import data_fingerprint, describe_sources
from trainer.storage import InputError

ROW = "12.5,-73.98,40.75,-73.95,40.78,1,k{}\n"
NOW = dt.datetime(2026, 11, 28, 6, 0, tzinfo=dt.UTC)


def _files(tmp_path):
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text(ROW.format(name) * 5)
    return str(tmp_path / "*.csv")


def test_unchanged_files_keep_the_fingerprint(tmp_path):
    pattern = _files(tmp_path)
    assert data_fingerprint(pattern) == data_fingerprint(pattern)


def test_rewritten_file_changes_it_even_with_the_same_size(tmp_path):
    pattern = _files(tmp_path)
    before = data_fingerprint(pattern)
    path = tmp_path / "a.csv"
    stat = os.stat(path)
    path.write_text(path.read_text().replace("12.5", "37.5"))  # same size: the tripled fares
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert os.stat(path).st_size == stat.st_size
    assert data_fingerprint(pattern) != before


def test_added_file_changes_it(tmp_path):
    pattern = _files(tmp_path)
    before = data_fingerprint(pattern)
    (tmp_path / "c.csv").write_text(ROW.format("c"))
    assert data_fingerprint(pattern) != before


def test_eval_and_test_sources_count(tmp_path):
    pattern = _files(tmp_path)
    (tmp_path / "valid.txt").write_text(ROW.format("v"))
    with_eval = data_fingerprint(pattern, str(tmp_path / "valid.txt"))
    assert with_eval != data_fingerprint(pattern)
    (tmp_path / "valid.txt").write_text(ROW.format("v") * 2)
    assert data_fingerprint(pattern, str(tmp_path / "valid.txt")) != with_eval


def test_synthetic_is_constant_and_reads_nothing():
    assert describe_sources("synthetic") == {"source": {"kind": "synthetic"}, "eval_source": None, "test_source": None}
    assert data_fingerprint("synthetic") == data_fingerprint(" synthetic ")


def test_bigquery_is_the_window_bounds():
    described = describe_sources("bigquery", window_days=7, now=NOW)
    assert described["source"] == {"kind": "bigquery", "first_day": "2026-11-21", "last_day": "2026-11-27"}
    same_day = data_fingerprint("bigquery", window_days=7, scheduled_time="2026-11-28T23:00:00Z")
    assert data_fingerprint("bigquery", window_days=7, scheduled_time="2026-11-28T06:00:00Z") == same_day
    assert data_fingerprint("bigquery", window_days=7, scheduled_time="2026-11-29T06:00:00Z") != same_day
    assert data_fingerprint("bigquery", window_days=6, scheduled_time="2026-11-28T06:00:00Z") != same_day


def test_dated_window_holds_bounds_and_files(tmp_path):
    for day in ("2026-11-26", "2026-11-27"):
        (tmp_path / f"dt={day}").mkdir()
        (tmp_path / f"dt={day}" / "part-0.csv").write_text(ROW.format(day))
    described = describe_sources(str(tmp_path), window_days=2, now=NOW)["source"]
    assert (described["first_day"], described["last_day"]) == ("2026-11-26", "2026-11-27")
    assert [os.path.basename(os.path.dirname(f[0])) for f in described["files"]] == ["dt=2026-11-26", "dt=2026-11-27"]
    before = data_fingerprint(str(tmp_path), window_days=2, now=NOW)
    (tmp_path / "dt=2026-11-27" / "part-1.csv").write_text(ROW.format("late"))  # a late file in the window
    assert data_fingerprint(str(tmp_path), window_days=2, now=NOW) != before


def test_missing_files_give_the_stage_data_message(tmp_path):
    with pytest.raises(InputError, match="no file matches the training data pattern"):
        data_fingerprint(str(tmp_path / "nothing*.csv"))
    with pytest.raises(InputError, match="no file matches the eval data pattern"):
        data_fingerprint("synthetic", str(tmp_path / "nothing*.csv"))


def test_gcs_objects_by_generation_on_the_emulator(gcs):
    make_bucket(gcs, "fp")
    upload(gcs, "gs://fp/taxi/a.csv", ROW.format("a") * 3)
    upload(gcs, "gs://fp/taxi/b.csv", ROW.format("b") * 3)
    upload(gcs, "gs://fp/other/c.csv", ROW.format("c"))
    described = describe_sources("gs://fp/taxi/*.csv")["source"]
    assert [f[0] for f in described["files"]] == ["gs://fp/taxi/a.csv", "gs://fp/taxi/b.csv"]
    assert all(f[1] == len(ROW.format("a")) * 3 and f[2] > 0 for f in described["files"])
    before = data_fingerprint("gs://fp/taxi/*.csv")
    assert data_fingerprint("gs://fp/taxi/*.csv") == before
    upload(gcs, "gs://fp/taxi/a.csv", ROW.format("a") * 3)  # same bytes, a new generation
    assert data_fingerprint("gs://fp/taxi/*.csv") != before
