"""The output folder of a batch prediction job: the job's record, shards written elsewhere and renamed, the summary.

See :mod:`serving.batch` for the folder's layout. Predictions text is built column-wise with
pyarrow where the input is CSV (one ``binary_join_element_wise`` per piece, written straight
from the array's buffer), row by row with orjson where it is JSON lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from collections import Counter
from typing import IO, Any

import numpy as np
import orjson

from base import atomic, storage
from base.errors import InputError
from serving.batch_formats import CSV, INSTANCE_FORMATS, JSONL
from serving.batch_input import Checked, CsvChecker, JsonlChecker, Piece, error_record, instances_format
from trainer import validation
from trainer.schema import Variant

JOB_FILE = ".taxifare_batch_job.json"
SUMMARY_FILE = "batch_summary.json"
TMP_DIR = ".tmp-shards"
_SHARD_RE = re.compile(r"^(predictions|errors)_(\d{5,})\.(jsonl|csv)$")


@dataclasses.dataclass
class ShardDone:
    """What one finished shard held (sent from a worker to the job's progress)."""

    shard: int
    rows: int
    errors: int
    bytes: int
    bad_by_file: dict[str, int]
    first_error: str
    codes: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Seconds the worker spent loading the version (on its first shard; 0 on the others).
    load_seconds: float = 0.0


def shard_name(kind: str, shard: int, ext: str) -> str:
    """``predictions_00001.jsonl`` for shard 0 (Vertex AI's names: numbered from 1)."""
    return f"{kind}_{shard + 1:05d}.{ext}"


@dataclasses.dataclass
class Job:
    """What a run of a job works on: its input files and layout, and the shards already complete."""

    files: list[str]
    instances_format: str
    variant: Variant | None
    output_dir: str
    ext: str
    done: set[int]
    total_bytes: int | None

    @property
    def tmp_dir(self) -> str:
        """Where shards are written before they are renamed into place."""
        return os.path.join(self.output_dir, TMP_DIR)


def _record(settings: Any, files: list[str], fmt: str) -> dict[str, Any]:
    sizes = [os.path.getsize(f) if not storage.is_gcs(f) else None for f in files]
    return {
        "inputs": files,
        "input_sizes": sizes,
        "instances_format": fmt,
        "model_dir": os.path.abspath(settings.model_dir),
        "output_format": settings.output_format,
        "shard_rows": settings.shard_rows,
        "check_ranges": settings.check_ranges,
    }


def _write_json(path: str, value: Any) -> None:
    atomic.write_json(path, value, indent=2)


def prepare(settings: Any) -> Job:
    """Check the input, create (or reopen) the output folder and find the shards already complete.

    Raises:
        InputError: no input file, a layout the files do not share, or a folder holding something else.
    """
    files = storage.expand(settings.inputs, what="batch input")
    fmt = instances_format(files, settings.instances_format)
    if fmt not in INSTANCE_FORMATS:
        raise InputError(f"--instances-format {fmt!r}: use one of {', '.join(INSTANCE_FORMATS)}")
    variant = validation.detect_layout(files, what="batch input") if fmt == CSV else None
    record = _record(settings, files, fmt)
    out = settings.output_dir
    os.makedirs(out, exist_ok=True)
    job_file = os.path.join(out, JOB_FILE)
    if os.path.exists(job_file):
        with open(job_file, encoding="utf-8") as fh:
            before = json.load(fh)
        changed = sorted(k for k in record if before.get(k) != record[k])
        if changed:
            raise InputError(
                f"--output {out} holds the output of another batch job (its {', '.join(changed)} differ): "
                "pass a new folder, or delete that one to start over"
            )
    elif any(not name.startswith(".") for name in os.listdir(out)):
        raise InputError(f"--output {out} is not empty and holds no batch job: pass a new or empty folder")
    _write_json(job_file, record)
    shutil.rmtree(os.path.join(out, TMP_DIR), ignore_errors=True)
    os.makedirs(os.path.join(out, TMP_DIR))
    ext = "csv" if settings.output_format == CSV else "jsonl"
    names = os.listdir(out)
    done = {int(m.group(2)) - 1 for m in map(_SHARD_RE.match, names) if m and m.group(1) == "predictions"}
    for name in names:  # an errors file whose predictions file is missing: its shard was cut short
        m = _SHARD_RE.match(name)
        if m and m.group(1) == "errors" and int(m.group(2)) - 1 not in done:
            os.remove(os.path.join(out, name))
    local = all(not storage.is_gcs(f) and not storage.is_gzip_name(f) for f in files)
    total = sum(os.path.getsize(f) for f in files) if local and not done else None
    return Job(files, fmt, variant, out, ext, done, total)


def make_checker(job: Job, features: Any, settings: Any) -> CsvChecker | JsonlChecker:
    """The checker of the job's instances format, for a model taking ``features``."""
    output = CSV if settings.output_format == CSV else JSONL
    if job.variant is not None:
        return CsvChecker(job.variant, features, check_ranges=settings.check_ranges, output=output)
    return JsonlChecker(features, check_ranges=settings.check_ranges, output=output)


def score(servable: Any, columns: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """The model's fares for ``columns``, ``batch_size`` rows per session call."""
    n = len(next(iter(columns.values()))) if columns else 0
    result = np.empty(n, np.float32)
    for start in range(0, n, batch_size):
        result[start : start + batch_size] = servable.predict({k: v[start : start + batch_size] for k, v in columns.items()})
    return result


def _write_strings(fh: IO[bytes], arr: Any) -> None:
    """Write a pyarrow string array's characters (its elements back to back) straight from its buffer."""
    import pyarrow as pa

    if len(arr) == 0:
        return
    wide = pa.types.is_large_string(arr.type)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64 if wide else np.int32)[arr.offset : arr.offset + len(arr) + 1]
    fh.write(memoryview(arr.buffers()[2])[int(offsets[0]) : int(offsets[-1])])


def _csv_field(value: Any) -> str:
    text = "" if value is None else str(value)
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text


class ShardWriter:
    """One shard's files under ``.tmp-shards/``, renamed into place by :meth:`finish`."""

    def __init__(self, job: Job, shard: int, header: str) -> None:
        self.job, self.shard = job, shard
        self.final = os.path.join(job.output_dir, shard_name("predictions", shard, job.ext))
        self.final_errors = os.path.join(job.output_dir, shard_name("errors", shard, "jsonl"))
        self.tmp = os.path.join(job.tmp_dir, f"{os.path.basename(self.final)}.{os.getpid()}")
        self.tmp_errors = os.path.join(job.tmp_dir, f"{os.path.basename(self.final_errors)}.{os.getpid()}")
        self.fh: IO[bytes] = open(self.tmp, "wb")  # noqa: SIM115 - closed by finish
        self.errors_fh: IO[bytes] | None = None
        #: the input columns of a csv output's rows (the header's, before predicted_fare)
        self.columns = header.split(",")[:-1]
        if job.ext == "csv":
            self.fh.write(header.encode() + b"\n")
        self.rows = self.errors = self.bytes = 0
        self.bad_by_file: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.first_error = ""

    def write(self, piece: Piece, checked: Checked, preds: np.ndarray) -> None:
        """Append a checked piece and its fares (non-finite fares become errors)."""
        import pyarrow.compute as pc

        finite = np.isfinite(preds)
        if not finite.all():
            preds = self._drop_non_finite(piece, checked, preds, finite)
        self.rows += checked.rows
        self.bytes += int(pc.sum(pc.binary_length(piece.block.lines)).as_py() or 0) + len(piece)
        if checked.errors:
            self._write_errors(piece, checked)
        if not len(preds):
            return
        if isinstance(checked.text, list):
            self.fh.write(self._rows_text(checked.text, preds))
        else:
            self._write_columns(checked.text, preds)

    def _drop_non_finite(self, piece: Piece, checked: Checked, preds: np.ndarray, finite: np.ndarray) -> np.ndarray:
        """Rows the model answered NaN or infinity for become errors (as the server answers them with a 422)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        bad = np.flatnonzero(~finite)
        if isinstance(checked.text, list):
            instances = [checked.text[i] for i in bad]
            checked.text = [t for t, ok in zip(checked.text, finite, strict=True) if ok]
        else:  # instance JSON text (jsonl output) or the input line (csv output)
            values = checked.text.take(pa.array(bad)).to_pylist()
            instances = [orjson.loads(v) for v in values] if self.job.ext == "jsonl" else values
            checked.text = pc.filter(checked.text, pa.array(finite))
        for i, instance in zip(bad, instances, strict=True):
            checked.errors.append(error_record(instance, "non_finite_prediction", f"the model answered {preds[i]}", piece.path))
            checked.codes["non_finite_prediction"] += 1
        return preds[finite]

    def _write_columns(self, text: Any, preds: np.ndarray) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        fares = pc.cast(pa.array(preds.astype(np.float64)), pa.string())
        if self.job.ext == "csv":
            lines = pc.binary_join_element_wise(text, ",", fares, "\n", "")
        else:
            lines = pc.binary_join_element_wise('{"instance":', text, ',"prediction":', fares, "}\n", "")
        _write_strings(self.fh, lines)

    def _rows_text(self, objects: list[Any], preds: np.ndarray) -> bytes:
        fares = preds.astype(np.float64).tolist()
        if self.job.ext == "jsonl":
            return b"".join(orjson.dumps({"instance": o, "prediction": p}) + b"\n" for o, p in zip(objects, fares, strict=True))
        names = self.columns
        lines = [",".join([*(_csv_field(o.get(n)) for n in names), repr(p)]) for o, p in zip(objects, fares, strict=True)]
        return ("\n".join(lines) + "\n").encode()

    def _write_errors(self, piece: Piece, checked: Checked) -> None:
        if self.errors_fh is None:
            self.errors_fh = open(self.tmp_errors, "wb")  # noqa: SIM115 - closed by finish
        self.errors_fh.write(b"\n".join(checked.errors) + b"\n")
        self.errors += len(checked.errors)
        self.bad_by_file[piece.path] += len(checked.errors)
        self.codes.update(checked.codes)
        if not self.first_error:
            first = orjson.loads(checked.errors[0])
            self.first_error = f"{first['source']}: {first['error']['message']}"

    def finish(self) -> Any:
        """Close the files and rename them into place, the predictions file last; returns the shard's counts."""
        self.fh.close()
        if self.errors_fh is not None:
            self.errors_fh.close()
            atomic.publish(self.tmp_errors, self.final_errors)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.final_errors)
        atomic.publish(self.tmp, self.final)
        return ShardDone(self.shard, self.rows, self.errors, self.bytes, dict(self.bad_by_file), self.first_error, dict(self.codes))


def _count_lines(path: str) -> int:
    count = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            count += chunk.count(b"\n")
    return count


def resumed_counts(job: Job) -> Any:
    """The counts of the shards complete before this run (read back from their files)."""
    found = []
    for shard in sorted(job.done):
        predictions = _count_lines(os.path.join(job.output_dir, shard_name("predictions", shard, job.ext))) - (job.ext == "csv")
        bad: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        first = ""
        errors_path = os.path.join(job.output_dir, shard_name("errors", shard, "jsonl"))
        if os.path.exists(errors_path):
            with open(errors_path, "rb") as fh:
                for line in fh:
                    record = orjson.loads(line)
                    bad[record["source"].rsplit(":", 1)[0]] += 1
                    codes[record["error"]["reason"]] += 1
                    first = first or f"{record['source']}: {record['error']['message']}"
        found.append(ShardDone(shard, predictions + sum(bad.values()), sum(bad.values()), 0, dict(bad), first, dict(codes)))
    return found


def finish(settings: Any, job: Job, shards: list[Any], *, seconds: float, load_seconds: float, run_rows: int) -> dict[str, Any]:
    """Write ``batch_summary.json`` (atomically) from every shard's counts, remove ``.tmp-shards``; returns the summary."""
    rows = sum(s.rows for s in shards)
    errors = sum(s.errors for s in shards)
    codes: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    for s in shards:
        codes.update(s.codes)
        by_file.update(s.bad_by_file)
    summary = {
        "rows": rows,
        "scored": rows - errors,
        "errors": errors,
        "errors_by_code": dict(codes.most_common()),
        "errors_by_file": dict(by_file.most_common()),
        "first_error": next((s.first_error for s in sorted(shards, key=lambda s: s.shard) if s.first_error), ""),
        "model_dir": os.path.abspath(settings.model_dir),
        "version": settings.version,
        "inputs": job.files,
        "instances_format": job.instances_format,
        "output_format": settings.output_format,
        "output_dir": os.path.abspath(job.output_dir),
        "shards": len(shards),
        "resumed_shards": len(job.done),
        "seconds": round(seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "rows_per_second": round(run_rows / (seconds - load_seconds), 1) if seconds > load_seconds else 0.0,
    }
    _write_json(os.path.join(job.output_dir, SUMMARY_FILE), summary)
    shutil.rmtree(job.tmp_dir, ignore_errors=True)
    return summary
