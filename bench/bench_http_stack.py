"""Side benchmark: the project's HTTP/1.1 front end against production Python HTTP stacks, same handler.

Issue 10 asks whether a production HTTP stack would serve the REST API faster than the
project's own asyncio front end (serving/http_server.py). Each server here runs in its own
process on loopback, serves ``POST /v1/models/taxifare:predict`` for the same SavedModel, and
does the same work per request: :func:`serving.payload.parse_json` and
:func:`serving.payload.parse_predict_body`, the model call through a
:class:`serving.batching.Scheduler` (batching off; a lone client's call runs inline, as the
project's server does), the answer with orjson, and the request counted in
:class:`serving.metrics.ServingMetrics`:

* **project**: ``python -m serving serve`` (the real server: every route, limits, logs off);
* **project + uvloop**: the same server with uvloop's event loop (libuv) instead of asyncio's;
* **uvicorn**: a bare ASGI app on uvicorn with httptools (llhttp) and uvloop, one worker:
  the fastest configuration uvicorn offers;
* **aiohttp**: an ``aiohttp.web`` application (its C HTTP parser, asyncio's loop).

Clients are the REST clients of bench/bench_serving.py (keep-alive ``http.client``, body
serialised once, answer parsed): 100-instance requests with 1 and 8 clients, 1-instance
requests with 8 clients. uvicorn, httptools, uvloop and aiohttp are not dependencies of the
project: install them for this run only (``pip install --target DIR uvicorn httptools uvloop
aiohttp``) and pass ``--site DIR``. Stacks that cannot be imported are skipped with a note.

Run: ``.venv/bin/python bench/bench_http_stack.py --site DIR`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_serving import export_model, rows, run_cell  # noqa: E402

STACKS = ("project", "project+uvloop", "uvicorn", "aiohttp")
PATH = "/v1/models/taxifare:predict"


# -- the servers (run as ``--serve STACK`` in a child process) ----------------------------------
class Handler:
    """The predict handler every stack runs: parse, validate, model call, answer, metrics."""

    def __init__(self, model_dir: str) -> None:
        from serving.batching import BatchingParameters, Scheduler
        from serving.metrics import ServingMetrics
        from serving.payload import Limits
        from serving.servable import Servable

        self.servable = Servable(model_dir, 1)
        self.servable.warm_up()
        self.limits = Limits()
        self.metrics = ServingMetrics("taxifare")
        self.scheduler = Scheduler(BatchingParameters(), threads=8, max_queued=128, metrics=self.metrics)
        self.scheduler.warm_threads(self.servable.warm_up)
        self.in_flight = 0
        self.recent: dict[Any, float] = {}  # client address -> last request (a stand-in for "open connections")

    async def __call__(self, body: bytes, client: Any) -> tuple[int, bytes]:
        import numpy as np
        import orjson

        from serving.metrics import PREDICT_API
        from serving.payload import RequestError, parse_json, parse_predict_body

        started = time.perf_counter()
        self.in_flight += 1
        now = time.monotonic()
        self.recent[client] = now
        if len(self.recent) > 1:
            self.recent = {k: t for k, t in self.recent.items() if now - t < 1.0}
        try:
            columns, _, _ = parse_predict_body(parse_json(body), self.servable.features, self.limits)
            size = len(next(iter(columns.values())))
            result = None
            if self.in_flight == 1 and len(self.recent) == 1:  # a lone client: no hand-over (as serving/rest.py)
                result = self.scheduler.run_inline(self.servable, columns, size)
            if result is None:
                loop = asyncio.get_running_loop()
                future: asyncio.Future[tuple[Any, Any]] = loop.create_future()

                def done(values: Any, error: Any) -> None:
                    loop.call_soon_threadsafe(future.set_result, (values, error))

                self.scheduler.submit(self.servable, columns, size, done)
                result = await future
            values, error = result
            if error is not None:
                raise error
            data = orjson.dumps({"predictions": values.astype(np.float64)}, option=orjson.OPT_SERIALIZE_NUMPY)
            self.metrics.request(PREDICT_API, "REST", "OK", time.perf_counter() - started, size)
            return 200, data
        except RequestError as exc:
            self.metrics.request(PREDICT_API, "REST", "INVALID_ARGUMENT", time.perf_counter() - started, 0)
            return exc.status, orjson.dumps({"error": str(exc)})
        finally:
            self.in_flight -= 1


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


def serve(stack: str, model_dir: str, port_file: str) -> None:
    """Run one stack's server until SIGTERM, writing its port to ``port_file`` when ready."""

    def ready(port: int) -> None:
        with open(port_file + ".tmp", "w") as fh:
            fh.write(str(port))
        os.replace(port_file + ".tmp", port_file)

    if stack.startswith("project"):
        if stack == "project+uvloop":
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # HttpServer's asyncio.new_event_loop() is then uvloop's
        from serving.server import ModelServer, ServerConfig

        base = os.path.join(os.path.dirname(port_file), f"models-{stack}", "taxifare")
        os.makedirs(base, exist_ok=True)
        if not os.path.exists(os.path.join(base, "1")):
            os.symlink(os.path.abspath(model_dir), os.path.join(base, "1"))
        server = ModelServer(ServerConfig(base, rest_port=0, grpc_port=0, log_requests=False)).start()
        server.wait_available(120)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        ready(server.rest_port)
        stop.wait()
        server.stop(grace=1)
        return

    handler = Handler(model_dir)
    sock = _listen()
    if stack == "uvicorn":
        import uvicorn

        Receive = Callable[[], Awaitable[dict[str, Any]]]

        async def app(scope: dict[str, Any], receive: Receive, send: Callable[..., Awaitable[None]]) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            if scope["path"] != PATH:
                status, data = 404, b'{"error": "no such route"}'
            else:
                status, data = await handler(body, scope.get("client"))
            await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": data})

        config = uvicorn.Config(app, loop="uvloop", http="httptools", log_level="warning", access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        threading.Thread(target=lambda: (time.sleep(1.0), ready(sock.getsockname()[1])), daemon=True).start()
        server.run(sockets=[sock])
        return

    if stack == "aiohttp":
        from aiohttp import web

        async def predict(request: web.Request) -> web.Response:
            status, data = await handler(await request.read(), request.transport.get_extra_info("peername") if request.transport else None)
            return web.Response(status=status, body=data, content_type="application/json")

        async def main() -> None:
            application = web.Application(client_max_size=8 * 1024 * 1024)
            application.router.add_post(PATH, predict)
            runner = web.AppRunner(application, access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            ready(sock.getsockname()[1])
            await stop.wait()
            await runner.cleanup()

        asyncio.run(main())
        return
    raise SystemExit(f"unknown stack {stack!r}: use one of {', '.join(STACKS)}")


# -- the driver ---------------------------------------------------------------------------------
def start(stack: str, model_dir: str, work: str, site: str | None) -> tuple[subprocess.Popen[bytes], int] | None:
    port_file = os.path.join(work, f"port-{stack}")
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", stack, "--model-dir", model_dir, "--port-file", port_file]
    if site:
        cmd += ["--site", site]
    log_path = os.path.join(work, f"server-{stack}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONPATH": ROOT})
    deadline = time.monotonic() + 180
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log_path, encoding="utf-8", errors="replace") as fh:
                last = [line for line in fh.read().splitlines() if line.strip()][-1:] or ["(no output)"]
            print(f"  {stack}: skipped, the server did not start: {last[0][:200]}")
            proc.kill()
            return None
        time.sleep(0.2)
    with open(port_file) as fh:
        return proc, int(fh.read())


def rest_client(port: int, body: bytes, batch: int) -> Callable[[], Callable[[], None]]:
    def factory() -> Callable[[], None]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json"}

        def call() -> None:
            conn.request("POST", PATH, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            assert response.status == 200 and len(json.loads(payload)["predictions"]) == batch, payload[:200]

        return call

    return factory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="SavedModel to serve (default: export a fresh one)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per cell (default %(default)s)")
    parser.add_argument("--site", help="a directory holding uvicorn, httptools, uvloop and aiohttp (pip install --target DIR ...)")
    parser.add_argument("--stacks", default=",".join(STACKS), help="comma-separated stacks to measure (default: all)")
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.site:
        sys.path.append(os.path.abspath(args.site))  # after site-packages: the project's own pins win
    if args.serve:
        serve(args.serve, args.model_dir, args.port_file)
        return 0

    work = tempfile.mkdtemp(prefix="bench-http-stack-")
    model_dir = args.model_dir or export_model(os.path.join(work, "export"))
    load_before = os.getloadavg()
    results: list[dict[str, Any]] = []
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for stack in args.stacks.split(","):
            started = start(stack, model_dir, work, args.site)
            if started is not None:
                servers[stack] = started
        for batch, clients in ((100, 1), (100, 8), (1, 8)):
            body = json.dumps({"instances": rows(batch)}).encode()
            for stack, (proc, port) in servers.items():
                cell = run_cell(rest_client(port, body, batch), clients, args.seconds, proc.pid)
                cell.update(stack=stack, batch=batch, clients=clients, inst_per_s=cell["requests"] * batch / cell["wall"])
                results.append(cell)
                line = f"{cell['p50_ms']:.3f} ms p50, {cell['inst_per_s']:,.0f}/s"
                print(f"  {stack:15s} batch {batch:3d} clients {clients}: {line}", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in servers.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    load_after = os.getloadavg()
    print()
    print(f"nproc {os.cpu_count()}, {psutil.virtual_memory().total / 2**30:.0f} GB")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print("| stack | batch | clients | p50 ms | p99 ms | instances/s | / project | client CPU | server CPU |")
    print("|" + "---|" * 9)
    ref = {(r["batch"], r["clients"]): r["inst_per_s"] for r in results if r["stack"] == "project"}
    for r in results:
        base = ref.get((r["batch"], r["clients"]))
        ratio = f"{r['inst_per_s'] / base:.2f}" if base else ""
        print(
            f"| {r['stack']} | {r['batch']} | {r['clients']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['inst_per_s']:,.0f} | "
            f"{ratio} | {r['client_cpu']:.0%} | {r['server_cpu']:.0%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
