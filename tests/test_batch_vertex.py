"""`taxifare batch-predict --model ...`: a Vertex AI BatchPredictionJob, against a local Vertex API server.

The real command in its own process (gRPC reads its TLS roots once per process) sends the
official ``CreateBatchPredictionJob`` and ``GetBatchPredictionJob`` to tests/_vertex_fake.py;
the offline checks run in-process and must refuse bad input before any request.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _vertex_fake import VertexServer, self_signed
from conftest import ROOT

from pipeline.cli import main as taxifare

PARENT = "projects/test-project/locations/us-central1"


@pytest.fixture
def vertex(tmp_path):
    key, cert, path = self_signed(str(tmp_path))
    server = VertexServer(key, cert)
    yield server, path
    server.stop()


def submit(vertex, *args: str):
    server, ca = vertex
    env = {**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": ca, "NO_GCE_CHECK": "True", "GCE_METADATA_HOST": "127.0.0.1:9"}
    base = ["--project", "test-project", "--region", "us-central1", "--api-endpoint", server.endpoint, "--anonymous"]
    cmd = [sys.executable, "-m", "pipeline.cli", "batch-predict", *args, *base]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_submits_a_batch_prediction_job_and_waits(vertex):
    server, _ = vertex
    proc = submit(
        vertex,
        "--model", "1234@2",
        "--input", "gs://my-bucket/trips/a.jsonl,gs://my-bucket/trips/b.jsonl",
        "--output", "gs://my-bucket/batch/",
        "--machine-type", "n1-standard-4",
        "--starting-replica-count", "2",
        "--max-replica-count", "5",
        "--wait", "--poll-interval", "0.05",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [request] = server.requests("CreateBatchPredictionJob")
    job = request.batch_prediction_job
    assert request.parent == PARENT
    assert job.model == f"{PARENT}/models/1234@2" and job.display_name == "taxifare-batch-predict"
    assert job.input_config.instances_format == "jsonl"
    assert list(job.input_config.gcs_source.uris) == ["gs://my-bucket/trips/a.jsonl", "gs://my-bucket/trips/b.jsonl"]
    assert (job.instance_config.instance_type, job.instance_config.key_field) == ("object", "key")
    assert job.output_config.predictions_format == "jsonl"
    assert job.output_config.gcs_destination.output_uri_prefix == "gs://my-bucket/batch"
    resources = job.dedicated_resources
    assert (resources.machine_spec.machine_type, resources.starting_replica_count, resources.max_replica_count) == ("n1-standard-4", 2, 5)
    assert dict(job.labels) == {"taxifare": "batch-predict"}
    name = f"{PARENT}/batchPredictionJobs/1"
    assert [r.name for r in server.requests("GetBatchPredictionJob")] == [name, name]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f"batch prediction job {name} (taxifare-batch-predict): JOB_STATE_PENDING; output under gs://my-bucket/batch"
    assert lines[-1] == (
        "JOB_STATE_SUCCEEDED: 1,665 rows scored, 0 failed; predictions in "
        "gs://my-bucket/batch/prediction-taxifare-batch-predict-2026_01_01T00_00_00_000Z"
    )


def test_a_bigquery_table_goes_as_objects_without_the_fare(vertex):
    server, _ = vertex
    proc = submit(vertex, "--model", f"{PARENT}/models/77", "--input", "bq://test-project.trips.valid", "--output", "gs://my-bucket/b")
    assert proc.returncode == 0, proc.stderr
    job = server.requests("CreateBatchPredictionJob")[0].batch_prediction_job
    assert job.input_config.instances_format == "bigquery"
    assert job.input_config.bigquery_source.input_uri == "bq://test-project.trips.valid"
    config = job.instance_config
    assert (config.instance_type, config.key_field, list(config.excluded_fields)) == ("object", "key", ["fare_amount"])
    assert server.requests("GetBatchPredictionJob") == []  # no --wait


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "1", "--input", "gs://b-ok/x.csv", "--instances-format", "csv"], "Vertex AI sends CSV rows as lists"),
        (["--model", "1", "--input", "trips.jsonl"], "--input trips.jsonl: a Vertex AI job reads gs:// files"),
        (["--model", "1", "--output", "out"], "--output out: a Vertex AI job writes under a gs:// prefix"),
        (["--model", "a/b"], "--model 'a/b' must be a Vertex AI model ID"),
        (["--model", "projects/other-project/locations/us-central1/models/1"], "is not in --project test-project"),
        (["--model", "1", "--model-base-path", "x"], "--model names a Vertex AI model: drop --model-base-path"),
        (["--model", "1", "--max-replica-count", "0"], "--max-replica-count must be at least 1"),
        (["--model", "1", "--starting-replica-count", "3"], "--starting-replica-count 3 is above --max-replica-count 2"),
        (["--model", "1", "--region", "mars-north1"], "--region 'mars-north1' is not a Vertex AI region"),
        (["--model", "1", "--project", "BAD"], "--project 'BAD' is not a project id"),
        (["--model", "1", "--input", "bq://nope"], "give one BigQuery table as bq://PROJECT.DATASET.TABLE"),
    ],
)
def test_bad_settings_are_refused_offline(args, message, capsys):
    base = {"--project": "test-project", "--region": "us-central1", "--input": "gs://b-ok/x.jsonl", "--output": "gs://b-ok/out"}
    given = dict(zip(args[::2], args[1::2], strict=False))
    flags = [item for flag, value in {**base, **given}.items() for item in (flag, value)]
    # nothing listens at the endpoint: a request would fail with another message
    code = taxifare(["batch-predict", *flags, "--api-endpoint", "127.0.0.1:9", "--anonymous"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
