"""The REST front end: TF Serving's REST API, Vertex AI's predict API and a health check.

Built on :class:`http.server.ThreadingHTTPServer` (one thread per connection, HTTP/1.1
keep-alive). Routes:

* ``GET  /v1/models/{name}[/versions/{v}|/labels/{label}]`` - version status;
* ``GET  /v1/models/{name}[/versions/{v}|/labels/{label}]/metadata`` - signature and training metrics;
* ``POST /v1/models/{name}[/versions/{v}|/labels/{label}]:predict`` - ``instances`` or ``inputs``;
* ``POST /v1/projects/{p}/locations/{l}/endpoints/{e}:predict`` (also ``/v1/endpoints/{e}:predict``)
  - Vertex AI's body and answer;
* ``GET  /v1/projects/{p}/locations/{l}/endpoints/{e}`` - a minimal Vertex endpoint resource;
* ``GET  /healthz`` - 200 when a version is available, 503 before.

Errors are ``{"error": "..."}`` (Google's ``{"error": {"code", "message", "status"}}`` on the
Vertex routes) with a 4xx status that fits the problem.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving.payload import RequestError, parse_json, parse_predict_body, to_json_floats
from serving.state import App

access_log = logging.getLogger("serving.access")

_MODEL_RE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?(?P<rest>/metadata|:[a-zA-Z]+)?$"
)
_LABEL_RE = re.compile(r"^[a-zA-Z0-9_]+$")
_VERTEX_RE = re.compile(
    r"^/v1(?:beta1)?/(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/)?endpoints/(?P<endpoint>[^/:]+)(?P<rest>:[a-zA-Z]+)?$"
)
_GRPC_STATUS = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    411: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    503: "UNAVAILABLE",
}


def _parse_version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not text.isascii() or int(text) <= 0:
        raise RequestError(f"version {text!r} is not a version number: use a positive integer", status=404)
    return int(text)


class _Handler(BaseHTTPRequestHandler):
    server: RestServer
    protocol_version = "HTTP/1.1"
    server_version = "taxifare-serving"
    sys_version = ""

    # -- plumbing ------------------------------------------------------------------------------
    def parse_request(self) -> bool:
        self._started = time.perf_counter()
        self._note = ""
        self.server.mark(self.connection, busy=True)
        return super().parse_request()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self.server.mark(self.connection, busy=False)
            if self.server.draining:
                self.close_connection = True

    def setup(self) -> None:
        super().setup()
        # headers and body go out as two writes: without this, Nagle's algorithm and the
        # client's delayed ACK hold the body back ~40 ms on every keep-alive request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.unregister(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        access_log.debug("REST %s %s", self.client_address[0], format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.server.app.log_requests:
            elapsed = (time.perf_counter() - getattr(self, "_started", time.perf_counter())) * 1000
            code_value = code.value if isinstance(code, HTTPStatus) else code
            access_log.info('REST %s "%s %s" %s %.2fms%s', self.client_address[0], self.command, self.path, code_value, elapsed, self._note)

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, exc: RequestError, google: bool = False) -> None:
        message = str(exc)
        self._note = f" error={message[:200]!r}"
        if google:
            self._send(
                exc.status, {"error": {"code": exc.status, "message": message, "status": _GRPC_STATUS.get(exc.status, "INVALID_ARGUMENT")}}
            )
        else:
            self._send(exc.status, {"error": message})

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise RequestError("chunked request bodies are not supported: send a Content-Length", status=411)
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise RequestError("the request has no Content-Length header: send the JSON body with its length", status=411)
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise RequestError(f"Content-Length {length_text!r} is not a byte count") from None
        limit = self.server.app.limits.max_body_bytes
        if length > limit:
            self.close_connection = True  # the unread body must not be taken for the next request
            if length <= 4 * limit:  # read it, so the client sees the 413 rather than a reset connection
                left = length
                while left > 0:
                    chunk = self.rfile.read(min(65536, left))
                    if not chunk:
                        break
                    left -= len(chunk)
            raise RequestError(
                f"the body has {length} bytes, more than the limit of {limit}: split the batch into smaller requests", status=413
            )
        return self.rfile.read(length)

    # -- routes --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        google = False
        try:
            path = self.path.split("?", 1)[0]
            if path in ("/healthz", "/health", "/v1/health") or (
                self.server.app.vertex_routes and path == self.server.app.vertex_routes[1]
            ):
                self._health()
                return
            match = _MODEL_RE.match(path)
            if match and match["rest"] in (None, "/metadata"):
                version, label = self._model_version(match)
                if match["rest"] == "/metadata":
                    self._send(200, self.server.app.metadata(version, label))
                else:
                    version = self.server.app.manager.resolve(label) if label is not None else version
                    self._send(200, {"model_version_status": self.server.app.manager.status(version)})
                return
            vertex = _VERTEX_RE.match(path)
            if vertex and vertex["rest"] is None:
                google = True
                self._send(200, self.server.app.vertex_endpoint(vertex["project"], vertex["location"], vertex["endpoint"]))
                return
            if match or vertex:
                raise RequestError(f"{path} takes POST, not GET", status=405)
            raise RequestError(f"no such route: GET {path} (try GET /v1/models/{self.server.app.model_name})", status=404)
        except RequestError as exc:
            self._error(exc, google)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        vertex = _VERTEX_RE.match(path)
        try:
            body = self._read_body()
            match = _MODEL_RE.match(path)
            if match and match["rest"] == ":predict":
                version, label = self._model_version(match)
                self._predict(body, version, label)
                return
            if self.server.app.vertex_routes and path == self.server.app.vertex_routes[0]:  # AIP_PREDICT_ROUTE
                self._vertex_predict(body, None, None, "", aip=True)
                return
            if vertex and vertex["rest"] in (":predict", ":rawPredict"):
                self._vertex_predict(body, vertex["project"], vertex["location"], vertex["endpoint"])
                return
            if match and match["rest"] in (":classify", ":regress"):
                raise RequestError(f"{match['rest'][1:]} is not supported: this model has a predict signature only; POST to :predict")
            if match or vertex:
                raise RequestError(f"no such route: POST {path} (the method is :predict)", status=404)
            raise RequestError(f"no such route: POST {path} (try POST /v1/models/{self.server.app.model_name}:predict)", status=404)
        except RequestError as exc:
            self._error(exc, google=bool(vertex))

    def do_PUT(self) -> None:
        self._error(RequestError(f"{self.path} does not take PUT: use GET or POST", status=405))

    do_DELETE = do_PATCH = do_PUT

    def _model_version(self, match: re.Match[str]) -> tuple[int | None, str | None]:
        app = self.server.app
        if match["name"] != app.model_name:
            raise RequestError(f"model {match['name']!r} is not served here: this server serves {app.model_name!r}", status=404)
        if match["label"] is not None:
            if not _LABEL_RE.match(match["label"]):
                raise RequestError(f"version label {match['label']!r} is not a label name (letters, digits, '_')", status=404)
            return None, match["label"]
        return _parse_version(match["version"]), None

    def _health(self) -> None:
        app = self.server.app
        version = app.manager.current_version
        status = 200 if version is not None and not self.server.draining else 503
        state = "DRAINING" if self.server.draining else ("AVAILABLE" if version is not None else "LOADING")
        self._send(status, {"status": state, "model": app.model_name, "version": None if version is None else str(version)})

    def _predict(self, body: bytes, version: int | None, label: str | None = None) -> None:
        app = self.server.app
        servable = app.manager.get(version, label)
        columns, rows, signature = parse_predict_body(parse_json(body), servable.features, app.limits)
        if signature not in (None, "", "serving_default"):
            raise RequestError(f"signature {signature!r} does not exist: the model has serving_default only", status=400)
        values = to_json_floats(servable.predict(columns))
        self._note = f" n={len(values)} v={servable.version}"
        headers = {"X-Model-Version": str(servable.version)}
        self._send(200, {"predictions": values} if rows else {"outputs": values}, headers)

    def _vertex_predict(self, body: bytes, project: str | None, location: str | None, endpoint: str, aip: bool = False) -> None:
        app = self.server.app
        servable = app.manager.get(None)
        columns, _, _ = parse_predict_body(parse_json(body), servable.features, app.limits, vertex=True)
        values = to_json_floats(servable.predict(columns))
        self._note = f" n={len(values)} v={servable.version} vertex"
        answer = {"predictions": values, **({} if aip else app.vertex_model_fields(servable.version, project, location))}
        self._send(200, answer, {"X-Model-Version": str(servable.version)})


class RestServer(ThreadingHTTPServer):
    """The HTTP server; :meth:`drain` stops it and lets requests in flight finish."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.draining = False
        self._conns: dict[socket.socket, bool] = {}
        self._conns_lock = threading.Condition()
        super().__init__(address, _Handler)

    def register(self, conn: socket.socket) -> None:
        """Track a new connection (idle)."""
        with self._conns_lock:
            self._conns[conn] = False

    def unregister(self, conn: socket.socket) -> None:
        """Forget a closed connection."""
        with self._conns_lock:
            self._conns.pop(conn, None)
            self._conns_lock.notify_all()

    def mark(self, conn: socket.socket, *, busy: bool) -> None:
        """Record whether a request is being handled on ``conn``."""
        with self._conns_lock:
            if conn in self._conns:
                self._conns[conn] = busy
            self._conns_lock.notify_all()

    def drain(self, grace: float) -> bool:
        """Stop accepting, close idle keep-alive connections, wait up to ``grace`` s for the rest.

        Returns:
            Whether every request in flight finished within the grace period.
        """
        self.draining = True
        self.shutdown()
        self.socket.close()
        deadline = time.monotonic() + grace
        with self._conns_lock:
            while self._conns:
                for conn, busy in list(self._conns.items()):
                    if not busy:
                        with contextlib.suppress(OSError):
                            conn.shutdown(socket.SHUT_RDWR)
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._conns_lock.wait(timeout=min(left, 0.1))
        return True
