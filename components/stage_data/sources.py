"""Fresh data for scheduled retraining: date-partitioned CSV folders and the public BigQuery trips table.

Used by the ``stage_data`` step; no kfp here, heavy libraries imported inside the functions.

* :func:`dated_files` lists ``PREFIX/dt=YYYY-MM-DD/*.csv`` for the N days before a run's
  scheduled time (``gs://`` through google-cloud-storage, which honours
  ``STORAGE_EMULATOR_HOST``, or a local directory of the same layout).
* :func:`bigquery_query` writes the course's query on the NYC yellow-trips table for a date
  window, hash-sampled with ``FARM_FINGERPRINT`` and filtered as the course did, with the
  columns in :mod:`trainer.schema`'s order.
* :func:`export_bigquery` runs such a query as ``EXPORT DATA`` to CSV files under a ``gs://`` prefix.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import re
from typing import Any

from base import storage
from base.checks import parse_time
from base.errors import InputError
from trainer.schema import DATETIME, DATETIME_FORMAT, KEY, LABEL, PASSENGERS, RANGES, Variant

#: The public NYC yellow-taxi trips, one table per year 2009-2016 (TIMESTAMP pickup_datetime).
#: The course's ``nyc-tlc.yellow.trips`` held the same columns and is no longer public.
PUBLIC_TRIPS_TABLE = "bigquery-public-data.new_york.tlc_yellow_trips_*"
#: The course's sampling: keep 1 trip in EVERY by a hash of its pickup time.
DEFAULT_SAMPLE_EVERY = 1000
PARTITION_PREFIX = "dt="
#: Each schema column as an expression on the trips table (the course's label is fare plus tolls).
SOURCE_COLUMNS = {
    LABEL: "fare_amount + tolls_amount",
    DATETIME: f"FORMAT_TIMESTAMP('{DATETIME_FORMAT}', CAST(pickup_datetime AS TIMESTAMP))",
    "pickuplon": "pickup_longitude",
    "pickuplat": "pickup_latitude",
    "dropofflon": "dropoff_longitude",
    "dropofflat": "dropoff_latitude",
    PASSENGERS: "passenger_count * 1.0",
    KEY: (
        "CONCAT(CAST(pickup_datetime AS STRING), CAST(pickup_longitude AS STRING), CAST(pickup_latitude AS STRING), "
        "CAST(dropoff_latitude AS STRING), CAST(dropoff_longitude AS STRING))"
    ),
}


def parse_scheduled_time(value: str | dt.datetime | None, *, now: dt.datetime | None = None) -> dt.datetime:
    """The run's scheduled time as an aware UTC datetime.

    Accepts what Vertex substitutes for ``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER``
    (RFC 3339, e.g. ``2026-11-28T06:00:00Z``, possibly with fractional seconds). An empty
    value, or the placeholder left unresolved (a run started by hand, or under kfp.local),
    means now.

    Raises:
        InputError: for a value that is neither empty, a placeholder nor an RFC 3339 time.
    """
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

    parsed = parse_time("scheduled time", value or "")
    return parsed or (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)


def window_days(window: int, scheduled_time: str | dt.datetime | None, *, now: dt.datetime | None = None) -> list[dt.date]:
    """The ``window`` calendar days (UTC) before the scheduled day, oldest first.

    The scheduled day itself is excluded: a run scheduled at 06:00 on the 28th trains on the
    complete days up to the 27th, never on a partition that is still being written.

    Raises:
        InputError: for a window under 1 day or a bad scheduled time.
    """
    if window < 1:
        raise InputError(f"the data window must be at least 1 day (got {window})")
    day = parse_scheduled_time(scheduled_time, now=now).date()
    return [day - dt.timedelta(days=n) for n in range(window, 0, -1)]


def dated_files(
    prefix: str, window_days: int, scheduled_time: str | dt.datetime | None, *, pattern: str = "*.csv", now: dt.datetime | None = None
) -> list[str]:
    """The CSV files of the ``window_days`` daily partitions before the scheduled time.

    Partitions are folders ``<prefix>/dt=YYYY-MM-DD/`` holding CSV files; ``prefix`` is a
    ``gs://bucket/path`` or a local directory. Missing days are skipped (a holiday with no
    export), but a window with no file at all is an error.

    Args:
        prefix: the folder holding the ``dt=`` partitions.
        window_days: how many days before the scheduled day to take.
        scheduled_time: the run's scheduled time (see :func:`parse_scheduled_time`).
        pattern: file-name glob inside each partition.
        now: the time used when ``scheduled_time`` is empty (default: the clock).

    Returns:
        The files, oldest partition first, sorted by name within a partition.

    Raises:
        InputError: a bad prefix, window or time, or no file in the window.
    """
    if not prefix or not prefix.strip():
        raise InputError("the dated source is empty: pass a folder of dt=YYYY-MM-DD partitions, e.g. gs://BUCKET/taxi")
    base = prefix.strip().rstrip("/")
    days = _window(window_days, scheduled_time, now)
    files: list[str] = []
    for day in days:
        folder = f"{base}/{PARTITION_PREFIX}{day.isoformat()}"
        if storage.is_gcs(base):
            files.extend(_gcs_glob(f"{folder}/{pattern}"))
        else:
            import glob

            files.extend(sorted(p for p in glob.glob(os.path.join(folder, pattern)) if os.path.isfile(p)))
    if not files:
        raise InputError(
            f"no {pattern} file under {base}/{PARTITION_PREFIX}YYYY-MM-DD for {days[0]} to {days[-1]} "
            f"({window_days} days before {days[-1] + dt.timedelta(days=1)}): check the prefix, or widen the window"
        )
    return files


def _window(window: int, scheduled_time: str | dt.datetime | None, now: dt.datetime | None) -> list[dt.date]:
    return window_days(window, scheduled_time, now=now)


def _gcs_glob(pattern: str) -> list[str]:

    bucket, name = storage.split_gcs(pattern)
    folder = name.rsplit("/", 1)[0] + "/"
    blobs = storage.gcs_client().list_blobs(bucket, prefix=folder)
    return sorted(f"gs://{bucket}/{b.name}" for b in blobs if fnmatch.fnmatchcase(b.name, name) and not b.name.endswith("/"))


def _date(value: str | dt.date, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise InputError(f"{name} {value!r} is not a date: write YYYY-MM-DD") from exc


def bigquery_query(
    start_date: str | dt.date,
    end_date: str | dt.date,
    *,
    sample_every: int = DEFAULT_SAMPLE_EVERY,
    sample_index: int = 1,
    datetime_layout: bool = True,
    limit: int | None = None,
    table: str = PUBLIC_TRIPS_TABLE,
) -> str:
    """The course's query on the NYC yellow-trips table, for pickups in ``[start_date, end_date)`` (UTC).

    As in the course: the label is ``fare_amount + tolls_amount``; trips are kept when
    ``MOD(ABS(FARM_FINGERPRINT(CAST(pickup_datetime AS STRING))), sample_every) = sample_index``
    (so disjoint ``sample_index`` values give disjoint samples, e.g. for train and eval), with
    a positive distance and every column inside its :data:`trainer.schema.RANGES` interval
    (the label, both ends in the New York box, the passengers: the validator's own ranges, see
    :func:`range_filters`). The columns come out in :mod:`trainer.schema`'s order, with
    ``pickup_datetime`` formatted as ``2011-01-28 20:42:59 UTC`` and the course's key (the
    pickup time and coordinates concatenated).

    Args:
        start_date: first pickup day (inclusive), ``YYYY-MM-DD``.
        end_date: day after the last pickup day (exclusive).
        sample_every: keep one trip in this many (1 keeps all).
        sample_index: which residue of the hash to keep, ``0 <= sample_index < sample_every``
            (ignored when ``sample_every`` is 1).
        datetime_layout: include ``pickup_datetime`` (the course's later layout) or not (the lab's).
        limit: at most this many rows.
        table: the trips table; a name ending in ``*`` is a wildcard table, restricted to the
            window's years with ``_TABLE_SUFFIX``.

    Returns:
        Standard SQL text.

    Raises:
        InputError: for an empty or backwards window, or bad sampling or limit.
    """
    start, end = _date(start_date, "start date"), _date(end_date, "end date")
    _check_query(start, end, sample_every, sample_index, limit, table)
    columns = (Variant.DATETIME if datetime_layout else Variant.LAB).columns
    select = ",\n  ".join(f"{SOURCE_COLUMNS[c]} AS {c}" for c in columns)
    where = [
        f"CAST(pickup_datetime AS TIMESTAMP) >= TIMESTAMP '{start.isoformat()} 00:00:00+00'",
        f"CAST(pickup_datetime AS TIMESTAMP) < TIMESTAMP '{end.isoformat()} 00:00:00+00'",
    ]
    if table.endswith("*"):
        where.append(f"_TABLE_SUFFIX BETWEEN '{start.year}' AND '{(end - dt.timedelta(days=1)).year}'")
    if sample_every > 1:
        where.append(f"MOD(ABS(FARM_FINGERPRINT(CAST(pickup_datetime AS STRING))), {sample_every}) = {sample_index}")
    where += ["trip_distance > 0", *range_filters()]
    sql = f"SELECT\n  {select}\nFROM `{table}`\nWHERE\n  " + "\n  AND ".join(where)
    if limit is not None:
        sql += f"\nLIMIT {int(limit)}"
    return sql


def range_filters() -> list[str]:
    """The SQL conditions of :data:`trainer.schema.RANGES` on the trips table's columns (closed intervals)."""
    out = []
    for column, valid in RANGES.items():
        out += [f"{SOURCE_COLUMNS[column]} >= {valid.low:g}", f"{SOURCE_COLUMNS[column]} <= {valid.high:g}"]
    return out


def _check_query(start: dt.date, end: dt.date, sample_every: int, sample_index: int, limit: int | None, table: str) -> None:
    if end <= start:
        raise InputError(f"the BigQuery window is empty: end date {end} must be after start date {start}")
    if sample_every < 1:
        raise InputError(f"sample_every must be at least 1 (got {sample_every})")
    if sample_every > 1 and not 0 <= sample_index < sample_every:
        raise InputError(f"sample_index must be in 0..{sample_every - 1} (got {sample_index})")
    if limit is not None and limit < 1:
        raise InputError(f"limit must be positive (got {limit})")
    if not re.fullmatch(r"[A-Za-z0-9_.*-]+", table):
        raise InputError(f"table {table!r} is not a BigQuery table name such as project.dataset.table")


def export_statement(query: str, destination_uri_prefix: str) -> str:
    """``EXPORT DATA`` of ``query`` as headerless CSV files ``<prefix>/part-*.csv``.

    Raises:
        InputError: when the destination is not a ``gs://`` folder.
    """
    prefix = destination_uri_prefix.strip().rstrip("/")
    if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]+[a-z0-9](/[^*'\\]*)?", prefix):
        raise InputError(f"BigQuery export destination {destination_uri_prefix!r} must be a gs://BUCKET/folder (no wildcard, no quote)")
    return f"EXPORT DATA OPTIONS(\n  uri='{prefix}/part-*.csv',\n  format='CSV',\n  header=false,\n  overwrite=true\n) AS\n{query}"


def export_bigquery(query: str, destination_uri_prefix: str, *, project: str, location: str = "US", client: Any = None) -> list[str]:
    """Run ``query`` into CSV files under ``destination_uri_prefix`` (``EXPORT DATA``) and list them.

    Args:
        query: a SELECT, e.g. from :func:`bigquery_query`.
        destination_uri_prefix: ``gs://`` folder for the files (the pipeline root of the run).
        project: project that runs (and pays for) the query.
        location: BigQuery location of the source data (the public tables are in ``US``).
        client: a ``google.cloud.bigquery.Client`` (default: one for ``project``).

    Returns:
        The ``gs://`` URIs written, sorted.

    Raises:
        InputError: for a missing project, a bad destination, or when the export wrote no file.
    """
    if not project:
        raise InputError("missing project for the BigQuery export: pass the project that runs the query")
    statement = export_statement(query, destination_uri_prefix)
    if client is None:
        from google.cloud import bigquery

        client = bigquery.Client(project=project, location=location)
    client.query(statement, location=location).result()

    prefix = destination_uri_prefix.strip().rstrip("/")
    try:
        return storage.expand(f"{prefix}/part-*.csv", what="BigQuery export")
    except InputError as exc:
        raise InputError(f"the BigQuery export wrote no file under {prefix}: the window or sample held no trip") from exc
