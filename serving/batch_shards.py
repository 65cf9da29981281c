"""One worker's part of a batch-prediction job: its shards read, checked and scored.

The reading runs in a thread ahead of the scoring (memory bounded: a few pieces in flight).

:func:`run_shards` runs in the job's own process (one worker) or in each of ``--workers``
processes (:mod:`serving.batch_workers`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from serving import batch_output as out


def _prefetch(items: Iterator[Any], depth: int = 3) -> Iterator[Any]:
    """``items`` produced by a thread, at most ``depth`` ahead (reading overlaps scoring, memory stays bounded)."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="batch-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def run_shards(settings: Any, job: out.Job, worker: int, done: set[int], report: Callable[[out.ShardDone], None]) -> None:
    """Score the shards ``worker`` owns (every ``settings.workers``-th) that are not in ``done``.

    ``settings`` is the job's :class:`serving.batch.BatchSettings`; ``report`` gets each finished shard.
    """
    from serving.batch_input import pieces
    from serving.servable import Servable

    servable = Servable(settings.model_dir, settings.version or 0)
    checker = out.make_checker(job, servable.features, settings)

    def mine() -> Iterator[tuple[Any, Any]]:
        for piece in pieces(job.files, settings.shard_rows):
            if piece.shard % settings.workers == worker and piece.shard not in done:
                yield piece, checker.check(piece)
            else:
                yield piece, None

    writer: out.ShardWriter | None = None
    load = servable.load_seconds + servable.warmup_seconds

    def finish(writer: out.ShardWriter) -> None:
        nonlocal load
        done = writer.finish()
        done.load_seconds, load = load, 0.0
        report(done)

    for piece, checked in _prefetch(mine()):
        if writer is not None and writer.shard != piece.shard:
            finish(writer)
            writer = None
        if checked is None:
            continue
        if writer is None:
            writer = out.ShardWriter(job, piece.shard, checker.header())
        writer.write(piece, checked, out.score(servable, checked.columns, settings.batch_size))
    if writer is not None:
        finish(writer)
