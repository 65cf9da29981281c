"""Hostile CSV input: layouts by majority, mixed layouts, BOM, gzip, non-UTF-8 rows, huge lines.

Every case is read both ways, by the validator (``data check``, the trainer's validation pass,
``stage_data``) and by the trainer's tf.data input, and the two must keep the same rows.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from conftest import stage

from base.errors import InputError
from components.stage_data import logic as stage_data
from pipeline.cli import main as cli_main
from trainer import lines as csvlines
from trainer import validation
from trainer.schema import Reason, Variant

LAB = "{fare},-73.987625,40.750617,-73.971163,40.78518,1,{key}"
DATETIME = "11.3,2011-01-28 20:42:59 UTC,-73.999022,40.739146,-73.990369,40.717866,1,{key}"
BOM = b"\xef\xbb\xbf"


def good(i: int) -> bytes:
    """A valid lab row whose fare tells it apart from every other."""
    return LAB.format(fare=f"{10 + i / 100:.2f}", key=i).encode()


def write(path: Path, lines: list[bytes], *, end: bytes = b"\n") -> Path:
    data = b"\n".join(lines) + end
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def validator_fares(path: Path) -> tuple[list[float], validation.ScanReport]:
    """The fares of the rows the validator keeps, in file order, and its report."""
    variant = validation.detect_variant(str(path))
    report = validation.ScanReport(files=[str(path)], variant=variant)
    fares = [f for table in validation.iter_valid(str(path), variant, report) for f in table.column("fare_amount").to_pylist()]
    return fares, report


def training_fares(path: Path) -> list[float]:
    """The fares of the rows the trainer's tf.data input keeps, in file order."""
    from trainer.inputs import make_dataset

    ds = make_dataset([str(path)], Variant.LAB, batch_size=7, training=False)
    return [round(float(y), 2) for _, labels in ds for y in labels.numpy()]


def training_line_count(path: Path) -> int:
    import tensorflow as tf

    from trainer.inputs import _read_lines

    return sum(1 for _ in _read_lines(tf.constant(str(path))))


HUGE = 5 << 20  # longer than the validator's 4 MiB blocks: pyarrow's "straddling object" before
BIG = 2 << 20  # longer than MAX_LINE_BYTES but inside one block

CASES = {
    "bom": ([BOM + good(0), *map(good, range(1, 6))], {}),
    "bom_on_later_lines": ([good(0), BOM + good(1), good(2)], {}),
    "crlf_and_stray_cr": ([good(0) + b"\r", good(1)[:5] + b"\r" + good(1)[5:] + b"\r", good(2)], {}),
    "not_utf8": ([good(0), LAB.format(fare=11, key="caf\xe9").encode("latin-1"), good(2), b"\xff\xfe" + good(3)], {Reason.NOT_UTF8: 2}),
    "surrogate_bytes": ([good(0), LAB.format(fare=11, key="x").encode() + b"\xed\xa0\x80", good(2)], {Reason.NOT_UTF8: 1}),
    "huge_line_in_the_middle": ([*map(good, range(3)), b"9" * HUGE, *map(good, range(3, 6))], {Reason.LINE_TOO_LONG: 1}),
    "big_line_inside_a_block": ([*map(good, range(3)), good(3) + b"x" * BIG, good(4)], {Reason.LINE_TOO_LONG: 1}),
    "huge_line_first": ([b"1" * HUGE, *map(good, range(10))], {Reason.LINE_TOO_LONG: 1}),
    "huge_line_last_without_newline": ([*map(good, range(10)), b"2," * (HUGE // 2)], {Reason.LINE_TOO_LONG: 1}),
    "empty_and_short_lines": ([good(0), b"", b"oops", good(1)], {Reason.COLUMNS: 2}),
}


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
@pytest.mark.parametrize("case", list(CASES))
def test_training_and_data_check_keep_the_same_rows(tmp_path, case, gz):
    lines, drops = CASES[case]
    end = b"" if case.endswith("without_newline") else b"\n"
    path = write(tmp_path / ("d.csv.gz" if gz else "d.csv"), lines, end=end)
    fares, report = validator_fares(path)
    assert report.rows == len(lines) == training_line_count(path)
    assert {k: v for k, v in report.dropped.items() if v} == {r.value: n for r, n in drops.items()}
    assert report.valid == len(lines) - sum(drops.values()) == len(fares)
    assert training_fares(path) == fares


def test_a_bom_no_longer_drops_the_first_row(tmp_path):
    path = write(tmp_path / "d.csv", [BOM + good(0), good(1)])
    assert validation.scan(str(path)).valid == 2
    assert training_fares(path) == [10.0, 10.01]


def test_lines_of_any_length_are_counted_with_their_line_number(tmp_path):
    path = write(tmp_path / "d.csv", [*map(good, range(30)), b"x" * HUGE, *map(good, range(30, 60)), b"oops"])
    report = validation.scan(str(path))
    assert report.rows == 62 and report.valid == 60
    assert report.examples == [
        f"{path}:31: line_too_long: a line of {HUGE:,} bytes (the limit is {csvlines.MAX_LINE_BYTES:,})",
        f"{path}:62: wrong_column_count: 'oops'",
    ]


def test_a_line_far_longer_than_a_block_is_read_in_bounded_pieces(tmp_path):
    path = write(tmp_path / "d.csv", [good(0), b"y" * (3 << 20), good(1)])
    blocks = list(csvlines.line_blocks(str(path), block_size=1 << 16))
    assert sum(len(b.lines) for b in blocks) == 3
    assert sum(len(b.notes) for b in blocks) == 1


def test_non_utf8_rows_are_counted_not_refused(tmp_path):
    rows = [good(i) for i in range(50)]
    rows[20] = rows[20].replace(b",1,", b",1,\xe9\xe8", 1)
    path = write(tmp_path / "d.csv", rows)
    report = validation.scan(str(path))
    assert report.dropped[Reason.NOT_UTF8.value] == 1 and report.valid == 49
    assert report.examples[0].startswith(f"{path}:21: not_utf8: b'10.20,")


def test_layout_is_the_majority_of_the_first_rows_not_row_one(tmp_path):
    rows = [DATETIME.format(key="odd").encode()] + [good(i) for i in range(9)]
    path = write(tmp_path / "d.csv", rows)
    report = validation.scan(str(path), max_bad_fraction=0.2)
    assert report.variant is Variant.LAB
    assert report.valid == 9 and report.dropped[Reason.COLUMNS.value] == 1


def test_datetime_majority_with_a_lab_first_row(tmp_path):
    rows = [good(0)] + [DATETIME.format(key=i).encode() for i in range(19)]
    report = validation.scan(str(write(tmp_path / "d.csv", rows)))
    assert report.variant is Variant.DATETIME and report.valid == 19


def test_a_glob_mixing_layouts_is_refused_naming_one_file_of_each(tmp_path):
    lab = write(tmp_path / "a.csv", [good(i) for i in range(5)])
    dt = write(tmp_path / "b.csv", [DATETIME.format(key=i).encode() for i in range(5)])
    with pytest.raises(InputError) as err:
        validation.scan(str(tmp_path / "*.csv"), what="training data")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("mixed layouts in the training data: ")
    assert f"{lab} is in the lab layout (7 columns)" in message and f"{dt} is in the datetime layout (8 columns)" in message


def test_empty_files_do_not_count_as_a_layout(tmp_path):
    write(tmp_path / "a.csv", [good(i) for i in range(5)])
    (tmp_path / "b.csv").write_bytes(b"")
    assert validation.scan(str(tmp_path)).valid == 5


def test_stage_data_refuses_mixed_layouts_across_splits(tmp_path):
    src = write(tmp_path / "train.csv", [good(i) for i in range(300)])
    ev = write(tmp_path / "eval.csv", [DATETIME.format(key=i).encode() for i in range(30)])
    out = {split: str(tmp_path / "out" / split) for split in stage_data.SPLITS}
    with pytest.raises(InputError, match=r"^mixed layouts: the train data is in the lab layout but the eval data \(.*eval\.csv\)"):
        stage(str(src), out, eval_source=str(ev))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.csv"))


def test_stage_data_reads_gzip_and_counts_hostile_rows(tmp_path):
    rows = [good(i) for i in range(400)]
    rows[7] = b"z" * HUGE
    rows[8] = rows[8] + b"\xff"
    src = write(tmp_path / "src.csv.gz", [BOM + rows[0], *rows[1:]])
    staged = stage(str(src), {split: str(tmp_path / "out" / split) for split in stage_data.SPLITS})
    meta = staged["train"].metadata
    assert meta["source_rows"] == 400 and meta["dropped"] == {"line_too_long": 1, "not_utf8": 1}
    assert sum(s.metadata["rows"] for s in staged.values()) == 398


def test_gzip_data_not_named_gz_and_corrupt_gzip_get_one_line(tmp_path):
    plain_name = tmp_path / "d.csv"
    plain_name.write_bytes(gzip.compress(good(0) + b"\n"))
    with pytest.raises(InputError, match=r"is gzip-compressed but its name does not end in \.gz: rename it to .*d\.csv\.gz$"):
        validation.scan(str(plain_name))
    broken = tmp_path / "e.csv.gz"
    broken.write_bytes(gzip.compress(b"\n".join(good(i) for i in range(2000)))[:-500])
    with pytest.raises(InputError, match=r"e\.csv\.gz cannot be read \(.*\): check that it is a CSV file"):
        validation.scan(str(broken))


@pytest.mark.parametrize(
    ("files", "code", "expected"),
    [
        ({"a.csv.gz": [good(0), good(1)]}, 0, "2 rows in 1 file(s) (lab layout): 2 valid, 0 dropped"),
        (
            {"a.csv": [good(0), b"\xc3(", b"q" * HUGE, good(1), *[good(i) for i in range(2, 20)]]},
            0,
            "22 rows in 1 file(s) (lab layout): 20 valid, 2 dropped (line_too_long=1, not_utf8=1)",
        ),
        ({"a.csv": [good(0)], "b.csv": [DATETIME.format(key=1).encode()]}, 2, "error: mixed layouts in the data: "),
    ],
)
def test_data_check_prints_counts_or_one_line(tmp_path, capsys, files, code, expected):
    for name, lines in files.items():
        write(tmp_path / name, lines)
    assert cli_main(["data", "check", str(tmp_path)]) == code
    out, err = capsys.readouterr()
    if code:
        assert err.startswith(expected) and err.count("\n") == 1 and not out
    else:
        assert out.splitlines()[0] == expected and not err  # the report once, on stdout


def test_data_check_takes_several_files_and_fails_past_max_bad_fraction(tmp_path, capsys):
    """As documented: several files; past --max_bad_fraction the report, then one error line and exit 2, as the trainer."""
    write(tmp_path / "good.csv", [good(i) for i in range(5)])
    write(tmp_path / "bad.csv", [good(5), b"1,2,3", b"x,y", b"-", b"0,0"])  # 4 of 5 bad
    argv = ["data", "check", str(tmp_path / "good.csv"), str(tmp_path / "bad.csv")]
    assert cli_main(argv) == 2
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "10 rows in 2 file(s) (lab layout): 6 valid, 4 dropped (wrong_column_count=4)"
    assert out.count("rows in 2 file(s)") == 1 and out.count("\n  dropped ") == 4
    assert err.count("\n") == 1 and err.startswith("error: 4 of 10 data rows (40.0%) are bad") and "--max_bad_fraction" in err
    assert cli_main([*argv, "--max_bad_fraction", "0.5"]) == 0


def test_trainer_refuses_mixed_layouts_with_one_line(tmp_path, capsys):
    from trainer import task

    write(tmp_path / "a.csv", [good(i) for i in range(50)])
    write(tmp_path / "b.csv", [DATETIME.format(key=i).encode() for i in range(50)])
    code = task.main(
        ["--train_data_paths", str(tmp_path / "*.csv"), "--eval_data_paths", str(tmp_path / "a.csv"), "--output_dir", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: mixed layouts in the training data: ")
    assert not (tmp_path / "out").exists()
