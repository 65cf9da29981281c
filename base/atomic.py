"""Write elsewhere, then rename: the one way a file or folder appears complete (standard library only).

A reader never sees a half-written file: :func:`replacing` hands out a temporary path beside
the target, named ``.tmp-<pid>-<ns>-<name>``, and renames it onto the target only when the
block ends without an error (else removes it). :func:`write_text`, :func:`write_bytes` and
:func:`write_json` are the one-call forms.

Temporaries left by a writer that died are removed by :func:`remove_stale`, under one rule
(:func:`is_stale`): a temporary is stale when it was last changed before this process started
and the process id in its name is not another process running on this machine. This process's
own id counts as *not* running: a temporary of ours is newer than our start, so the age rule
keeps it; an old one carrying our id was left by a dead process whose id we reuse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

from base import process

#: How every temporary's name starts (readers skip such names).
TMP_PREFIX = ".tmp-"
_PID = re.compile(r"^\.tmp-(\d+)-")


def temp_path(path: str) -> str:
    """A fresh temporary path beside ``path``: ``<dir>/.tmp-<pid>-<ns>-<name>`` (the name's extension kept).

    ``path`` may be a URL (``gs://bucket/...``, written through ``tf.io.gfile``): it is kept as is.
    """
    directory, name = os.path.split(path if "://" in path else os.path.abspath(path))
    return os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}-{name}")


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str, path: str, *, durable: bool = False, replace: bool = True) -> None:
    """Rename the finished temporary ``tmp`` onto ``path``.

    When both are folders, the one there (kfp's empty placeholder, an older copy) is replaced whole;
    with ``replace=False`` a folder that holds anything is kept and the rename fails (``OSError``).

    ``durable`` also fsyncs the directory after the rename (fsync a file's contents yourself, or
    use :func:`write_bytes` with ``durable=True``).
    """
    if not replace:
        os.rename(tmp, path)  # onto a non-empty folder: ENOTEMPTY/EEXIST
    else:
        if os.path.isdir(tmp) and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    if durable:
        _fsync_dir(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def replacing(path: str, *, durable: bool = False) -> Iterator[str]:
    """Yield a temporary path (for a file or a folder) beside ``path``; :func:`publish` it onto ``path`` when the block succeeds.

    On an error inside the block, or in the rename, the temporary is removed.
    """
    tmp = temp_path(path)
    try:
        yield tmp
        publish(tmp, path, durable=durable)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


def write_bytes(path: str, data: bytes, *, durable: bool = False, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically; ``durable`` fsyncs the file and its directory; ``mode`` sets its permissions."""
    with replacing(path, durable=durable) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)


def write_text(path: str, text: str, *, durable: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: str, value: Any, *, durable: bool = False, **dump: Any) -> None:
    """Write ``value`` as JSON (``json.dumps(value, **dump)`` and a newline) to ``path`` atomically."""
    write_text(path, json.dumps(value, **dump) + "\n", durable=durable)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is another process running on this machine (this process's own id counts as not: see the module's docstring)."""
    if pid in (0, os.getpid()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists, owned by someone else
    return True


def writer_alive(name: str) -> bool:
    """Whether the process id in a temporary's name (``.tmp-<pid>-...``) is another process running here."""
    match = _PID.match(name)
    return bool(match) and pid_alive(int(match.group(1)))  # type: ignore[union-attr]


def is_stale(name: str, changed: float, older_than: float) -> bool:
    """Whether a temporary named ``name``, last changed at ``changed`` (Unix time), was left by a writer that died."""
    return name.startswith(TMP_PREFIX) and changed < older_than and not writer_alive(name)


def remove_stale(directory: str, older_than: float | None = None) -> list[str]:
    """Delete the stale temporaries (:func:`is_stale`) directly under ``directory``; their names, sorted.

    ``older_than`` defaults to :func:`base.process.start_time`. A folder's age is its newest entry's
    ctime (copies keep their source's mtime, but no writer can set a ctime in the past).
    """
    limit = process.start_time() if older_than is None else older_than
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(TMP_PREFIX) or writer_alive(name):
            continue
        path = os.path.join(directory, name)
        try:
            walk = os.walk(path) if os.path.isdir(path) and not os.path.islink(path) else ()
            changed = max([os.lstat(path).st_ctime, *(os.lstat(os.path.join(r, f)).st_ctime for r, _, fs in walk for f in fs)])
        except OSError:
            continue
        if is_stale(name, changed, limit):
            _remove(path)
            removed.append(name)
    return sorted(removed)
