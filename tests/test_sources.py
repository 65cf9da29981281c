"""Fresh-data sources: dated gs:// partitions on a real GCS emulator, the BigQuery query text."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from _gcs import make_bucket, upload

from base import storage
from base.errors import InputError
from components.stage_data import sources
from trainer import validation
from trainer.schema import Variant

ROW = "12.5,-73.99,40.75,-73.98,40.76,1,k{}\n"


# ------------------------------------------------------------------ scheduled time and window


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-28T06:00:00Z", dt.datetime(2026, 11, 28, 6, tzinfo=dt.UTC)),
        ("2026-11-28T06:00:00.123456789Z", dt.datetime(2026, 11, 28, 6, 0, 0, 123456, tzinfo=dt.UTC)),
        ("2026-11-28T01:00:00-05:00", dt.datetime(2026, 11, 28, 6, tzinfo=dt.UTC)),
    ],
)
def test_scheduled_time_parses_rfc3339(value, expected):
    assert sources.parse_scheduled_time(value) == expected


@pytest.mark.parametrize("value", ["", None, "{{$.pipeline_job_schedule_time_utc}}"])
def test_empty_or_unresolved_scheduled_time_means_now(value):
    now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    assert sources.parse_scheduled_time(value, now=now) == now


def test_bad_scheduled_time_is_one_clear_error():
    with pytest.raises(InputError, match="not an RFC 3339 time"):
        sources.parse_scheduled_time("yesterday")


def test_window_is_the_days_before_the_scheduled_day():
    days = sources.window_days(3, "2026-03-01T06:00:00Z")  # across the end of February
    assert days == [dt.date(2026, 2, 26), dt.date(2026, 2, 27), dt.date(2026, 2, 28)]
    with pytest.raises(InputError, match="at least 1 day"):
        sources.window_days(0, "2026-03-01T06:00:00Z")


# ------------------------------------------------------------------ dated_files, local and gs://


def test_dated_files_local(tmp_path):
    for day in ("2026-11-25", "2026-11-26", "2026-11-27", "2026-11-28"):
        (tmp_path / f"dt={day}").mkdir()
        (tmp_path / f"dt={day}" / "part-0.csv").write_text(ROW.format(day))
    (tmp_path / "dt=2026-11-27" / "notes.txt").write_text("not data")
    files = sources.dated_files(str(tmp_path), 2, "2026-11-28T06:00:00Z")
    assert [f.split("/")[-2] for f in files] == ["dt=2026-11-26", "dt=2026-11-27"]


def test_dated_files_on_the_gcs_emulator(gcs):
    make_bucket(gcs, "dated")
    for day in ("2026-11-20", "2026-11-25", "2026-11-27", "2026-11-28"):
        upload(gcs, f"gs://dated/taxi/dt={day}/part-1.csv", ROW.format(day))
        upload(gcs, f"gs://dated/taxi/dt={day}/part-0.csv", ROW.format(day))
    upload(gcs, "gs://dated/taxi/dt=2026-11-27/_SUCCESS", "")
    upload(gcs, "gs://dated/taxi/dt=2026-11-27x/part-0.csv", ROW.format("x"))  # not a partition of the window
    files = sources.dated_files("gs://dated/taxi/", 3, "2026-11-28T06:00:00Z")
    assert files == [
        "gs://dated/taxi/dt=2026-11-25/part-0.csv",
        "gs://dated/taxi/dt=2026-11-25/part-1.csv",
        "gs://dated/taxi/dt=2026-11-27/part-0.csv",
        "gs://dated/taxi/dt=2026-11-27/part-1.csv",
    ]
    report = validation.scan(files)  # the staged files read through the same client
    assert report.valid == 4


def test_empty_window_on_the_gcs_emulator_names_the_days(gcs):
    make_bucket(gcs, "stale")
    upload(gcs, "gs://stale/taxi/dt=2026-01-01/part-0.csv", ROW.format(1))
    with pytest.raises(InputError, match=r"2026-11-21 to 2026-11-27 \(7 days before 2026-11-28\)"):
        sources.dated_files("gs://stale/taxi", 7, "2026-11-28T06:00:00Z")


def test_storage_expand_and_scan_on_the_gcs_emulator(gcs, real_valid):
    make_bucket(gcs, "taxi-data")
    text = real_valid.read_text()
    upload(gcs, "gs://taxi-data/dir/a.csv", text)
    upload(gcs, "gs://taxi-data/dir/b.csv", text)
    upload(gcs, "gs://taxi-data/dir/sub/c.txt", "x")
    files = storage.expand("gs://taxi-data/dir/*.csv")
    assert files == ["gs://taxi-data/dir/a.csv", "gs://taxi-data/dir/b.csv"]
    report = validation.scan("gs://taxi-data/dir/*.csv")
    assert report.rows == 2 * len(text.splitlines())
    with pytest.raises(InputError, match="no file matches"):
        storage.expand("gs://taxi-data/none/*.csv")


# ------------------------------------------------------------------ BigQuery query text


def _where(sql: str) -> list[str]:
    return [c.strip() for c in sql.split("WHERE", 1)[1].split("LIMIT")[0].split("\n  AND ")]


def test_query_columns_follow_the_schema_order():
    for layout, variant in ((True, Variant.DATETIME), (False, Variant.LAB)):
        sql = sources.bigquery_query("2015-01-01", "2015-02-01", datetime_layout=layout)
        select = sql.split("FROM")[0]
        aliases = re.findall(r" AS (\w+)(?:,|\n)", select + "\n")
        assert tuple(a for a in aliases if a in variant.columns or a in Variant.DATETIME.columns) == variant.columns


def test_query_has_the_course_label_sampling_and_filters():
    sql = sources.bigquery_query("2015-01-01", "2015-02-01", sample_every=1000, sample_index=1)
    assert "fare_amount + tolls_amount AS fare_amount" in sql
    assert "passenger_count * 1.0 AS passengers" in sql
    assert "pickup_longitude AS pickuplon" in sql
    where = _where(sql)
    assert "MOD(ABS(FARM_FINGERPRINT(CAST(pickup_datetime AS STRING))), 1000) = 1" in where
    for condition in (
        "trip_distance > 0",
        "fare_amount + tolls_amount >= 2.5",
        "fare_amount + tolls_amount <= 500",
        "pickup_longitude >= -78",
        "pickup_longitude <= -70",
        "dropoff_longitude >= -78",
        "dropoff_longitude <= -70",
        "pickup_latitude >= 37",
        "pickup_latitude <= 45",
        "dropoff_latitude >= 37",
        "dropoff_latitude <= 45",
        "passenger_count * 1.0 >= 1",
        "passenger_count * 1.0 <= 9",
    ):
        assert condition in where


def test_query_filters_follow_the_schema_ranges(monkeypatch):
    """The validator's ranges are the query's: change one in the schema and the SQL follows."""
    from trainer import schema

    monkeypatch.setitem(schema.RANGES, schema.PASSENGERS, schema.Range(1.0, 6.0))
    where = _where(sources.bigquery_query("2015-01-01", "2015-02-01"))
    assert "passenger_count * 1.0 <= 6" in where and "passenger_count * 1.0 <= 9" not in where


def test_query_window_is_half_open_and_prunes_wildcard_years():
    sql = sources.bigquery_query(dt.date(2014, 12, 25), "2015-01-01", limit=10)
    where = _where(sql)
    assert "CAST(pickup_datetime AS TIMESTAMP) >= TIMESTAMP '2014-12-25 00:00:00+00'" in where
    assert "CAST(pickup_datetime AS TIMESTAMP) < TIMESTAMP '2015-01-01 00:00:00+00'" in where
    assert "_TABLE_SUFFIX BETWEEN '2014' AND '2014'" in where
    assert sql.endswith("LIMIT 10")
    one_table = sources.bigquery_query("2015-01-01", "2015-01-02", table="my-project.taxi.trips", sample_every=1)
    assert "_TABLE_SUFFIX" not in one_table and "FARM_FINGERPRINT" not in one_table


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_date": "2015-02-01", "end_date": "2015-01-01"}, "window is empty"),
        ({"start_date": "2015-01-01", "end_date": "2015-01-01"}, "window is empty"),
        ({"start_date": "Jan 1", "end_date": "2015-01-01"}, "start date 'Jan 1' is not a date"),
        ({"start_date": "2015-01-01", "end_date": "2015-02-01", "sample_index": 5, "sample_every": 5}, "sample_index must be in 0..4"),
        ({"start_date": "2015-01-01", "end_date": "2015-02-01", "table": "x; DROP"}, "not a BigQuery table name"),
    ],
)
def test_bad_query_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        sources.bigquery_query(**kwargs)


class _RecordingBigQuery:
    """Stands in for the BigQuery service: runs the export by writing files to the GCS emulator."""

    def __init__(self, gcs):
        self.gcs, self.statements = gcs, []

    def query(self, statement, location=None):
        self.statements.append((statement, location))
        uri = re.search(r"uri='([^']+)'", statement).group(1)
        for i in range(2):
            upload(self.gcs, uri.replace("*", f"{i:012d}"), ROW.format(i))
        return self

    def result(self):
        return []


def test_export_statement_and_listing_on_the_gcs_emulator(gcs):
    make_bucket(gcs, "root")
    query = sources.bigquery_query("2015-01-01", "2015-01-08")
    client = _RecordingBigQuery(gcs)
    files = sources.export_bigquery(query, "gs://root/run-1/bq/", project="p", client=client)
    assert files == ["gs://root/run-1/bq/part-000000000000.csv", "gs://root/run-1/bq/part-000000000001.csv"]
    statement, location = client.statements[0]
    assert location == "US"
    assert statement.startswith("EXPORT DATA OPTIONS(\n  uri='gs://root/run-1/bq/part-*.csv',\n  format='CSV',\n  header=false")
    assert statement.endswith(query)
    with pytest.raises(InputError, match="must be a gs://BUCKET/folder"):
        sources.export_bigquery(query, "/tmp/out", project="p", client=client)
