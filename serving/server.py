"""The model server: version manager, REST and gRPC front ends, graceful shutdown.

Use it from Python (tests, infra validation) as a context manager::

    with ModelServer(ServerConfig(model_base_path="serving_models/taxifare", rest_port=0, grpc_port=0)) as server:
        server.wait_available(60)
        print(server.rest_port, server.grpc_port)

or from the command line with ``taxifare serve`` (:func:`serve`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from types import FrameType, TracebackType
from typing import Any

from serving import manager as manager_module
from serving.batching import BatchingParameters, Scheduler
from serving.http1 import HttpLimits
from serving.manager import ModelManager, list_versions
from serving.metrics import ServingMetrics
from serving.payload import Limits
from serving.request_log import RequestLog, RequestLogSettings
from serving.state import App
from trainer.warmup import MODEL_NAME

log = logging.getLogger("serving")


@dataclasses.dataclass
class ServerConfig:
    """Everything ``taxifare serve`` takes (port 0 picks a free port)."""

    model_base_path: str
    model_name: str = MODEL_NAME
    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500
    poll_interval: float = 1.0
    limits: Limits = dataclasses.field(default_factory=Limits)
    log_requests: bool = True
    grpc_workers: int = 8
    grace: float = 10.0
    #: Vertex AI's (predict, health) routes, answered beside the usual ones (``AIP_PREDICT_ROUTE``, ``AIP_HEALTH_ROUTE``).
    vertex_routes: tuple[str, str] | None = None
    batching: BatchingParameters = dataclasses.field(default_factory=BatchingParameters)
    rest_workers: int = 8
    max_queued_requests: int = 128
    http: HttpLimits = dataclasses.field(default_factory=HttpLimits)
    #: Sampled requests and answers to JSON-lines segments, and the skew gauges (``--request-log``); ``None``: off.
    request_log: RequestLogSettings | None = None


def check_base_path(path: str, model_name: str) -> None:
    """Reject a base path that cannot work, with the fix.

    Raises:
        ValueError: when ``path`` is missing, not a directory, or is the parent of the model's directory.
    """
    if not os.path.exists(path):
        raise ValueError(f"--model-base-path {path} does not exist: point it at the model's directory (the one holding versions 1, 2, ...)")
    if not os.path.isdir(path):
        raise ValueError(f"--model-base-path {path} is not a directory")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        parent = os.path.dirname(os.path.abspath(path))
        raise ValueError(
            f"--model-base-path {path} is a version directory (it holds saved_model.pb), not a base path: "
            f"pass the directory that holds the numbered versions (e.g. {parent}, or copy it to <base>/1)"
        )
    nested = os.path.join(path, model_name)
    if not list_versions(path) and os.path.isdir(nested) and list_versions(nested):
        raise ValueError(
            f"--model-base-path {path} holds no version but {nested} does: like TF Serving, pass the model's directory ({nested})"
        )


class ModelServer:
    """REST and gRPC servers over one :class:`~serving.manager.ModelManager`.

    Args:
        config: the settings.
    """

    def __init__(self, config: ServerConfig) -> None:
        from serving.grpc_service import build_grpc_server
        from serving.rest import RestServer

        self.config = config
        self.metrics = ServingMetrics(config.model_name)
        self.manager = ModelManager(config.model_base_path, config.model_name, poll_interval=config.poll_interval, loader=self._load)
        self.request_log: RequestLog | None = None
        self.skew: Any = None
        if config.request_log is not None:
            from serving.skew import SkewGauges

            self.skew = SkewGauges(self.metrics)
            self.request_log = RequestLog(config.request_log, config.model_name, self.skew.add, self.metrics.request_log_dropped)
        self.app = App(
            self.manager, config.limits, log_requests=config.log_requests, vertex_routes=config.vertex_routes, request_log=self.request_log
        )
        self.scheduler = Scheduler(
            config.batching, threads=config.rest_workers, max_queued=config.max_queued_requests, metrics=self.metrics
        )
        try:
            self._rest = RestServer((config.host, config.rest_port), self.app, self.scheduler, self.metrics, config.http)
        except OSError:
            self.scheduler.close()
            raise
        try:
            self._grpc, self.grpc_port = build_grpc_server(
                self.app,
                config.host,
                config.grpc_port,
                config.grpc_workers,
                scheduler=self.scheduler,
                metrics=self.metrics,
                max_queued=config.max_queued_requests,
            )
        except OSError:
            self._rest.server_close()
            self.scheduler.close()
            raise
        self.rest_port: int = self._rest.server_address[1]
        self._stopped = False

    def _load(self, path: str, version: int) -> Any:
        """The manager's loader, timing the warm-up for the metrics."""
        started = time.monotonic()
        try:
            servable = manager_module._load_and_warm_up(path, version)
        except Exception:
            self.metrics.warmup(path, time.monotonic() - started, ok=False)
            raise
        self.metrics.warmup(path, getattr(servable, "warmup_seconds", time.monotonic() - started), ok=True)
        if hasattr(servable, "warm_up"):
            self.scheduler.warm_threads(servable.warm_up)  # before the version serves: no slow first call per thread
        return servable

    def start(self) -> ModelServer:
        """Start watching the base path and serving both protocols."""
        self.manager.start()
        if self.request_log is not None:
            self.request_log.start()
            log.info("logging %g of the predict requests to %s", self.request_log.settings.sample_rate, self.request_log.settings.directory)
        self._grpc.start()
        self._rest.start()
        host = self.config.host
        log.info(
            "serving model %s from %s: REST on http://%s:%d, gRPC on %s:%d",
            self.config.model_name,
            self.config.model_base_path,
            host,
            self.rest_port,
            host,
            self.grpc_port,
        )
        return self

    def wait_available(self, timeout: float) -> bool:
        """Whether a version became available within ``timeout`` seconds."""
        return self.manager.wait_available(timeout)

    def stop(self, grace: float | None = None) -> bool:
        """Stop accepting requests, let those in flight finish (up to ``grace`` s), stop.

        Returns:
            Whether every request in flight finished within the grace period.
        """
        if self._stopped:
            return True
        self._stopped = True
        grace = self.config.grace if grace is None else grace
        started = time.monotonic()
        grpc_done = self._grpc.stop(grace)
        rest_ok = self._rest.drain(grace)
        grpc_ok = grpc_done.wait(max(0.0, grace - (time.monotonic() - started)) + 1.0)
        self.scheduler.close()
        if self.request_log is not None:
            self.request_log.close()  # the open segment is published: nothing answered is lost on a graceful stop
        self.manager.stop()
        log.info(
            "stopped (%s) in %.2fs", "all requests finished" if rest_ok and grpc_ok else "grace period over", time.monotonic() - started
        )
        return rest_ok and grpc_ok

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def write_ports_file(path: str, server: ModelServer) -> None:
    """Write ``{"rest_port", "grpc_port", "pid"}`` to ``path`` atomically (temp file + rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"rest_port": server.rest_port, "grpc_port": server.grpc_port, "pid": os.getpid()}, fh)
    os.replace(tmp, path)


def serve(config: ServerConfig, ports_file: str | None = None) -> int:
    """Serve until SIGTERM, SIGINT or SIGHUP, then shut down gracefully.

    SIGHUP (the terminal of a server started without ``nohup`` was closed) drains like SIGTERM:
    requests in flight are answered, then the server exits 0.

    Returns:
        0 when every request in flight finished, 1 when the grace period ran out.

    Raises:
        ValueError: for a bad base path.
        OSError: when a port cannot be bound.
    """
    check_base_path(config.model_base_path, config.model_name)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: finishing requests in flight (up to %.0fs)", signal.Signals(signum).name, config.grace)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        server = ModelServer(config).start()
        if ports_file:
            write_ports_file(ports_file, server)
        while not stop.wait(1.0):
            pass
        return 0 if server.stop() else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
