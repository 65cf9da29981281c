"""Model calls on a bounded pool of threads, with TF Serving's server-side batching.

Every predict request, REST or gRPC, becomes a *task* (validated columns for one servable)
queued here. A fixed number of threads take tasks from the queue and call the model:

* **batching on** (``--enable-batching``): a thread that picks up a task also takes every
  queued task for the same version, up to ``max_batch_size`` examples, concatenates their
  columns, calls the model once and hands each task its own rows back, in order. As in TF
  Serving's ``BasicBatchScheduler``, with ``batch_timeout_micros=0`` (the default) a batch
  never waits: requests coalesce only while every thread is busy, so a lone client pays no
  delay and a loaded server does fewer, larger model calls. A positive timeout makes the
  first task wait up to that long for company.
* **batching off**: each task is its own model call (at most ``num_threads`` at once).

The queue is bounded: a task that would exceed ``max_queued`` waiting requests (or, when
batching, ``max_enqueued_batches`` full batches of waiting examples) is refused at once
with :class:`Overloaded` (HTTP 503 / gRPC ``RESOURCE_EXHAUSTED``) instead of growing the
queue and every client's latency without limit.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from serving.payload import RequestError

log = logging.getLogger("serving")

Done = Callable[[np.ndarray | None, BaseException | None], None]


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's ``BatchingParameters`` with its defaults (``--enable_batching`` and friends)."""

    enabled: bool = False
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 10


class Overloaded(RequestError):
    """The server is at one of its limits: retry later (503 / ``RESOURCE_EXHAUSTED``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=503)


@dataclasses.dataclass
class _Task:
    servable: Any
    columns: Mapping[str, np.ndarray]
    size: int
    done: Done
    enqueued: float


class Scheduler:
    """Runs model calls for the front ends; see the module docstring.

    Args:
        params: the batching parameters (``params.enabled`` switches merging on).
        threads: model threads when batching is off (``params.num_batch_threads`` when on).
        max_queued: most requests waiting for a thread.
        metrics: a :class:`serving.metrics.ServingMetrics` (or ``None``).
    """

    def __init__(self, params: BatchingParameters, *, threads: int, max_queued: int, metrics: Any = None) -> None:
        self.params = params
        self.max_queued = max_queued
        self.metrics = metrics
        self.pool_name = "batch_threads" if params.enabled else "model_threads"
        self._queue: collections.deque[_Task] = collections.deque()
        self._queued_examples = 0
        self._busy = 0  # model calls running (threads and inline)
        self._warm_gen = 0
        self._warm_fn: Callable[[], object] | None = None
        self._warm_left = 0
        self._cond = threading.Condition()
        self._closing = False
        count = params.num_batch_threads if params.enabled else threads
        self._threads = [threading.Thread(target=self._run, name=f"{self.pool_name}-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    # -- submitting --------------------------------------------------------------------------
    def submit(self, servable: Any, columns: Mapping[str, np.ndarray], size: int, done: Done) -> None:
        """Queue a model call; ``done(values, None)`` or ``done(None, error)`` is called from a model thread.

        Raises:
            Overloaded: when the queue is full (``done`` is then never called).
        """
        p = self.params
        with self._cond:
            if self._closing:
                raise Overloaded("the server is shutting down: retry on another replica")
            if len(self._queue) >= self.max_queued:
                self._shed("queue")
                raise Overloaded(f"{len(self._queue)} requests are already waiting for the model (the limit): retry shortly")
            if p.enabled and self._queued_examples + size > p.max_enqueued_batches * p.max_batch_size:
                self._shed("batch_queue")
                raise Overloaded(
                    f"the batch queue is full ({p.max_enqueued_batches} batches of {p.max_batch_size} instances waiting): retry shortly"
                )
            self._queue.append(_Task(servable, columns, size, done, time.perf_counter()))
            self._queued_examples += size
            if self.metrics is not None:
                self.metrics.queued_requests.set(len(self._queue))
            self._cond.notify()

    def run_inline(
        self, servable: Any, columns: Mapping[str, np.ndarray], size: int
    ) -> tuple[np.ndarray | None, BaseException | None] | None:
        """Run the call on the caller's thread when nothing else is queued or running; else ``None``.

        A lone request then costs no hand-over to a model thread and back (two thread wake-ups,
        which a busy machine makes expensive), and its graph runs on this thread too (the
        servable's ``predict_lone``: no hand-over to TensorFlow's inter-op pool); as soon as
        requests overlap they go through the queue, where they can be merged.
        """
        with self._cond:
            if self._queue or self._busy or self._closing:
                return None
            self._busy += 1
        result: list[Any] = [None, None]

        def done(values: np.ndarray | None, error: BaseException | None) -> None:
            result[0], result[1] = values, error

        try:
            self._process([_Task(servable, columns, size, done, time.perf_counter())], lone=True)
        finally:
            with self._cond:
                self._busy -= 1
        return result[0], result[1]

    def predict(self, servable: Any, columns: Mapping[str, np.ndarray], size: int, timeout: float | None = None) -> np.ndarray:
        """:meth:`submit` and wait for the answer (for threads that may block, like gRPC's).

        Raises:
            Overloaded: when the queue is full.
            Exception: whatever the model call raised.
        """
        inline = self.run_inline(servable, columns, size)
        if inline is not None:
            if inline[1] is not None:
                raise inline[1]
            return inline[0]  # type: ignore[return-value]
        event = threading.Event()
        result: list[Any] = [None, None]

        def done(values: np.ndarray | None, error: BaseException | None) -> None:
            result[0], result[1] = values, error
            event.set()

        self.submit(servable, columns, size, done)
        if not event.wait(timeout):
            raise Overloaded(f"no model thread answered within {timeout:.0f}s: the server is overloaded")
        if result[1] is not None:
            raise result[1]
        return result[0]  # type: ignore[no-any-return]

    def _shed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.shed("model", reason)

    # -- model threads -----------------------------------------------------------------------
    def warm_threads(self, fn: Callable[[], object], timeout: float = 60.0) -> None:
        """Run ``fn`` once on every model thread (TensorFlow's first call on a thread is slow)."""
        with self._cond:
            self._warm_fn = fn
            self._warm_gen += 1
            self._warm_left = len(self._threads)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._warm_left <= 0 or self._closing, timeout)

    def _take(self, gen: int) -> list[_Task] | None:
        """The next batch (``None`` when closing, ``[]`` to look again); called with the lock held."""
        p = self.params
        while not self._queue:
            if self._closing:
                return None
            if self._warm_gen != gen:
                return []
            self._cond.wait()
        head = self._queue[0]
        if p.enabled and p.batch_timeout_micros > 0:
            deadline = head.enqueued + p.batch_timeout_micros / 1e6
            while not self._closing:
                same = sum(t.size for t in self._queue if t.servable is head.servable)
                left = deadline - time.perf_counter()
                if same >= p.max_batch_size or left <= 0:
                    break
                self._cond.wait(left)
            if not self._queue or self._queue[0] is not head:  # another thread took it meanwhile
                return []
        self._queue.popleft()
        batch = [head]
        if p.enabled:
            total = head.size
            keep: collections.deque[_Task] = collections.deque()
            while self._queue:
                task = self._queue.popleft()
                if task.servable is head.servable and total + task.size <= p.max_batch_size:
                    batch.append(task)
                    total += task.size
                else:
                    keep.append(task)
                    if total >= p.max_batch_size:
                        break
            keep.extend(self._queue)
            self._queue = keep
        self._queued_examples -= sum(t.size for t in batch)
        self._busy += 1
        if self.metrics is not None:
            self.metrics.queued_requests.set(len(self._queue))
        return batch

    def _run(self) -> None:
        gen = 0
        while True:
            with self._cond:
                warm = self._warm_fn if self._warm_gen != gen else None
                gen = self._warm_gen
                batch = [] if warm is not None else self._take(gen)
            if warm is not None:
                try:
                    warm()
                except Exception as exc:  # the version's own warm-up reports real failures
                    log.warning("warm-up of a model thread failed: %s: %s", type(exc).__name__, str(exc)[:200])
                with self._cond:
                    self._warm_left -= 1
                    self._cond.notify_all()
                continue
            if batch is None:
                return
            if batch:
                try:
                    self._process(batch)
                finally:
                    with self._cond:
                        self._busy -= 1

    def _process(self, batch: list[_Task], lone: bool = False) -> None:
        """Run one model call for ``batch``; ``lone``: nothing else runs (the servable's ``predict_lone``, when it has one)."""
        started = time.perf_counter()
        servable = batch[0].servable
        try:
            if len(batch) == 1:
                columns = batch[0].columns
            else:
                columns = {name: np.concatenate([t.columns[name] for t in batch]) for name in batch[0].columns}
            values = getattr(servable, "predict_lone", servable.predict)(columns) if lone else servable.predict(columns)
        except Exception as exc:  # the model failed: every task of the batch gets the error
            for task in batch:
                task.done(None, exc)
            return
        finally:
            if self.metrics is not None:
                self.metrics.runtime(time.perf_counter() - started, runtime=getattr(servable, "runtime", "TF1"))
                if self.params.enabled:
                    self.metrics.batch(self.pool_name, [t.size for t in batch], [started - t.enqueued for t in batch])
        offset = 0
        for task in batch:
            task.done(values[offset : offset + task.size], None)
            offset += task.size

    # -- shutdown ----------------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Finish the queued tasks, then stop the threads."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
