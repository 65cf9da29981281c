"""Serving benchmark: REST and gRPC against the in-process call of the same SavedModel.

In one run, on one SavedModel (``--model-dir``, or a freshly exported model with the
project's signature; latency does not depend on the weights):

* **in-process**: ``loaded.signatures["serving_default"](**tensors)`` with the tensors
  built beforehand: the limit;
* **REST**: ``POST /v1/models/taxifare:predict`` with ``{"instances": [...]}`` over a
  keep-alive HTTP/1.1 connection per client (body serialised once; the answer is parsed);
* **gRPC**: ``PredictionService.Predict`` with the stock stub and a prebuilt
  ``PredictRequest`` (one channel per client; the answer tensor is decoded),

for 1-instance and 100-instance requests, with 1 and 8 concurrent clients (threads in this
process; the server is ``python -m serving serve --quiet`` in its own process, on
loopback). Each cell runs ``--seconds`` after a warm-up. Prints p50/p99 latency, instances/s,
the p50 difference to in-process and the throughput ratio.

Run: ``.venv/bin/python bench/bench_serving.py`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def export_model(out: str) -> str:
    import keras

    from trainer.model import TrainConfig, build_model, export_model
    from trainer.schema import Variant

    keras.utils.set_random_seed(1)
    return export_model(build_model(Variant.LAB, TrainConfig("-", "-", "-")), Variant.LAB, out, {})


def rows(n: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(n)
    return [
        {
            "pickuplon": float(-74.0 + rng.random() * 0.2),
            "pickuplat": float(40.65 + rng.random() * 0.2),
            "dropofflon": float(-74.0 + rng.random() * 0.2),
            "dropofflat": float(40.65 + rng.random() * 0.2),
            "passengers": int(rng.integers(1, 7)),
        }
        for _ in range(n)
    ]


def run_cell(make_call: Callable[[], Callable[[], None]], clients: int, seconds: float) -> tuple[list[float], float]:
    """Latencies (s) of every call and the wall time, ``clients`` threads for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    calls = [make_call() for _ in range(clients)]
    for call in calls:  # warm-up (connections, first calls)
        for _ in range(20):
            call()
    barrier = threading.Barrier(clients + 1)
    stop = [0.0]

    def worker(i: int) -> None:
        call, out = calls[i], latencies[i]
        barrier.wait()
        while True:
            t = time.perf_counter()
            if t >= stop[0]:
                return
            call()
            out.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    stop[0] = start + seconds
    barrier.wait()
    for t in threads:
        t.join()
    return [x for lat in latencies for x in lat], time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="SavedModel to serve (default: export a fresh one)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (default %(default)s)")
    args = parser.parse_args()

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from trainer import schema

    work = tempfile.mkdtemp(prefix="bench-serving-")
    model_dir = args.model_dir or export_model(os.path.join(work, "export"))
    base = os.path.join(work, "models", "taxifare")
    os.makedirs(base)
    os.symlink(os.path.abspath(model_dir), os.path.join(base, "1"))
    ports_file = os.path.join(work, "ports.json")
    cmd = [sys.executable, "-m", "serving", "serve", "--model-base-path", base, "--rest-port", "0", "--grpc-port", "0"]
    cmd += ["--quiet", "--poll-interval", "0.2", "--ports-file", ports_file]
    with open(os.path.join(work, "server.log"), "wb") as log:
        server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    try:
        fn = tf.saved_model.load(model_dir).signatures["serving_default"]
        deadline = time.monotonic() + 120
        while True:
            if os.path.exists(ports_file):
                with open(ports_file) as fh:
                    ports = json.load(fh)
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", ports["rest_port"], timeout=5)
                    conn.request("GET", "/healthz")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start; see {work}/server.log")
            time.sleep(0.2)

        results = []
        for batch in (1, 100):
            data = rows(batch)
            tensors = {k: tf.constant([r[k] for r in data], tf.float32) for k in schema.NUMERIC_FEATURES}
            body = json.dumps({"instances": data}).encode()
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "taxifare"
            for k in schema.NUMERIC_FEATURES:
                request.inputs[k].CopyFrom(tf.make_tensor_proto([r[k] for r in data], dtype=tf.float32))

            def inproc(tensors: dict = tensors) -> Callable[[], None]:
                return lambda: fn(**tensors)["fare_amount"].numpy()

            def rest(body: bytes = body, batch: int = batch) -> Callable[[], None]:
                conn = http.client.HTTPConnection("127.0.0.1", ports["rest_port"], timeout=30)
                headers = {"Content-Type": "application/json"}

                def call() -> None:
                    conn.request("POST", "/v1/models/taxifare:predict", body=body, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                    assert response.status == 200 and len(json.loads(payload)["predictions"]) == batch, payload

                return call

            def grpc_call(request: predict_pb2.PredictRequest = request, batch: int = batch) -> Callable[[], None]:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{ports['grpc_port']}"))

                def call() -> None:
                    out = stub.Predict(request, timeout=30)
                    assert len(tf.make_ndarray(out.outputs["fare_amount"])) == batch

                return call

            for clients in (1, 8):
                for name, make in (("in-process", inproc), ("REST", rest), ("gRPC", grpc_call)):
                    lat, wall = run_cell(make, clients, args.seconds)
                    results.append(
                        {
                            "mode": name,
                            "batch": batch,
                            "clients": clients,
                            "p50_ms": float(np.percentile(lat, 50) * 1000),
                            "p99_ms": float(np.percentile(lat, 99) * 1000),
                            "inst_per_s": len(lat) * batch / wall,
                            "requests": len(lat),
                        }
                    )
                    print(f"  measured {name:10s} batch {batch:3d} clients {clients}: {results[-1]['p50_ms']:.3f} ms p50", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    base_of = {(r["batch"], r["clients"]): r for r in results if r["mode"] == "in-process"}
    print()
    machine = platform.processor() or platform.machine()
    print(f"python {platform.python_version()}, tensorflow {tf.__version__}, nproc {os.cpu_count()}, {machine}")
    header = "| mode | batch | clients | p50 ms | p99 ms | instances/s | p50 - in-process | throughput / in-process |"
    print(header)
    print("|" + "---|" * 8)
    for r in results:
        ref = base_of[(r["batch"], r["clients"])]
        diff = r["p50_ms"] - ref["p50_ms"]
        ratio = r["inst_per_s"] / ref["inst_per_s"]
        print(
            f"| {r['mode']} | {r['batch']} | {r['clients']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['inst_per_s']:,.0f} | "
            f"{'' if r['mode'] == 'in-process' else f'+{diff:.3f} ms'} | {ratio:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
