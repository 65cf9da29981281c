"""Step 1, stage_data: validate the source rows and write the train / eval / test splits.

The source is ``synthetic`` (seeded generated trips) or CSV files: a glob, several globs
separated by commas, or a directory, local or ``gs://``. The eval and test splits are either
given as their own sources or carved out of the source deterministically, by a hash of each
row's ``key`` (the same row always lands in the same split, whatever the file order).

Every row is validated against :mod:`trainer.schema`; each split is written as CSV into its
``Dataset`` artifact (a directory), and its statistics go into the artifact's metadata: row
count, dropped rows per reason, per feature min/mean/max, count, quantiles and a histogram over
fixed bins (:func:`trainer.statistics.describe`, for the drift check), a content hash.
"""

import dataclasses
import datetime as dt
import os
import shutil
import tempfile
import zlib
from typing import Any

from base import atomic, checks
from base.errors import InputError
from components.common import summary
from components.contracts import DatasetStats
from trainer.schema import Variant

SYNTHETIC = "synthetic"
BIGQUERY = "bigquery"
SPLITS = ("train", "eval", "test")
DATA_FILE = "data.csv"


@dataclasses.dataclass
class StagedSplit:
    """One written split."""

    path: str
    metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """The stage_data step's settings: the pipeline parameters of the same names.

    No defaults here: they are declared once, in :mod:`pipeline.parameters`, and the step
    passes every one.

    Attributes:
        source: ``synthetic``; ``bigquery`` (the course's query on the public NYC trips table
            for the ``window_days`` before ``scheduled_time``); CSV files (glob, comma-separated
            globs, directory; local or gs://); or, with ``window_days`` > 0, a folder of
            ``dt=YYYY-MM-DD`` partitions of which the last ``window_days`` days before
            ``scheduled_time`` are read.
        eval_source: CSV files for the eval split; empty to carve it out of ``source``.
        test_source: CSV files for the test split; empty to carve it out of ``source``.
        synthetic_rows: rows to generate when ``source`` is ``synthetic``.
        seed: seed of the generated data.
        datetime_layout: generate (or query) the layout with ``pickup_datetime``.
        eval_fraction: share of source rows carved out for eval (by key hash).
        test_fraction: share of source rows carved out for test (by key hash).
        max_bad_fraction: stop when a larger share of any source's rows is bad.
        window_days: days of data before the scheduled time (dated folders, BigQuery); 0 for none.
        scheduled_time: the run's scheduled time (RFC 3339; empty or unresolved means now).
        bigquery_project: the project that runs the BigQuery export (empty: the credentials').
    """

    source: str
    eval_source: str
    test_source: str
    synthetic_rows: int
    seed: int
    datetime_layout: bool
    eval_fraction: float
    test_fraction: float
    max_bad_fraction: float
    window_days: int
    scheduled_time: str
    bigquery_project: str

    def check(self) -> None:
        """The checks of :mod:`pipeline.parameters`, again where the step is called directly.

        Raises:
            InputError: one line naming the parameter.
        """
        checks.source("source", self.source)
        checks.synthetic_rows(self.source, checks.positive_int("synthetic_rows", self.synthetic_rows))
        fractions = checks.split_fraction("eval_fraction", self.eval_fraction), checks.split_fraction("test_fraction", self.test_fraction)
        checks.split_fractions(*fractions)
        checks.unit_fraction("max_bad_fraction", self.max_bad_fraction)
        checks.data_window(self.source, checks.non_negative_int("window_days", self.window_days))


def _split_of(keys: Any, eval_fraction: float, test_fraction: float) -> Any:
    """0 (train), 1 (eval) or 2 (test) per key, from a CRC32 of the key: stable across runs."""
    import numpy as np

    buckets = np.fromiter((zlib.crc32(k.encode()) % 10_000 for k in keys.to_pylist()), dtype=np.int64, count=len(keys)) / 10_000
    return np.where(buckets < test_fraction, 2, np.where(buckets < test_fraction + eval_fraction, 1, 0))


def _resolve_source(settings: StageSettings, export_prefix: str) -> str:
    """The train source as comma-separated files or globs (fresh data resolved for this run)."""
    from components.stage_data import sources

    source, window_days, scheduled_time = settings.source.strip(), settings.window_days, settings.scheduled_time
    if source == BIGQUERY:
        days = sources.window_days(window_days, scheduled_time)
        query = sources.bigquery_query(days[0], days[-1] + dt.timedelta(days=1), datetime_layout=settings.datetime_layout)
        project = settings.bigquery_project
        if not project:
            import google.auth

            project = google.auth.default()[1] or ""
        return ",".join(sources.export_bigquery(query, export_prefix, project=project))
    if window_days > 0:
        return ",".join(sources.dated_files(source, window_days, scheduled_time))
    return source


def stage(settings: StageSettings, out_paths: dict[str, str], *, bigquery_export_prefix: str = "") -> dict[str, StagedSplit]:
    """Validate the source and write the three splits (the work of the stage_data step).

    Args:
        settings: the step's settings (see :class:`StageSettings`).
        out_paths: the directory to write each split to, by ``train``/``eval``/``test``.
        bigquery_export_prefix: the ``gs://`` folder the export of source ``bigquery`` writes to.

    Returns:
        Each split's path and metadata.

    Raises:
        InputError: a bad setting, no matching file, too many bad rows, an empty split.
    """
    settings.check()
    source = settings.source.strip()
    with tempfile.TemporaryDirectory(prefix="taxifare-stage-") as scratch, _SplitWriter(out_paths) as writer:
        if source == SYNTHETIC:
            patterns = _generate(settings, os.path.join(scratch, "generated"))
        else:
            train = _resolve_source(settings, bigquery_export_prefix)
            patterns = {"train": train, "eval": settings.eval_source.strip(), "test": settings.test_source.strip()}
        carve = (0.0 if patterns["eval"] else settings.eval_fraction, 0.0 if patterns["test"] else settings.test_fraction)
        variant, reports = _read_sources(patterns, writer, carve, settings.max_bad_fraction)
        writer.close()
        origins = {split: SYNTHETIC if source == SYNTHETIC else patterns[split] or f"{source} (carved by key hash)" for split in SPLITS}
        staged = {split: _describe(split, writer, variant, reports.get(split) or reports["train"], origins[split]) for split in SPLITS}
        writer.publish()
    dropped = sum(r.bad for r in reports.values())
    counts = writer.counts
    summary(
        "stage_data",
        f"{counts['train']:,} train / {counts['eval']:,} eval / {counts['test']:,} test rows ({variant.value} layout), {dropped:,} dropped",
        **counts,
        dropped=dropped,
    )
    return staged


def _generate(settings: StageSettings, out_dir: str) -> dict[str, str]:
    """Seeded synthetic trips as three CSV files (their splits as asked)."""
    from trainer import synthetic

    fractions = (1 - settings.eval_fraction - settings.test_fraction, settings.eval_fraction, settings.test_fraction)
    layout = Variant.DATETIME if settings.datetime_layout else Variant.LAB
    gen = synthetic.generate(settings.synthetic_rows, out_dir, seed=settings.seed, variant=layout, fractions=fractions)
    return {"train": gen.paths["train"], "eval": gen.paths["valid"], "test": gen.paths["test"]}


class _SplitWriter:
    """CSV writers of the three splits into temporary folders beside their outputs, then renamed into place.

    Whatever happens before :meth:`publish`, no half-written split stays behind.
    """

    def __init__(self, out_paths: dict[str, str]) -> None:
        self.out_paths = out_paths
        self.counts = dict.fromkeys(SPLITS, 0)
        self.writers: dict[str, Any] = {}
        self.tmp_dirs: dict[str, str] = {}
        for split in SPLITS:
            parent = os.path.dirname(os.path.abspath(out_paths[split]))
            os.makedirs(parent, exist_ok=True)
            self.tmp_dirs[split] = atomic.temp_path(out_paths[split])
            os.makedirs(self.tmp_dirs[split])

    def __enter__(self) -> "_SplitWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        for tmp in self.tmp_dirs.values():
            shutil.rmtree(tmp, ignore_errors=True)

    def data_path(self, split: str) -> str:
        """The split's CSV file (in its temporary folder until published)."""
        return os.path.join(self.tmp_dirs[split], DATA_FILE)

    def write(self, split: str, chunk: Any) -> None:
        """Append the rows of a pyarrow table to ``split``."""
        import pyarrow.csv as pacsv

        if split not in self.writers:
            options = pacsv.WriteOptions(include_header=False, quoting_style="none")
            self.writers[split] = pacsv.CSVWriter(self.data_path(split), chunk.schema, write_options=options)
        self.writers[split].write_table(chunk)
        self.counts[split] += chunk.num_rows

    def close(self) -> None:
        """Finish the files."""
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    def publish(self) -> None:
        """Move each finished split to its output path."""
        for split in SPLITS:
            atomic.publish(self.tmp_dirs[split], self.out_paths[split])


#: The setting a user raises to let more bad rows through, as the pipeline's front doors spell it.
BAD_FRACTION_FLAG = "--max-bad-fraction (taxifare run; --param max_bad_fraction=... for submit and schedule)"


def _read_sources(
    patterns: dict[str, str], writer: _SplitWriter, carve: tuple[float, float], max_bad_fraction: float
) -> tuple[Any, dict[str, Any]]:
    """Validate every source row and write the valid ones to their split; returns the layout and a report per source.

    Rows of the train source whose split was not given on its own are carved out by key hash.

    Raises:
        InputError: no matching file, mixed layouts, or too many bad rows in a source.
    """
    import pyarrow as pa

    from trainer import validation

    variant = None
    reports: dict[str, validation.ScanReport] = {}
    for split, pattern in patterns.items():
        if not pattern:
            continue  # carved out of the train source
        try:
            files = validation.storage.expand(pattern, what=f"{split} data")
        except InputError as exc:
            hint = "; or pass 'synthetic' for generated trips" if split == "train" else ""
            raise InputError(f"{exc}{hint}") from None
        file_variant = validation.detect_layout(files, what=f"{split} data")
        if variant is not None and file_variant is not variant:
            raise InputError(
                f"mixed layouts: the train data is in the {variant.value} layout but the {split} data ({files[0]}) "
                f"in the {file_variant.value} layout; point at files of one layout"
            )
        variant = file_variant
        report = validation.ScanReport(files=[], variant=variant)
        for path in files:
            part = validation.ScanReport(files=[path], variant=variant)
            for table in validation.iter_valid(path, variant, part):
                if split == "train":
                    which = _split_of(table.column("key"), *carve)
                    parts = {target: table.filter(pa.array(which == i)) for i, target in enumerate(SPLITS)}
                else:
                    parts = {split: table}
                for target, chunk in parts.items():
                    if chunk.num_rows:
                        writer.write(target, chunk)
            report.merge(part)
        report.check(max_bad_fraction, what=f"{split} data", flag=BAD_FRACTION_FLAG)
        reports[split] = report
    if variant is None:  # pragma: no cover - expand() raised before this
        raise InputError("no data was read: check the source")
    return variant, reports


def _describe(split: str, writer: _SplitWriter, variant: Any, origin: Any, source: str) -> StagedSplit:
    """The written split's statistics (see :class:`~components.contracts.DatasetStats`).

    Raises:
        InputError: the split is empty.
    """
    from trainer import statistics, validation

    rows = writer.counts[split]
    carved = split == "train" or "carved by key hash" in source
    if rows == 0 and carved and origin.valid > 0:  # valid rows, all hashed into the other splits
        raise InputError(
            f"the {split} split is empty though the source holds {origin.valid:,} valid rows: the split is by a hash of each "
            "row's key, so rows sharing a key land in one split (do they all share one key?): give the rows distinct keys, "
            f"or pass {split}_source"
            if split != "train"
            else f"the train split is empty though the source holds {origin.valid:,} valid rows: the split is by a hash of each "
            "row's key, so rows sharing a key land in one split (do they all share one key?): give the rows distinct keys"
        )
    if rows == 0:
        raise InputError(
            f"the {split} split is empty: give it more rows (a larger source, or a larger {split}_fraction)"
            if split != "train"
            else "the train split is empty: the source holds no valid row"
        )
    data_path = writer.data_path(split)
    stats = validation.scan(data_path, what=f"staged {split} split", max_bad_fraction=0.0, variant=variant)
    described = DatasetStats(
        split=split,
        rows=rows,
        variant=variant.value,
        source=source,
        source_rows=origin.rows,
        dropped_rows=origin.bad,
        dropped={k: v for k, v in origin.dropped.items() if v},
        dropped_examples=origin.examples[:3],
        columns=statistics.merge_columns(stats.as_dict()["columns"], statistics.describe(data_path, variant.columns)),
        content_hash=validation.content_hash([data_path]),
        file_pattern=DATA_FILE,
    )
    return StagedSplit(path=writer.out_paths[split], metadata=described.to_metadata())
