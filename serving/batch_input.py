"""The rows of a batch prediction job: read in shards, checked, and turned into model columns and output text.

No new parser: CSV lines are read by :func:`trainer.lines.line_blocks` (plain or ``.gz``, local
or ``gs://``, any line length, in bounded memory) and checked by the trainer's own
:func:`trainer.validation.clean_block` (the fare column is not needed to score a trip, so it
is neither read nor checked); JSON-lines instances (the REST body's instance objects) are checked
by the server's :func:`serving.payload.columns_from_instances`. Rows that fail become error
records (the instance, ``{"code", "message"}``) instead of stopping the job.

Input rows are numbered across the files in order and cut into shards of ``shard_rows`` lines,
so the same input always gives the same shards (what lets a killed job resume).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import orjson

from base.errors import InputError
from serving.batch_formats import CSV, JSONL
from serving.payload import Feature, Limits, RequestError, columns_from_instances
from trainer import schema, validation
from trainer.lines import LineBlock, line_blocks
from trainer.schema import Reason, Variant

#: google.rpc.Code INVALID_ARGUMENT: the code of every row error (as Vertex AI's batch prediction writes it).
INVALID_ARGUMENT = 3
_NUMBER = re.compile(validation.NUMBER_REGEX)
_DATETIME = re.compile(schema.DATETIME_REGEX)
_NEEDS_ESCAPE = r'["\\\x00-\x1f\x7f]'


def instances_format(files: Sequence[str], given: str | None) -> str:
    """``csv`` or ``jsonl``: ``given``, else from the first file's name (``.jsonl``/``.json``, optionally ``.gz``)."""
    if given:
        return given
    name = files[0].lower().removesuffix(".gz")
    return JSONL if name.endswith((".jsonl", ".json", ".ndjson")) else CSV


@dataclasses.dataclass
class Piece:
    """Consecutive lines of one input file that belong to one shard."""

    shard: int
    path: str
    #: 1-based line number, in ``path``, of the first line.
    first_line: int
    block: LineBlock

    def __len__(self) -> int:
        """Number of lines."""
        return len(self.block.lines)


def _slice(block: LineBlock, start: int, length: int) -> LineBlock:
    notes = {i - start: text for i, text in block.notes.items() if start <= i < start + length}
    return LineBlock(
        lines=block.lines.slice(start, length),
        too_long=None if block.too_long is None else block.too_long.slice(start, length),
        not_utf8=None if block.not_utf8 is None else block.not_utf8.slice(start, length),
        notes=notes,
    )


def pieces(files: Sequence[str], shard_rows: int) -> Iterator[Piece]:
    """The input lines, file after file, as pieces each inside one shard of ``shard_rows`` lines (in order)."""
    seen = 0
    for path in files:
        line_no = 1
        for block in line_blocks(path):
            start, n = 0, len(block.lines)
            while start < n:
                shard, offset = divmod(seen, shard_rows)
                take = min(n - start, shard_rows - offset)
                yield Piece(shard, path, line_no + start, _slice(block, start, take) if (start, take) != (0, n) else block)
                start += take
                seen += take
            line_no += n


@dataclasses.dataclass
class Checked:
    """One piece checked: model columns and output text of its good rows, error records of its bad ones."""

    rows: int
    columns: dict[str, np.ndarray]
    #: per good row: its instance as JSON text (``jsonl`` output) or its CSV fields (``csv`` output).
    text: Any
    errors: list[bytes] = dataclasses.field(default_factory=list)
    codes: Counter[str] = dataclasses.field(default_factory=Counter)

    @property
    def good(self) -> int:
        """Rows that can be scored."""
        return self.rows - len(self.errors)


def error_record(instance: Any, reason: str, message: str, source: str) -> bytes:
    """One line of an ``errors_*.jsonl`` file: the instance and ``{"code", "message"}`` (plus the reason and where)."""
    error = {"code": INVALID_ARGUMENT, "message": f"{reason}: {message}", "reason": reason}
    return orjson.dumps({"instance": instance, "error": error, "source": source})


class CsvChecker:
    """Checks pieces of CSV lines in ``variant``'s layout for a model taking ``features``."""

    def __init__(self, variant: Variant, features: Sequence[Feature], *, check_ranges: bool, output: str) -> None:
        missing = [f.name for f in features if f.name not in variant.columns]
        if missing:
            raise InputError(
                f"the model takes {', '.join(missing)}, which the {variant.value} layout does not have: "
                f"score files in the layout the model was trained on"
            )
        self.variant = variant
        self.features = tuple(features)
        self.check_ranges = check_ranges
        self.output = output

    def header(self) -> str:
        """The header line of a ``csv`` output shard."""
        return ",".join((*self.variant.columns, "predicted_fare"))

    def check(self, piece: Piece) -> Checked:
        """Model columns of the good rows, error records of the bad ones (blank lines are skipped)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        block = piece.block
        picked = self._all_good(block)
        if picked is not None:  # the common case: every line a valid row, parsed at pyarrow's CSV speed
            good: Any = True
            out = Checked(rows=len(piece), columns={}, text=None)
        else:  # some line is not: the validator's row-by-row rules and reasons
            good, columns, failures = validation.clean_block(block, self.variant, label=False)
            if not self.check_ranges:
                good = pc.or_(pc.or_(good, failures[Reason.OUTSIDE_NYC]), failures[Reason.BAD_PASSENGERS])
            blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(block.lines)), 0)
            for mask in (block.too_long, block.not_utf8):
                if mask is not None:
                    blank = pc.and_(blank, pc.invert(mask))
            bad = pc.and_(pc.invert(good), pc.invert(blank))
            out = Checked(rows=len(piece) - int(pc.sum(blank).as_py() or 0), columns={}, text=None)
            if pc.any(bad).as_py():
                self._errors(piece, bad, failures, out)
            picked = {name: pc.filter(columns[name], good) for name in (*self.features_names(), schema.KEY)}
        out.columns = {
            f.name: picked[f.name].to_numpy(zero_copy_only=False).astype(np.float32 if f.kind == "float" else object) for f in self.features
        }
        if self.output == CSV:
            text = pc.utf8_trim_whitespace(block.lines)
            out.text = text if good is True else pc.filter(text, good)
        else:
            out.text = self._instances(picked, pa, pc)
        return out

    def _all_good(self, block: LineBlock) -> dict[str, Any] | None:
        """The model columns and keys of ``block`` when every line is a valid row, else ``None``.

        The lines are parsed by pyarrow's CSV reader (no quoting, as the validator splits on commas);
        any line it cannot parse, an empty field, a value out of range or a bad date-time sends the
        block to :func:`trainer.validation.clean_block`, which names each bad row's reason.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv

        lines = block.lines
        if block.too_long is not None or block.not_utf8 is not None or not len(lines):
            return None
        listed = pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines)
        text = pc.binary_join(listed, "\n")[0].as_buffer()
        floats = {f.name for f in self.features if f.kind == "float"}
        types = {name: pa.float64() if name in floats else pa.string() for name in self.variant.columns}
        try:
            table = pcsv.read_csv(
                pa.BufferReader(text),
                read_options=pcsv.ReadOptions(column_names=list(self.variant.columns), use_threads=False, block_size=len(text) + 1),
                parse_options=pcsv.ParseOptions(quote_char=False, ignore_empty_lines=False),
                convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False, quoted_strings_can_be_null=False),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        if table.num_rows != len(lines):
            return None
        picked = {name: table.column(name).combine_chunks() for name in (*self.features_names(), schema.KEY)}
        picked[schema.KEY] = pc.utf8_trim_whitespace(picked[schema.KEY])  # as the validator reads it
        for name in floats:
            col = picked[name]
            if col.null_count:
                return None
            rng = schema.RANGES.get(name) if self.check_ranges else None
            finite = pc.is_finite(col)
            ok = pc.and_(finite, pc.and_(pc.greater_equal(col, rng.low), pc.less_equal(col, rng.high))) if rng else finite
            if not pc.all(ok).as_py():
                return None
        if schema.DATETIME in picked and not pc.all(pc.match_substring_regex(picked[schema.DATETIME], schema.DATETIME_REGEX)).as_py():
            return None
        return picked

    def features_names(self) -> tuple[str, ...]:
        """The model's input names."""
        return tuple(f.name for f in self.features)

    def _instances(self, picked: dict[str, Any], pa: Any, pc: Any) -> Any:
        """``{"pickuplon":...,...,"key":"..."}`` per good row, built column-wise."""
        parts: list[Any] = []
        for i, f in enumerate(self.features):
            parts.append(("{" if i == 0 else ",") + f'"{f.name}":')
            col = picked[f.name]
            parts += [pc.cast(col, pa.string())] if f.kind == "float" else ['"', col, '"']  # date-times passed the regex: no escaping
        keys = picked[schema.KEY]
        if pc.any(pc.match_substring_regex(keys, _NEEDS_ESCAPE)).as_py():
            quoted = pa.array([orjson.dumps(k).decode() for k in keys.to_pylist()], pa.string())
            parts += [',"key":', quoted, "}"]
        else:
            parts += [',"key":"', keys, '"}']
        return pc.binary_join_element_wise(*parts, "")

    def _errors(self, piece: Piece, bad: Any, failures: dict[Reason, Any], out: Checked) -> None:
        import pyarrow.compute as pc

        reasons: dict[int, Reason] = {}
        for reason, mask in failures.items():
            if reason in (Reason.OUTSIDE_NYC, Reason.BAD_PASSENGERS) and not self.check_ranges:
                continue
            for idx in pc.indices_nonzero(pc.and_(mask, bad)).to_pylist():
                reasons.setdefault(idx, reason)
        lines = piece.block.lines
        for idx in sorted(reasons):
            reason = reasons[idx]
            line = lines[idx].as_py()
            message = piece.block.notes.get(idx) or self._why(reason, line)
            out.errors.append(error_record(line, reason.value, message, f"{piece.path}:{piece.first_line + idx}"))
            out.codes[reason.value] += 1

    def _why(self, reason: Reason, line: str) -> str:
        """What is wrong with one bad line (the validator says which rule; this names the value)."""
        names = self.variant.columns
        fields = [v.strip() for v in line.split(",")]
        values = dict(zip(names, fields, strict=False))
        if reason is Reason.COLUMNS:
            return f"the row has {len(fields)} columns; the file's {self.variant.value} layout has {len(names)} ({', '.join(names)})"
        if reason is Reason.NOT_A_NUMBER:
            name = next((n for n in schema.NUMERIC_FEATURES if not _NUMBER.match(values.get(n, ""))), schema.NUMERIC_FEATURES[0])
            return f"{name}={values.get(name, '')!r} is not a number"
        if reason is Reason.BAD_DATETIME:
            example = schema.TEST_INSTANCE_DATETIME[schema.DATETIME]
            return f"{schema.DATETIME}={values.get(schema.DATETIME, '')!r} is not a date-time like {example!r}"
        checked = schema.COORDINATES if reason is Reason.OUTSIDE_NYC else (schema.PASSENGERS,)
        for name in checked:
            rng = schema.RANGES[name]
            if float(values[name]) not in rng:
                return f"{name}={values[name]} is outside the valid range {rng.low}..{rng.high} (the model knows New York trips only)"
        return reason.value  # pragma: no cover - every reason is handled above


class JsonlChecker:
    """Checks pieces of JSON lines (one instance object per line, ``key`` optional) with the server's validation."""

    def __init__(self, features: Sequence[Feature], *, check_ranges: bool, output: str) -> None:
        self.features = tuple(features)
        self.limits = Limits(max_batch=1 << 62, check_ranges=check_ranges)
        self.output = output

    def header(self) -> str:
        """The header line of a ``csv`` output shard."""
        return ",".join((*(f.name for f in self.features), schema.KEY, "predicted_fare"))

    def check(self, piece: Piece) -> Checked:
        """Model columns of the good rows, error records of the bad ones (blank lines are skipped)."""
        out = Checked(rows=0, columns={}, text=[])
        objects: list[Any] = []
        bare: list[dict[str, Any]] = []
        for idx, line in enumerate(piece.block.lines.to_pylist()):
            if not line.strip() and idx not in piece.block.notes:
                continue
            out.rows += 1
            source = f"{piece.path}:{piece.first_line + idx}"
            if idx in piece.block.notes:
                reason = "line_too_long" if piece.block.too_long is not None and piece.block.too_long[idx].as_py() else "not_utf8"
                self._fail(out, line, reason, piece.block.notes[idx], source)
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                self._fail(out, line, "malformed_json", f"{str(exc)[:120]}: write one JSON object per line", source)
                continue
            if not isinstance(obj, dict):
                self._fail(
                    out,
                    obj,
                    "not_an_object",
                    f"an instance must be a JSON object like {orjson.dumps(schema.TEST_INSTANCE).decode()}",
                    source,
                )
                continue
            objects.append((obj, source))
            bare.append({k: v for k, v in obj.items() if k != schema.KEY} if schema.KEY in obj else obj)
        if not bare:
            return out
        try:
            out.columns = columns_from_instances(bare, self.features, self.limits)
            kept = [obj for obj, _ in objects]
        except RequestError:  # find the bad ones, one by one
            kept, kept_bare = [], []
            for (obj, source), row in zip(objects, bare, strict=True):
                try:
                    columns_from_instances([row], self.features, self.limits)
                except RequestError as exc:
                    self._fail(out, obj, "invalid_instance", str(exc).removeprefix("instance 0: "), source)
                    continue
                kept.append(obj)
                kept_bare.append(row)
            out.columns = columns_from_instances(kept_bare, self.features, self.limits) if kept_bare else {}
            out.errors = self._in_line_order(out.errors)
        out.text = kept
        return out

    @staticmethod
    def _fail(out: Checked, instance: Any, reason: str, message: str, source: str) -> None:
        out.errors.append(error_record(instance, reason, message, source))
        out.codes[reason] += 1

    @staticmethod
    def _in_line_order(errors: list[bytes]) -> list[bytes]:
        def line(record: bytes) -> int:
            return int(orjson.loads(record)["source"].rsplit(":", 1)[1])

        return sorted(errors, key=line)
