"""``taxifare batch-predict --model ...``: the same job as a Vertex AI ``BatchPredictionJob``.

The job is built from the official message types (``google.cloud.aiplatform_v1``) and created
with ``JobServiceClient.create_batch_prediction_job``; ``--wait`` polls
``get_batch_prediction_job`` until it ends. Every setting is checked offline first (the rules of
:mod:`base.cloud_checks`, as ``taxifare submit`` checks its own), before credentials are
looked up or a request is sent.

Vertex AI sends each row to the model's serving container (``taxifare serve``, which takes
instance objects): JSON lines go as they are, with ``key`` set aside by Vertex (``key_field``) and
written beside the prediction; a BigQuery table goes as objects (``instance_type=object``) without
its ``fare_amount`` column. CSV is refused: Vertex AI wants a header row and sends CSV rows as
lists, which the server does not take.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from typing import Any

from base import checks, cloud_checks
from base.errors import InputError
from trainer import schema

_MODEL = re.compile(r"(?:projects/[^/]+/locations/[^/]+/models/)?([0-9A-Za-z_-]+)(@[0-9A-Za-z_-]+)?")
_BIGQUERY = re.compile(r"bq://[a-z][a-z0-9-]{4,28}[a-z0-9]\.\w+\.[\w$-]+")
TERMINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED", "JOB_STATE_PARTIALLY_SUCCEEDED")
DEFAULT_MACHINE_TYPE = "n1-standard-2"


@dataclasses.dataclass(frozen=True)
class JobSource:
    """Where a BatchPredictionJob reads, in the terms of its ``input_config`` and ``instance_config``."""

    instances_format: str
    gcs_uris: list[str]
    bigquery_uri: str
    #: Columns not sent to the model (a BigQuery table's fare).
    excluded_fields: list[str]


def job_source(text: str, instances_format: str | None = None, flag: str = "batch_source") -> JobSource:
    """gs:// JSON-lines files (separated by commas) or one ``bq://PROJECT.DATASET.TABLE``, checked offline.

    Raises:
        InputError: CSV, a local path, or not a BigQuery table name.
    """
    sources = [s.strip() for s in text.split(",") if s.strip()]
    if not sources:
        raise InputError(f"{flag} is empty: give gs:// JSON-lines files or bq://PROJECT.DATASET.TABLE")
    if sources[0].startswith("bq://"):
        if len(sources) != 1 or not _BIGQUERY.fullmatch(sources[0]):
            raise InputError(f"{flag} {text}: give one BigQuery table as bq://PROJECT.DATASET.TABLE")
        return JobSource("bigquery", [], sources[0], [schema.LABEL])
    if (instances_format or "jsonl") == "csv":
        raise InputError(
            "--instances-format csv: Vertex AI sends CSV rows as lists, which the model's server does not take: give JSON lines "
            "of instances (one object per line, like the lab's test.json) or a BigQuery table (bq://...)"
        )
    for uri in sources:
        if not uri.startswith("gs://"):
            raise InputError(f"{flag} {uri}: a Vertex AI job reads gs:// files (or one bq:// table); copy the file to a bucket")
        cloud_checks.check_bucket_name(uri[len("gs://") :].split("/", 1)[0], flag)
    return JobSource("jsonl", sources, "", [])


@dataclasses.dataclass(frozen=True)
class VertexBatch:
    """A Vertex AI batch prediction job's settings, checked."""

    project: str
    region: str
    model: str
    source: JobSource
    output: str
    predictions_format: str
    machine_type: str
    starting_replica_count: int
    max_replica_count: int
    display_name: str
    service_account: str | None

    @property
    def parent(self) -> str:
        """``projects/P/locations/L``."""
        return f"projects/{self.project}/locations/{self.region}"

    def job(self) -> Any:
        """The ``google.cloud.aiplatform_v1.BatchPredictionJob`` to create."""
        from google.cloud.aiplatform_v1 import types

        job = types.BatchPredictionJob(
            display_name=self.display_name,
            model=self.model,
            output_config=types.BatchPredictionJob.OutputConfig(
                predictions_format=self.predictions_format, gcs_destination=types.GcsDestination(output_uri_prefix=self.output)
            ),
            dedicated_resources=types.BatchDedicatedResources(
                machine_spec=types.MachineSpec(machine_type=self.machine_type),
                starting_replica_count=self.starting_replica_count,
                max_replica_count=self.max_replica_count,
            ),
            labels={"taxifare": "batch-predict"},
        )
        source = self.source
        job.input_config = types.BatchPredictionJob.InputConfig(instances_format=source.instances_format)
        if source.bigquery_uri:
            job.input_config.bigquery_source = types.BigQuerySource(input_uri=source.bigquery_uri)
        else:
            job.input_config.gcs_source = types.GcsSource(uris=source.gcs_uris)
        job.instance_config = types.BatchPredictionJob.InstanceConfig(
            instance_type="object", key_field=schema.KEY, excluded_fields=source.excluded_fields
        )
        if self.service_account:
            job.service_account = self.service_account
        return job


def check(args: argparse.Namespace) -> VertexBatch:
    """The job's settings from the command line, checked offline.

    Raises:
        InputError: one line naming the flag and the fix.
    """
    project = cloud_checks.check_project(args.project)
    region = cloud_checks.check_region(args.region)
    cloud_checks.check_api_endpoint(args.api_endpoint)
    if args.anonymous and not cloud_checks.is_loopback(args.api_endpoint):
        raise InputError("--anonymous is only for a local --api-endpoint (a test server)")
    found = _MODEL.fullmatch(args.model or "")
    if not found:
        raise InputError(f"--model {args.model!r} must be a Vertex AI model ID or projects/P/locations/L/models/ID (optionally @VERSION)")
    model = f"projects/{project}/locations/{region}/models/{found[1]}{found[2] or ''}"
    if args.model.startswith("projects/") and not args.model.startswith(f"projects/{project}/locations/{region}/"):
        raise InputError(f"--model {args.model} is not in --project {project} --region {region}: give the model of that project and region")
    local = [flag for flag, value in (("--model-base-path", args.model_base_path), ("--model-dir", args.model_dir)) if value]
    if local or args.version is not None or args.label is not None:
        raise InputError(f"--model names a Vertex AI model: drop {', '.join(local) or '--version/--label'} (use --model ID@VERSION)")
    source = job_source(args.input, args.instances_format, "--input")
    if not args.output.startswith("gs://"):
        raise InputError(f"--output {args.output}: a Vertex AI job writes under a gs:// prefix, e.g. gs://BUCKET/batch")
    cloud_checks.check_bucket_name(args.output[len("gs://") :].split("/", 1)[0], "--output")
    cloud_checks.check_service_account(args.service_account)
    for flag, value in (("--starting-replica-count", args.starting_replica_count), ("--max-replica-count", args.max_replica_count)):
        cloud_checks.check_at_least_one(value, flag)
    if args.starting_replica_count > args.max_replica_count:
        raise InputError(f"--starting-replica-count {args.starting_replica_count} is above --max-replica-count {args.max_replica_count}")

    machine_type = checks.machine_type("--machine-type", args.machine_type or DEFAULT_MACHINE_TYPE)
    display = args.job_display_name or "taxifare-batch-predict"
    checks.display_name("--job-display-name", display)
    return VertexBatch(
        project, region, model, source, args.output.rstrip("/"), args.format, str(machine_type),
        args.starting_replica_count, args.max_replica_count, display, args.service_account,
    )  # fmt: skip


def client(region: str, api_endpoint: str | None, api_transport: str | None, anonymous: bool) -> Any:
    """A ``JobServiceClient`` for ``region`` (credentials looked up only now, unless ``anonymous``)."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import aiplatform_v1

    credentials = None
    if anonymous:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    options = ClientOptions(api_endpoint=api_endpoint or f"{region}-aiplatform.googleapis.com")
    return aiplatform_v1.JobServiceClient(client_options=options, credentials=credentials, transport=api_transport or "grpc")


def run(args: argparse.Namespace) -> int:
    """Check, submit, and with ``--wait`` follow the job; print its name and outcome."""
    spec = check(args)
    if args.wait and not args.poll_interval > 0:
        raise InputError(f"--poll-interval must be positive seconds, got {args.poll_interval}")
    try:
        jobs = client(spec.region, args.api_endpoint, args.api_transport, args.anonymous)
        created = jobs.create_batch_prediction_job(parent=spec.parent, batch_prediction_job=spec.job())
        print(f"batch prediction job {created.name} ({spec.display_name}): {created.state.name}; output under {spec.output}")
        if not args.wait:
            return 0
        job = created
        while job.state.name not in TERMINAL:
            time.sleep(args.poll_interval)
            job = jobs.get_batch_prediction_job(name=created.name)
            print(f"batch prediction job {job.name}: {job.state.name}", file=sys.stderr, flush=True)
    except InputError:
        raise
    except Exception as exc:  # google.api_core / google.auth errors: one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(f"Vertex AI: {type(exc).__name__}: {first[:300]}") from None
    stats = job.completion_stats
    where = job.output_info.gcs_output_directory or spec.output
    print(f"{job.state.name}: {stats.successful_count:,} rows scored, {stats.failed_count:,} failed; predictions in {where}")
    if job.error.message:
        print(f"error: {job.error.message}", file=sys.stderr)
    return 0 if job.state.name == "JOB_STATE_SUCCEEDED" else 1
