"""Step 1, stage_data: validate the source rows and write the train / eval / test splits.

The source is ``synthetic`` (seeded generated trips) or CSV files: a glob, several globs
separated by commas, or a directory, local or ``gs://``. The eval and test splits are either
given as their own sources or carved out of the source deterministically, by a hash of each
row's ``key`` (the same row always lands in the same split, whatever the file order).

Every row is validated against :mod:`trainer.schema`; each split is written as CSV into its
``Dataset`` artifact (a directory), and its statistics go into the artifact's metadata: row
count, dropped rows per reason, min/mean/max per column, a content hash.
"""

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import tempfile
import zlib
from typing import Any

from components.common import replace_dir, summary

SYNTHETIC = "synthetic"
BIGQUERY = "bigquery"
SPLITS = ("train", "eval", "test")
DATA_FILE = "data.csv"


@dataclasses.dataclass
class StagedSplit:
    """One written split."""

    path: str
    metadata: dict[str, Any]


def _check_params(source: str, rows: int, eval_fraction: float, test_fraction: float, max_bad_fraction: float, window_days: int) -> None:
    """The checks of :mod:`pipeline.parameters`, again where the step is called directly."""
    from trainer import checks

    checks.source("source", source)
    checks.synthetic_rows(source, checks.positive_int("synthetic_rows", rows))
    checks.split_fractions(checks.split_fraction("eval_fraction", eval_fraction), checks.split_fraction("test_fraction", test_fraction))
    checks.unit_fraction("max_bad_fraction", max_bad_fraction)
    checks.data_window(source, checks.non_negative_int("window_days", window_days))


def _split_of(keys: Any, eval_fraction: float, test_fraction: float) -> Any:
    """0 (train), 1 (eval) or 2 (test) per key, from a CRC32 of the key: stable across runs."""
    import numpy as np

    buckets = np.fromiter((zlib.crc32(k.encode()) % 10_000 for k in keys.to_pylist()), dtype=np.int64, count=len(keys)) / 10_000
    return np.where(buckets < test_fraction, 2, np.where(buckets < test_fraction + eval_fraction, 1, 0))


def _resolve_source(source: str, window_days: int, scheduled_time: str, datetime_layout: bool, project: str, export_prefix: str) -> str:
    """The train source as comma-separated files or globs (fresh data resolved for this run)."""
    from components.impl import sources

    if source == BIGQUERY:
        days = sources.window_days(window_days, scheduled_time)
        query = sources.bigquery_query(days[0], days[-1] + dt.timedelta(days=1), datetime_layout=datetime_layout)
        if not project:
            import google.auth

            project = google.auth.default()[1] or ""
        return ",".join(sources.export_bigquery(query, export_prefix, project=project))
    if window_days > 0:
        return ",".join(sources.dated_files(source, window_days, scheduled_time))
    return source


def stage(
    source: str,
    out_paths: dict[str, str],
    *,
    eval_source: str = "",
    test_source: str = "",
    synthetic_rows: int = 50_000,
    seed: int = 42,
    datetime_layout: bool = False,
    eval_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_bad_fraction: float = 0.1,
    window_days: int = 0,
    scheduled_time: str = "",
    bigquery_project: str = "",
    bigquery_export_prefix: str = "",
) -> dict[str, StagedSplit]:
    """Validate the source and write the three splits (the work of the stage_data step).

    Args:
        source: ``synthetic``; ``bigquery`` (the course's query on the public NYC trips table
            for the ``window_days`` before ``scheduled_time``, exported to
            ``bigquery_export_prefix``); CSV files (glob, comma-separated globs, directory;
            local or gs://); or, with ``window_days`` > 0, a folder of ``dt=YYYY-MM-DD``
            partitions of which the last ``window_days`` days before ``scheduled_time`` are read.
        out_paths: the directory to write each split to, by ``train``/``eval``/``test``.
        eval_source: CSV files for the eval split; empty to carve it out of ``source``.
        test_source: CSV files for the test split; empty to carve it out of ``source``.
        synthetic_rows: rows to generate when ``source`` is ``synthetic``.
        seed: seed of the generated data.
        datetime_layout: generate the layout with ``pickup_datetime``.
        eval_fraction: share of source rows carved out for eval (by key hash).
        test_fraction: share of source rows carved out for test (by key hash).
        max_bad_fraction: stop when a larger share of any source's rows is bad.
        window_days: days of data before the scheduled time (dated folders, BigQuery); 0 for none.
        scheduled_time: the run's scheduled time (RFC 3339; empty or unresolved means now).
        bigquery_project: the project that runs the BigQuery export (default: the credentials').
        bigquery_export_prefix: the ``gs://`` folder the BigQuery export writes to.

    Returns:
        Each split's path and metadata.

    Raises:
        InputError: a bad parameter, no matching file, too many bad rows, an empty split.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from trainer import synthetic, validation
    from trainer.schema import Variant
    from trainer.storage import InputError

    _check_params(source, synthetic_rows, eval_fraction, test_fraction, max_bad_fraction, window_days)
    source = source.strip()
    with tempfile.TemporaryDirectory(prefix="taxifare-stage-") as scratch, contextlib.ExitStack() as cleanup:
        if source == SYNTHETIC:
            gen = synthetic.generate(
                synthetic_rows,
                os.path.join(scratch, "generated"),
                seed=seed,
                variant=Variant.DATETIME if datetime_layout else Variant.LAB,
                fractions=(1 - eval_fraction - test_fraction, eval_fraction, test_fraction),
            )
            sources = {"train": gen.paths["train"], "eval": gen.paths["valid"], "test": gen.paths["test"]}
        else:
            sources = {
                "train": _resolve_source(source, window_days, scheduled_time, datetime_layout, bigquery_project, bigquery_export_prefix)
            }
            sources.update(eval=eval_source.strip(), test=test_source.strip())
        carved = {split: f"{source} (carved by key hash)" for split in ("eval", "test") if not sources[split]}

        variant: Variant | None = None
        for split in SPLITS:
            os.makedirs(os.path.dirname(os.path.abspath(out_paths[split])), exist_ok=True)
        tmp_dirs = {
            split: tempfile.mkdtemp(prefix=f".{split}-", dir=os.path.dirname(os.path.abspath(out_paths[split]))) for split in SPLITS
        }
        for tmp in tmp_dirs.values():  # whatever happens, no half-written split stays behind
            cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        writers: dict[str, Any] = {}
        carve_eval = 0.0 if sources["eval"] else eval_fraction
        carve_test = 0.0 if sources["test"] else test_fraction

        def write(target: str, chunk: Any) -> None:
            if target not in writers:
                options = pacsv.WriteOptions(include_header=False, quoting_style="none")
                writers[target] = pacsv.CSVWriter(os.path.join(tmp_dirs[target], DATA_FILE), chunk.schema, write_options=options)
            writers[target].write_table(chunk)
            counts[target] += chunk.num_rows

        reports: dict[str, validation.ScanReport] = {}
        counts = dict.fromkeys(SPLITS, 0)
        try:
            for split, pattern in sources.items():
                if not pattern:
                    continue  # carved out of the train source below
                try:
                    files = validation.storage.expand(pattern, what=f"{split} data")
                except InputError as exc:
                    hint = "; or pass 'synthetic' for generated trips" if split == "train" else ""
                    raise InputError(f"{exc}{hint}") from None
                variant = variant or validation.detect_variant(files[0])
                report = validation.ScanReport(files=[], variant=variant)
                for path in files:
                    part = validation.ScanReport(files=[path], variant=variant)
                    for table in validation.iter_valid(path, variant, part):
                        if split == "train":
                            which = _split_of(table.column("key"), carve_eval, carve_test)
                            parts = {target: table.filter(pa.array(which == i)) for i, target in enumerate(SPLITS)}
                        else:
                            parts = {split: table}
                        for target, chunk in parts.items():
                            if chunk.num_rows:
                                write(target, chunk)
                    report.merge(part)
                report.check(max_bad_fraction, what=f"{split} data")
                reports[split] = report
        finally:
            for writer in writers.values():
                writer.close()
        if variant is None:  # pragma: no cover - expand() raised before this
            raise InputError("no data was read: check the source")

        staged: dict[str, StagedSplit] = {}
        for split in SPLITS:
            if counts[split] == 0:
                raise InputError(
                    f"the {split} split is empty: give it more rows (a larger source, or a larger {split}_fraction)"
                    if split != "train"
                    else "the train split is empty: the source holds no valid row"
                )
            data_path = os.path.join(tmp_dirs[split], DATA_FILE)
            origin = reports.get(split) or reports["train"]
            stats = validation.scan(data_path, what=f"staged {split} split", max_bad_fraction=0.0, variant=variant)
            metadata = {
                "split": split,
                "rows": counts[split],
                "variant": variant.value,
                "source": SYNTHETIC if source == SYNTHETIC else sources[split] or carved[split],
                "source_rows": origin.rows,
                "dropped_rows": origin.bad,
                "dropped": {k: v for k, v in origin.dropped.items() if v},
                "dropped_examples": origin.examples[:3],
                "columns": stats.as_dict()["columns"],
                "content_hash": validation.content_hash([data_path]),
                "file_pattern": DATA_FILE,
            }
            staged[split] = StagedSplit(path=out_paths[split], metadata=metadata)
        for split in SPLITS:
            replace_dir(tmp_dirs[split], out_paths[split])
    dropped = sum(r.bad for r in reports.values())
    summary(
        "stage_data",
        f"{counts['train']:,} train / {counts['eval']:,} eval / {counts['test']:,} test rows ({variant.value} layout), {dropped:,} dropped",
        **counts,
        dropped=dropped,
    )
    return staged
