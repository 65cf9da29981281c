"""The REST server's HTTP/1.1 front end on :mod:`asyncio`: connections, limits, graceful drain.

One event-loop thread serves every connection (keep-alive and pipelining); requests are
parsed by llhttp (:mod:`serving.http1`, through ``httptools``), and each complete request
goes to :meth:`HttpServer.exchange`, which :class:`serving.rest.RestServer` implements with
TF Serving's routes. Protocol errors get an answer too (400, 405, 408, 411, 413, 414,
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
from serving.http1 import HttpError, HttpLimits, Request, RequestParser, http_date
from serving.state import App

access_log = logging.getLogger("serving.access")


class Connection(asyncio.Protocol):
    """One client connection: requests parsed by :class:`serving.http1.RequestParser`, answered one at a time, in order.

    Pipelined requests wait in the parser's queue while reading is paused; each answer
    schedules the next request as a new event-loop callback, so a deep pipeline costs one
    request of work per turn of the loop (other connections get theirs in between) and no
    call stack grows with it. While the client does not read its answers (the transport's
    write buffer is full), no further request is started.
    """

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = RequestParser(server.http, server.app.limits.max_body_bytes)
        self.request: Request | None = None  # the request being answered
        self.busy = False  # a request is being handled (the answer is not written yet)
        self.closing = False  # answered with Connection: close; discarding what comes
        self.timer: asyncio.TimerHandle | None = None
        self.peer = "-"
        self.over_limit = False
        self.paused = False  # reading paused: requests are waiting in the queue
        self.write_paused = False  # the client is not reading its answers
        self.scheduled = False  # the next queued request is scheduled on the loop
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
        self.parser.ready.clear()
        self.transport = None
        self.server.changed()

    def eof_received(self) -> bool:
        """The client stopped sending: an incomplete request gets a 400; keep open while answering."""
        self.eof = True
        if not self.closing:
            self.parser.eof()
            self._next()
        # keep the transport open while answers are due; it is closed after the last
        return self.busy or bool(self.parser.ready)

    def data_received(self, data: bytes) -> None:
        """Bytes arrived: parse the requests they complete, answer the first."""
        if self.closing:
            return
        parser = self.parser
        if not self.busy and not parser.ready and not parser.receiving:
            self._arm(self.server.http.request_timeout, self._on_timeout)  # a new request begins
        parser.feed(data)
        if parser.continue_due:
            parser.continue_due = False
            if not self.busy and not parser.ready and parser.receiving and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if parser.ready and (self.busy or len(parser.ready) > 1) and not self.paused and self.transport is not None:
            self.transport.pause_reading()  # pipelined requests wait until the ones before are answered
            self.paused = True
        self._next()

    def pause_writing(self) -> None:
        """The client is not reading its answers: start no further request."""
        self.write_paused = True

    def resume_writing(self) -> None:
        """The client reads again: go on with the queued requests."""
        self.write_paused = False
        self._schedule()

    # -- timers ----------------------------------------------------------------------------------
    def _arm(self, seconds: float, callback: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(seconds, callback)

    def _on_timeout(self) -> None:
        if self.transport is None or self.busy or self.parser.ready:
            return
        if self.parser.receiving:
            self._fail(408, f"the request was not complete within {self.server.http.request_timeout:g}s: send the whole request at once")
        else:
            self.transport.close()  # an idle keep-alive connection

    # -- dispatching -----------------------------------------------------------------------------
    def _schedule(self) -> None:
        """Start the next queued request on a later turn of the event loop."""
        if not self.scheduled and self.parser.ready:
            self.scheduled = True
            self.server.loop.call_soon(self._scheduled_next)

    def _scheduled_next(self) -> None:
        self.scheduled = False
        self._next()

    def _next(self) -> None:
        """Start the first queued request, if none is being answered."""
        if self.busy or self.closing or self.write_paused or self.transport is None:
            return
        ready = self.parser.ready
        if not ready:
            return
        item = ready.popleft()
        if isinstance(item, HttpError):
            ready.clear()
            self._fail(item.status, str(item))
            return
        request, body = item
        self.request = request
        self.busy = True
        self.server.in_flight += 1
        if self.timer is not None:
            self.timer.cancel()
        self.server.exchange(self, request, body)

    # -- answering --------------------------------------------------------------------------------
    def write_answer(self, request: Request | None, status: int, body: bytes, headers: dict[str, str], close: bool) -> None:
        """Write one answer; then schedule the next request, or close."""
        transport = self.transport
        self._not_busy()
        if transport is None or transport.is_closing():
            return
        parser = self.parser
        last = not parser.ready and (parser.failed or self.eof)
        close = close or request is None or not request.keep_alive or self.server.draining or last
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
        if parser.ready:
            self._schedule()
        else:
            if self.paused:
                transport.resume_reading()
                self.paused = False
            if parser.receiving:
                self._arm(self.server.http.request_timeout, self._on_timeout)
            else:
                self._arm(self.server.http.keep_alive_timeout, self._on_timeout)
        self.server.changed()

    def _fail(self, status: int, message: str) -> None:
        """Answer a protocol error with ``{"error": ...}`` and close the connection."""
        access_log.info("REST %s %d error=%r", self.peer, status, message[:200])
        body = orjson.dumps({"error": message})
        self.write_answer(None, status, body, {"Content-Type": "application/json"}, close=True)

    def _not_busy(self) -> None:
        if self.busy:
            self.busy = False
            self.server.in_flight -= 1

    def _linger(self) -> None:
        """Close after the answer, reading (and dropping) what the client still sends for up to 2 s."""
        self.closing = True
        self.parser.ready.clear()
        self.parser.failed = True
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

    @property
    def idle(self) -> bool:
        """Nothing is being received, queued or answered on this connection."""
        return not self.busy and not self.parser.ready and (not self.parser.receiving or self.closing)


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
        return not all(c.idle for c in conns)

    def _close_idle(self) -> None:
        for conn in list(self.conns):
            if conn.transport is not None and conn.idle:
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
