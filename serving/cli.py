"""``taxifare serve``, ``predict``, ``batch-predict``, ``versions``, ``label`` and ``rollback``: registered by :func:`add_commands`.

Also runnable alone: ``python -m serving serve ...`` / ``python -m serving predict ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from serving import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES
from trainer.errors import Command, OneLineParser
from trainer.warmup import MODEL_NAME

#: The commands, each with its line in the command list (``help``) and its ``--help`` text (``description``).
COMMANDS: dict[str, Command] = {
    "serve": {
        "help": "serve a TF-Serving model base path over REST and gRPC",
        "description": "Serve the versions under --model-base-path with TensorFlow Serving's REST and gRPC APIs (and Vertex "
        "AI's predict body): the default route serves the stable label, else the latest version; /labels/NAME serves a "
        "label. New versions and label changes are picked up as they are published. With no flags under Vertex AI's AIP_* "
        "variables, serves the model at AIP_STORAGE_URI as a Vertex custom container. Stops gracefully on SIGTERM.",
    },
    "predict": {
        "help": "send instances to a server (the lab's predict command)",
        "description": "Send the instances of a JSON-lines file (one JSON object per line, like the lab's test.json) and print the fares.",
    },
    "batch-predict": {
        "help": "score files of trips with a deployed version (locally, or as a Vertex AI batch prediction job)",
        "description": "Score CSV files (either of the lab's layouts, plain or .gz, local or gs://) or JSON lines of instances "
        "with a version of a model base path (the one its default route serves, --version or --label) or one export, into a "
        "folder shaped like Vertex AI's batch output: predictions_00001.jsonl ... ({instance, prediction}; or --format csv), "
        "errors_00001.jsonl ... for rows that cannot be scored, batch_summary.json. A rerun after a kill resumes from the "
        "finished shards. With --model, submits a Vertex AI BatchPredictionJob instead (see docs/batch.md).",
    },
    "versions": {
        "help": "list a model's versions: RMSE, labels, the default route, loaded or not",
        "description": "List the versions under --model-base-path, newest first: test RMSE recorded at deploy (or the "
        "trainer's eval RMSE) with the id of the rows it was measured on, labels, which one the default route serves, whether "
        "it is loaded, problems. With --score FILE, every version scored on the same rows instead.",
    },
    "label": {
        "help": "set version labels (stable=3 canary=4); the default route serves stable",
        "description": "Set or remove version labels of a model base path (written atomically to labels.json). A running "
        "server moves its routes within its poll interval, without failing a request. Promote a canary with stable=N.",
    },
    "rollback": {
        "help": "point the default route back at the previous good version (or a Vertex endpoint's traffic)",
        "description": "Set the stable label (the default route) to the newest good version older than the one served now, "
        "or to --to N, and print what changed. A running server switches within its poll interval. With --endpoint, give "
        "a Vertex AI endpoint's traffic to the model deployed before the one serving now instead.",
    },
    "monitor": {
        "help": "training-serving skew and prediction drift from a request log; exit 1 past the threshold",
        "description": "Compare the requests `taxifare serve --request-log DIR` logged with each served version's training "
        "statistics (the drift gate's Jensen-Shannon divergence and thresholds, per feature) and its predictions with the "
        "window before; print a table, write an HTML page, optionally post the verdict and start a retrain. Exit 0 when "
        "nothing moved, 1 when something did (see docs/monitoring.md).",
    },
}


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the :data:`COMMANDS` on a subparsers object."""
    serve = subparsers.add_parser("serve", **COMMANDS["serve"])
    serve.add_argument(
        "--model-base-path",
        help="the model's directory, holding versions 1/, 2/, ... (each a SavedModel), like TF Serving; without it, under "
        "Vertex AI's AIP_* variables, the model at AIP_STORAGE_URI on AIP_HTTP_PORT (see docs/serving.md)",
    )
    serve.add_argument("--model-name", default=MODEL_NAME, help="the name clients use in /v1/models/NAME (default %(default)s)")
    serve.add_argument("--rest-port", type=int, help="REST port; 0 picks a free one (default 8501; AIP_HTTP_PORT under Vertex AI)")
    serve.add_argument(
        "--grpc-port", type=int, help="gRPC port; 0 picks a free one (default 8500; a free one under Vertex AI, which sends HTTP only)"
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 under Vertex AI)")
    serve.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between scans of the base path; a new version loads once unchanged this long (default %(default)s)",
    )
    serve.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="most instances per request (default %(default)s)")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="largest request body (default %(default)s)")
    serve.add_argument(
        "--allow-out-of-range",
        action="store_true",
        help="accept coordinates and passenger counts outside trainer/schema.py's valid ranges (rejected by default)",
    )
    serve.add_argument(
        "--grace", type=float, default=10.0, help="seconds requests in flight get to finish on SIGTERM (default %(default)s)"
    )
    serve.add_argument("--grpc-workers", type=int, default=8, help="gRPC worker threads (default %(default)s)")
    serve.add_argument("--quiet", action="store_true", help="no access log (a line per request on stderr; not --request-log)")
    serve.add_argument("--verbose", action="store_true", help="keep TensorFlow's own start-up and INFO lines (left out otherwise)")
    _add_performance_flags(serve)
    serve.add_argument("--ports-file", help="write the bound ports as JSON to this file once listening (useful with port 0)")
    from serving import request_log

    request_log.add_flags(serve)

    predict = subparsers.add_parser("predict", **COMMANDS["predict"])
    predict.add_argument("--json-instances", required=True, help="file with one JSON instance per line")
    target = predict.add_mutually_exclusive_group()
    target.add_argument("--url", help="REST server, http://HOST:PORT or a full ...:predict URL (default http://127.0.0.1:8501)")
    target.add_argument("--grpc", metavar="HOST:PORT", help="gRPC server instead of REST")
    predict.add_argument("--model-name", default=MODEL_NAME, help="model name (default %(default)s)")
    predict.add_argument("--version", type=int, help="ask this version (default: the serving one)")
    predict.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default %(default)s)")
    predict.add_argument(
        "--format", choices=("table", "json"), default="table", help="output: a FARE_AMOUNT column or JSON (default %(default)s)"
    )
    from serving import batch_cli

    batch_cli.add_parser(subparsers, COMMANDS["batch-predict"])  # type: ignore[arg-type]
    _add_label_commands(subparsers)
    from serving import monitor

    monitor.add_arguments(subparsers.add_parser("monitor", **COMMANDS["monitor"]))


#: The rollback flags that say where a Vertex AI endpoint is, with their help.
_ENDPOINT_FLAGS = {
    "--project": "the Google Cloud project ID",
    "--region": "the endpoint's region, e.g. us-central1",
    "--api-endpoint": "Vertex AI API host:port (default: the regional one; tests)",
}


def _add_label_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    base_help = "the model's directory, holding versions 1/, 2/, ... and labels.json (what `taxifare serve` watches)"
    versions = subparsers.add_parser("versions", **COMMANDS["versions"])
    versions.add_argument("--model-base-path", required=True, help=base_help)
    versions.add_argument("--url", help="a running server (http://HOST:PORT) to ask which versions are loaded (default: none asked)")
    versions.add_argument("--model-name", default=MODEL_NAME, help="the model's name on that server (default %(default)s)")
    versions.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    versions.add_argument(
        "--score",
        metavar="FILE",
        help="score every version on the same rows: CSV files in a lab layout (a path or glob, local or gs://); "
        "prints RMSE, MAE and bias side by side (loads TensorFlow)",
    )
    label = subparsers.add_parser("label", **COMMANDS["label"])
    label.add_argument("--model-base-path", required=True, help=base_help)
    label.add_argument("assignments", nargs="+", metavar="NAME=VERSION", help="e.g. stable=3 canary=4; NAME= removes the label")
    rollback = subparsers.add_parser("rollback", **COMMANDS["rollback"])
    where = rollback.add_mutually_exclusive_group(required=True)
    where.add_argument("--model-base-path", help=base_help)
    where.add_argument("--endpoint", help="a Vertex AI endpoint (ID or projects/P/locations/L/endpoints/ID) instead of a local path")
    rollback.add_argument("--to", help="roll back (or forward) to this version (a deployed model ID with --endpoint) instead")
    for flag, text in _ENDPOINT_FLAGS.items():
        rollback.add_argument(flag, help=f"with --endpoint: {text}")
    rollback.add_argument(
        "--api-transport", choices=("grpc", "rest"), help="with --endpoint: how the Vertex SDK talks to the API (default grpc)"
    )
    rollback.add_argument("--anonymous", action="store_true", help="with --endpoint and a local --api-endpoint: no credentials")


def _server_states(url: str, model_name: str) -> dict[int, str]:
    from serving.client import RestClient, ServingError

    client = RestClient(url, model_name=model_name, timeout=5.0)
    try:
        return {int(entry["version"]): entry["state"] for entry in client.status()}
    except ServingError as exc:
        raise ValueError(f"--url {url}: {exc}") from None
    finally:
        client.close()


def _versions(args: argparse.Namespace) -> int:
    from serving import labels

    if args.score:
        from serving.scoring import format_scores, score_versions

        labels.check_base_path(args.model_base_path)
        rows, scores = score_versions(args.model_base_path, args.score)
        if args.json:
            print(json.dumps({"rows": rows, "versions": [vars(s) for s in scores]}, indent=2))
        else:
            print(format_scores(args.score, rows, scores))
        return 0
    states = _server_states(args.url, args.model_name) if args.url else None
    found = labels.rows(args.model_base_path, states)
    if args.json:
        print(json.dumps([row.as_dict() for row in found], indent=2))
    else:
        print(labels.format_rows(found, asked_server=states is not None))
    return 0


def _label(args: argparse.Namespace) -> int:
    from serving import labels

    for line in labels.set_labels(args.model_base_path, labels.parse_assignments(args.assignments)):
        print(line)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from serving import labels, layout

    if args.endpoint is not None:
        return _rollback_endpoint(args)
    if args.to is not None and not layout.is_version_name(args.to):
        raise ValueError(f"--to {args.to} is not a version number (a positive integer)")
    for line in labels.rollback(args.model_base_path, int(args.to) if args.to is not None else None):
        print(line)
    return 0


def _rollback_endpoint(args: argparse.Namespace) -> int:
    from serving import vertex_endpoint

    vertex_endpoint.check_settings(args.endpoint, args.project, args.region, args.api_endpoint, args.anonymous)
    credentials = None
    if args.anonymous:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    try:
        lines = vertex_endpoint.rollback(
            args.endpoint,
            project=args.project,
            region=args.region,
            to=args.to,
            api_endpoint=args.api_endpoint,
            api_transport=args.api_transport,
            credentials=credentials,
        )
    except ValueError:
        raise
    except Exception as exc:  # google.api_core / google.auth errors: one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"Vertex AI: {type(exc).__name__}: {first[:300]}") from None
    for line in lines:
        print(line)
    return 0


#: TF Serving's batching parameters (the fields of serving.batching.BatchingParameters), under its
#: names and with '-' for '_': type, default, help.
_BATCHING_FLAGS: dict[str, tuple[type, Any, str]] = {
    "max_batch_size": (int, 1000, "most instances in one merged model call (default %(default)s)"),
    "batch_timeout_micros": (
        int,
        0,
        "how long a batch may wait for more requests; 0: never wait, merge only what queued while busy (default %(default)s)",
    ),
    "num_batch_threads": (int, os.cpu_count() or 1, "threads running merged model calls (default: the number of CPUs, %(default)s here)"),
    "max_enqueued_batches": (
        int,
        10,
        "full batches that may wait before requests are refused with 503/RESOURCE_EXHAUSTED (default %(default)s)",
    ),
}
#: The server's own limits: type, default, help.
_LIMIT_FLAGS: dict[str, tuple[type, Any, str]] = {
    "--rest-workers": (int, 8, "threads running REST model calls when batching is off (default %(default)s)"),
    "--max-queued-requests": (
        int,
        128,
        "predict requests that may wait for a model thread (REST) or a worker (gRPC); more get 503/RESOURCE_EXHAUSTED "
        "(default %(default)s)",
    ),
    "--max-connections": (int, 1024, "open REST connections; requests on more are answered 503 (default %(default)s)"),
    "--request-timeout": (float, 10.0, "seconds a client gets to send a whole request (head and body) before a 408 (default %(default)s)"),
    "--keep-alive-timeout": (float, 30.0, "seconds an idle keep-alive connection stays open (default %(default)s)"),
}


def _add_performance_flags(serve: argparse.ArgumentParser) -> None:
    """Batching (TF Serving's parameters, both spellings) and the server's limits."""
    perf = serve.add_argument_group("batching and limits (TF Serving's batching parameters and defaults; see docs/serving.md)")
    perf.add_argument(
        "--enable-batching",
        "--enable_batching",
        action="store_true",
        help="merge concurrent predict requests into one model call (off by default, as in TF Serving)",
    )
    for name, (kind, default, text) in _BATCHING_FLAGS.items():
        perf.add_argument("--" + name.replace("_", "-"), "--" + name, type=kind, default=default, help=text)
    for flag, (kind, default, text) in _LIMIT_FLAGS.items():
        perf.add_argument(flag, type=kind, default=default, help=text)


def _check_serve_args(args: argparse.Namespace) -> None:
    """One line for each serve flag that cannot work."""
    if not args.model_name or not args.model_name.strip() or "/" in args.model_name or ":" in args.model_name:
        raise ValueError(f"--model-name {args.model_name!r} is not a model name: use letters, digits, '-' or '_' (like taxifare)")
    if not args.grace >= 0:
        raise ValueError(f"--grace must be 0 or more seconds, got {args.grace}")
    _check_positive(
        max_batch_size=args.max_batch_size,
        num_batch_threads=args.num_batch_threads,
        max_enqueued_batches=args.max_enqueued_batches,
        rest_workers=args.rest_workers,
        max_queued_requests=args.max_queued_requests,
        max_connections=args.max_connections,
        request_timeout=args.request_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
    )
    if args.batch_timeout_micros < 0:
        raise ValueError(f"--batch-timeout-micros must be 0 or more, got {args.batch_timeout_micros}")


def _check_positive(**values: float) -> None:
    for flag, value in values.items():
        if value <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {value}")


def _serve(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from serving import aip

    if args.model_base_path is not None or not aip.under_vertex(os.environ):
        if args.model_base_path is None:
            raise ValueError("--model-base-path is required (or run under Vertex AI's AIP_* variables: see docs/serving.md)")
        return _serve_path(args, args.model_base_path, host=args.host or "127.0.0.1", rest_port=args.rest_port, routes=None)
    settings = aip.settings(os.environ)
    workdir = tempfile.mkdtemp(prefix="taxifare-aip-")
    try:
        base = aip.model_base_path(settings.storage_uri, workdir)
        print(
            f"Vertex AI serving container: model from {settings.storage_uri}, port {settings.port}, predict {settings.predict_route}, "
            f"health {settings.health_route}, deployed model {settings.deployed_model_id or '-'}",
            file=sys.stderr,
            flush=True,
        )
        port = args.rest_port if args.rest_port is not None else settings.port
        return _serve_path(args, base, host=args.host or "0.0.0.0", rest_port=port, routes=(settings.predict_route, settings.health_route))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _serve_path(args: argparse.Namespace, base: str, host: str, rest_port: int | None, routes: tuple[str, str] | None) -> int:
    import logging

    from serving.batching import BatchingParameters
    from serving.http1 import HttpLimits
    from serving.payload import Limits
    from serving.request_log import settings_from_args
    from serving.server import ServerConfig, serve
    from trainer import quiet

    args.model_base_path, args.host, args.rest_port = base, host, 8501 if rest_port is None else rest_port
    if args.grpc_port is None:
        args.grpc_port = 0 if routes is not None else 8500
    _check_serve_args(args)
    _check_positive(
        poll_interval=args.poll_interval, max_batch=args.max_batch, max_body_bytes=args.max_body_bytes, grpc_workers=args.grpc_workers
    )
    for flag, port in (("--rest-port", args.rest_port), ("--grpc-port", args.grpc_port)):
        if not 0 <= port <= 65535:
            raise ValueError(f"{flag} {port} is not a port number (0..65535)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet.set_verbose(args.verbose or quiet.verbose())
    quiet.import_tensorflow()  # before serving.server imports it: without TensorFlow's start-up lines

    config = ServerConfig(
        model_base_path=args.model_base_path,
        model_name=args.model_name,
        host=args.host,
        rest_port=args.rest_port,
        grpc_port=args.grpc_port,
        poll_interval=args.poll_interval,
        limits=Limits(max_batch=args.max_batch, max_body_bytes=args.max_body_bytes, check_ranges=not args.allow_out_of_range),
        log_requests=not args.quiet,
        grpc_workers=args.grpc_workers,
        grace=args.grace,
        vertex_routes=routes,
        batching=BatchingParameters(enabled=args.enable_batching, **{name: getattr(args, name) for name in _BATCHING_FLAGS}),
        rest_workers=args.rest_workers,
        max_queued_requests=args.max_queued_requests,
        http=HttpLimits(
            max_connections=args.max_connections, request_timeout=args.request_timeout, keep_alive_timeout=args.keep_alive_timeout
        ),
        request_log=settings_from_args(args),
    )
    return serve(config, ports_file=args.ports_file)


def _predict(args: argparse.Namespace) -> int:
    from serving.client import GrpcClient, RestClient, ServingError
    from serving.payload import read_json_instances

    instances = read_json_instances(args.json_instances)
    client: RestClient | GrpcClient
    if args.grpc:
        client = GrpcClient(args.grpc, model_name=args.model_name, timeout=args.timeout)
    else:
        client = RestClient(args.url or "http://127.0.0.1:8501", model_name=args.model_name, timeout=args.timeout)
    try:
        fares = client.predict(instances, version=args.version)
    except ServingError as exc:
        raise ValueError(str(exc)) from None
    finally:
        client.close()
    if args.format == "json":
        print(json.dumps({"predictions": fares, "model_version": client.last_version}))
    else:
        print("FARE_AMOUNT")
        for fare in fares:
            print(f"{fare:.4f}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``serve`` or ``predict``; user errors print one ``error:`` line and return 2."""
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "monitor":
            from serving import monitor

            return monitor.run(args)
        if args.command == "batch-predict":
            from serving import batch_cli

            return batch_cli.run(args)
        if args.command in ("versions", "label", "rollback"):
            return {"versions": _versions, "label": _label, "rollback": _rollback}[args.command](args)
        return _predict(args)
    except (ValueError, OSError) as exc:  # RequestError, InputError and bind failures are user errors
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serving COMMAND ...``."""
    parser = OneLineParser(prog="python -m serving", description="Serve the taxifare model or call a server.")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run(parser.parse_args(argv))
