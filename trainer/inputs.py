"""The tf.data input pipeline: stream CSV lines, shuffle, decode and validate in batches.

Files (plain or ``.gz``) are streamed line by line (never the whole data set in memory), shuffled for
training, decoded a batch at a time in parallel with vectorised string ops, and prefetched.
Rows that break the schema are dropped in-graph by the same rules as
:mod:`trainer.validation` (which counts them and reports examples before training starts).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from trainer import schema
from trainer.arrays import read_arrays  # noqa: F401  (where it was; TF-free, in trainer/arrays.py)
from trainer.lines import MAX_LINE_BYTES
from trainer.schema import Variant
from trainer.validation import NUMBER_REGEX

AUTOTUNE = tf.data.AUTOTUNE


def _strip_bom_and_check_utf8(lines: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Strip one leading BOM per line and mark the lines that are valid UTF-8.

    A batch of plain ASCII (the usual case) holds neither a BOM nor bad UTF-8, and one pass
    over its bytes tells so; only other batches pay for the per-line work (about 2.5 us a row).
    """

    def check() -> tuple[tf.Tensor, tf.Tensor]:
        stripped = tf.strings.regex_replace(lines, "^\ufeff", "", replace_global=False)
        return stripped, tf.equal(tf.strings.unicode_transcode(stripped, "UTF-8", "UTF-8", errors="replace"), stripped)

    ascii_only = tf.reduce_all(tf.io.decode_raw(tf.strings.reduce_join(lines), tf.uint8) < 128)
    return tf.cond(ascii_only, lambda: (lines, tf.ones_like(lines, dtype=tf.bool)), check)


def decode_lines(lines: tf.Tensor, variant: Variant) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
    """Decode a batch of CSV lines.

    Args:
        lines: 1-D string tensor of raw lines (as ``TextLineDataset`` yields them: without
            a newline or carriage return).
        variant: the file layout.

    Returns:
        ``(features, label, valid)``: features by name (float32, or string for
        ``pickup_datetime``), the float32 label, and a bool mask of the rows that pass
        every schema check (other rows hold placeholder values). Like the validator, a
        leading UTF-8 BOM is stripped, and lines longer than ``MAX_LINE_BYTES`` or not
        UTF-8 are invalid.
    """
    names = variant.columns
    lines, valid = _strip_bom_and_check_utf8(lines)
    valid &= tf.strings.length(lines) <= MAX_LINE_BYTES
    parts = tf.strings.split(lines, ",")
    valid &= tf.equal(parts.row_lengths(), len(names))
    table = parts.to_tensor(default_value="", shape=[None, len(names)])
    text = {name: tf.strings.strip(table[:, i]) for i, name in enumerate(names)}

    numbers: dict[str, tf.Tensor] = {}
    for name in (schema.LABEL, *schema.NUMERIC_FEATURES):
        ok = tf.strings.regex_full_match(text[name], NUMBER_REGEX)
        valid &= ok
        numbers[name] = tf.strings.to_number(tf.where(ok, text[name], "0"), tf.float64)
    if variant is Variant.DATETIME:
        valid &= tf.strings.regex_full_match(text[schema.DATETIME], schema.DATETIME_REGEX)
    for name, allowed in schema.RANGES.items():
        valid &= (numbers[name] >= allowed.low) & (numbers[name] <= allowed.high)

    features: dict[str, tf.Tensor] = {name: tf.cast(numbers[name], tf.float32) for name in schema.NUMERIC_FEATURES}
    if variant is Variant.DATETIME:
        features[schema.DATETIME] = text[schema.DATETIME]
    return features, tf.cast(numbers[schema.LABEL], tf.float32), valid


def _read_lines(path: tf.Tensor) -> tf.data.Dataset:
    """The lines of one file; ``.gz`` files (any case) are read as GZIP, as the validator does."""
    gzipped = tf.strings.regex_full_match(tf.strings.lower(path), r".*\.gz")
    return tf.data.TextLineDataset(path, compression_type=tf.where(gzipped, "GZIP", ""))


def make_dataset(
    files: Sequence[str],
    variant: Variant,
    batch_size: int,
    *,
    training: bool,
    shuffle_buffer: int | None = None,
    seed: int | None = None,
) -> tf.data.Dataset:
    """A dataset of ``(features, label)`` batches read from ``files``.

    Training datasets repeat forever and shuffle both the file order and the lines (in a
    buffer of ``shuffle_buffer`` lines, :attr:`trainer.config.TrainConfig.shuffle_buffer`); evaluation
    datasets read every file once, in order.
    Bad rows are dropped inside each batch, so a batch may hold slightly fewer rows.
    """
    ds = tf.data.Dataset.from_tensor_slices(list(files))
    if training:
        if shuffle_buffer is None:
            raise ValueError("make_dataset: a training dataset needs shuffle_buffer (TrainConfig.shuffle_buffer)")
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    # `deterministic` only means something for a parallel interleave (TF warns otherwise).
    parallel = {"num_parallel_calls": AUTOTUNE, "deterministic": not training} if len(files) > 1 else {}
    ds = ds.interleave(_read_lines, cycle_length=min(len(files), 4), **parallel)
    if training:
        # Line-level shuffle on top of the file-order shuffle.
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)

    def decode(lines: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        features, label, valid = decode_lines(lines, variant)
        return {k: tf.boolean_mask(v, valid) for k, v in features.items()}, tf.boolean_mask(label, valid)

    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=not training)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(AUTOTUNE)
