"""Side benchmark: the gRPC front end on the sync server (thread pool) against ``grpc.aio``, same server otherwise.

Issue 10 ("Throughput and concurrency") asks for >= 2x the old gRPC throughput with 8
single-instance clients. Each variant is a real server process on loopback, batching off and
on, serving the same SavedModel:

* **sync**: ``python -m serving serve`` of this checkout (``grpc.server`` on a thread pool);
* **aio**: the same server with the gRPC front end of bench/_grpc_aio.py (``grpc.aio``,
  coroutine handlers on one event-loop thread, model calls through the scheduler and awaited;
  a lone request's call inline on the loop);
* **aio-noinline**: the same, every model call handed to the scheduler's threads;
* **before**: ``--baseline-src DIR``'s server (another checkout's serving/ and trainer/).

The clients are bench/bench_serving.py's stock gRPC clients (``PredictionServiceStub``, request
built once, answer decoded). Cells (1 and 100 instances, 1 and 8 clients) run variant after
variant and the whole sweep ``--rounds`` times, so that load from other processes spreads
over all variants.

Run: ``nice -n -10 .venv/bin/python bench/bench_grpc_frontend.py [--baseline-src DIR]`` (about 4 minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_serving import batch_sizes, model_base, rows, run_cell, start_server, stop_servers  # noqa: E402


def serve_aio(argv: list[str], inline: bool) -> int:
    """``python -m serving serve ARGV`` with the grpc.aio front end (run in the server's process)."""
    import _grpc_aio

    from serving import grpc_service
    from serving.cli import main

    _grpc_aio.INLINE = inline
    grpc_service.build_grpc_server = _grpc_aio.build_aio_grpc_server  # type: ignore[assignment]
    return main(["serve", *argv])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="SavedModel to serve (default: export a fresh one)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="sweeps over every cell (default %(default)s)")
    parser.add_argument("--variants", default="sync,aio,aio-noinline", help="comma-separated variants (default %(default)s)")
    parser.add_argument("--baseline-src", help="a directory holding an older checkout's serving/ and trainer/: variant 'before'")
    if len(sys.argv) > 1 and sys.argv[1] in ("--serve-aio", "--serve-aio-noinline"):
        return serve_aio(sys.argv[2:], inline=sys.argv[1] == "--serve-aio")
    args = parser.parse_args()

    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from trainer import schema

    work = tempfile.mkdtemp(prefix="bench-grpc-")
    _, base = model_base(work, args.model_dir)
    variants = (["before"] if args.baseline_src else []) + args.variants.split(",")
    load_before = os.getloadavg()
    servers: dict[tuple[str, str], tuple[subprocess.Popen[bytes], dict[str, int]]] = {}
    results: dict[tuple[str, str, int, int], list[dict[str, float]]] = {}
    try:
        for variant in variants:
            for batching in ("off", "on"):
                extra = ["--enable-batching"] if batching == "on" else []
                src = os.path.abspath(args.baseline_src) if variant == "before" else ROOT
                launcher = [sys.executable, __file__, f"--serve-{variant}"] if variant.startswith("aio") else None
                servers[(variant, batching)] = start_server(work, f"{variant}-{batching}", base, extra, src, launcher)
        requests = {}
        for batch in (1, 100):
            data = rows(batch)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "taxifare"
            for k in schema.NUMERIC_FEATURES:
                request.inputs[k].CopyFrom(tf.make_tensor_proto([r[k] for r in data], dtype=tf.float32))
            requests[batch] = request

        def client(port: int, batch: int) -> Callable[[], Callable[[], None]]:
            def factory() -> Callable[[], None]:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
                request = requests[batch]

                def call() -> None:
                    out = stub.Predict(request, timeout=30)
                    assert len(tf.make_ndarray(out.outputs["fare_amount"])) == batch

                return call

            return factory

        for _ in range(args.rounds):
            for batch in (1, 100):
                for clients in (1, 8):
                    for batching in ("off", "on"):
                        for variant in variants:
                            proc, ports = servers[(variant, batching)]
                            before = batch_sizes(ports["rest_port"])
                            cell = run_cell(client(ports["grpc_port"], batch), clients, args.seconds, proc.pid)
                            after = batch_sizes(ports["rest_port"])
                            cell["inst_per_s"] = cell["requests"] * batch / cell["wall"]
                            batches = after[0] - before[0]
                            cell["mean_batch"] = (after[1] - before[1]) / batches if batches else 0.0
                            results.setdefault((variant, batching, batch, clients), []).append(cell)
                            print(
                                f"  {variant:6s} batching {batching:3s} batch {batch:3d} clients {clients}: "
                                f"{cell['p50_ms']:.3f} ms p50, {cell['inst_per_s']:,.0f}/s",
                                flush=True,
                            )
    finally:
        stop_servers([proc for proc, _ in servers.values()])
    load_after = os.getloadavg()
    print(f"\npython {platform.python_version()}, tensorflow {tf.__version__}, grpcio {grpc.__version__}, nproc {os.cpu_count()}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    pairs = [(v, "sync") for v in variants if v not in ("sync", "before")] + ([("sync", "before")] if "before" in variants else [])
    heads = [f"{v} req/s (runs)" for v in variants] + [f"{a} / {b}" for a, b in pairs]
    print(f"| batching | instances | clients | {' | '.join(heads)} |")
    print("|" + "---|" * (3 + len(variants) + len(pairs)))
    for batch in (1, 100):
        for clients in (1, 8):
            for batching in ("off", "on"):
                cells, means = [], {}
                for v in variants:
                    runs = results[(v, batching, batch, clients)]
                    means[v] = float(np.mean([c["requests"] / c["wall"] for c in runs]))
                    mean_batch = f", batch {np.mean([c['mean_batch'] for c in runs]):.1f}" if batching == "on" else ""
                    each = "/".join(f"{c['requests'] / c['wall']:,.0f}" for c in runs)
                    cells.append(f"{means[v]:,.0f} ({each}{mean_batch})")
                ratios = [f"{means[a] / means[b]:.2f}x" for a, b in pairs]
                print(f"| {batching} | {batch} | {clients} | {' | '.join(cells + ratios)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
