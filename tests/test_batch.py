"""``taxifare batch-predict`` on this machine: the server's answers, bad rows, labels, formats, resume after a kill, workers.

A real server on loopback answers the same rows (tests/_serving_helpers.py publishes the versions
like deploy does); jobs run through the ``taxifare`` entry point, and the killed job is a real
process killed with SIGKILL.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _serving_helpers import export_untrained, publish

from pipeline.cli import main as taxifare
from serving import batch_formats
from serving.client import RestClient
from serving.payload import Limits
from serving.server import ModelServer, ServerConfig
from trainer import schema, validation

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A model base path with versions 1 and 2 (seeded random weights) and ``canary`` on 2, ``stable`` on 1."""
    tmp = tmp_path_factory.mktemp("batch")
    path = tmp / "taxifare"
    for version in (1, 2):
        publish(export_untrained(tmp / f"export{version}", seed=version), path, version)
    (path / "labels.json").write_text(json.dumps({"stable": 1, "canary": 2}))
    return path


def rows_of(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return [row for row in csv.reader(fh) if row]


def instance_of(row: list[str]) -> dict[str, float]:
    return {name: float(value) for name, value in zip(schema.NUMERIC_FEATURES, row[1:6], strict=True)}


def predictions(out: Path) -> list[dict]:
    lines = []
    for shard in sorted(out.glob("predictions_*.jsonl")):
        lines += [json.loads(line) for line in shard.read_text().splitlines()]
    return lines


def run_job(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    code = taxifare(["batch-predict", "--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), [line for line in captured.err.splitlines() if "error" in line]


def test_scores_taxi_valid_as_the_server_answers(base, real_valid, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_job(
        capsys, "--input", str(real_valid), "--output", str(out), "--model-base-path", str(base), "--shard-rows", "700"
    )
    assert code == 0
    summary = json.loads((out / "batch_summary.json").read_text())
    rows = rows_of(real_valid)
    assert summary["rows"] == summary["scored"] == len(rows) and summary["errors"] == 0
    assert summary["version"] == 1 and summary["shards"] == 3  # the stable label, 1665 rows in shards of 700
    assert sorted(p.name for p in out.iterdir()) == [
        ".taxifare_batch_job.json", "batch_summary.json", "predictions_00001.jsonl", "predictions_00002.jsonl", "predictions_00003.jsonl"
    ]  # fmt: skip
    assert stdout == [f"scored {len(rows):,} of {len(rows):,} rows with version 1 in {summary['seconds']:.1f}s "
                      f"({summary['rows_per_second']:,.0f} rows/s after {summary['load_seconds']:.1f}s loading the model); "
                      f"0 errors; 3 shard(s) in {out}"]  # fmt: skip
    assert 0 < summary["load_seconds"] < summary["seconds"]
    got = predictions(out)
    assert [p["instance"]["key"] for p in got] == [row[6] for row in rows]  # in input order, key carried through
    assert got[0]["instance"] == {**instance_of(rows[0]), "key": rows[0][6]}
    server = ModelServer(ServerConfig(str(base), rest_port=0, grpc_port=0, poll_interval=0.1, limits=Limits(max_batch=5000))).start()
    try:
        assert server.wait_available(60)
        client = RestClient(f"http://127.0.0.1:{server.rest_port}", timeout=60)
        answers = client.predict([instance_of(row) for row in rows])
        client.close()
    finally:
        server.stop(grace=1)
    assert len(answers) == len(got)
    assert max(abs(a - p["prediction"]) for a, p in zip(answers, got, strict=True)) < 1e-4


def test_label_version_and_csv_output(base, real_valid, tmp_path, capsys):
    by_version = {}
    for flags in (["--label", "canary"], ["--version", "1"]):
        out = tmp_path / flags[1]
        assert run_job(capsys, "--input", str(real_valid), "--output", str(out), "--model-base-path", str(base), *flags)[0] == 0
        by_version[flags[1]] = [p["prediction"] for p in predictions(out)]
        assert json.loads((out / "batch_summary.json").read_text())["version"] == {"canary": 2, "1": 1}[flags[1]]
    assert by_version["canary"] != by_version["1"]
    out = tmp_path / "csv"
    args = ["--input", str(real_valid), "--output", str(out), "--model-dir", str(base / "1"), "--format", "csv"]
    assert run_job(capsys, *args)[0] == 0
    lines = (out / "predictions_00001.csv").read_text().splitlines()
    assert lines[0] == "fare_amount,pickuplon,pickuplat,dropofflon,dropofflat,passengers,key,predicted_fare"
    first = rows_of(real_valid)[0]
    assert lines[1].rsplit(",", 1)[0] == ",".join(first)
    assert [float(line.rsplit(",", 1)[1]) for line in lines[1:]] == by_version["1"]


BAD_LINES = [
    "7.5,-74.0,40.7,-73.9,abc,1,bad-number",
    "7.5,0,0,-73.9,40.7,1,bad-nyc",
    "7.5,-74.0,40.7",
    "",
    ',-73.99,40.75,-73.98,40.76,1,"quoted\\key',
    "7.5,-74.0,40.7,-73.9,40.7,0,bad-passengers",
]


def test_bad_rows_go_to_the_errors_file_with_the_right_counts(base, real_valid, tmp_path, capsys):
    good = real_valid.read_text().splitlines()[:40]
    source = tmp_path / "trips.csv.gz"
    with gzip.open(source, "wt") as fh:
        fh.write("\n".join(good[:20] + BAD_LINES + good[20:]) + "\n")
    out = tmp_path / "out"
    code, _, _ = run_job(capsys, "--input", str(source), "--output", str(out), "--model-base-path", str(base))
    assert code == 0
    summary = json.loads((out / "batch_summary.json").read_text())
    assert (summary["rows"], summary["scored"], summary["errors"]) == (45, 41, 4)  # the blank line is no row
    assert summary["errors_by_code"] == {"not_a_number": 1, "outside_nyc": 1, "wrong_column_count": 1, "bad_passengers": 1}
    errors = [json.loads(line) for line in (out / "errors_00001.jsonl").read_text().splitlines()]
    assert [e["source"] for e in errors] == [f"{source}:{n}" for n in (21, 22, 23, 26)]
    assert errors[0] == {
        "instance": BAD_LINES[0],
        "error": {"code": 3, "message": "not_a_number: dropofflat='abc' is not a number", "reason": "not_a_number"},
        "source": f"{source}:21",
    }
    assert "pickuplon=0 is outside the valid range" in errors[1]["error"]["message"]
    scored = predictions(out)
    assert len(scored) == 41 and scored[20]["instance"]["key"] == '"quoted\\key'  # escaped into valid JSON


def test_too_many_bad_rows_stop_the_job_with_one_line(base, tmp_path, capsys):
    source = tmp_path / "mostly-bad.csv"
    source.write_text("\n".join(["7.5,0,0,-73.9,40.7,1,x"] * 30 + ["7.5,-73.99,40.75,-73.98,40.76,1,ok"] * 70) + "\n")
    code, _, err = run_job(capsys, "--input", str(source), "--output", str(tmp_path / "out"), "--model-base-path", str(base))
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: 30 of 100 rows (30.0%) cannot be scored, more than --max-error-fraction 0.1; 30 of them in")
    assert str(source) in err[0] and "outside_nyc" in err[0]
    assert batch_formats.DEFAULT_MAX_ERROR_FRACTION == validation.MAX_BAD_FRACTION


def test_jsonl_instances_use_the_servers_validation(base, tmp_path, capsys):
    source = tmp_path / "instances.jsonl"
    trips = [
        {**schema.TEST_INSTANCE, "key": "lab"},
        {**schema.TEST_INSTANCE, "passengers": "two"},
        {"pickuplon": -73.9},
        dict(schema.TEST_INSTANCE),
    ]
    source.write_text("\n".join([*map(json.dumps, trips), "{not json", "[1, 2]"]) + "\n")
    out = tmp_path / "out"
    assert (
        run_job(capsys, "--input", str(source), "--output", str(out), "--model-dir", str(base / "1"), "--max-error-fraction", "1")[0] == 0
    )
    scored = predictions(out)
    assert [p["instance"] for p in scored] == [trips[0], trips[3]]
    assert scored[0]["prediction"] == scored[1]["prediction"]
    errors = [json.loads(line)["error"] for line in (out / "errors_00001.jsonl").read_text().splitlines()]
    assert [e["reason"] for e in errors] == ["invalid_instance", "invalid_instance", "malformed_json", "not_an_object"]
    assert errors[0]["message"] == 'invalid_instance: passengers must be a number, got a string ("two")'
    assert "missing features" in errors[1]["message"]
    args = ["--input", str(source), "--output", str(tmp_path / "csv"), "--model-dir", str(base / "1"), "--max-error-fraction", "1"]
    assert run_job(capsys, *args, "--format", "csv")[0] == 0
    lines = (tmp_path / "csv" / "predictions_00001.csv").read_text().splitlines()
    assert lines[0] == "pickuplon,pickuplat,dropofflon,dropofflat,passengers,key,predicted_fare"
    assert lines[1] == f"-73.885262,40.773008,-73.987232,40.732403,2,lab,{scored[0]['prediction']!r}"
    assert lines[2].startswith("-73.885262,40.773008,-73.987232,40.732403,2,,") and len(lines) == 3


def test_another_jobs_folder_is_refused(base, real_valid, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--input", str(real_valid), "--output", str(out), "--model-base-path", str(base)]
    assert run_job(capsys, *args)[0] == 0
    code, _, err = run_job(capsys, *args[:-1], str(base), "--label", "canary")
    assert code == 2 and err == [f"error: --output {out} holds the output of another batch job (its model_dir differ): "
                                 "pass a new folder, or delete that one to start over"]  # fmt: skip
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = run_job(capsys, *args[:3], str(tmp_path / "other"), *args[4:])
    assert code == 2 and "is not empty and holds no batch job" in err[0]


def _synthetic(tmp_path: Path, rows: int) -> Path:
    from trainer import synthetic

    return Path(synthetic.generate(rows, str(tmp_path / "data"), seed=3, fractions=(1.0, 0.0, 0.0)).paths["train"])


def test_a_killed_job_resumes_from_its_finished_shards(base, tmp_path, capsys):
    source = _synthetic(tmp_path, 60_000)
    clean = tmp_path / "clean"
    args = ["--input", str(source), "--model-base-path", str(base), "--shard-rows", "4000", "--batch-size", "1000"]
    assert run_job(capsys, *args, "--output", str(clean))[0] == 0
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "batch-predict", *args, "--output", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "predictions_00002.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in out.glob("predictions_*"))
    assert 2 <= len(finished) < 15, finished  # killed mid-job
    for name in finished:  # a shard in place is whole
        assert (out / name).read_bytes() == (clean / name).read_bytes()
    assert run_job(capsys, *args, "--output", str(out))[0] == 0
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["resumed_shards"] == len(finished) and summary["shards"] == 15 and summary["rows"] == 60_000
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in clean.iterdir())
    for shard in clean.glob("predictions_*"):
        assert (out / shard.name).read_bytes() == shard.read_bytes()


@pytest.mark.slow
def test_workers_write_what_one_process_writes(base, tmp_path, capsys):
    source = _synthetic(tmp_path, 12_000)
    outputs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        args = ["--input", str(source), "--output", str(out), "--model-base-path", str(base), "--shard-rows", "2500", "--workers", workers]
        assert run_job(capsys, *args)[0] == 0
        outputs[workers] = {p.name: p.read_bytes() for p in out.glob("predictions_*")}
    assert len(outputs["1"]) == 5 and outputs["1"] == outputs["2"]


def test_bad_settings_are_one_line(base, real_valid, tmp_path, capsys):
    cases = [
        (["--model-base-path", str(base), "--version", "7"], "version 7 is not a complete version of"),
        (["--model-base-path", str(base), "--label", "nope"], "--label nope: "),
        (["--model-dir", str(tmp_path)], "holds no SavedModel"),
        (["--model-base-path", str(base), "--workers", "0"], "--workers must be a positive integer, got 0"),
        (["--model-base-path", str(base), "--project", "p"], "--project only go with --model"),
        ([], "say which model scores the rows"),
    ]
    for flags, expected in cases:
        code, _, err = run_job(capsys, "--input", str(real_valid), "--output", str(tmp_path / "o"), *flags)
        assert code == 2 and len(err) == 1 and expected in err[0], (flags, err)
    code, _, err = run_job(capsys, "--input", str(tmp_path / "none*.csv"), "--output", str(tmp_path / "o"), "--model-dir", str(base / "1"))
    assert code == 2 and "no file matches the batch input pattern" in err[0]


def test_reads_gzipped_csv_from_gcs_through_the_storage_layer(base, real_valid, gcs, tmp_path, capsys):
    import io

    from _gcs import make_bucket, upload

    make_bucket(gcs, "batch-in")
    lines = real_valid.read_text().splitlines()
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb") as fh:
        fh.write(("\n".join(lines[:100]) + "\n").encode())
    upload(gcs, "gs://batch-in/trips/part-0.csv.gz", packed.getvalue())
    upload(gcs, "gs://batch-in/trips/part-1.csv.gz", packed.getvalue())
    out = tmp_path / "out"
    code, _, _ = run_job(capsys, "--input", "gs://batch-in/trips/part-*.csv.gz", "--output", str(out), "--model-base-path", str(base))
    assert code == 0
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["inputs"] == ["gs://batch-in/trips/part-0.csv.gz", "gs://batch-in/trips/part-1.csv.gz"]
    assert summary["rows"] == summary["scored"] == 200
    scored = predictions(out)
    assert scored[0] == scored[100] and scored[0]["instance"]["key"] == lines[0].rsplit(",", 1)[1]
