"""``taxifare batch-predict``: its flags and how it runs (locally, or as a Vertex AI batch prediction job with ``--model``)."""

from __future__ import annotations

import argparse
import os
import sys

from serving.batch_formats import DEFAULT_BATCH_SIZE, DEFAULT_MAX_ERROR_FRACTION, DEFAULT_SHARD_ROWS, INSTANCE_FORMATS, OUTPUT_FORMATS

#: Flags of a Vertex AI batch prediction job (``--model`` set), with their help.
VERTEX_FLAGS = {
    "--project": "the Google Cloud project ID",
    "--region": "the Vertex AI region of the model and the job, e.g. us-central1",
    "--api-endpoint": "Vertex AI API host:port (default: the regional one; tests)",
    "--job-display-name": "the job's display name (default taxifare-batch-predict)",
    "--machine-type": "machine type of the job's replicas (default n1-standard-2)",
    "--service-account": "service account the job runs as (default: Vertex AI's)",
}


def add_parser(subparsers: argparse._SubParsersAction, command: dict[str, str]) -> None:  # type: ignore[type-arg]
    """Register ``batch-predict`` with its flags."""
    p = subparsers.add_parser("batch-predict", **command)  # type: ignore[arg-type]
    p.add_argument(
        "--input",
        required=True,
        help="the rows to score: CSV in either of the lab's layouts (plain or .gz) or JSON lines of instances; a file, a glob, "
        "several separated by commas, or a directory; local or gs://",
    )
    p.add_argument("--output", required=True, help="the output folder (created; a rerun of the same job resumes in it); gs:// with --model")
    which = p.add_argument_group("the model (local)")
    which.add_argument("--model-base-path", help="a model base path (versions 1/, 2/, ...): scores with what its default route serves")
    which.add_argument("--version", type=int, help="with --model-base-path: this version instead")
    which.add_argument("--label", help="with --model-base-path: the version this label points at (e.g. canary)")
    which.add_argument("--model-dir", help="one exported SavedModel directory instead of a model base path")
    p.add_argument(
        "--instances-format",
        choices=INSTANCE_FORMATS,
        help="the input's format (default: jsonl for names ending .jsonl/.json/.ndjson, optionally .gz, else csv)",
    )
    p.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="jsonl",
        help='jsonl: {"instance", "prediction"} per row, as Vertex AI writes; csv: the input columns plus predicted_fare '
        "(default %(default)s)",
    )
    local = p.add_argument_group("local job")
    local.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per model call (default %(default)s)")
    local.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help="input lines per output shard (default %(default)s)")
    local.add_argument(
        "--workers",
        type=int,
        default=1,
        help=f"processes, each scoring every N-th shard (default %(default)s; this machine has {os.cpu_count()} CPUs)",
    )
    p.add_argument(
        "--max-error-fraction",
        type=float,
        default=DEFAULT_MAX_ERROR_FRACTION,
        help="stop when a larger share of the rows cannot be scored (default %(default)s)",
    )
    local.add_argument(
        "--allow-out-of-range", action="store_true", help="score coordinates and passenger counts outside trainer/schema.py's ranges"
    )
    local.add_argument("--quiet", action="store_true", help="no progress lines (the summary line is still printed)")
    _add_vertex_flags(p)


def _add_vertex_flags(p: argparse.ArgumentParser) -> None:
    cloud = p.add_argument_group("on Vertex AI (a BatchPredictionJob)")
    cloud.add_argument("--model", help="a Vertex AI model (ID, projects/P/locations/L/models/ID, optionally @VERSION): submit a job")
    for flag, text in VERTEX_FLAGS.items():
        cloud.add_argument(flag, help=f"with --model: {text}")
    cloud.add_argument("--starting-replica-count", type=int, default=1, help="with --model: replicas at the start (default %(default)s)")
    cloud.add_argument("--max-replica-count", type=int, default=2, help="with --model: most replicas (default %(default)s)")
    cloud.add_argument("--wait", action="store_true", help="with --model: wait until the job ends and print its outcome")
    cloud.add_argument(
        "--poll-interval", type=float, default=30.0, help="with --wait: seconds between looks at the job (default %(default)s)"
    )
    cloud.add_argument("--api-transport", choices=("grpc", "rest"), help="with --model: how the SDK talks to the API (default grpc)")
    cloud.add_argument("--anonymous", action="store_true", help="with --model and a local --api-endpoint: no credentials (tests)")


def run(args: argparse.Namespace) -> int:
    """Run the job; print progress on stderr and the summary line on stdout."""
    from serving import batch

    if args.model is not None:
        from serving import batch_vertex

        return batch_vertex.run(args)
    local_only = {"--project": args.project, "--region": args.region, "--api-endpoint": args.api_endpoint}
    given = [flag for flag, value in local_only.items() if value]
    if given:
        raise ValueError(f"{', '.join(given)} only go with --model (a Vertex AI batch prediction job): add --model, or drop them")
    model_dir, version = batch.resolve_model(args.model_base_path, args.version, args.label, args.model_dir)
    settings = batch.BatchSettings(
        inputs=args.input,
        output_dir=args.output,
        model_dir=model_dir,
        version=version,
        output_format=args.format,
        instances_format=args.instances_format,
        batch_size=args.batch_size,
        shard_rows=args.shard_rows,
        workers=args.workers,
        max_error_fraction=args.max_error_fraction,
        check_ranges=not args.allow_out_of_range,
    )
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    summary = batch.run(settings, progress)
    print(batch.summary_line(summary))
    return 0
