"""``taxifare run``: the whole DAG on this machine with ``kfp.local``.

The SubprocessRunner runs each step as a process in the current environment (no venv per
step, no Docker), with kfp's file cache on, so a second run with the same inputs reuses the
steps it already ran, and a killed run resumes from its last completed step.

kfp.local prints every executor input and output; all of that goes to a log file. People see
one line per step as it starts and ends (status, duration, key figure) and a summary.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from components.common import DEFAULT_IMAGE
from components.impl.contracts import SUMMARY_DIR_ENV, StepSummary
from components.impl.notify import LOG_ENV, OFFSET_ENV
from pipeline.scratch import _LOCK_FILE, SCRATCH_DIR, run_scratch  # noqa: F401 - SCRATCH_DIR, _LOCK_FILE: part of this module's API
from trainer import quiet

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([\w-]+)'")
_END = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
_CACHED = re.compile(r"Task ([\w-]+) cache hit(?: \(key=(\w+)\))?")
_SKIPPED = re.compile(r"Skipping (?:conditional )?task ([\w-]+)")
#: An output's URI in kfp.local's "Task ... outputs:" lines: names this run's own folder.
_OUTPUT_URI = re.compile(r"uri='[^']*/(taxifare-\d{4}(?:-\d\d){5}-\d+)/")
_RETRY = re.compile(r"Task ([\w-]+) failed \(attempt (\d+)/(\d+)\)")
_TRAIN_PROGRESS = re.compile(r"step (\d+)/(\d+)\s+loss [\d.]+\s+rmse ([\d.]+)\s+([\d,]+) examples/s")
_TUNE_PROGRESS = re.compile(r"\btrial \d+/\d+: .*best so far.*$")
#: Seconds between two progress lines of a training step.
PROGRESS_EVERY = 10.0
_TRACEBACK = "Traceback (most recent call last):"
#: The module path before an exception's name (``trainer.storage.``InputError: ...).
_MODULE_PATH = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*(?::|$))")
#: Lines of a step's output kept to find its error (a TF traceback runs to a few hundred).
_TAIL_LINES = 2000


@dataclasses.dataclass
class StepRecord:
    """What the console shows about one step."""

    name: str
    status: str = "pending"
    started: float = 0.0
    seconds: float = 0.0
    summary: str = ""
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str = ""
    #: The start of kfp.local's cache key when the step's outputs came from the cache.
    cache_key: str = ""


@dataclasses.dataclass
class RunResult:
    """The outcome of a local pipeline run."""

    ok: bool
    steps: dict[str, StepRecord]
    log_path: str
    pipeline_root: str
    seconds: float
    failed_step: str = ""
    #: The run's directory under ``pipeline_root`` (its outputs and ``taxifare-run.json``).
    run_dir: str = ""
    #: The runs page refreshed after the run (``runs/index.html``).
    index: str = ""

    def figure(self, step: str, key: str, default: Any = None) -> Any:
        """A key figure a step reported (``None`` when it did not run)."""
        record = self.steps.get(step)
        return record.figures.get(key, default) if record else default


class StepTracker(io.TextIOBase):
    """A text stream that writes everything to the log and turns kfp's lines into step events."""

    def __init__(self, log: TextIO, console: Callable[[str], None], summary_dir: str = "") -> None:
        """Write to ``log``; call ``console`` with one line per step event; read step summaries from ``summary_dir``."""
        super().__init__()
        self.summary_dir = summary_dir
        self.log = log
        self.console = console
        self.steps: dict[str, StepRecord] = {}
        self.current = ""
        self._last_progress = 0.0
        self._buffer = ""
        self._lock = threading.RLock()
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.log_problem = ""  # why the log could not be written ('' while it can)
        self.run_name = ""  # this run's folder, from the URI of an output it wrote
        self.pipeline_started = 0.0  # when kfp.local named this run's folder (its "Running pipeline" line)
        self._log_buffer = ""  # the log's unfinished line (complete lines are checked for noise)
        #: Condition groups' task names -> their names in the DAG ("blessed", "batch-served"...), see condition_names.
        self.conditions: dict[str, str] = {}

    def writable(self) -> bool:
        """Always."""
        return True

    def write(self, text: str) -> int:
        """Log ``text`` (without TensorFlow's start-up lines, unless verbose) and parse its complete lines."""
        with self._lock:
            if quiet.verbose():
                kept = text
            else:
                self._log_buffer += text
                *complete, self._log_buffer = self._log_buffer.split("\n")
                kept = "".join(line + "\n" for line in complete if not quiet.is_noise(line))
            if not self.log_problem and kept:
                self._guard(self.log.write, kept)
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
            for line in lines:
                self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        """Flush the log (with a line not finished yet)."""
        with self._lock:
            pending, self._log_buffer = self._log_buffer, ""
            if not self.log_problem:
                self._guard(self.log.write, pending)
            if not self.log_problem:
                self._guard(self.log.flush)

    def fail_current(self, exc: BaseException) -> None:
        """The step running now failed outside its own process (kfp.local could not write its files)."""
        rec = self.steps.setdefault(self.current or "the pipeline", StepRecord(self.current or "the pipeline"))
        rec.status, rec.error = "failed", f"{type(exc).__name__}: {exc}"[:500]
        self.console(f"  FAIL {rec.name:<13} {rec.error}")

    def _guard(self, call: Callable[..., Any], *args: Any) -> None:
        """A write to the log; when it fails (disk full, read-only), one console line and no more writes."""
        try:
            call(*args)
        except OSError as exc:
            self.log_problem = f"{getattr(self.log, 'name', 'the log')}: {exc.strerror or exc}"
            self.console(f"  !!  the step log cannot be written ({self.log_problem}): the run goes on, its steps' lines are not kept")

    def _read_figures(self, rec: StepRecord) -> None:
        """The step's summary and figures, from the file it wrote (see components.common.summary)."""
        written = StepSummary.read(self.summary_dir, rec.name) if self.summary_dir else None
        if written:
            rec.summary, rec.figures = written.text, written.figures

    def _step(self, task: str) -> StepRecord:
        name = "batch_predict" if re.fullmatch(r"batch-predict-\d+", task) else task.replace("-", "_")  # its not-blessed branch's copy
        return self.steps.setdefault(name, StepRecord(name))

    def _line(self, line: str) -> None:
        if not self.pipeline_started and "Running pipeline:" in line:
            self.pipeline_started = time.time()
        if not self.run_name and (m := _OUTPUT_URI.search(line)):
            self.run_name = m.group(1)
        if m := _START.search(line):
            rec = self._step(m.group(1))
            rec.status, rec.started, rec.error = "running", time.monotonic(), ""
            self._tail.clear()
            self.current = rec.name
            self._last_progress = rec.started
            self.console(f"  ... {rec.name:<14} started")
        elif m := _END.search(line):
            rec = self._step(m.group(1))
            rec.seconds = time.monotonic() - rec.started
            rec.status = "succeeded" if m.group(2) == "SUCCESS" else "failed"
            self._read_figures(rec)
            if rec.status == "failed":
                rec.error = step_error_line(list(self._tail))
            self.flush()  # the exit task reads the log of the steps before it
            if rec.status == "succeeded":
                self.console(f"  ok  {rec.name:<14} {rec.seconds:6.1f}s  {rec.summary}")
            else:
                self.console(f"  FAIL {rec.name:<13} {rec.seconds:6.1f}s  {rec.error or 'see the log'}")
        elif m := _CACHED.search(line):
            rec = self._step(m.group(1))
            rec.status, rec.cache_key = "cached", m.group(2) or ""
            self.console(f"  ok  {rec.name:<14} cached  (outputs of an earlier run reused)")
        elif m := _SKIPPED.search(line):
            task = m.group(1)
            if self.conditions.get(task, "").startswith(("batch-", "not-blessed")):
                return  # a branch of the optional batch_predict step (batch_source empty), or the not-blessed branch
            if task.startswith("condition"):  # the dsl.If group holding deploy
                rec = self._step("deploy")
                rec.status = "skipped"
                upstream_failed = any(r.status in ("failed", "skipped") for r in self.steps.values() if r is not rec)
                self.console(f"  --  {rec.name:<14} skipped ({'an earlier step failed' if upstream_failed else 'model not blessed'})")
            else:
                rec = self._step(task)
                rec.status = "skipped"
                self.console(f"  --  {rec.name:<14} skipped (an earlier step failed)")
        elif m := _RETRY.search(line):
            self.console(
                f"  ... {m.group(1).replace('-', '_'):<14} failed attempt {m.group(2)}/{m.group(3)}; retrying (resumes from checkpoints)"
            )
        elif self.current and (m := _TUNE_PROGRESS.search(line)):  # one line per tuning trial, never throttled
            self.console(f"  ... {self.current:<14} {m.group(0)}")
        elif self.current and (m := _TRAIN_PROGRESS.search(line)):
            now = time.monotonic()
            if now - self._last_progress >= PROGRESS_EVERY:
                self._last_progress = now
                step, total = int(m.group(1)), int(m.group(2))
                self.console(
                    f"  ... {self.current:<14} step {step:,}/{total:,} ({step / total:.0%}), train RMSE ${float(m.group(3)):.2f}, "
                    f"{m.group(4)} examples/s"
                )
        elif self.current and line.startswith("    "):  # the step's own output (kfp indents it)
            self._tail.append(line[4:])


def step_error_line(output: list[str]) -> str:
    """The failing step's own error line, from what it printed.

    The exception line that ends its last traceback (``InputError: ...``, with the module path
    of the exception left out), or, when it printed no traceback (killed, aborted), its last
    line.
    """
    starts = [i for i, line in enumerate(output) if line.strip() == _TRACEBACK]
    if starts:
        indent = len(output[starts[-1]]) - len(output[starts[-1]].lstrip())
        for line in output[starts[-1] + 1 :]:
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                text = _MODULE_PATH.sub("", line.strip())
                return text[:500]
    last = next((line.strip() for line in reversed(output) if line.strip()), "")
    if not last:
        return "the step stopped without printing an error (killed?): see the log"
    return f"the step stopped without a Python error (killed, or out of memory?); its last line: {last[:300]}"


@contextlib.contextmanager
def _captured(tracker: StepTracker) -> Iterator[None]:
    """Send stdout, stderr and the root logger through ``tracker`` for the duration."""
    root = logging.getLogger()
    handler = logging.StreamHandler(tracker)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    old_level, old_handlers = root.level, root.handlers[:]
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = tracker  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        root.handlers = old_handlers
        root.setLevel(old_level)
        tracker.flush()


def run_local(
    arguments: dict[str, Any],
    *,
    pipeline_root: str,
    log_path: str,
    cache: bool = True,
    cache_root: str | None = None,
    image: str = DEFAULT_IMAGE,
    console: Callable[[str], None] | None = None,
) -> RunResult:
    """Run the pipeline with ``kfp.local`` and report each step to ``console``.

    Args:
        arguments: pipeline parameters (see :func:`pipeline.pipeline.create_pipeline`).
        pipeline_root: where step outputs go (``<root>/taxifare-<timestamp>/<task>/<output>``).
        log_path: the file that receives every line kfp and the steps print.
        cache: reuse outputs of steps that already ran with the same inputs.
        cache_root: where the cache lives (default ``<pipeline_root>/.kfp_cache``).
        image: recorded in the spec (steps run in this environment, not in the image).
        console: receives the per-step lines (default: print them to this process's stdout
            as it was before the run; the run itself sends stdout to the log).
    """
    pipeline_root = os.path.abspath(pipeline_root)
    os.makedirs(pipeline_root, exist_ok=True)
    with run_scratch(pipeline_root) as scratch:
        return _run_local(arguments, pipeline_root, scratch, log_path, cache, cache_root, image, console)


def _run_local(
    arguments: dict[str, Any],
    pipeline_root: str,
    scratch: str,
    log_path: str,
    cache: bool,
    cache_root: str | None,
    image: str,
    console: Callable[[str], None] | None,
) -> RunResult:
    from kfp import local

    from pipeline import dag, parameters, runs
    from pipeline.pipeline import create_pipeline

    os.makedirs(os.path.dirname(os.path.abspath(log_path)) or ".", exist_ok=True)
    # Steps start `python3` from PATH: make it this interpreter, and keep TF quiet.
    env_bin = os.path.dirname(sys.executable)
    os.environ["PATH"] = env_bin + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=pipeline_root,
        workspace_root=os.path.join(scratch, "workspace"),
        raise_on_error=False,
        enable_caching=cache,
        cache_root=cache_root,
    )
    pipeline_func = create_pipeline(image=image)
    # Pass every parameter explicitly: kfp.local reads defaults from the spec as floats (42.0)
    # but explicit ints stay ints (42), and its cache key tells them apart, so a run with
    # defaults and one with the same values given would never share cached steps.
    arguments = {**parameters.defaults(parameters.LOCAL), **arguments}
    if not arguments.get("data_fingerprint"):  # key stage_data's cache on the data the sources hold now
        from components.impl.fingerprint import data_fingerprint

        arguments["data_fingerprint"] = data_fingerprint(arguments)
    start, started_at = time.monotonic(), time.time()
    before = set(runs.list_run_dirs(pipeline_root))
    terminal = sys.stdout
    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below, whatever a full disk does to it
    tracker = StepTracker(log, console or (lambda line: print(line, file=terminal, flush=True)))
    tracker.conditions = dag.condition_names(pipeline_func)
    tracker.write(f"\n===== taxifare run {time.strftime('%Y-%m-%d %H:%M:%S')} arguments={json.dumps(arguments)}\n")
    tracker.flush()
    # The exit step (run_summary) reads the failed step's lines from here.
    os.environ[LOG_ENV], os.environ[OFFSET_ENV] = os.path.abspath(log_path), str(os.path.getsize(log_path))
    tracker.summary_dir = summary_dir = tempfile.mkdtemp(prefix=".step-summaries-", dir=scratch)  # a killed run's goes with its scratch
    os.environ[SUMMARY_DIR_ENV] = summary_dir  # the steps' processes inherit it
    called = time.time()
    try:
        with _captured(tracker):
            pipeline_func(**arguments)
    except OSError as exc:  # kfp's own writes under the pipeline root (disk full, read-only): the step it ran fails
        tracker.fail_current(exc)
    finally:
        os.environ.pop(SUMMARY_DIR_ENV, None)
        shutil.rmtree(summary_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # already said once by the tracker
            log.close()
    failed = [r.name for r in tracker.steps.values() if r.status == "failed"]
    if cache:
        drop_suspect_cache(tracker.steps, cache_root or os.path.join(pipeline_root, ".kfp_cache"), tracker.console)
    result = RunResult(
        ok=not failed,
        steps=tracker.steps,
        log_path=os.path.abspath(log_path),
        pipeline_root=pipeline_root,
        seconds=time.monotonic() - start,
        failed_step=failed[0] if failed else "",
    )
    try:
        window = (called, tracker.pipeline_started or time.time())  # when kfp.local stamped this run's folder
        result.run_dir, result.index = runs.record(
            result, arguments, before=before, started=started_at, name=tracker.run_name, window=window
        )
    except OSError as exc:
        tracker.console(f"  !!  the run's record cannot be written ({exc.strerror or exc}: {exc.filename or pipeline_root})")
    return result


#: A step that checks a model, and the steps whose cached outputs it checks.
_CHECKED_BY = {"verify_export": ("full_train",)}


def drop_suspect_cache(steps: dict[str, StepRecord], cache_root: str, console: Callable[[str], None]) -> list[str]:
    """Drop the cache entries of cached steps whose output a later step found bad, so the next run redoes them.

    A damaged cached model would otherwise come back from the cache on every rerun and fail
    verification every time. Returns the steps whose entries were removed.
    """
    import glob

    dropped = []
    for checker, producers in _CHECKED_BY.items():
        if steps.get(checker, StepRecord(checker)).status != "failed":
            continue
        for name in producers:
            rec = steps.get(name)
            if rec is None or rec.status != "cached" or not rec.cache_key:
                continue
            for path in glob.glob(os.path.join(cache_root, f"{rec.cache_key}*.json")):
                with contextlib.suppress(OSError):
                    os.remove(path)
                    dropped.append(name)
            if name in dropped:
                console(f"  !!  {checker} failed on the cached output of {name}: its cache entry is dropped, the next run redoes it")
    return dropped
