from pathlib import Path

import pytest

from base import storage
from base.errors import InputError
from trainer import schema, validation
from trainer.schema import Reason, Variant

GOOD = "12.0,-73.987625,40.750617,-73.971163,40.78518,1,0"
BAD_ROWS = {
    Reason.COLUMNS: "12.0,-73.987625,40.750617,-73.971163,40.78518,1",
    Reason.NOT_A_NUMBER: "12.0,abc,40.750617,-73.971163,40.78518,1,1",
    Reason.OUTSIDE_NYC: "12.0,0.0,0.0,-73.971163,40.78518,1,2",
    Reason.BAD_PASSENGERS: "12.0,-73.987625,40.750617,-73.971163,40.78518,0,3",
    Reason.FARE_TOO_LOW: "2.0,-73.987625,40.750617,-73.971163,40.78518,1,4",
    Reason.FARE_TOO_HIGH: "900.0,-73.987625,40.750617,-73.971163,40.78518,1,5",
}


def write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("reason", list(BAD_ROWS))
def test_each_bad_row_is_dropped_and_counted_with_file_and_line(tmp_path, reason):
    path = write(tmp_path, "d.csv", [GOOD] * 20 + [BAD_ROWS[reason]] + [GOOD] * 5)
    report = validation.scan(str(path), max_bad_fraction=0.5)
    assert report.rows == 26 and report.valid == 25
    assert report.dropped[reason.value] == 1
    assert sum(report.dropped.values()) == 1
    assert report.examples == [f"{path}:21: {reason.value}: {BAD_ROWS[reason]!r}"]


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e", "", " ", "0x10", "1,5"])
def test_non_numbers_including_nan_and_inf_are_rejected(tmp_path, text):
    row = f"12.0,-73.98,40.75,-73.97,40.78,{text},9" if text != "1,5" else "12.0,-73.98,40.75,-73.97,40.78,1,5,9"
    path = write(tmp_path, "d.csv", [GOOD, row])
    report = validation.scan(str(path), max_bad_fraction=None)
    assert report.valid == 1


def test_datetime_variant_checks_the_timestamp(tmp_path):
    good = "11.3,2011-01-28 20:42:59 UTC,-73.999022,40.739146,-73.990369,40.717866,1,0"
    bad = "11.3,yesterday,-73.999022,40.739146,-73.990369,40.717866,1,1"
    path = write(tmp_path, "d.csv", [good, bad, good])
    report = validation.scan(str(path), max_bad_fraction=None)
    assert report.variant is Variant.DATETIME
    assert report.dropped[Reason.BAD_DATETIME.value] == 1 and report.valid == 2


def test_too_many_bad_rows_stops_with_one_clear_message(tmp_path):
    path = write(tmp_path, "d.csv", [GOOD] * 5 + [BAD_ROWS[Reason.OUTSIDE_NYC]] * 5)
    with pytest.raises(InputError) as err:
        validation.scan(str(path), what="training data", max_bad_fraction=0.1)
    message = str(err.value)
    assert "5 of 10 training data rows (50.0%) are bad (outside_nyc=5)" in message
    assert str(path) in message and "--max_bad_fraction" in message


def test_glob_matching_no_file_names_the_pattern(tmp_path):
    pattern = str(tmp_path / "nothing*.csv")
    with pytest.raises(InputError, match=r"no file matches the training data pattern '.*nothing\*\.csv'"):
        validation.scan(pattern, what="training data")


def test_empty_file_is_reported(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InputError, match="is empty"):
        validation.scan(str(path))


def test_first_row_of_unknown_layout_is_reported(tmp_path):
    path = write(tmp_path, "d.csv", ["1,2,3"])
    with pytest.raises(InputError, match="fits no taxi layout"):
        validation.scan(str(path))


def test_expand_handles_commas_directories_and_duplicates(tmp_path):
    a = write(tmp_path, "a.csv", [GOOD])
    b = write(tmp_path, "b.csv", [GOOD])
    assert storage.expand(f"{a},{tmp_path}/*.csv") == [str(a), str(b)]
    assert storage.expand(str(tmp_path)) == [str(a), str(b)]


def test_statistics_over_real_sample(real_train):
    report = validation.scan(str(real_train))
    assert report.rows == 7770 and report.bad == 0
    stats = report.as_dict()["columns"]
    assert stats["fare_amount"]["min"] == 2.5
    assert 10 < stats["fare_amount"]["mean"] < 12
    assert stats["passengers"]["max"] == 6


def test_in_graph_decoder_agrees_with_validator_row_for_row(tmp_path):
    import tensorflow as tf

    from trainer.inputs import decode_lines

    lines = [GOOD, *BAD_ROWS.values(), "12.0, -73.98 ,40.75,-73.97,40.78,1,7", "12,-78.0,45.0,-70.0,37.0,9,8", "2.5,-74,40.7,-74,40.7,1,9"]
    lines += ["1e1,-73.98,40.75,-73.97,40.78,+2,10", ".5e1,-73.98,40.75,-73.97,40.78,1.,11", ""]
    path = write(tmp_path, "d.csv", lines)
    report = validation.ScanReport(files=[str(path)], variant=Variant.LAB)
    kept = [row for table in validation.iter_valid(str(path), Variant.LAB, report) for row in table.column(schema.KEY).to_pylist()]
    _, _, valid = decode_lines(tf.constant(lines), Variant.LAB)
    in_graph = [line.split(",")[-1].strip() for line, ok in zip(lines, valid.numpy(), strict=True) if ok]
    assert kept == in_graph
    assert kept == ["0", "7", "8", "9", "10", "11"]
