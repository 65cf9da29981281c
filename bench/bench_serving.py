"""Serving benchmark: REST and gRPC, batching on and off, against the in-process call of the same SavedModel.

In one run, on one SavedModel (``--model-dir``, or a freshly exported model with the
project's signature; latency does not depend on the weights):

* **in-process**, two ways, each called by the same number of client threads: the TF2
  signature (``tf.saved_model.load(d).signatures["serving_default"](**tensors)``, tensors
  built beforehand) and the session callable the server itself runs (graph mode, one
  ``Session::Run`` through a TensorFlow callable, arrays built beforehand: see
  serving/servable.py). The faster of the two is the limit every ratio is read against;
* **REST**: ``POST /v1/models/taxifare:predict`` with ``{"instances": [...]}`` over a
  keep-alive HTTP/1.1 connection per client (body serialised once; the answer is parsed);
* **gRPC**: ``PredictionService.Predict`` with the stock stub and a prebuilt
  ``PredictRequest`` (one channel per client; the answer tensor is decoded);

each against two servers started side by side (``python -m serving serve --quiet``, each in
its own process, on loopback): batching **off** (the default) and batching **on**
(``--enable-batching``, TF Serving's default parameters), and optionally a third, **before**
(``--baseline-src DIR``: the ``serving`` package of an older checkout, e.g. extracted with
``git archive``), for 100-instance requests with 1 and 8 concurrent clients and 1-instance
requests with 1, 8 and 32 clients (threads in this process). Each cell runs ``--seconds``
after a warm-up. Printed per cell: p50/p99 latency, instances/s, the throughput ratio to
the faster in-process call with the same clients, and the CPU used by the client (this process) and by the
server process as a share of the machine (100% = every core busy), so a ratio is read with
who had the cores. The batching server's batch sizes are read from its own metrics.

A Python client costs about as much CPU per request as the server's own work, and on two
cores it takes them from the server. So the REST cells are also driven by **wrk** (a C load
generator in its own process, one thread, ``-c`` connections, the same body; Debian's
``wrk`` package: ``apt-get install wrk``; its rows are left out when it is not installed):
those rows read the server's throughput with a client that costs a few percent of a core.

Run: ``.venv/bin/python bench/bench_serving.py`` (about 7 minutes with wrk installed, 5 without).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np
import psutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def export_model(out: str) -> str:
    import keras

    from trainer.model import TrainConfig, build_model, export_model
    from trainer.schema import Variant

    keras.utils.set_random_seed(1)
    return export_model(build_model(Variant.LAB, TrainConfig("-", "-", "-")), Variant.LAB, out, {})


def model_base(work: str, model_dir: str | None) -> tuple[str, str]:
    """``(model_dir, base)``: the SavedModel (a fresh export when ``None``) as version 1 of a model base path in ``work``."""
    model_dir = model_dir or export_model(os.path.join(work, "export"))
    base = os.path.join(work, "models", "taxifare")
    os.makedirs(base)
    os.symlink(os.path.abspath(model_dir), os.path.join(base, "1"))
    return model_dir, base


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


def run_cell(make_call: Callable[[], Callable[[], None]], clients: int, seconds: float, server_pid: int | None) -> dict[str, float]:
    """Latencies of every call, the wall time and the CPU shares, ``clients`` threads for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    calls = [make_call() for _ in range(clients)]
    for call in calls:  # warm-up (connections, first calls)
        for _ in range(10):
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
    me = psutil.Process()
    server = psutil.Process(server_pid) if server_pid else None
    cpu0, server0 = me.cpu_times(), server.cpu_times() if server else None
    start = time.perf_counter()
    stop[0] = start + seconds
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu1, server1 = me.cpu_times(), server.cpu_times() if server else None
    cores = os.cpu_count() or 1
    flat = [x for lat in latencies for x in lat]
    out = {
        "p50_ms": float(np.percentile(flat, 50) * 1000),
        "p99_ms": float(np.percentile(flat, 99) * 1000),
        "requests": len(flat),
        "wall": wall,
        "client_cpu": ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (wall * cores),
        "server_cpu": 0.0,
    }
    if server0 is not None and server1 is not None:
        out["server_cpu"] = ((server1.user + server1.system) - (server0.user + server0.system)) / (wall * cores)
    return out


def start_server(
    work: str, name: str, base: str, extra: list[str], src: str, launcher: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """``python -m serving serve`` (or ``launcher`` + the serve arguments) from ``src``, once it answers."""
    ports_file = os.path.join(work, f"ports-{name}.json")
    cmd = [*(launcher or [sys.executable, "-m", "serving", "serve"]), "--model-base-path", base, "--rest-port", "0", "--grpc-port", "0"]
    cmd += ["--quiet", "--poll-interval", "0.2", "--ports-file", ports_file, *extra]
    env = {**os.environ, "PYTHONPATH": src}
    with open(os.path.join(work, f"server-{name}.log"), "wb") as log:
        server = subprocess.Popen(cmd, cwd=src, stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.monotonic() + 120
    while True:
        if os.path.exists(ports_file):
            with open(ports_file) as fh:
                ports = json.load(fh)
            try:
                conn = http.client.HTTPConnection("127.0.0.1", ports["rest_port"], timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return server, ports
            except OSError:
                pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server {name} did not start; see {work}/server-{name}.log")
        time.sleep(0.2)


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def parse_wrk(out: str, what: str = "") -> dict[str, float]:
    """wrk's ``--latency`` report: ``requests``, the ``wall`` seconds it measured, ``p50_ms`` and ``p99_ms``.

    Raises:
        SystemExit: wrk saw failed requests (non-2xx answers or socket errors).
    """
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw failed requests{what}:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    measured = float(re.search(r"requests in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)([a-z]+)", out, re.M)
        return float(m.group(1)) * WRK_UNITS[m.group(2)] if m else float("nan")

    return {"p50_ms": percentile("50"), "p99_ms": percentile("99"), "requests": requests, "wall": measured}


def wrk_cell(port: int, body: bytes, batch: int, clients: int, seconds: float, server_pid: int, work: str) -> dict[str, float]:
    """``clients`` keep-alive connections from wrk (one thread) posting ``body`` for ``seconds``.

    Raises:
        SystemExit: when a request failed (wrk counts answers that are not 2xx and socket errors).
    """
    body_file = os.path.join(work, f"body-{batch}.json")
    with open(body_file, "wb") as fh:
        fh.write(body)
    script = os.path.join(work, f"post-{batch}.lua")
    with open(script, "w") as fh:
        fh.write(
            f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"local f = io.open({json.dumps(body_file)}, 'rb')\nwrk.body = f:read('*a')\nf:close()\n"
        )
    url = f"http://127.0.0.1:{port}/v1/models/taxifare:predict"
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "--latency", "-s", script, url]
    server = psutil.Process(server_pid)
    children0, server0 = resource.getrusage(resource.RUSAGE_CHILDREN), server.cpu_times()
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - start
    children1, server1 = resource.getrusage(resource.RUSAGE_CHILDREN), server.cpu_times()
    figures = parse_wrk(out)
    cores = os.cpu_count() or 1
    return {
        **figures,
        "wall": figures["wall"] if figures["wall"] > 0 else wall,
        "client_cpu": ((children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)) / (wall * cores),
        "server_cpu": ((server1.user + server1.system) - (server0.user + server0.system)) / (wall * cores),
    }


def stop_servers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every server, then wait for each (graceful drain)."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(30)


def batch_sizes(port: int) -> tuple[float, float]:
    """``(batches, examples)`` processed so far by a batching server, from its metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/monitoring/prometheus/metrics")
    text = conn.getresponse().read().decode()
    count = re.search(r"^:tensorflow:serving:batching_session:processed_batch_size_count\{[^}]*\} (\S+)$", text, re.M)
    total = re.search(r"^:tensorflow:serving:batching_session:processed_batch_size_sum\{[^}]*\} (\S+)$", text, re.M)
    return (float(count.group(1)) if count else 0.0, float(total.group(1)) if total else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="SavedModel to serve (default: export a fresh one)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per cell (default %(default)s)")
    parser.add_argument("--baseline-src", help="a directory holding an older checkout's serving/ and trainer/ to measure as 'before'")
    parser.add_argument("--json-out", help="also write the results to this JSON file")
    args = parser.parse_args()

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from trainer import schema

    work = tempfile.mkdtemp(prefix="bench-serving-")
    model_dir, base = model_base(work, args.model_dir)
    load_before = os.getloadavg()
    servers: dict[str, tuple[subprocess.Popen[bytes], dict[str, int]]] = {}
    results = []
    try:
        servers["off"] = start_server(work, "off", base, [], ROOT)
        servers["on"] = start_server(work, "on", base, ["--enable-batching"], ROOT)
        if args.baseline_src:
            servers["before"] = start_server(work, "before", base, [], os.path.abspath(args.baseline_src))
        fn = tf.saved_model.load(model_dir).signatures["serving_default"]
        from serving.payload import features_for
        from serving.servable import SIGNATURE, read_signature_defs, session_callable

        signature = read_signature_defs(model_dir)[SIGNATURE]
        names = [f.name for f in features_for(list(signature.inputs))]
        session_call = session_callable(model_dir, signature, names)

        for batch, client_counts in ((100, (1, 8)), (1, (1, 8, 32))):
            data = rows(batch)
            tensors = {k: tf.constant([r[k] for r in data], tf.float32) for k in schema.NUMERIC_FEATURES}
            body = json.dumps({"instances": data}).encode()
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "taxifare"
            for k in schema.NUMERIC_FEATURES:
                request.inputs[k].CopyFrom(tf.make_tensor_proto([r[k] for r in data], dtype=tf.float32))

            arrays = [np.array([r[k] for r in data], np.float32) for k in names]

            def inproc(tensors: dict = tensors) -> Callable[[], None]:
                return lambda: fn(**tensors)["fare_amount"].numpy()

            def inproc_session(arrays: list = arrays) -> Callable[[], None]:
                return lambda: session_call(*arrays)

            def rest(port: int, body: bytes = body, batch: int = batch) -> Callable[[], Callable[[], None]]:
                def factory() -> Callable[[], None]:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    headers = {"Content-Type": "application/json"}

                    def call() -> None:
                        conn.request("POST", "/v1/models/taxifare:predict", body=body, headers=headers)
                        response = conn.getresponse()
                        payload = response.read()
                        assert response.status == 200 and len(json.loads(payload)["predictions"]) == batch, payload

                    return call

                return factory

            def grpc_call(port: int, request: predict_pb2.PredictRequest = request, batch: int = batch) -> Callable[[], Callable[[], None]]:
                def factory() -> Callable[[], None]:
                    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

                    def call() -> None:
                        out = stub.Predict(request, timeout=30)
                        assert len(tf.make_ndarray(out.outputs["fare_amount"])) == batch

                    return call

                return factory

            for clients in client_counts:
                cells: list[tuple[str, Callable[[], Callable[[], None]] | None, int | None, str | None]] = [
                    ("in-process TF2", inproc, None, None),
                    ("in-process session", inproc_session, None, None),
                ]
                for name in ("before", "off", "on"):
                    if name in servers:
                        proc, ports = servers[name]
                        cells.append((f"REST {name}", rest(ports["rest_port"]), proc.pid, name))
                        cells.append((f"gRPC {name}", grpc_call(ports["grpc_port"]), proc.pid, name))
                if shutil.which("wrk"):
                    for name in ("before", "off", "on"):
                        if name in servers:
                            cells.append((f"REST {name} (wrk)", None, servers[name][0].pid, name))
                for mode, make, pid, server_name in cells:
                    before = batch_sizes(servers["on"][1]["rest_port"]) if server_name == "on" else None
                    if make is None:  # wrk drives this server's REST port
                        assert pid is not None and server_name is not None
                        cell = wrk_cell(servers[server_name][1]["rest_port"], body, batch, clients, args.seconds, pid, work)
                    else:
                        cell = run_cell(make, clients, args.seconds, pid)
                    cell.update(mode=mode, batch=batch, clients=clients, inst_per_s=cell["requests"] * batch / cell["wall"])
                    if before is not None:
                        after = batch_sizes(servers["on"][1]["rest_port"])
                        batches, examples = after[0] - before[0], after[1] - before[1]
                        cell["mean_batch"] = examples / batches if batches else 0.0
                    results.append(cell)
                    print(
                        f"  {mode:12s} batch {batch:3d} clients {clients:2d}: {cell['p50_ms']:.3f} ms p50, {cell['inst_per_s']:,.0f}/s",
                        flush=True,
                    )
    finally:
        stop_servers([proc for proc, _ in servers.values()])
    load_after = os.getloadavg()

    base_of: dict[tuple[int, int], dict] = {}
    for r in results:  # the faster in-process call is the limit
        key = (r["batch"], r["clients"])
        if r["mode"].startswith("in-process") and (key not in base_of or r["inst_per_s"] > base_of[key]["inst_per_s"]):
            base_of[key] = r
    print()
    machine = platform.processor() or platform.machine()
    mem = psutil.virtual_memory().total / 2**30
    print(f"python {platform.python_version()}, tensorflow {tf.__version__}, nproc {os.cpu_count()}, {machine}, {mem:.0f} GB")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print("| mode | batch | clients | p50 ms | p99 ms | instances/s | / in-process | client CPU | server CPU | mean batch |")
    print("|" + "---|" * 10)
    for r in results:
        ref = base_of[(r["batch"], r["clients"])]
        ratio = r["inst_per_s"] / ref["inst_per_s"]
        server_cpu = f"{r['server_cpu']:.0%}" if not r["mode"].startswith("in-process") else ""
        mean_batch = f"{r['mean_batch']:.1f}" if "mean_batch" in r else ""
        print(
            f"| {r['mode']} | {r['batch']} | {r['clients']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['inst_per_s']:,.0f} | "
            f"{ratio:.2f} | {r['client_cpu']:.0%} | {server_cpu} | {mean_batch} |"
        )
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"results": results, "load": [load_before, load_after]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
