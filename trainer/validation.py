"""Streaming row validation of taxi CSVs with pyarrow: counts, reasons, examples, statistics.

Every row is checked against :mod:`trainer.schema` in the order of
:class:`~trainer.schema.Reason`; a bad row is dropped and counted under the first reason it
fails. Files are read block by block (never whole), so memory stays flat on any size, and
lines of any length: a line longer than :data:`MAX_LINE_BYTES` is dropped as
``line_too_long``, one that is not UTF-8 as ``not_utf8``. ``.gz`` files are decompressed. The
layout of each file is the one most of its first rows fit; files of a glob must share it.

The trainer's tf.data pipeline applies the same rules in-graph
(:func:`trainer.inputs.decode_lines`); a test checks the two agree row for row.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

from trainer import schema, storage
from trainer.errors import InputError
from trainer.lines import LineBlock, line_blocks
from trainer.schema import Reason, Variant

log = logging.getLogger(__name__)

#: A number as Python and TensorFlow both read it; ``nan``/``inf`` are not accepted.
NUMBER_REGEX = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
#: Default share of bad rows above which training and staging stop.
MAX_BAD_FRACTION = 0.1
_EXAMPLES = 5
#: Lines sampled per file to decide its layout.
SAMPLE_ROWS = 1000


@dataclasses.dataclass
class ColumnStats:
    """Running min / mean / max of one numeric column over the valid rows."""

    count: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, values: Any) -> None:
        """Fold a pyarrow array of floats into the statistics."""
        import pyarrow.compute as pc

        if len(values) == 0:
            return
        self.count += len(values)
        self.total += float(pc.sum(values).as_py())
        mm = pc.min_max(values).as_py()
        self.minimum = min(self.minimum, mm["min"])
        self.maximum = max(self.maximum, mm["max"])

    def as_dict(self) -> dict[str, float]:
        """``{"min", "mean", "max"}`` (all NaN for an empty column)."""
        if not self.count:
            return {"min": math.nan, "mean": math.nan, "max": math.nan}
        return {"min": self.minimum, "mean": self.total / self.count, "max": self.maximum}


@dataclasses.dataclass
class ScanReport:
    """What a validation pass saw."""

    files: list[str]
    variant: Variant
    rows: int = 0
    valid: int = 0
    dropped: dict[str, int] = dataclasses.field(default_factory=lambda: {r.value: 0 for r in Reason})
    dropped_per_file: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: list[str] = dataclasses.field(default_factory=list)
    stats: dict[str, ColumnStats] = dataclasses.field(default_factory=dict)

    @property
    def bad(self) -> int:
        """Rows dropped for any reason."""
        return self.rows - self.valid

    @property
    def bad_fraction(self) -> float:
        """Share of rows dropped (0 for no rows)."""
        return self.bad / self.rows if self.rows else 0.0

    def summary(self) -> str:
        """One line: rows read, kept, dropped per reason."""
        reasons = ", ".join(f"{k}={v}" for k, v in self.dropped.items() if v)
        return f"{self.rows} rows in {len(self.files)} file(s) ({self.variant.value} layout): {self.valid} valid, {self.bad} dropped" + (
            f" ({reasons})" if reasons else ""
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready statistics (what ``stage_data`` puts in artifact metadata)."""
        return {
            "files": len(self.files),
            "variant": self.variant.value,
            "rows": self.rows,
            "valid_rows": self.valid,
            "dropped_rows": self.bad,
            "dropped": {k: v for k, v in self.dropped.items() if v},
            "columns": {name: s.as_dict() for name, s in self.stats.items()},
        }

    def check(self, max_bad_fraction: float, *, what: str = "data", flag: str = "--max_bad_fraction") -> None:
        """Stop when too many rows are bad or none is valid.

        Args:
            max_bad_fraction: the largest share of bad rows allowed.
            what: what the files are, for the message.
            flag: the setting the message tells the user to raise, as the command they ran spells it.

        Raises:
            InputError: naming the worst file, the reasons and the flag to change.
        """
        if self.rows and self.bad_fraction <= max_bad_fraction and self.valid:
            return
        if not self.rows:
            raise InputError(f"the {what} files ({', '.join(self.files[:3])}) hold no rows: point at non-empty CSVs")
        worst = max(self.dropped_per_file, key=lambda f: self.dropped_per_file[f], default=self.files[0])
        reasons = ", ".join(f"{k}={v}" for k, v in self.dropped.items() if v)
        first = f"; first: {self.examples[0]}" if self.examples else ""
        raise InputError(
            f"{self.bad} of {self.rows} {what} rows ({self.bad_fraction:.1%}) are bad ({reasons}), "
            f"more than the allowed {max_bad_fraction:.1%}; most in {worst}{first}. "
            f"Fix the data, or raise {flag} if these rows are expected"
        )

    def merge(self, other: ScanReport) -> None:
        """Add another report's counts (same variant) into this one."""
        self.files += other.files
        self.rows += other.rows
        self.valid += other.valid
        for k, v in other.dropped.items():
            self.dropped[k] = self.dropped.get(k, 0) + v
        self.dropped_per_file.update(other.dropped_per_file)
        self.examples += other.examples[: max(0, _EXAMPLES - len(self.examples))]
        for name, s in other.stats.items():
            mine = self.stats.setdefault(name, ColumnStats())
            mine.count += s.count
            mine.total += s.total
            mine.minimum = min(mine.minimum, s.minimum)
            mine.maximum = max(mine.maximum, s.maximum)


def sniff(path: str, sample: int = SAMPLE_ROWS) -> Variant | None:
    """The layout of ``path``: the one that most of its first ``sample`` lines fit.

    A file whose first row is odd but whose other rows fit a layout gets that layout (its odd
    rows are then counted as bad). ``None`` for a file without a line.

    Raises:
        InputError: when no sampled line fits a taxi layout, or the file is gzip-compressed
            but not named ``.gz``.
    """
    if not storage.is_gzip_name(path):
        with storage.open_binary(path) as fh:
            if fh.read(2) == b"\x1f\x8b":
                raise InputError(f"{path} is gzip-compressed but its name does not end in .gz: rename it to {path}.gz")
    counts: collections.Counter[Variant] = collections.Counter()
    first = ""
    seen = 0
    for block in line_blocks(path, block_size=1 << 16):
        for line in block.lines.to_pylist():
            if not line.strip():
                continue
            seen += 1
            first = first or line
            with contextlib.suppress(ValueError):
                counts[Variant.from_column_count(line.count(",") + 1)] += 1
            if seen >= sample:
                break
        if seen >= sample:
            break
    if not seen:
        return None
    if not counts:
        try:
            Variant.from_column_count(first.count(",") + 1)
        except ValueError as exc:
            raise InputError(f"{path} fits no taxi layout: none of its first {seen:,} rows does (first {first[:80]!r}); {exc}") from exc
    return counts.most_common(1)[0][0]


def detect_variant(path: str) -> Variant:
    """The layout of one file (see :func:`sniff`).

    Raises:
        InputError: when the file is empty or fits no layout.
    """
    variant = sniff(path)
    if variant is None:
        raise InputError(f"{path} is empty: point at CSV files with taxi trips")
    return variant


def detect_layout(files: Sequence[str], *, what: str = "data") -> Variant:
    """The one layout of ``files`` (empty files are left out).

    Raises:
        InputError: every file is empty, one fits no layout, or they mix layouts (naming one
            file of each).
    """
    found: dict[Variant, str] = {}
    for path in files:
        variant = sniff(path)
        if variant is not None:
            found.setdefault(variant, path)
    if not found:
        only = f"{files[0]} is empty" if len(files) == 1 else f"the {what} files are all empty"
        raise InputError(f"{only}: point at CSV files with taxi trips")
    if len(found) > 1:
        named = " but ".join(f"{path} is in the {v.value} layout ({len(v.columns)} columns)" for v, path in found.items())
        raise InputError(f"mixed layouts in the {what}: {named}; point at files of one layout")
    return next(iter(found))


def _clean_block(block: LineBlock, variant: Variant, *, label: bool = True) -> tuple[Any, dict[str, Any], dict[Reason, Any]]:
    """Check one block of lines.

    With ``label=False`` (rows to score, :mod:`serving.batch_input`) the fare column must be
    there but is neither read nor checked.

    Returns:
        ``(valid_mask, columns, failures)``: columns are typed arrays over *all* rows of the
        block (meaningful where valid); failures maps each reason to the mask of rows that
        were dropped for it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    names = variant.columns
    lines = block.lines
    failures: dict[Reason, Any] = {}
    alive = None
    for reason, mask in ((Reason.LINE_TOO_LONG, block.too_long), (Reason.NOT_UTF8, block.not_utf8)):
        if mask is not None:
            failures[reason] = mask if alive is None else pc.and_(alive, mask)
            alive = pc.invert(mask) if alive is None else pc.and_(alive, pc.invert(mask))
    parts = pc.split_pattern(lines, ",")
    right_count = pc.equal(pc.list_value_length(parts), len(names))
    # Pad every row to the right width so element access is safe on bad rows too.
    padded = pc.if_else(right_count, parts, pa.scalar([""] * len(names), pa.list_(pa.string())))
    failures[Reason.COLUMNS] = pc.invert(right_count) if alive is None else pc.and_(alive, pc.invert(right_count))
    alive = right_count if alive is None else pc.and_(alive, right_count)

    text = {name: pc.utf8_trim_whitespace(pc.list_element(padded, i)) for i, name in enumerate(names)}
    numeric = [schema.LABEL, *schema.NUMERIC_FEATURES] if label else list(schema.NUMERIC_FEATURES)
    is_number = pc.match_substring_regex(text[numeric[0]], NUMBER_REGEX)
    for n in numeric[1:]:
        is_number = pc.and_(is_number, pc.match_substring_regex(text[n], NUMBER_REGEX))
    failures[Reason.NOT_A_NUMBER] = pc.and_(alive, pc.invert(is_number))
    alive = pc.and_(alive, is_number)

    columns: dict[str, Any] = {n: pc.cast(pc.if_else(is_number, text[n], "0"), pa.float64()) for n in numeric}
    columns[schema.KEY] = text[schema.KEY]
    if variant is Variant.DATETIME:
        good_dt = pc.match_substring_regex(text[schema.DATETIME], schema.DATETIME_REGEX)
        failures[Reason.BAD_DATETIME] = pc.and_(alive, pc.invert(good_dt))
        alive = pc.and_(alive, good_dt)
        columns[schema.DATETIME] = text[schema.DATETIME]

    def inside(name: str) -> Any:
        r = schema.RANGES[name]
        col = columns[name]
        return pc.and_(pc.greater_equal(col, r.low), pc.less_equal(col, r.high))

    in_nyc = inside(schema.COORDINATES[0])
    for name in schema.COORDINATES[1:]:
        in_nyc = pc.and_(in_nyc, inside(name))
    checks = [
        (Reason.OUTSIDE_NYC, in_nyc),
        (Reason.BAD_PASSENGERS, inside(schema.PASSENGERS)),
    ]
    if label:
        checks += [
            (Reason.FARE_TOO_LOW, pc.greater_equal(columns[schema.LABEL], schema.MIN_FARE)),
            (Reason.FARE_TOO_HIGH, pc.less_equal(columns[schema.LABEL], schema.MAX_FARE)),
        ]
    for reason, ok in checks:
        failures[reason] = pc.and_(alive, pc.invert(ok))
        alive = pc.and_(alive, ok)
    return alive, columns, failures


def iter_valid(path: str, variant: Variant, report: ScanReport) -> Iterator[Any]:
    """Yield the valid rows of ``path`` as pyarrow tables, counting the rest into ``report``.

    Tables have the variant's columns, numbers as float64 and text as strings.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    line_no = 0
    dropped_here = 0
    for block in line_blocks(path):
        lines = block.lines
        mask, columns, failures = _clean_block(block, variant)
        n = len(lines)
        valid = int(pc.sum(mask).as_py() or 0)
        report.rows += n
        report.valid += valid
        for reason, fail in failures.items():
            count = int(pc.sum(fail).as_py() or 0)
            if not count:
                continue
            report.dropped[reason.value] += count
            dropped_here += count
            if len(report.examples) < _EXAMPLES:
                for idx in pc.indices_nonzero(fail).to_pylist()[: _EXAMPLES - len(report.examples)]:
                    text = block.notes.get(idx) or repr(lines[idx].as_py()[:100])
                    report.examples.append(f"{path}:{line_no + idx + 1}: {reason.value}: {text}")
        if valid:
            table = pa.table({name: pc.filter(columns[name], mask) for name in variant.columns})
            for name in (schema.LABEL, *schema.NUMERIC_FEATURES):
                report.stats.setdefault(name, ColumnStats()).add(table.column(name))
            yield table
        line_no += n
    report.dropped_per_file[path] = dropped_here


def scan(
    patterns: str | Sequence[str],
    *,
    what: str = "data",
    max_bad_fraction: float | None = MAX_BAD_FRACTION,
    variant: Variant | None = None,
    log_drops: bool = True,
) -> ScanReport:
    """Validate every row of the files matching ``patterns`` without keeping them.

    Args:
        patterns: file globs (comma-separated string or list); local or ``gs://``.
        what: what the files are, for messages.
        max_bad_fraction: stop when a larger share of rows is bad; ``None`` never stops.
        variant: the expected layout; detected from the files when ``None`` (see
            :func:`detect_layout`).
        log_drops: log the summary and examples of dropped rows (a caller that prints the
            report itself passes ``False``).

    Returns:
        The report: rows, valid rows, drops per reason, examples, column statistics.

    Raises:
        InputError: no file matches, the files mix layouts, or too many rows are bad.
    """
    files = storage.expand(patterns, what=what)
    variant = variant or detect_layout(files, what=what)
    report = ScanReport(files=files, variant=variant)
    for path in files:
        for _ in iter_valid(path, variant, report):
            pass
    if report.bad and log_drops:
        log.warning("%s: %s", what, report.summary())
        for example in report.examples:
            log.warning("  dropped %s", example)
    if max_bad_fraction is not None:
        report.check(max_bad_fraction, what=what)
    return report


def content_hash(paths: Sequence[str]) -> str:
    """SHA-256 over the bytes of ``paths`` in order (a data version for metadata)."""
    digest = hashlib.sha256()
    for path in paths:
        with storage.open_binary(path) as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
