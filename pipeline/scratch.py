"""Per-run scratch folders of ``taxifare run`` under the pipeline root (kfp's workspace, the steps' TMPDIR)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

#: Per-run scratch folders (kfp's workspace, the steps' TMPDIR) under the pipeline root.
SCRATCH_DIR = ".scratch"
_LOCK_FILE = ".owner.lock"
#: Seconds a new scratch folder is left alone, whoever holds its lock (its run is starting).
_SCRATCH_GRACE = 30.0


@contextlib.contextmanager
def run_scratch(pipeline_root: str) -> Iterator[str]:
    """A scratch folder of this run under ``<pipeline_root>/.scratch``, removed when the run ends.

    Steps get it as ``TMPDIR`` (kfp.local writes each step's ``ephemeral_component.py`` to
    ``mktemp -d``, and the steps' own temp files go there too), and kfp's workspace lives in it,
    so nothing is left in /tmp. A run holds a lock on its folder; folders of runs whose process
    is gone (killed) are removed when the next run starts.
    """
    import fcntl
    import shutil
    import tempfile

    base = os.path.join(pipeline_root, SCRATCH_DIR)
    os.makedirs(base, exist_ok=True)
    for name in os.listdir(base):
        _remove_if_abandoned(os.path.join(base, name))
    path = tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=base)
    lock = open(os.path.join(path, _LOCK_FILE), "w")  # noqa: SIM115 - held for the whole run
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    tmp = os.path.join(path, "tmp")
    os.makedirs(tmp)
    os.makedirs(os.path.join(path, "workspace"))
    old_tmpdir = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = tmp
    try:
        yield path
    finally:
        if old_tmpdir is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_tmpdir
        shutil.rmtree(path, ignore_errors=True)
        lock.close()


def _remove_if_abandoned(folder: str) -> None:
    """Remove a run's scratch folder when no process holds its lock (and it is not just being made)."""
    import fcntl
    import shutil

    lock_path = os.path.join(folder, _LOCK_FILE)
    try:
        if time.time() - os.path.getmtime(lock_path if os.path.exists(lock_path) else folder) < _SCRATCH_GRACE:
            return  # too new: its run may not have taken the lock yet
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for as long as its run is alive
            shutil.rmtree(folder, ignore_errors=True)
    except OSError:  # BlockingIOError: a run in progress; anything else: not ours to judge
        return
