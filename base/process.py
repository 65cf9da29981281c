"""This process: when it started, and how it ends quickly (standard library only)."""

from __future__ import annotations

import atexit
import gc
import os
import time


def _start_time() -> float:
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime: clock ticks after boot
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return time.time() - max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


_STARTED = _start_time()


def start_time() -> float:
    """When this process started (Unix time, from Linux's ``/proc``; this module's import time elsewhere): its start-up counts."""
    return _STARTED


def leave_quickly() -> None:
    """At exit, move every object to the collector's permanent generation (``gc.freeze``).

    A process that imported TensorFlow then ends in about 0.1 s instead of 0.8 s: the
    interpreter's last collections otherwise walk TensorFlow's millions of objects. Nothing else
    changes: atexit handlers and logging's flush still run, the exit code is kept, and objects
    are still freed by their reference counts. Registering it twice costs nothing.
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
