"""The HTTP/1.1 wire format of the REST server: requests parsed by httptools, their limits, the Date header.

No sockets here: :mod:`serving.http_server` feeds :class:`RequestParser` the bytes a
connection received. The parsing itself is llhttp's (Node.js's parser, through the
``httptools`` binding that uvicorn uses): request lines, headers, Content-Length framing,
duplicate lengths, pipelining. This module holds only the policy on top: the size limits,
which framings the server accepts, and one clear message per refusal. Anything that is not an
acceptable HTTP/1.x request becomes an :class:`HttpError` with the status to answer (400,
411, 413, 414, 431, 501, 505), queued after the requests that came before it.
"""

from __future__ import annotations

import collections
import dataclasses
import email.utils
import re
import time
from typing import Any

import httptools

_TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")
_VERSION_RE = re.compile(rb"HTTP/[^\s]{0,10}")


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


class HttpError(Exception):
    """A request that is not valid HTTP/1.x; ``status`` is the answer's status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_date_cache: list[Any] = [0, ""]


def http_date() -> str:
    """The ``Date`` header's value now (computed once a second)."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, email.utils.formatdate(now, usegmt=True)
    return str(_date_cache[1])


@dataclasses.dataclass
class Request:
    """A parsed request head (``length``: the body's, from Content-Length)."""

    method: str
    target: str
    path: str
    http11: bool
    headers: dict[str, str]
    keep_alive: bool
    length: int = 0


_BAD_LINE = "malformed request line: expected 'METHOD /path HTTP/1.1'"


def _parser_error(exc: Exception, sample: bytes) -> HttpError:
    """The answer to llhttp's refusal ``exc``; ``sample``: the message's first bytes when known."""
    if isinstance(exc, httptools.HttpParserCallbackError) and isinstance(exc.__context__, HttpError):
        return exc.__context__
    reason = str(exc)
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
        if sample[:1] == b"\x16":
            return HttpError(400, "this port speaks plain HTTP, not TLS: use http://, not https://")
        if any(b < 0x20 or b > 0x7E for b in sample.split(b"\r\n", 1)[0][:64]):
            return HttpError(400, "the request line holds binary data: this port speaks HTTP/1.1")
        method = _TOKEN_RE.match(sample)
        if method is not None:
            name = method.group(0)[:-1].decode("ascii")[:40]
            return HttpError(501, f"method {name} is not implemented: use GET, POST, HEAD or OPTIONS")
        return HttpError(400, f"{_BAD_LINE} (got {sample[:60]!r})" if sample else _BAD_LINE)
    if "PRI/Upgrade" in reason:
        return HttpError(505, "HTTP/2 is not supported on this port: use HTTP/1.1 (gRPC has its own port)")
    if "HTTP version" in reason:
        version = _VERSION_RE.search(sample)
        said = version.group(0).decode("latin-1") if version else "this HTTP version"
        return HttpError(505, f"{said} is not supported: this server speaks HTTP/1.1 (and 1.0)")
    if "Duplicate Content-Length" in reason:
        return HttpError(400, "the request has two Content-Length headers: send one")
    if "Content-Length" in reason and "Transfer-Encoding" in reason:
        return HttpError(400, "the request has both Content-Length and Transfer-Encoding: send a Content-Length only")
    if "Content-Length" in reason:
        return HttpError(400, "Content-Length is not a byte count")
    if "header" in reason.lower():
        return HttpError(400, f"malformed header line ({reason}): expected 'Name: value'")
    if isinstance(exc, httptools.HttpParserInvalidURLError) or "HTTP/" in reason or "URL" in reason:
        return HttpError(400, f"{_BAD_LINE} ({reason})")
    return HttpError(400, f"malformed request ({reason}): this port speaks HTTP/1.1")


class RequestParser:
    """Turns a connection's bytes into complete requests (``ready``), in order, under ``limits``.

    Each item of ``ready`` is ``(Request, body)`` or, last, the :class:`HttpError` that ended
    the stream (after it the parser takes no more bytes). ``receiving``: a request has begun
    and is not complete.

    Args:
        limits: the request line, head and header-count limits.
        max_body: the largest body accepted (413 above it).
    """

    def __init__(self, limits: HttpLimits, max_body: int) -> None:
        self.limits = limits
        self.max_body = max_body
        self.ready: collections.deque[tuple[Request, bytes] | HttpError] = collections.deque()
        self.receiving = False
        self.failed = False
        self.upgrade = False  # the client asked to switch protocols: answered, then closed
        self.continue_due = False  # a head asked for ``100 Continue`` before its body
        self._parser = httptools.HttpRequestParser(self)
        self._begun = 0  # requests begun on this connection
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._count = 0
        self._head_bytes = 0  # the header lines' bytes
        self._partial = 0
        self._headers_done = False
        self._body: list[bytes] = []
        self._body_len = 0
        self._request: Request | None = None

    def feed(self, data: bytes) -> None:
        """Parse ``data``; the requests it completes go to ``ready``."""
        if self.failed:
            return
        begun = self._begun
        done = len(self.ready)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgrade = True
            self.failed = True  # what follows is not HTTP/1.1 any more: answer what came, then close
            return
        except httptools.HttpParserError as exc:
            # the failing request's first bytes are known when it began in this chunk, first
            sample = bytes(data[:200]) if len(self.ready) == done else b""
            self._fail(_parser_error(exc, sample))
            return
        if self.receiving and not self._headers_done:
            # a memory bound for a head that never ends (llhttp keeps a header line until it is
            # whole): the chunks after the one the head began in, counted whole
            self._partial = self._partial + len(data) if self._begun == begun else 0
            if self._partial > self.limits.max_header_bytes + self.limits.max_request_line:
                self._fail(HttpError(431, f"the request head is longer than the limit of {self.limits.max_header_bytes} bytes"))

    def _fail(self, error: HttpError) -> None:
        self.failed = True
        self.receiving = False
        self.ready.append(error)

    def eof(self) -> None:
        """The client stopped sending: an incomplete request becomes a 400."""
        if not self.receiving or self.failed:
            return
        request = self._request
        if request is not None and self._headers_done:
            got = self._body_len
            self._fail(HttpError(400, f"the body ended after {got} of {request.length} bytes (Content-Length): nothing was predicted"))
        else:
            self._fail(HttpError(400, "the connection ended in the middle of the request head"))

    # -- llhttp's callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        """A request begins."""
        self._reset()
        self._begun += 1
        self.receiving = True

    def on_url(self, url: bytes) -> None:
        """A piece of the request target."""
        self._url += url
        if len(self._url) > self.limits.max_request_line:
            raise HttpError(414, f"the request line is longer than the limit of {self.limits.max_request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header line."""
        self._count += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._count > self.limits.max_headers:
            raise HttpError(431, f"the request has more header lines than the limit of {self.limits.max_headers}")
        if self._head_bytes > self.limits.max_header_bytes:
            raise HttpError(431, f"the request head is longer than the limit of {self.limits.max_header_bytes} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip(" \t")
        old = self._headers.get(key)
        if old is None:
            self._headers[key] = text
        elif key in ("host", "transfer-encoding"):
            if old != text:
                raise HttpError(400, f"the request has two different {name.decode('latin-1')} headers")
        else:
            self._headers[key] = f"{old}, {text}"

    def on_headers_complete(self) -> None:
        """The head is complete: check the target, the version and how the body is framed."""
        self._headers_done = True
        parser = self._parser
        target_b = self._url
        if not target_b.isascii() or not (target_b.startswith(b"/") or target_b == b"*"):
            raise HttpError(400, f"malformed request target {target_b[:60]!r}: expected a path starting with /")
        version = parser.get_http_version()
        if not version.startswith("1."):
            raise HttpError(505, f"HTTP/{version} is not supported: this server speaks HTTP/1.1 (and 1.0)")
        method = parser.get_method().decode("ascii")
        target = target_b.decode("ascii")
        headers = self._headers
        request = Request(method, target, target.split("?", 1)[0], version != "1.0", headers, parser.should_keep_alive())
        if "transfer-encoding" in headers:
            raise HttpError(411, "chunked request bodies are not supported: send a Content-Length")
        text = headers.get("content-length")
        if text is None:
            if method in ("POST", "PUT", "PATCH"):
                raise HttpError(411, "the request has no Content-Length header: send the JSON body with its length")
        else:
            if not text.isdigit() or len(text) > 18:
                raise HttpError(400, f"Content-Length {text[:40]!r} is not a byte count")
            request.length = int(text)
            if request.length > self.max_body:
                raise HttpError(
                    413,
                    f"the body has {request.length} bytes, more than the limit of {self.max_body}: split the batch into smaller requests",
                )
        self.continue_due = request.length > 0 and headers.get("expect", "").lower() == "100-continue"
        self._request = request

    def on_body(self, body: bytes) -> None:
        """A piece of the body."""
        self._body.append(body)
        self._body_len += len(body)

    def on_message_complete(self) -> None:
        """The request is complete: queue it."""
        assert self._request is not None
        body = self._body
        self.ready.append((self._request, body[0] if len(body) == 1 else b"".join(body)))
        self.receiving = False
        self._reset()
