"""TensorFlow without its start-up chatter, unless asked for (``--verbose``, ``TAXIFARE_VERBOSE=1``).

TensorFlow 2.21 writes lines of its own to the process's stderr before any of its settings is
read (``WARNING: All log messages before absl::InitializeLog() ...``, ``I0000 ... oneDNN custom
operations are on``, ``Could not find cuda drivers``, and on a machine without a GPU ``E0000 ...
failed call to cuInit: ... CUDA error``, which looks alarming and means nothing here):
``TF_CPP_MIN_LOG_LEVEL`` does not reach them. :func:`import_tensorflow` imports TensorFlow and
looks for devices with the stderr file descriptor sent to a temporary file, then writes back
every line that is not one of those (an error of the import itself stays visible). It also
quiets TensorFlow's and absl's Python loggers below WARNING, which otherwise print a
``Sharding callback duration`` line at every checkpoint.

It also leaves out what Keras imports only because it happens to be installed:
``import tensorflow`` imports Keras, and Keras imports scikit-learn (for its scikit-learn
wrappers, with SciPy behind it) and ``matplotlib.pyplot`` (for an image-gallery plot) when they
can be found, about 1.2 s of CPU of the 3.6 s the import costs here. Neither is used by a
process that trains or serves; while TensorFlow imports, they are reported missing (on the
importing thread only), Keras records them as absent, and a later ``import sklearn`` or
``import matplotlib`` (the gradient-boosted baseline, the report's plots) works as usual.

Standard library only: the command lines call it before they import TensorFlow.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from base import process

#: Set to 1 (by ``--verbose``) to keep everything TensorFlow prints; steps inherit it.
VERBOSE_ENV = "TAXIFARE_VERBOSE"

#: TensorFlow's native start-up lines (absl's log format: level, date, time, thread, file:line]).
NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*"
    r"|E\d{4} [\d:.]+ +\d+ cuda_[\w.]+:\d+\] failed call to cuInit: .*"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
)
#: TensorFlow's Python INFO messages that repeat at every checkpoint, export and model load.
PYTHON_NOISE = ("Sharding callback duration", "Assets written to", "Restoring parameters from")


def verbose() -> bool:
    """Whether TensorFlow's own lines are wanted (``TAXIFARE_VERBOSE`` set and not 0)."""
    return os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0")


def set_verbose(on: bool) -> None:
    """Ask this process and the processes it starts for TensorFlow's own lines (or not)."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def is_noise(line: str) -> bool:
    """Whether ``line`` (without its end of line) is one of TensorFlow's native start-up lines."""
    return bool(NATIVE_NOISE.fullmatch(line.strip()))


def _not_noise(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(PYTHON_NOISE)


def quiet_loggers() -> None:
    """TensorFlow's and absl's Python loggers: warnings and errors only, without the per-checkpoint lines."""
    if verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("absl").setLevel(logging.WARNING)
    tf_logger = logging.getLogger("tensorflow")
    if _not_noise not in tf_logger.filters:
        tf_logger.addFilter(_not_noise)


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the duration, then write back all but :data:`NATIVE_NOISE`."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a detached process): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True) if not is_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


#: Optional packages Keras imports at start-up when they are installed, unused by training and serving.
KERAS_EXTRAS = ("sklearn", "matplotlib")


class _Absent(importlib.abc.MetaPathFinder):
    """Reports ``names`` (and their submodules) missing to imports made on the thread that installed it."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.thread = threading.get_ident()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if threading.get_ident() == self.thread and fullname.split(".", 1)[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (left out while TensorFlow imports)", name=fullname)
        return None


@contextlib.contextmanager
def without_keras_extras() -> Iterator[None]:
    """For the duration, on this thread, :data:`KERAS_EXTRAS` that are not imported yet cannot be imported."""
    absent = _Absent([name for name in KERAS_EXTRAS if name not in sys.modules])
    sys.meta_path.insert(0, absent)
    try:
        yield
    finally:
        sys.meta_path.remove(absent)


def _import() -> ModuleType:
    import importlib

    tf = importlib.import_module("tensorflow")
    importlib.import_module("keras")  # TensorFlow imports it too, but lazily in part
    return tf


def import_tensorflow() -> ModuleType:
    """``import tensorflow`` (and its device look-up, where CUDA is tried) without the start-up lines.

    With ``TAXIFARE_VERBOSE=1`` the start-up lines stay. Either way Keras' optional extras are
    left out (:func:`without_keras_extras`). Importing again costs nothing.

    The process also ends sooner (:func:`base.process.leave_quickly`).
    """
    quiet_loggers()
    if "tensorflow.python" in sys.modules:
        import tensorflow as tf

        return tf
    process.leave_quickly()
    if verbose():
        with without_keras_extras():
            return _import()
    with native_stderr_filtered(), without_keras_extras():
        tf = _import()
        tf.config.list_physical_devices()  # CUDA is tried here: the cuInit error line comes now
    return tf
