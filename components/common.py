"""Helpers shared by the step functions (the standard library and the step records at module level).

Every step is built by :func:`step` (kfp's lightweight component in the project's image). A
step reports what happens to it as records that ``taxifare run`` reads (JSON lines appended to
``events.jsonl`` in the folder it names in ``TAXIFARE_STEP_SUMMARIES``; nothing when that is
not set, as on Vertex AI): :func:`started` first thing in its body (and, in the step's own
process, how that process ends: an exception's one-line error, or a normal end),
:func:`progress` while it works, and :func:`summary` for its key figures (also a line on stderr
for the log).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from base import process
from components.contracts import SUMMARY_DIR_ENV, StepSummary, append_event

#: kfp's executor, the ``__main__`` of a process kfp.local starts for one attempt of one step.
_KFP_EXECUTOR = "kfp.dsl.executor_main"

#: The image every step runs in; a compile-time setting (``taxifare compile --image``).
DEFAULT_IMAGE = "taxifare:0.1.0"


def step(func: Callable[..., Any], *, image: str = DEFAULT_IMAGE) -> Any:
    """``func`` as a kfp lightweight component that runs in ``image``, where kfp is already installed.

    The decorator of every step, and how ``taxifare compile --image`` rebuilds a step for
    another image (:func:`pipeline.dag.with_image`): the build settings are declared here only.
    kfp reads the component's inputs and outputs from ``func``'s signature and copies its source
    (from ``def`` on) into the spec.
    """
    from kfp import dsl

    return dsl.component(func, base_image=image, install_kfp_package=False)


def write_metrics(artifact: Any, figures: dict[str, float], **extra: Any) -> None:
    """Log ``figures`` on a Metrics artifact, and write them (with ``extra``) as JSON at its path.

    The file makes the artifact exist on disk, which kfp.local's cache checks.
    """
    for key, value in figures.items():
        artifact.log_metric(key, value)
    with open(artifact.path, "w") as fh:
        json.dump({**extra, **figures}, fh, default=str)


def _records() -> str:
    """The folder of this run's step records ('' when nobody reads them)."""
    return os.environ.get(SUMMARY_DIR_ENV, "")


def started(step: str, *, output: str = "") -> None:
    """Record that ``step`` starts; in a process kfp started for it, also record how that process ends.

    Args:
        step: the step's name (``stage_data``).
        output: one of its output artifacts' local paths (``<root>/<run>/<task>/<name>``): the
            record then names the run's folder.
    """
    main = sys.modules.get("__main__")
    own_process = getattr(getattr(main, "__spec__", None), "name", "") == _KFP_EXECUTOR  # not a test calling the function
    if own_process:
        process.leave_quickly()  # the step's process ends without the collector's last walk over its imports' objects
    directory = _records()
    if not directory:
        return
    run = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(output)))) if output else ""
    append_event(directory, {"event": "started", "step": step, "since": process.start_time(), **({"run": run} if run else {})})
    if own_process:
        _record_the_end(directory, step)


def _record_the_end(directory: str, step: str) -> None:
    """A ``finished`` record when this process ends: ``failed`` with the error line of an exception that ends it, else ``succeeded``.

    (``sys.exit(N)`` raises no exception a hook sees, so it counts as ``succeeded``: steps end
    with an exception when they fail, and full_train's ``sys.exit(0)`` of a worker is a success.)
    """
    failure: list[str] = []
    previous = sys.excepthook

    def on_exception(kind: type[BaseException], exc: BaseException, tb: Any) -> None:

        failure.append(error_line(exc))
        lines = "".join(traceback.format_exception(kind, exc, tb, chain=False)).splitlines()
        append_event(directory, {"event": "finished", "step": step, "status": "failed", "error": failure[0], "traceback": lines})
        previous(kind, exc, tb)  # the traceback still goes to the log (run_summary shows its tail)

    def on_exit() -> None:
        if not failure:
            append_event(directory, {"event": "finished", "step": step, "status": "succeeded"})

    sys.excepthook = on_exception
    atexit.register(on_exit)


def error_line(exc: BaseException) -> str:
    """What a person reads about ``exc``: its type and the first line of its message (``InputError: ...``)."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    return text[:500]


def progress(step: str, **figures: Any) -> None:
    """Record how far ``step`` is (training: ``at``, ``of``, ``rmse``, ``examples_per_second``; a trial: ``trial``, ``of``, ``text``)."""
    directory = _records()
    if directory:
        append_event(directory, {"event": "progress", "step": step, **figures})


def summary(step: str, text: str, **figures: Any) -> None:
    """Report the step's one-line summary (and its figures): to the log, and as a record when asked."""
    directory = _records()
    if directory:
        StepSummary(step, text, figures).write(directory)
    print(f"{step}: {text}", file=sys.stderr, flush=True)


def local_path(uri_or_path: str) -> str:
    """The filesystem path of an artifact: ``/gcs/...`` for ``gs://`` on Vertex, else as is."""
    if uri_or_path.startswith("gs://"):
        return "/gcs/" + uri_or_path[len("gs://") :]
    return uri_or_path
