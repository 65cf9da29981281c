"""Request logging: sampled predict requests and their answers, as rotating JSON-lines segments.

``taxifare serve --request-log DIR`` keeps a sample (``--request-log-sample-rate``, per
request) of what the served versions are asked, REST and gRPC alike. One line per request::

    {"time": 1764921600.123, "model": "taxifare", "version": 3, "label": "", "api": "REST",
     "inputs": {"pickuplon": [...], ...}, "outputs": [12.3, ...]}

``inputs`` is TF Serving's columnar request body, so a line can be sent again as it is.

The request path only appends to an in-memory queue (bounded: when the writer falls behind,
requests are not logged and ``:taxifare:request_log_dropped`` counts them); a background
thread serializes and writes. A segment is written as ``DIR/.tmp-requests-...`` and renamed
to ``DIR/requests-<UTC start>-<pid>-<n>.jsonl`` once complete (``--request-log-segment-bytes``
or ``--request-log-segment-seconds`` reached, or the server stops), so a reader never sees a
half segment; after a kill, the next server with the same ``DIR`` publishes the dead writer's
segment cut at its last complete line. Complete segments beyond ``--request-log-max-bytes`` in
all, or older than ``--request-log-max-age`` seconds, are deleted, oldest first.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import orjson

from base import atomic

log = logging.getLogger("serving")

#: What a complete segment's name looks like (temporaries start with ``.tmp-``).
SEGMENT_RE = re.compile(r"^requests-(\d{8}T\d{6})-(\d+)-(\d+)\.jsonl$")
#: Requests waiting for the writer; beyond this they are dropped (and counted), never waited for.
MAX_PENDING = 20_000


@dataclasses.dataclass(frozen=True)
class RequestLogSettings:
    """Where and how much the server logs (the ``--request-log*`` flags)."""

    directory: str
    sample_rate: float = 0.1
    segment_bytes: int = 16 << 20
    segment_seconds: float = 300.0
    max_bytes: int = 1 << 30
    max_age: float = 7 * 24 * 3600.0
    flush_interval: float = 0.25

    def check(self) -> RequestLogSettings:
        """These settings, or one line naming the flag that cannot work.

        Raises:
            ValueError: for a rate outside (0, 1], a non-positive bound or a directory that is a file.
        """
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"--request-log-sample-rate must be in (0, 1], e.g. 0.1 for one request in ten (got {self.sample_rate})")
        for flag, value in (
            ("segment-bytes", self.segment_bytes),
            ("segment-seconds", self.segment_seconds),
            ("max-bytes", self.max_bytes),
            ("max-age", self.max_age),
        ):
            if not value > 0:
                raise ValueError(f"--request-log-{flag} must be positive (got {value})")
        if self.max_bytes < self.segment_bytes:
            raise ValueError(
                f"--request-log-max-bytes ({self.max_bytes}) must be at least --request-log-segment-bytes ({self.segment_bytes})"
            )
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ValueError(f"--request-log {self.directory} is a file: pass a directory (it is created when missing)")
        return self


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The ``--request-log*`` flags of ``taxifare serve``."""
    group = parser.add_argument_group("request logging (off by default; see docs/monitoring.md)")
    group.add_argument("--request-log", metavar="DIR", help="log sampled predict requests and answers as JSON-lines segments in DIR")
    d = RequestLogSettings("-")
    group.add_argument(
        "--request-log-sample-rate", type=float, default=d.sample_rate, help="share of requests logged (default %(default)s)"
    )
    group.add_argument(
        "--request-log-segment-bytes", type=int, default=d.segment_bytes, help="a segment is closed at this size (default %(default)s)"
    )
    group.add_argument(
        "--request-log-segment-seconds",
        type=float,
        default=d.segment_seconds,
        help="... or this many seconds after it opened (default %(default)s)",
    )
    group.add_argument(
        "--request-log-max-bytes",
        type=int,
        default=d.max_bytes,
        help="the segments kept in all, oldest deleted first (default %(default)s)",
    )
    group.add_argument(
        "--request-log-max-age", type=float, default=d.max_age, help="seconds a segment is kept (default %(default)s: 7 days)"
    )


def settings_from_args(args: argparse.Namespace) -> RequestLogSettings | None:
    """The settings the flags ask for (``None`` when ``--request-log`` is not given), checked."""
    if not args.request_log:
        return None
    return RequestLogSettings(
        args.request_log,
        sample_rate=args.request_log_sample_rate,
        segment_bytes=args.request_log_segment_bytes,
        segment_seconds=args.request_log_segment_seconds,
        max_bytes=args.request_log_max_bytes,
        max_age=args.request_log_max_age,
    ).check()


@dataclasses.dataclass
class Entry:
    """One sampled request, as queued by the request path (serialized later by the writer)."""

    time: float
    api: str
    version: int
    path: str
    label: str
    columns: Mapping[str, Any]
    outputs: np.ndarray


class RequestLog:
    """The writer: :meth:`record` from the request path, a thread writing segments.

    Args:
        settings: where and how much to log.
        model_name: the model's name (written in each line).
        on_entries: called from the writer thread with each drained list of entries (the skew gauges).
        on_drop: called (request path) for each request not logged because the queue was full.
    """

    def __init__(
        self,
        settings: RequestLogSettings,
        model_name: str,
        on_entries: Callable[[list[Entry]], None] | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings.check()
        self.model_name = model_name
        self._on_entries = on_entries
        self._on_drop = on_drop
        self._pending: collections.deque[Entry] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fh: Any = None
        self._tmp = ""
        self._final = ""
        self._opened = 0.0
        self._written = 0
        self._seq = 0
        self._last_prune = 0.0
        self.logged = 0
        self.dropped = 0
        os.makedirs(settings.directory, exist_ok=True)
        self.recovered = recover(settings.directory)
        prune(settings.directory, settings.max_bytes, settings.max_age)

    # -- the request path -------------------------------------------------------------------------
    def record(self, api: str, servable: Any, label: str | None, columns: Mapping[str, Any], outputs: np.ndarray) -> None:
        """Queue one answered request when it is sampled (cheap: no serialization, no I/O)."""
        if self.settings.sample_rate < 1 and random.random() >= self.settings.sample_rate:
            return
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
            return
        self._pending.append(Entry(time.time(), api, int(servable.version), str(servable.path), label or "", columns, outputs))

    # -- the writer ---------------------------------------------------------------------------------
    def start(self) -> RequestLog:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Write what is queued, publish the open segment and stop the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        else:
            self._drain()
        self._publish()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.flush_interval)
            self._wake.clear()
            try:
                self._drain()
            except Exception:  # never let the writer die silently: one line, keep serving
                log.exception("request log: writing to %s failed", self.settings.directory)
        self._drain()

    def _drain(self) -> None:
        entries: list[Entry] = []
        while self._pending:
            entries.append(self._pending.popleft())
        if entries:
            self._write(entries)
            if self._on_entries is not None:
                self._on_entries(entries)
        now = time.time()
        if self._fh is not None and now - self._opened >= self.settings.segment_seconds:
            self._publish()
        if now - self._last_prune >= 60:
            self._last_prune = now
            prune(self.settings.directory, self.settings.max_bytes, self.settings.max_age)

    def _write(self, entries: list[Entry]) -> None:
        lines = b"".join(self._line(e) for e in entries)
        if self._fh is None:
            self._open()
        self._fh.write(lines)
        self._fh.flush()
        self._written += len(lines)
        self.logged += len(entries)
        if self._written >= self.settings.segment_bytes:
            self._publish()

    def _line(self, e: Entry) -> bytes:
        inputs = e.columns
        if any(isinstance(v, np.ndarray) and v.dtype.kind == "O" for v in inputs.values()):  # date-time strings: orjson takes lists
            inputs = {k: v.tolist() if isinstance(v, np.ndarray) and v.dtype.kind == "O" else v for k, v in inputs.items()}
        record = {
            "time": round(e.time, 6),
            "model": self.model_name,
            "version": e.version,
            "label": e.label,
            "api": e.api,
            "inputs": inputs,
            "outputs": e.outputs,
        }
        return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)

    def _open(self) -> None:
        self._seq += 1
        self._opened = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._opened))
        name = f"requests-{stamp}-{os.getpid()}-{self._seq:06d}.jsonl"
        self._final = os.path.join(self.settings.directory, name)
        self._tmp = os.path.join(self.settings.directory, atomic.TMP_PREFIX + name)
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 - kept open across calls, closed by _publish
        self._written = 0

    def _publish(self) -> None:
        """Close the open segment and rename it into place (then apply the bounds)."""
        if self._fh is None:
            return
        self._fh.close()
        self._fh = None
        atomic.publish(self._tmp, self._final)
        prune(self.settings.directory, self.settings.max_bytes, self.settings.max_age)


def recover(directory: str) -> list[str]:
    """Publish the segments of writers that died: each cut at its last complete line (returns the names published).

    A temporary of a live process (another server on the same directory) is left alone.
    """
    published = []
    for name in sorted(os.listdir(directory)):
        m = SEGMENT_RE.match(name[len(atomic.TMP_PREFIX) :]) if name.startswith(atomic.TMP_PREFIX) else None
        if m is None or atomic.pid_alive(int(m.group(2))):
            continue
        path = os.path.join(directory, name)
        with open(path, "rb+") as fh:
            data = fh.read()
            fh.truncate(data.rfind(b"\n") + 1)
        if data.rfind(b"\n") < 0:
            os.remove(path)
            continue
        atomic.publish(path, os.path.join(directory, name[len(atomic.TMP_PREFIX) :]))
        published.append(name[len(atomic.TMP_PREFIX) :])
    if published:
        log.warning("request log: published %d segment(s) a stopped server left unfinished: %s", len(published), ", ".join(published))
    return published


def segments(directory: str) -> list[str]:
    """The complete segments of a request log, oldest first (never a temporary)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(m.group(1), int(m.group(2)), int(m.group(3)), n) for n in names if (m := SEGMENT_RE.match(n))]
    return [os.path.join(directory, n) for *_key, n in sorted(found)]


def prune(directory: str, max_bytes: int, max_age: float) -> list[str]:
    """Delete complete segments older than ``max_age`` seconds, then the oldest while all of them exceed ``max_bytes``."""
    now = time.time()
    sized = []
    for path in segments(directory):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        sized.append((path, st.st_size, st.st_mtime))
    removed = [path for path, _size, mtime in sized if now - mtime > max_age]
    kept = [(path, size) for path, size, mtime in sized if now - mtime <= max_age]
    total = sum(size for _path, size in kept)
    for path, size in kept:
        if total <= max_bytes:
            break
        removed.append(path)
        total -= size
    for path in removed:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    return removed


def read(directory: str) -> Iterator[dict[str, Any]]:
    """Every logged request of the complete segments, oldest segment first (a line that is not JSON is skipped)."""
    for path in segments(directory):
        yield from read_segment(path)


def read_segment(path: str) -> Iterator[dict[str, Any]]:
    """The logged requests of one segment (none when it was pruned meanwhile)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return
    for line in data.splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("inputs"), dict) and isinstance(record.get("time"), (int, float)):
            yield record


def read_recent(directory: str, seconds: float) -> list[dict[str, Any]]:
    """The logged requests of the last ``seconds`` before the newest one, in bounded memory.

    Segments are read newest first (by modification time, which no record in them is later
    than), so a segment whose every record is already too old is skipped unread.
    """
    dated = []
    for path in segments(directory):
        with contextlib.suppress(FileNotFoundError):
            dated.append((os.stat(path).st_mtime, path))
    newest = -math.inf
    kept: list[dict[str, Any]] = []
    for mtime, path in sorted(dated, reverse=True):
        if mtime < newest - seconds:
            continue
        for record in read_segment(path):
            newest = max(newest, float(record["time"]))
            if float(record["time"]) > newest - seconds:
                kept.append(record)
    return [r for r in kept if float(r["time"]) > newest - seconds]
