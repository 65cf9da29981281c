"""The REST front end: TF Serving's REST API, Vertex AI's predict API, health and metrics.

An HTTP/1.1 server on :mod:`asyncio` (one event-loop thread for every connection; keep-alive
and pipelining). Model calls go to the :class:`serving.batching.Scheduler`'s threads, so the
loop never blocks on the model and the number of threads is fixed whatever the load. Routes
(matched case-insensitively, as TF Serving does):

* ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]`` - version status;
* ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata`` - signature and training metrics;
* ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict`` - ``instances`` or ``inputs``;
* ``POST /v1/projects/{p}/locations/{l}/endpoints/{e}:predict`` (also ``/v1/endpoints/{e}:predict``)
  - Vertex AI's body and answer;
* ``GET  /v1/projects/{p}/locations/{l}/endpoints/{e}`` - a minimal Vertex endpoint resource;
* ``GET  /healthz`` - 200 when a version is available, 503 before (``FAILED`` and why when
  no version could be loaded);
* ``GET  /monitoring/prometheus/metrics`` - Prometheus metrics (:mod:`serving.metrics`).

Errors are ``{"error": "..."}`` (Google's ``{"error": {"code", "message", "status"}}`` on the
Vertex routes) with a 4xx status that fits the problem. Protocol errors get an answer too
(400, 405, 408, 411, 413, 414, 431, 505, 503 when a limit is reached) and one log line, and
the connection is closed after it (reading and discarding what the client still sends for
a moment, so the answer is not lost to a TCP reset).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import logging
import re
import socket
import threading
import time
from http import HTTPStatus
from typing import Any

import numpy as np
import orjson

from serving import metrics as m
from serving.batching import Overloaded, Scheduler
from serving.payload import RequestError, parse_json, parse_predict_body
from serving.state import App

access_log = logging.getLogger("serving.access")
log = logging.getLogger("serving")

_MODEL_RE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?(?P<rest>/metadata|:[a-zA-Z]+)?$",
    re.IGNORECASE,
)
_VERTEX_RE = re.compile(
    r"^/v1(?:beta1)?/(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/)?endpoints/(?P<endpoint>[^/:]+)(?P<rest>:[a-zA-Z]+)?$",
    re.IGNORECASE,
)
_NO_MODEL_RE = re.compile(r"^/v1/models/?(?::[a-zA-Z]+)?$", re.IGNORECASE)
_HEALTH = {"/healthz", "/health", "/v1/health"}
METRICS_PATH = "/monitoring/prometheus/metrics"
_GRPC_STATUS = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    411: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    422: "FAILED_PRECONDITION",
    503: "UNAVAILABLE",
}
_TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION_RE = re.compile(rb"^HTTP/(\d)\.(\d)$")
_KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """Connection-level limits of the REST server (``taxifare serve`` flags)."""

    max_connections: int = 1024
    backlog: int = 2048
    request_timeout: float = 10.0
    keep_alive_timeout: float = 30.0
    max_request_line: int = 16 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not text.isascii() or int(text) <= 0:
        raise RequestError(f"version {text!r} is not a version number: use a positive integer", status=404)
    return int(text)


_date_cache: list[Any] = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, email.utils.formatdate(now, usegmt=True)
    return str(_date_cache[1])


@dataclasses.dataclass
class _Request:
    method: str
    target: str
    path: str
    http11: bool
    headers: dict[str, str]
    keep_alive: bool
    length: int = 0


def _parse_head(head: bytes, limits: HttpLimits) -> _Request:
    """The request line and headers (everything before the blank line).

    Raises:
        _HttpError: for anything that is not an HTTP/1.x request head.
    """
    lines = head.split(b"\r\n")
    line = lines[0]
    if len(line) > limits.max_request_line:
        raise _HttpError(414, f"the request line has {len(line)} bytes, more than the limit of {limits.max_request_line}")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise _HttpError(400, f"malformed request line {line[:60]!r}: expected 'METHOD /path HTTP/1.1'")
    method_b, target_b, version_b = parts
    version = _VERSION_RE.match(version_b)
    if not _TOKEN_RE.match(method_b) or version is None:
        raise _HttpError(400, f"malformed request line {line[:60]!r}: expected 'METHOD /path HTTP/1.1'")
    if version.group(1) != b"1":
        raise _HttpError(505, f"{version_b.decode()} is not supported: this server speaks HTTP/1.1 (and 1.0)")
    if not target_b.isascii() or not (target_b.startswith(b"/") or target_b == b"*"):
        raise _HttpError(400, f"malformed request target {target_b[:60]!r}: expected a path starting with /")
    if len(lines) - 1 > limits.max_headers:
        raise _HttpError(431, f"the request has {len(lines) - 1} header lines, more than the limit of {limits.max_headers}")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep or not _TOKEN_RE.match(name):
            raise _HttpError(400, f"malformed header line {raw[:60]!r}: expected 'Name: value'")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key in headers:
            if key in ("content-length", "host", "transfer-encoding"):
                if headers[key] != text:
                    raise _HttpError(400, f"the request has two different {name.decode()} headers")
                continue
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text
    target = target_b.decode("ascii")
    http11 = version.group(2) != b"0"
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if http11 else "keep-alive" in connection
    return _Request(method_b.decode("ascii"), target, target.split("?", 1)[0], http11, headers, keep_alive)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, one at a time, and answers them in order."""

    def __init__(self, server: RestServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.request: _Request | None = None
        self.busy = False  # a request is being handled (the answer is not written yet)
        self.closing = False  # answered with Connection: close; discarding what comes
        self.timer: asyncio.TimerHandle | None = None
        self.peer = "-"
        self.over_limit = False
        self.paused = False
        self.eof = False

    # -- connection events -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # headers and body go out in one write, but a client's delayed ACK must never hold an answer
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "-"
        server = self.server
        server.conns.add(self)
        server.metrics.open_connections.inc()
        self.over_limit = len(server.conns) > server.http.max_connections
        self._arm(server.http.request_timeout, self._on_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)
        self.server.metrics.open_connections.dec()
        if self.timer is not None:
            self.timer.cancel()
        if self.busy and self.request is not None:
            access_log.info('REST %s "%s %s" client disconnected before the answer', self.peer, self.request.method, self.request.path)
        self.transport = None
        self.server.changed()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.closing and not self.busy and self.buf:
            if self.request is not None:
                got = len(self.buf)
                self._fail(400, f"the body ended after {got} of {self.request.length} bytes (Content-Length): nothing was predicted")
            else:
                self._fail(400, "the connection ended in the middle of the request head")
        # keep the transport open while an answer is being computed; it is closed after it
        return self.busy

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if not self.buf and not self.busy and self.request is None:
            self._arm(self.server.http.request_timeout, self._on_timeout)  # a new request begins
        self.buf += data
        if self.busy:
            if len(self.buf) > self.server.http.max_header_bytes and self.transport is not None and not self.paused:
                self.transport.pause_reading()  # pipelined requests wait until this one is answered
                self.paused = True
            return
        self._process()

    # -- timers ----------------------------------------------------------------------------------
    def _arm(self, seconds: float, callback: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(seconds, callback)

    def _on_timeout(self) -> None:
        if self.transport is None or self.busy:
            return
        if self.buf or self.request is not None:
            what = "body" if self.request is not None else "request head"
            self._fail(408, f"the {what} was not complete within {self.server.http.request_timeout:g}s: send the whole request at once")
        else:
            self.transport.close()  # an idle keep-alive connection

    # -- parsing ---------------------------------------------------------------------------------
    def _process(self) -> None:
        limits = self.server.http
        while not self.busy and not self.closing and self.transport is not None:
            if self.request is None:
                if not self.buf:
                    return
                if self.buf[0] == 0x16:
                    self._fail(400, "this port speaks plain HTTP, not TLS: use http://, not https://")
                    return
                if self.buf.startswith(b"PRI * HTTP/2"):
                    self._fail(505, "HTTP/2 is not supported on this port: use HTTP/1.1 (gRPC has its own port)")
                    return
                line_end = self.buf.find(b"\r\n", 0, limits.max_request_line + 2)
                if line_end < 0 and len(self.buf) > limits.max_request_line:
                    self._fail(414, f"the request line is longer than the limit of {limits.max_request_line} bytes")
                    return
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    first = self.buf if line_end < 0 else self.buf[:line_end]
                    if len(self.buf) > limits.max_header_bytes:
                        self._fail(431, f"the request head is longer than the limit of {limits.max_header_bytes} bytes")
                    elif any(b < 0x20 or b > 0x7E for b in bytes(first[:64])):
                        self._fail(400, "the request line holds binary data: this port speaks HTTP/1.1")
                    return
                if end > limits.max_header_bytes:
                    self._fail(431, f"the request head is longer than the limit of {limits.max_header_bytes} bytes")
                    return
                head = bytes(self.buf[:end])
                del self.buf[: end + 4]
                try:
                    request = _parse_head(head, limits)
                    self._framing(request)
                except _HttpError as exc:
                    self._fail(exc.status, str(exc), request_line=head.split(b"\r\n", 1)[0][:200])
                    return
                self.request = request
                if request.length > len(self.buf) and request.headers.get("expect", "").lower() == "100-continue":
                    assert self.transport is not None
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request = self.request
            if len(self.buf) < request.length:
                return
            body = bytes(self.buf[: request.length])
            del self.buf[: request.length]
            self.request = request
            self.busy = True
            self.server.in_flight += 1
            if self.timer is not None:
                self.timer.cancel()
            _Exchange(self, request, body).run()

    def _framing(self, request: _Request) -> None:
        """Check how the body is framed and set ``request.length``.

        Raises:
            _HttpError: for chunked bodies, missing or bad lengths, bodies over the limit.
        """
        if "transfer-encoding" in request.headers:
            raise _HttpError(411, "chunked request bodies are not supported: send a Content-Length")
        text = request.headers.get("content-length")
        if text is None:
            if request.method in ("POST", "PUT", "PATCH"):
                raise _HttpError(411, "the request has no Content-Length header: send the JSON body with its length")
            return
        if not text.isdigit() or not text.isascii() or len(text) > 18:
            raise _HttpError(400, f"Content-Length {text[:40]!r} is not a byte count")
        length = int(text)
        limit = self.server.app.limits.max_body_bytes
        if length > limit:
            raise _HttpError(413, f"the body has {length} bytes, more than the limit of {limit}: split the batch into smaller requests")
        request.length = length

    # -- answering --------------------------------------------------------------------------------
    def write_answer(self, request: _Request | None, status: int, body: bytes, headers: dict[str, str], close: bool) -> None:
        """Write one answer; then read the next request or close."""
        transport = self.transport
        self._not_busy()
        if transport is None or transport.is_closing():
            return
        close = close or request is None or not request.keep_alive or self.server.draining or self.eof
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        phrase = HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nServer: taxifare-serving\r\nDate: {_http_date()}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
        )
        send_body = request is None or request.method != "HEAD"
        transport.write(head.encode("latin-1") + body if send_body else head.encode("latin-1"))
        self.request = None
        if close:
            self._linger()
            return
        if self.paused:
            transport.resume_reading()
            self.paused = False
        if self.buf:
            self._arm(self.server.http.request_timeout, self._on_timeout)
            self._process()
        else:
            self._arm(self.server.http.keep_alive_timeout, self._on_timeout)
        self.server.changed()

    def _fail(self, status: int, message: str, request_line: bytes | None = None) -> None:
        """Answer a protocol error with ``{"error": ...}`` and close the connection."""
        what = request_line.decode("latin-1", "replace") if request_line else "-"
        access_log.info('REST %s "%s" %d error=%r', self.peer, what[:120], status, message[:200])
        body = orjson.dumps({"error": message})
        self.write_answer(None, status, body, {"Content-Type": "application/json"}, close=True)

    def _not_busy(self) -> None:
        if self.busy:
            self.busy = False
            self.server.in_flight -= 1

    def _linger(self) -> None:
        """Close after the answer, reading (and dropping) what the client still sends for up to 2 s."""
        self.closing = True
        self.buf.clear()
        transport = self.transport
        if transport is None:
            return
        if self.paused:
            transport.resume_reading()
            self.paused = False
        if transport.can_write_eof():
            transport.write_eof()
            self._arm(2.0, transport.close)
        else:  # pragma: no cover - TCP transports can
            transport.close()
        self.server.changed()


class _Exchange:
    """One request being answered: routing, the model call, the answer, the log line and metrics."""

    def __init__(self, conn: _Connection, request: _Request, body: bytes) -> None:
        self.conn = conn
        self.server = conn.server
        self.app: App = conn.server.app
        self.request = request
        self.body = body
        self.started = time.perf_counter()
        self.note = ""
        self.api = ""  # TF Serving's API name when this is a model request (counted in the metrics)
        self.google = False
        self.examples = 0
        self.status_code = "OK"
        self.close_after = False

    def run(self) -> None:
        try:
            if self.conn.over_limit:
                self.close_after = True
                self.server.metrics.shed("REST", "connections")
                raise Overloaded(f"the server has {self.server.http.max_connections} connections open (its limit): retry shortly")
            self.route()
        except RequestError as exc:
            self.error(exc)
        except Exception as exc:  # a bug: answer 500 with one log line and the traceback once
            log.exception("REST %s %s failed", self.request.method, self.request.path)
            self.error(RequestError(f"internal error: {type(exc).__name__}: {str(exc)[:200]}", status=500))

    # -- routing ---------------------------------------------------------------------------------
    def route(self) -> None:
        request = self.request
        method = request.method
        path = request.path
        lower = path.lower()
        if method not in _KNOWN_METHODS:
            raise RequestError(f"method {method} is not implemented: use GET, POST, HEAD or OPTIONS", status=501)
        allowed: tuple[str, ...]
        model = _MODEL_RE.match(path)
        vertex = _VERTEX_RE.match(path) if model is None else None
        if lower in _HEALTH or lower == METRICS_PATH:
            allowed = ("GET", "HEAD")
        elif model is not None:
            allowed = ("POST",) if (model["rest"] or "").startswith(":") else ("GET", "HEAD")
        elif vertex is not None:
            self.google = True
            allowed = ("POST",) if vertex["rest"] else ("GET", "HEAD")
        elif _NO_MODEL_RE.match(path):
            raise RequestError("Missing model name in request.", status=400)
        elif path == "*" and method == "OPTIONS":
            allowed = ("GET", "HEAD", "POST")
        else:
            hint = f"GET /v1/models/{self.app.model_name}" if method != "POST" else f"POST /v1/models/{self.app.model_name}:predict"
            raise RequestError(f"no such route: {method} {path} (try {hint})", status=404)
        allow = ", ".join((*allowed, "OPTIONS"))
        if method == "OPTIONS":
            self.answer(200, {"allow": [*allowed, "OPTIONS"]}, {"Allow": allow})
            return
        if method not in allowed:
            takes = " or ".join(a for a in allowed if a != "HEAD")
            self.error(RequestError(f"{path} takes {takes}, not {method}", status=405), {"Allow": allow})
            return
        if lower in _HEALTH:
            self.health()
        elif lower == METRICS_PATH:
            self.conn.write_answer(request, 200, self.server.metrics.exposition(), {"Content-Type": m.CONTENT_TYPE}, close=False)
        elif model is not None:
            self.model_route(model)
        elif vertex is not None:
            if vertex["rest"] is None:
                self.answer(200, self.app.vertex_endpoint(vertex["project"], vertex["location"], vertex["endpoint"]))
            elif vertex["rest"].lower() in (":predict", ":rawpredict"):
                self.api = m.PREDICT_API
                self.predict(self.app.manager.get(None), vertex=(vertex["project"], vertex["location"]))
            else:
                raise RequestError(f"no such route: POST {path} (the method is :predict)", status=404)

    def model_route(self, match: re.Match[str]) -> None:
        rest = (match["rest"] or "").lower()
        self.api = m.PREDICT_API if rest.startswith(":") else (m.METADATA_API if rest == "/metadata" else m.STATUS_API)
        version = self.model_version(match)
        if rest == "/metadata":
            self.answer(200, self.app.metadata(version))
        elif rest == "":
            self.answer(200, {"model_version_status": self.app.manager.status(version)})
        elif rest == ":predict":
            self.predict(self.app.manager.get(version))
        elif rest in (":classify", ":regress"):
            raise RequestError(f"{rest[1:]} is not supported: this model has a predict signature only; POST to :predict")
        else:
            raise RequestError(f"no such route: POST {self.request.path} (the method is :predict)", status=404)

    def model_version(self, match: re.Match[str]) -> int | None:
        app = self.app
        if match["name"] != app.model_name:
            raise RequestError(f"model {match['name']!r} is not served here: this server serves {app.model_name!r}", status=404)
        if match["label"] is not None:
            raise RequestError(f"version label {match['label']!r} is not configured: use /versions/N or no version", status=404)
        return _parse_version(match["version"])

    def health(self) -> None:
        app = self.app
        version = app.manager.current_version
        if self.server.draining:
            state = "DRAINING"
        elif version is not None:
            state = "AVAILABLE"
        else:
            state = "LOADING"
        answer: dict[str, Any] = {"status": state, "model": app.model_name, "version": None if version is None else str(version)}
        if version is None and not self.server.draining:
            entries = app.manager.status()
            failed = [e for e in entries if e["status"]["error_code"] != "OK"]
            if entries and len(failed) == len(entries):
                answer["status"] = "FAILED"
                answer["error"] = "; ".join(f"version {e['version']}: {e['status']['error_message']}" for e in failed)
        self.answer(200 if state == "AVAILABLE" else 503, answer)

    # -- predict ---------------------------------------------------------------------------------
    def predict(self, servable: Any, vertex: tuple[str | None, str | None] | None = None) -> None:
        columns, rows, signature = parse_predict_body(parse_json(self.body), servable.features, self.app.limits, vertex=vertex is not None)
        if signature not in (None, "", "serving_default"):
            raise RequestError(f"signature {signature!r} does not exist: the model has serving_default only", status=400)
        size = len(next(iter(columns.values())))
        self.examples = size
        loop = self.server.loop

        def done(values: np.ndarray | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(self.finish_predict, servable, rows, vertex, values, error)

        if self.server.in_flight == 1 and len(self.server.conns) == 1:  # a lone client: no hand-over to a model thread
            inline = self.server.scheduler.run_inline(servable, columns, size)
            if inline is not None:
                self.finish_predict(servable, rows, vertex, *inline)
                return
        self.server.scheduler.submit(servable, columns, size, done)

    def finish_predict(
        self,
        servable: Any,
        rows: bool,
        vertex: tuple[str | None, str | None] | None,
        values: np.ndarray | None,
        error: BaseException | None,
    ) -> None:
        try:
            if error is not None:
                raise error
            assert values is not None
            if not np.isfinite(values).all():
                raise RequestError("the model produced a non-finite prediction for these inputs", status=422)
            out = values.astype(np.float64)
            self.note = f" n={len(out)} v={servable.version}" + (" vertex" if vertex else "")
            answer: dict[str, Any]
            if vertex is not None:
                answer = {"predictions": out, **self.app.vertex_model_fields(servable.version, *vertex)}
            else:
                answer = {"predictions": out} if rows else {"outputs": out}
            self.answer(200, answer, {"X-Model-Version": str(servable.version)})
        except RequestError as exc:
            self.error(exc)
        except Exception as exc:
            log.error("REST predict failed in the model: %s: %s", type(exc).__name__, str(exc)[:300])
            self.error(RequestError(f"the model failed: {type(exc).__name__}: {str(exc)[:200]}", status=500))

    # -- answers ---------------------------------------------------------------------------------
    def answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        self.done(status, data, {"Content-Type": "application/json", **(headers or {})})

    def error(self, exc: RequestError, headers: dict[str, str] | None = None) -> None:
        message = str(exc)
        self.note = f" error={message[:200]!r}"
        code = (
            "RESOURCE_EXHAUSTED"
            if isinstance(exc, Overloaded)
            else _GRPC_STATUS.get(exc.status, "INTERNAL" if exc.status >= 500 else "INVALID_ARGUMENT")
        )
        headers = dict(headers or {})
        if isinstance(exc, Overloaded):
            headers["Retry-After"] = "1"
        if self.google:
            body: dict[str, Any] = {"error": {"code": exc.status, "message": message, "status": code}}
        else:
            body = {"error": message}
        self.status_code = code
        self.answer(exc.status, body, headers)

    def done(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        elapsed = time.perf_counter() - self.started
        if self.api:
            code = "OK" if status == 200 else self.status_code
            self.server.metrics.request(self.api, "REST", code, elapsed, self.examples if status == 200 else 0)
        if self.app.log_requests:
            r = self.request
            access_log.info('REST %s "%s %s" %s %.2fms%s', self.conn.peer, r.method, r.target[:200], status, elapsed * 1000, self.note)
        self.conn.write_answer(self.request, status, data, headers, close=self.close_after)


class RestServer:
    """The REST server on its own event-loop thread; :meth:`drain` stops it gracefully.

    Args:
        address: ``(host, port)``; port 0 picks a free one.
        app: the served model.
        scheduler: runs the model calls.
        metrics: where requests are counted.
        http: connection limits.

    Raises:
        OSError: when the address cannot be bound (the message names it).
    """

    def __init__(self, address: tuple[str, int], app: App, scheduler: Scheduler, metrics: m.ServingMetrics, http: HttpLimits) -> None:
        self.app = app
        self.scheduler = scheduler
        self.metrics = metrics
        self.http = http
        self.draining = False
        self.conns: set[_Connection] = set()
        self.in_flight = 0  # requests received and not answered yet (event-loop thread only)
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(http.backlog)
        except OSError as exc:
            sock.close()
            raise OSError(
                f"cannot listen for REST on {host}:{port}: {exc.strerror or exc} (is another server on port {port}? use --rest-port)"
            ) from None
        sock.setblocking(False)
        self._sock = sock
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start serving on a new thread."""
        ready = threading.Event()

        async def begin() -> None:
            self._server = await self.loop.create_server(lambda: _Connection(self), sock=self._sock, backlog=self.http.backlog)
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(begin())
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="rest", daemon=True)
        self._thread.start()
        ready.wait(10)

    def changed(self) -> None:
        """A connection went idle or closed (wakes :meth:`drain`)."""
        if self.draining:
            with self._idle:
                self._idle.notify_all()

    def _busy(self) -> bool:
        """Whether a request is being received or answered."""
        try:
            conns = list(self.conns)
        except RuntimeError:  # changed by the loop thread meanwhile
            return True
        return any(c.busy or c.request is not None or (c.buf and not c.closing) for c in conns)

    def _close_idle(self) -> None:
        for conn in list(self.conns):
            if conn.transport is not None and not conn.busy and conn.request is None and not conn.buf:
                conn.transport.close()

    def server_close(self) -> None:
        """Close the listening socket of a server that was never started."""
        self._sock.close()
        self.loop.close()

    def drain(self, grace: float) -> bool:
        """Stop accepting, close idle keep-alive connections, wait up to ``grace`` s for the rest.

        Returns:
            Whether every request in flight finished within the grace period.
        """
        if self._thread is None:
            self.server_close()
            return True
        deadline = time.monotonic() + grace

        def stop_accepting() -> None:
            self.draining = True
            if self._server is not None:
                self._server.close()
            self._close_idle()

        self.loop.call_soon_threadsafe(stop_accepting)
        ok = True
        with self._idle:
            while self.draining is False or self._busy():
                left = deadline - time.monotonic()
                if left <= 0:
                    ok = False
                    break
                self.loop.call_soon_threadsafe(self._close_idle)
                self._idle.wait(min(left, 0.05))
        done = threading.Event()

        def stop() -> None:
            for conn in list(self.conns):
                if conn.transport is not None:
                    conn.transport.abort()
            self.loop.call_later(0.05, self.loop.stop)
            done.set()

        self.loop.call_soon_threadsafe(stop)
        done.wait(5)
        self._thread.join(5)
        with contextlib.suppress(RuntimeError):
            self.loop.close()
        return ok
