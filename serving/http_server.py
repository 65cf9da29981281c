"""The REST server's HTTP/1.1 front end on :mod:`asyncio`: connections, limits, graceful drain.

One event-loop thread serves every connection (keep-alive and pipelining); each complete
request goes to :meth:`HttpServer.exchange`, which :class:`serving.rest.RestServer` implements
with TF Serving's routes. Protocol errors get an answer too (400, 405, 408, 411, 413, 414,
431, 505, 503 when a limit is reached) and one log line, and the connection is closed after
it (reading and discarding what the client still sends for a moment, so the answer is not
lost to a TCP reset).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from http import HTTPStatus
from typing import Any, cast

import orjson

from serving import metrics as m
from serving.batching import Scheduler
from serving.http1 import HttpError, HttpLimits, Request, http_date, parse_head
from serving.state import App

access_log = logging.getLogger("serving.access")


class Connection(asyncio.Protocol):
    """One client connection: parses requests, one at a time, and answers them in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.request: Request | None = None
        self.busy = False  # a request is being handled (the answer is not written yet)
        self.closing = False  # answered with Connection: close; discarding what comes
        self.timer: asyncio.TimerHandle | None = None
        self.peer = "-"
        self.over_limit = False
        self.paused = False
        self.eof = False

    # -- connection events -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A client connected: count it and start the request timer."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
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
        """The connection closed: forget it."""
        self.server.conns.discard(self)
        self.server.metrics.open_connections.dec()
        if self.timer is not None:
            self.timer.cancel()
        if self.busy and self.request is not None:
            access_log.info('REST %s "%s %s" client disconnected before the answer', self.peer, self.request.method, self.request.path)
        self.transport = None
        self.server.changed()

    def eof_received(self) -> bool:
        """The client stopped sending: answer an incomplete request with 400; keep open while answering."""
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
        """Bytes arrived: parse the requests they complete."""
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
                    request = parse_head(head, limits)
                    self._framing(request)
                except HttpError as exc:
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
            self.server.exchange(self, request, body)

    def _framing(self, request: Request) -> None:
        """Check how the body is framed and set ``request.length``.

        Raises:
            HttpError: for chunked bodies, missing or bad lengths, bodies over the limit.
        """
        if "transfer-encoding" in request.headers:
            raise HttpError(411, "chunked request bodies are not supported: send a Content-Length")
        text = request.headers.get("content-length")
        if text is None:
            if request.method in ("POST", "PUT", "PATCH"):
                raise HttpError(411, "the request has no Content-Length header: send the JSON body with its length")
            return
        if not text.isdigit() or not text.isascii() or len(text) > 18:
            raise HttpError(400, f"Content-Length {text[:40]!r} is not a byte count")
        length = int(text)
        limit = self.server.app.limits.max_body_bytes
        if length > limit:
            raise HttpError(413, f"the body has {length} bytes, more than the limit of {limit}: split the batch into smaller requests")
        request.length = length

    # -- answering --------------------------------------------------------------------------------
    def write_answer(self, request: Request | None, status: int, body: bytes, headers: dict[str, str], close: bool) -> None:
        """Write one answer; then read the next request or close."""
        transport = self.transport
        self._not_busy()
        if transport is None or transport.is_closing():
            return
        close = close or request is None or not request.keep_alive or self.server.draining or self.eof
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        phrase = HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nServer: taxifare-serving\r\nDate: {http_date()}\r\n{extra}"
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
            try:
                transport.write_eof()
            except OSError:  # the client is already gone (ENOTCONN): nothing left to read
                transport.close()
                return
            self._arm(2.0, transport.close)
        else:  # pragma: no cover - TCP transports can
            transport.close()
        self.server.changed()


class HttpServer:
    """An HTTP/1.1 server on its own event-loop thread; :meth:`drain` stops it gracefully.

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
        self.conns: set[Connection] = set()
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

    def exchange(self, conn: Connection, request: Request, body: bytes) -> None:
        """Answer one complete request (on the event-loop thread) with ``conn.write_answer``."""
        raise NotImplementedError

    def start(self) -> None:
        """Start serving on a new thread."""
        ready = threading.Event()

        async def begin() -> None:
            self._server = await self.loop.create_server(lambda: Connection(self), sock=self._sock, backlog=self.http.backlog)
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
