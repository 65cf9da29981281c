"""CSV lines as both readers see them, read in bounded memory.

:func:`line_blocks` splits a file (plain or ``.gz``) into blocks of lines the way the trainer's
``TextLineDataset`` does (lines end at a newline, carriage returns removed, a leading UTF-8 BOM
stripped), marking lines too long or not UTF-8 so that validation counts them as bad rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from base import storage
from base.errors import InputError

#: Bytes read at a time.
BLOCK_SIZE = 4 << 20
#: Lines longer than this (bytes) are dropped as ``line_too_long`` (a taxi row is under 200).
MAX_LINE_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"


@dataclasses.dataclass
class LineBlock:
    """A block of lines as both readers see them (carriage return removed, a leading BOM stripped).

    Attributes:
        lines: the lines as a pyarrow string array; a line too long or not UTF-8 holds ``""``.
        too_long: mask of the lines longer than :data:`MAX_LINE_BYTES` (``None``: there is none).
        not_utf8: mask of the lines that are not valid UTF-8 (``None``: there is none).
        notes: what to show for those lines in examples, by index.
    """

    lines: Any
    too_long: Any = None
    not_utf8: Any = None
    notes: dict[int, str] = dataclasses.field(default_factory=dict)


def to_block(parts: list[bytes], long_lengths: dict[int, int]) -> LineBlock:
    """Split ``parts`` (byte strings of whole lines) into a :class:`LineBlock`.

    ``long_lengths``: lines already cut out (empty placeholders), by index.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.concat_arrays([pc.split_pattern(pa.array([part], pa.binary()), b"\n").flatten() for part in parts])
    block = LineBlock(lines=None)
    over = pc.greater(pc.binary_length(arr), MAX_LINE_BYTES)
    if long_lengths or pc.any(over).as_py():
        lengths = pc.binary_length(arr)
        long_lengths.update({i: lengths[i].as_py() for i in pc.indices_nonzero(over).to_pylist()})
        block.too_long = pa.array([i in long_lengths for i in range(len(arr))], pa.bool_())
        arr = pc.if_else(block.too_long, pa.scalar(b"", pa.binary()), arr)
        block.notes.update({i: f"a line of {n:,} bytes (the limit is {MAX_LINE_BYTES:,})" for i, n in long_lengths.items()})
    try:
        block.lines = arr.cast(pa.string())
    except pa.ArrowInvalid:  # some line is not UTF-8: find which (rare, so row by row is fine)
        texts: list[str] = []
        bad: list[bool] = []
        for idx, line in enumerate(arr.to_pylist()):
            try:
                texts.append(line.decode("utf-8"))
                bad.append(False)
            except UnicodeDecodeError as exc:
                texts.append("")
                bad.append(True)
                block.notes[idx] = f"{line[:100]!r} ({exc.reason} at byte {exc.start})"
        block.lines, block.not_utf8 = pa.array(texts, pa.string()), pa.array(bad, pa.bool_())
    return block


def line_blocks(path: str, block_size: int = BLOCK_SIZE) -> Iterator[LineBlock]:
    """Yield the lines of ``path`` block by block, as the trainer's ``TextLineDataset`` reads them.

    Lines end at a newline; every carriage return is removed and one UTF-8 BOM at the start of a line is
    stripped (as :func:`trainer.inputs.decode_lines` does). A line of any length is read in
    bounded memory: past :data:`MAX_LINE_BYTES` it is skipped to its end and kept as an empty
    placeholder marked too long. ``.gz`` files are decompressed.

    Raises:
        InputError: when the file cannot be read or decompressed.
    """
    import zlib

    try:
        with storage.open_data(path) as fh:
            carry = b""  # the start of a line whose end is not read yet
            skipping = 0  # > 0: the length so far of a too-long line being skipped
            bom_checked = False  # whether the line at the start of `carry` had its BOM stripped
            while True:
                chunk = fh.read(block_size)
                eof = not chunk
                chunk = chunk.replace(b"\r", b"")
                long_lengths: dict[int, int] = {}
                parts: list[bytes] = []  # whole lines, split by pyarrow
                if skipping:
                    newline = chunk.find(b"\n")
                    if newline < 0 and not eof:
                        skipping += len(chunk)
                        continue
                    long_lengths[0] = skipping + (newline if newline >= 0 else len(chunk))
                    parts.append(b"")
                    chunk = chunk[newline + 1 :] if newline >= 0 else b""
                    skipping, bom_checked = 0, False
                data = carry + chunk
                if not bom_checked and (len(data) >= len(_BOM) or eof):
                    data = data.removeprefix(_BOM)
                    bom_checked = True
                cut = len(data) if eof else data.rfind(b"\n")
                if cut >= 0:
                    body, carry = data[:cut], data[cut + 1 :]
                    if body or not eof:
                        parts.append(body.replace(b"\n" + _BOM, b"\n"))
                    bom_checked = False
                else:
                    carry = data
                if len(carry) > MAX_LINE_BYTES:
                    skipping, carry = len(carry), b""
                if parts:
                    yield to_block(parts, long_lengths)
                if eof:
                    return
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path} cannot be read ({exc}): check that it is a CSV file, or a gzip-compressed one named .gz") from exc
