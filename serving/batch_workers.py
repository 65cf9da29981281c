"""``--workers N``: N processes, each loading the version and scoring every N-th shard of the job.

Processes are spawned (never forked: TensorFlow's threads do not survive a fork), so the
parent needs no TensorFlow. Each worker reports its finished shards through a queue; the
parent folds them into the job's progress (which may stop the job: then the workers are
terminated, and the shards they finished stay for a rerun).
"""

from __future__ import annotations

import multiprocessing
import queue
from typing import Any

from base.errors import InputError


def _worker(settings: Any, job: Any, worker: int, messages: Any) -> None:
    """A worker process: run its shards, sending ``("shard", ShardDone)`` per shard, then ``("done", worker)``."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from serving.batch_shards import run_shards

    try:
        run_shards(settings, job, worker, job.done, lambda shard: messages.put(("shard", shard)))
    except (ValueError, OSError) as exc:  # InputError, LoadError's message: the user's to read
        messages.put(("error", f"{exc}"))
        return
    except Exception as exc:  # anything else: still one line for the parent
        messages.put(("error", f"worker {worker}: {type(exc).__name__}: {str(exc)[:300]}"))
        return
    messages.put(("done", worker))


def run_workers(settings: Any, job: Any, tracker: Any) -> None:
    """Run the job's shards in ``settings.workers`` processes, feeding ``tracker`` their finished shards.

    Raises:
        InputError: a worker failed (its one line), or the tracker stopped the job.
    """
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    procs = [context.Process(target=_worker, args=(settings, job, w, messages), daemon=True) for w in range(settings.workers)]
    for proc in procs:
        proc.start()
    running = len(procs)
    try:
        while running:
            try:
                kind, value = messages.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise InputError(f"a batch worker died (exit code {dead[0].exitcode}): rerun the same command to resume") from None
                continue
            if kind == "shard":
                tracker(value)
            elif kind == "done":
                running -= 1
            else:
                raise InputError(value)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=10)
