"""Request logging's cost: the same server with ``--request-log`` at sample rate 1.0 and without, side by side in one run.

Two ``python -m serving serve --quiet`` processes on one SavedModel (a fresh export; latency
does not depend on the weights), started together on loopback: **off** (no request log) and
**log** (``--request-log DIR --request-log-sample-rate 1``: every request queued, serialized
and written by the background writer, and the skew gauges updated). For 1- and 100-instance
requests with 1 and 8 clients, REST (a keep-alive connection per client thread) and gRPC (the
stock stub), each cell runs ``--seconds``; cells alternate off/log so drifting load hits both.
With ``wrk`` installed the REST cells are also driven by it (a C client that leaves the cores
to the server). Printed: p50/p99, instances/s, the log/off ratio, the server's CPU share, and
the server's CPU time per request (steadier than throughput when other work shares the
machine), and the lines the log server wrote (checked against the requests it answered).

Run: ``.venv/bin/python bench/bench_request_log.py`` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serving import ROOT, model_base, rows, run_cell, start_server, stop_servers, wrk_cell


def rest_factory(port: int, body: bytes, batch: int) -> Callable[[], Callable[[], None]]:
    def factory() -> Callable[[], None]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def call() -> None:
            conn.request("POST", "/v1/models/taxifare:predict", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            assert response.status == 200 and len(json.loads(payload)["predictions"]) == batch, payload

        return call

    return factory


def grpc_factory(port: int, request: object, batch: int) -> Callable[[], Callable[[], None]]:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    def factory() -> Callable[[], None]:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

        def call() -> None:
            out = stub.Predict(request, timeout=30)
            assert out.outputs["fare_amount"].tensor_shape.dim[0].size == batch

        return call

    return factory


def cpu_per_request(cell: dict) -> float:
    """The server's CPU time per answered request, in microseconds (steadier than throughput on a shared machine)."""
    return cell["server_cpu"] * (os.cpu_count() or 1) * cell["wall"] / max(cell["requests"], 1) * 1e6


def logged_lines(directory: str) -> int:
    from serving import request_log

    return sum(1 for _ in request_log.read(directory))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per cell (default %(default)s)")
    args = parser.parse_args()

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from trainer import schema

    work = tempfile.mkdtemp(prefix="bench-request-log-")
    _model_dir, base = model_base(work, None)
    log_dir = os.path.join(work, "requests")
    load_before = os.getloadavg()
    servers = {
        "off": start_server(work, "off", base, [], ROOT),
        "log": start_server(work, "log", base, ["--request-log", log_dir, "--request-log-sample-rate", "1"], ROOT),
    }
    results: list[dict] = []
    try:
        for batch in (1, 100):
            data = rows(batch)
            body = json.dumps({"instances": data}).encode()
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "taxifare"
            for k in schema.NUMERIC_FEATURES:
                request.inputs[k].CopyFrom(tf.make_tensor_proto([r[k] for r in data], dtype=tf.float32))
            for clients in (1, 8):
                for protocol in ("REST", "gRPC", "REST (wrk)"):
                    if protocol.endswith("(wrk)") and not shutil.which("wrk"):
                        continue
                    for name in ("off", "log"):
                        proc, ports = servers[name]
                        if protocol == "REST (wrk)":
                            cell = wrk_cell(ports["rest_port"], body, batch, clients, args.seconds, proc.pid, work)
                        else:
                            make = (
                                rest_factory(ports["rest_port"], body, batch)
                                if protocol == "REST"
                                else grpc_factory(ports["grpc_port"], request, batch)
                            )
                            cell = run_cell(make, clients, args.seconds, proc.pid)
                        cell.update(server=name, protocol=protocol, batch=batch, clients=clients)
                        cell["inst_per_s"] = cell["requests"] * batch / cell["wall"]
                        results.append(cell)
                        print(f"  {protocol:10s} {name:3s} batch {batch:3d} clients {clients}: {cell['p50_ms']:.3f} ms p50, "
                              f"{cell['inst_per_s']:,.0f}/s", flush=True)  # fmt: skip
    finally:
        stop_servers([proc for proc, _ in servers.values()])  # the log server publishes its open segment on SIGTERM
    time.sleep(0.5)
    lines = logged_lines(log_dir)
    load_after = os.getloadavg()
    answered = sum(r["requests"] for r in results if r["server"] == "log")
    machine = platform.processor() or platform.machine()
    mem = psutil.virtual_memory().total / 2**30
    print()
    print(f"python {platform.python_version()}, tensorflow {tf.__version__}, nproc {os.cpu_count()}, {machine}, {mem:.0f} GB")
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(f"the log server wrote {lines:,} lines for the {answered:,} measured requests (plus warm-up ones)")
    print(
        "| protocol | batch | clients | p50 ms off | p50 ms log | p99 ms off | p99 ms log | inst/s off | inst/s log | log/off "
        "| server CPU off | server CPU log | server CPU µs/request off | log |"
    )
    print("|" + "---|" * 14)
    by_key = {(r["protocol"], r["batch"], r["clients"], r["server"]): r for r in results}
    for protocol, batch, clients, server in by_key:
        if server != "off":
            continue
        off, log = by_key[(protocol, batch, clients, "off")], by_key[(protocol, batch, clients, "log")]
        print(
            f"| {protocol} | {batch} | {clients} | {off['p50_ms']:.3f} | {log['p50_ms']:.3f} | {off['p99_ms']:.3f} | {log['p99_ms']:.3f} | "
            f"{off['inst_per_s']:,.0f} | {log['inst_per_s']:,.0f} | {log['inst_per_s'] / off['inst_per_s']:.2f} | "
            f"{off['server_cpu']:.0%} | {log['server_cpu']:.0%} | {cpu_per_request(off):.0f} | {cpu_per_request(log):.0f} |"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
