"""``taxifare serve`` and ``taxifare predict``: registered on the ``taxifare`` CLI by :func:`add_commands`.

Also runnable alone: ``python -m serving serve ...`` / ``python -m serving predict ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from serving import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES

COMMANDS = ("serve", "predict")


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``serve`` and ``predict`` on a subparsers object."""
    serve = subparsers.add_parser(
        "serve",
        help="serve a TF-Serving model base path over REST and gRPC",
        description=(
            "Serve the latest version under --model-base-path with TensorFlow Serving's REST and gRPC APIs (and Vertex AI's "
            "predict body), loading new versions as they are published. Stops gracefully on SIGTERM."
        ),
    )
    serve.add_argument(
        "--model-base-path", required=True, help="the model's directory, holding versions 1/, 2/, ... (each a SavedModel), like TF Serving"
    )
    serve.add_argument("--model-name", default="taxifare", help="the name clients use in /v1/models/NAME (default %(default)s)")
    serve.add_argument("--rest-port", type=int, default=8501, help="REST port; 0 picks a free one (default %(default)s)")
    serve.add_argument("--grpc-port", type=int, default=8500, help="gRPC port; 0 picks a free one (default %(default)s)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)")
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
    serve.add_argument("--quiet", action="store_true", help="no request log (one line per request on stderr otherwise)")
    _add_performance_flags(serve)
    serve.add_argument("--ports-file", help="write the bound ports as JSON to this file once listening (useful with port 0)")

    predict = subparsers.add_parser(
        "predict",
        help="send instances to a server (the lab's predict command)",
        description="Send the instances of a JSON-lines file (one JSON object per line, like the lab's test.json) and print the fares.",
    )
    predict.add_argument("--json-instances", required=True, help="file with one JSON instance per line")
    target = predict.add_mutually_exclusive_group()
    target.add_argument("--url", help="REST server, http://HOST:PORT or a full ...:predict URL (default http://127.0.0.1:8501)")
    target.add_argument("--grpc", metavar="HOST:PORT", help="gRPC server instead of REST")
    predict.add_argument("--model-name", default="taxifare", help="model name (default %(default)s)")
    predict.add_argument("--version", type=int, help="ask this version (default: the serving one)")
    predict.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default %(default)s)")
    predict.add_argument(
        "--format", choices=("table", "json"), default="table", help="output: a FARE_AMOUNT column or JSON (default %(default)s)"
    )


def _add_performance_flags(serve: argparse.ArgumentParser) -> None:
    """Batching (TF Serving's parameters, both spellings) and the server's limits."""
    import os

    perf = serve.add_argument_group("batching and limits (TF Serving's batching parameters and defaults; see docs/serving.md)")
    perf.add_argument(
        "--enable-batching",
        "--enable_batching",
        action="store_true",
        help="merge concurrent predict requests into one model call (off by default, as in TF Serving)",
    )
    perf.add_argument(
        "--max-batch-size", "--max_batch_size", type=int, default=1000, help="most instances in one merged model call (default %(default)s)"
    )
    perf.add_argument(
        "--batch-timeout-micros",
        "--batch_timeout_micros",
        type=int,
        default=0,
        help="how long a batch may wait for more requests; 0: never wait, merge only what queued while busy (default %(default)s)",
    )
    perf.add_argument(
        "--num-batch-threads",
        "--num_batch_threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads running merged model calls (default: the number of CPUs, %(default)s here)",
    )
    perf.add_argument(
        "--max-enqueued-batches",
        "--max_enqueued_batches",
        type=int,
        default=10,
        help="full batches that may wait before requests are refused with 503/RESOURCE_EXHAUSTED (default %(default)s)",
    )
    perf.add_argument(
        "--rest-workers", type=int, default=8, help="threads running REST model calls when batching is off (default %(default)s)"
    )
    perf.add_argument(
        "--max-queued-requests",
        type=int,
        default=128,
        help="predict requests that may wait for a model thread (REST) or a worker (gRPC); more get 503/RESOURCE_EXHAUSTED "
        "(default %(default)s)",
    )
    perf.add_argument(
        "--max-connections", type=int, default=1024, help="open REST connections; requests on more are answered 503 (default %(default)s)"
    )
    perf.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        help="seconds a client gets to send a whole request (head and body) before a 408 (default %(default)s)",
    )
    perf.add_argument(
        "--keep-alive-timeout", type=float, default=30.0, help="seconds an idle keep-alive connection stays open (default %(default)s)"
    )


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
    import logging

    from serving.batching import BatchingParameters
    from serving.payload import Limits
    from serving.rest import HttpLimits
    from serving.server import ServerConfig, serve

    _check_serve_args(args)
    _check_positive(
        poll_interval=args.poll_interval, max_batch=args.max_batch, max_body_bytes=args.max_body_bytes, grpc_workers=args.grpc_workers
    )
    for flag, port in (("--rest-port", args.rest_port), ("--grpc-port", args.grpc_port)):
        if not 0 <= port <= 65535:
            raise ValueError(f"{flag} {port} is not a port number (0..65535)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
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
        batching=BatchingParameters(
            enabled=args.enable_batching,
            max_batch_size=args.max_batch_size,
            batch_timeout_micros=args.batch_timeout_micros,
            num_batch_threads=args.num_batch_threads,
            max_enqueued_batches=args.max_enqueued_batches,
        ),
        rest_workers=args.rest_workers,
        max_queued_requests=args.max_queued_requests,
        http=HttpLimits(
            max_connections=args.max_connections, request_timeout=args.request_timeout, keep_alive_timeout=args.keep_alive_timeout
        ),
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
        return _predict(args)
    except (ValueError, OSError) as exc:  # RequestError, InputError and bind failures are user errors
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serving COMMAND ...``."""
    parser = argparse.ArgumentParser(prog="python -m serving", description="Serve the taxifare model or call a server.")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run(parser.parse_args(argv))
