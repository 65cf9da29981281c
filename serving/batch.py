"""Batch prediction on this machine: score files of trips with a served version, into a folder shaped like Vertex AI's.

The version runs as the server runs it (:class:`serving.servable.Servable`: graph mode, one
session call per batch of ``batch_size`` rows) while a reader thread reads and checks the next
rows (:mod:`serving.batch_input`), so reading, checking and scoring overlap; ``workers`` > 1 starts
that many processes, each scoring every ``workers``-th shard. Memory stays bounded: a few pieces
of a shard are in flight at a time, whatever the input's size.

The output folder holds, per shard of ``shard_rows`` input lines, ``predictions_00001.jsonl``
(``{"instance": ..., "prediction": ...}`` per good row, the trip's ``key`` carried through) or
``predictions_00001.csv`` (the input columns plus ``predicted_fare``), and
``errors_00001.jsonl`` when some rows could not be scored (the instance and
``{"code", "message"}``); ``batch_summary.json`` at the end. A shard is written under
``.tmp-shards/`` and renamed into place, its predictions file last: a shard whose predictions
file exists is complete, and a rerun of the same job skips it (``.taxifare_batch_job.json``
says what the job is, so another job's folder is refused).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from base import layout, storage
from base.errors import InputError
from serving import batch_output as out
from serving.batch_formats import DEFAULT_BATCH_SIZE, DEFAULT_MAX_ERROR_FRACTION, DEFAULT_SHARD_ROWS, OUTPUT_FORMATS
from serving.batch_output import ShardDone
from serving.batch_shards import run_shards

#: Rows a job must have seen before the share of bad rows can stop it.
MIN_ROWS_FOR_ERROR_CHECK = 1000


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """One batch prediction job (everything the workers need; picklable)."""

    inputs: str
    output_dir: str
    model_dir: str
    version: int | None = None
    output_format: str = "jsonl"
    instances_format: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    shard_rows: int = DEFAULT_SHARD_ROWS
    workers: int = 1
    max_error_fraction: float = DEFAULT_MAX_ERROR_FRACTION
    check_ranges: bool = True

    def check(self) -> None:
        """Refuse settings that cannot work, one line each.

        Raises:
            InputError: naming the flag and a valid value.
        """
        if self.output_format not in OUTPUT_FORMATS:
            raise InputError(f"--format {self.output_format!r}: use one of {', '.join(OUTPUT_FORMATS)}")
        for flag, value in (("--batch-size", self.batch_size), ("--shard-rows", self.shard_rows), ("--workers", self.workers)):
            if value < 1:
                raise InputError(f"{flag} must be a positive integer, got {value}")
        if not 0 <= self.max_error_fraction <= 1:
            raise InputError(f"--max-error-fraction must be between 0 and 1, got {self.max_error_fraction}")
        if storage.is_gcs(self.output_dir):
            raise InputError(
                f"--output {self.output_dir}: write the local job's output to a local folder (or run it on Vertex AI with --model)"
            )
        storage.check_output_dir(self.output_dir, "--output")


def resolve_model(
    model_base_path: str | None, version: int | None = None, label: str | None = None, model_dir: str | None = None
) -> tuple[str, int | None]:
    """The version directory to score with, and its number (``None`` for a lone export directory).

    Without ``version`` or ``label``: the version the default route serves (``stable``, else the newest).

    Raises:
        InputError: no such version or label, or nothing deployed.
    """
    if model_dir is not None:
        if model_base_path is not None or version is not None or label is not None:
            raise InputError("--model-dir names one export: give it alone, or --model-base-path with --version or --label")
        if not layout.is_complete(model_dir):
            raise InputError(f"--model-dir {model_dir} holds no SavedModel (saved_model.pb): point at an exported model")
        return model_dir, None
    if model_base_path is None:
        raise InputError("say which model scores the rows: --model-base-path (with --version or --label) or --model-dir")
    if version is not None and label is not None:
        raise InputError("--version and --label both name a version: give one")
    versions = layout.list_versions(model_base_path)
    if not versions:
        raise InputError(f"--model-base-path {model_base_path} holds no complete version: deploy one (taxifare run) or pass --model-dir")
    try:
        labels = layout.read_labels(model_base_path)
    except layout.LayoutError as exc:
        raise InputError(str(exc)) from None
    if label is not None:
        layout.check_label(label)
        if label not in labels:
            raise InputError(f"--label {label}: {model_base_path} has no such label ({', '.join(sorted(labels)) or 'none set'})")
        version = labels[label]
    number = version if version is not None else layout.default_version(versions, labels)
    if number not in versions:
        raise InputError(
            f"version {number} is not a complete version of {model_base_path} (complete: {', '.join(map(str, sorted(versions)))})"
        )
    return versions[number], number


class Progress:
    """Counts of the shards done in this run, a progress line every few seconds, and the error-share stop."""

    def __init__(self, settings: BatchSettings, job: out.Job, emit: Callable[[str], None] | None, interval: float = 5.0) -> None:
        self.settings, self.job, self.emit, self.interval = settings, job, emit, interval
        self.started = self.last = time.monotonic()
        self.rows = self.errors = self.bytes = self.shards = 0
        self.bad_by_file: Counter[str] = Counter()
        self.first_error = ""
        self.done: list[ShardDone] = []
        self.load_seconds = 0.0

    def __call__(self, shard: ShardDone) -> None:
        """Fold in a finished shard; print progress; stop when too many rows are bad."""
        self.done.append(shard)
        self.load_seconds = max(self.load_seconds, shard.load_seconds)
        self.rows += shard.rows
        self.errors += shard.errors
        self.bytes += shard.bytes
        self.shards += 1
        self.bad_by_file.update(shard.bad_by_file)
        self.first_error = self.first_error or shard.first_error
        self.check_errors()
        now = time.monotonic()
        if self.emit is not None and now - self.last >= self.interval:
            self.last = now
            self.emit(self.line())

    def line(self) -> str:
        """``batch-predict: N rows (S shards), E errors, R rows/s, ETA T``."""
        elapsed = max(time.monotonic() - self.started - self.load_seconds, 1e-9)
        rate = self.rows / elapsed
        text = f"batch-predict: {self.rows:,} rows ({self.shards} shard(s) this run), {self.errors:,} errors, {rate:,.0f} rows/s"
        total = self.job.total_bytes
        if total and self.bytes:
            left = max(total - self.bytes, 0) / (self.bytes / elapsed)
            text += f", ETA {left:,.0f}s"
        return text

    def check_errors(self, *, final: bool = False) -> None:
        """Stop the job when more than ``max_error_fraction`` of the rows seen so far are bad (of all rows when ``final``).

        Raises:
            InputError: one line naming the file with the most bad rows and the first error.
        """
        limit = self.settings.max_error_fraction
        enough = final or self.rows >= min(MIN_ROWS_FOR_ERROR_CHECK, self.settings.shard_rows)
        if not enough or self.errors <= limit * self.rows:
            return
        worst, count = self.bad_by_file.most_common(1)[0]
        raise InputError(
            f"{self.errors:,} of {self.rows:,} rows ({self.errors / self.rows:.1%}) cannot be scored, more than "
            f"--max-error-fraction {limit}; {count:,} of them in {worst} (first: {self.first_error}). Fix the input, or raise "
            "--max-error-fraction if these rows are expected (completed shards are kept: rerun to resume)"
        )


def run(settings: BatchSettings, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the job; returns the summary written to ``batch_summary.json``.

    Raises:
        InputError: bad settings or input, another job's folder, or too many bad rows.
    """
    settings.check()
    job = out.prepare(settings)
    tracker = Progress(settings, job, progress)
    if job.done and progress is not None:
        progress(f"batch-predict: resuming: {len(job.done)} shard(s) already in {settings.output_dir}")
    if settings.workers == 1:
        run_shards(settings, job, 0, job.done, tracker)
    else:
        from serving.batch_workers import run_workers

        run_workers(settings, job, tracker)
    seconds = time.monotonic() - tracker.started
    summary = out.finish(
        settings, job, [*out.resumed_counts(job), *tracker.done], seconds=seconds, load_seconds=tracker.load_seconds, run_rows=tracker.rows
    )
    tracker.rows, tracker.errors = summary["rows"], summary["errors"]
    tracker.bad_by_file = Counter(summary["errors_by_file"])
    tracker.first_error = summary["first_error"]
    tracker.check_errors(final=True)
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """One line for people: rows, scored, errors, version, time, where."""
    version = f"version {summary['version']}" if summary.get("version") is not None else summary["model_dir"]
    codes = ", ".join(f"{k}={v}" for k, v in summary["errors_by_code"].items())
    return (
        f"scored {summary['scored']:,} of {summary['rows']:,} rows with {version} in {summary['seconds']:.1f}s "
        f"({summary['rows_per_second']:,.0f} rows/s after {summary['load_seconds']:.1f}s loading the model); "
        f"{summary['errors']:,} errors{f' ({codes})' if codes else ''}; "
        f"{summary['shards']} shard(s) in {summary['output_dir']}"
    )


def read_summary(output_dir: str) -> dict[str, Any]:
    """The ``batch_summary.json`` of a finished job."""
    with open(os.path.join(output_dir, out.SUMMARY_FILE), encoding="utf-8") as fh:
        return json.load(fh)  # type: ignore[no-any-return]
