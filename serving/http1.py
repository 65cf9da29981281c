"""The HTTP/1.1 wire format of the REST server: request heads, their limits, the Date header.

Pure functions and data, no sockets: :mod:`serving.http_server` feeds them the bytes a
connection received. Anything that is not an HTTP/1.x request head raises :class:`HttpError`
with the status to answer (400, 414, 431, 505).
"""

from __future__ import annotations

import dataclasses
import email.utils
import re
import time
from typing import Any

_TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION_RE = re.compile(rb"^HTTP/(\d)\.(\d)$")


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


def parse_head(head: bytes, limits: HttpLimits) -> Request:
    """The request line and headers (everything before the blank line).

    Raises:
        HttpError: for anything that is not an HTTP/1.x request head.
    """
    lines = head.split(b"\r\n")
    line = lines[0]
    if len(line) > limits.max_request_line:
        raise HttpError(414, f"the request line has {len(line)} bytes, more than the limit of {limits.max_request_line}")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, f"malformed request line {line[:60]!r}: expected 'METHOD /path HTTP/1.1'")
    method_b, target_b, version_b = parts
    version = _VERSION_RE.match(version_b)
    if not _TOKEN_RE.match(method_b) or version is None:
        raise HttpError(400, f"malformed request line {line[:60]!r}: expected 'METHOD /path HTTP/1.1'")
    if version.group(1) != b"1":
        raise HttpError(505, f"{version_b.decode()} is not supported: this server speaks HTTP/1.1 (and 1.0)")
    if not target_b.isascii() or not (target_b.startswith(b"/") or target_b == b"*"):
        raise HttpError(400, f"malformed request target {target_b[:60]!r}: expected a path starting with /")
    if len(lines) - 1 > limits.max_headers:
        raise HttpError(431, f"the request has {len(lines) - 1} header lines, more than the limit of {limits.max_headers}")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep or not _TOKEN_RE.match(name):
            raise HttpError(400, f"malformed header line {raw[:60]!r}: expected 'Name: value'")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key in headers:
            if key in ("content-length", "host", "transfer-encoding"):
                if headers[key] != text:
                    raise HttpError(400, f"the request has two different {name.decode()} headers")
                continue
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text
    target = target_b.decode("ascii")
    http11 = version.group(2) != b"0"
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if http11 else "keep-alive" in connection
    return Request(method_b.decode("ascii"), target, target.split("?", 1)[0], http11, headers, keep_alive)
