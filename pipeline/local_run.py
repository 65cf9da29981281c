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
from trainer import quiet

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([\w-]+)'")
_END = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
_CACHED = re.compile(r"Task ([\w-]+) cache hit(?: \(key=(\w+)\))?")
_SKIPPED = re.compile(r"Skipping (?:conditional )?task ([\w-]+)")
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
        self._log_buffer = ""  # the log's unfinished line (complete lines are checked for noise)
        self._lock = threading.RLock()
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        #: Condition groups' task names -> their names in the DAG ("blessed", "batch-served"...), see condition_names.
        self.conditions: dict[str, str] = {}

    def writable(self) -> bool:
        """Always."""
        return True

    def write(self, text: str) -> int:
        """Log ``text`` (without TensorFlow's start-up lines, unless verbose) and parse its complete lines."""
        with self._lock:
            if quiet.verbose():
                self.log.write(text)
            else:
                self._log_buffer += text
                *complete, self._log_buffer = self._log_buffer.split("\n")
                self.log.write("".join(line + "\n" for line in complete if not quiet.is_noise(line)))
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
            for line in lines:
                self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        """Flush the log (with a line not finished yet)."""
        with self._lock:
            self.log.write(self._log_buffer)
            self._log_buffer = ""
            self.log.flush()

    def _read_figures(self, rec: StepRecord) -> None:
        """The step's summary and figures, from the file it wrote (see components.common.summary)."""
        written = StepSummary.read(self.summary_dir, rec.name) if self.summary_dir else None
        if written:
            rec.summary, rec.figures = written.text, written.figures

    def _step(self, task: str) -> StepRecord:
        name = "batch_predict" if re.fullmatch(r"batch-predict-\d+", task) else task.replace("-", "_")  # its not-blessed branch's copy
        return self.steps.setdefault(name, StepRecord(name))

    def _line(self, line: str) -> None:
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
            self.log.flush()  # the exit task reads the log of the steps before it
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
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n===== taxifare run {time.strftime('%Y-%m-%d %H:%M:%S')} arguments={json.dumps(arguments)}\n")
        log.flush()
        # The exit step (run_summary) reads the failed step's lines from here.
        os.environ[LOG_ENV], os.environ[OFFSET_ENV] = os.path.abspath(log_path), str(log.tell())
        terminal = sys.stdout
        summary_dir = tempfile.mkdtemp(prefix=".step-summaries-", dir=scratch)  # a killed run's goes with its scratch
        tracker = StepTracker(log, console or (lambda line: print(line, file=terminal, flush=True)), summary_dir)
        tracker.conditions = dag.condition_names(pipeline_func)
        os.environ[SUMMARY_DIR_ENV] = summary_dir  # the steps' processes inherit it
        try:
            with _captured(tracker):
                pipeline_func(**arguments)
        finally:
            os.environ.pop(SUMMARY_DIR_ENV, None)
            shutil.rmtree(summary_dir, ignore_errors=True)
    failed = [r.name for r in tracker.steps.values() if r.status == "failed"]
    result = RunResult(
        ok=not failed,
        steps=tracker.steps,
        log_path=os.path.abspath(log_path),
        pipeline_root=pipeline_root,
        seconds=time.monotonic() - start,
        failed_step=failed[0] if failed else "",
    )
    result.run_dir, result.index = runs.record(result, arguments, before=before, started=started_at)
    return result


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


def summarize(result: RunResult, serving_root: str, model_name: str) -> str:
    """The end-of-run summary: what happened and what to do next."""
    lines = [""]
    if not result.ok:
        return "\n".join([*lines, *failure_lines(result)])
    verify = result.steps.get("verify_export")
    figures = verify.figures if verify else {}
    lines.append(f"Pipeline finished in {result.seconds:.0f}s.")
    if figures:
        named = {"distance rule": "distance_rule", "mean predictor": "mean_predictor", "gradient-boosted trees": "gbt_baseline"}
        others = [f"{name} ${figures[key + '_rmse']:.2f}" for name, key in named.items() if key + "_rmse" in figures]
        others += [f"deployed ${figures['deployed_rmse']:.2f} on the same rows"] if "deployed_rmse" in figures else []
        lines.append(f"Test RMSE ${figures['test_rmse']:.2f}  ({', '.join(others)})")
        lines.append(("Blessed: " if figures.get("blessed") else "Not blessed: ") + verify.summary.split(": ", 1)[-1] if verify else "")
    deploy = result.steps.get("deploy")
    if deploy and deploy.status == "succeeded" and deploy.figures.get("version") is None:  # compare-and-publish found a better one
        lines.append("Nothing deployed: " + deploy.summary.split(": ", 1)[-1])
    elif deploy and deploy.status == "succeeded":
        lines.append(f"Deployed version {deploy.figures['version']} at {deploy.figures['path']}")
        lines.append(f"Serve it:  taxifare serve --model-base-path {os.path.join(serving_root, model_name)} --model-name {model_name}")
    else:
        lines.append("Nothing deployed.")
    batch = result.steps.get("batch_predict")
    if batch and batch.status == "succeeded":
        lines.append(f"Batch predictions: {batch.summary}")
    train_dir = _recorded_tensorboard(result)
    if train_dir:
        lines.append(f"Loss curves:  tensorboard --logdir {train_dir}")
    report = os.path.join(result.run_dir, "verify-export", "report.html") if result.run_dir else ""
    if report and os.path.exists(report):
        lines.append(f"Verification report (HTML): {report}")
    if result.index:
        lines.append(f"All runs:  {result.index}  (or `taxifare runs`)")
    lines.append(f"Step log: {result.log_path}")
    return "\n".join(lines)


def failure_lines(result: RunResult) -> list[str]:
    """The last lines of a failed run: the step, the reason, the log file, where the run's summary is, what to do.

    The reason is the failed step's own error line (``StepRecord.error``, picked out of its log).
    """
    rec = result.steps.get(result.failed_step, StepRecord(result.failed_step))
    lines = [f"FAILED at {result.failed_step}: {rec.error or 'the step failed without an error line; see the log'}"]
    lines.append(f"Log file: {result.log_path}")
    summary_file = os.path.join(result.run_dir, "run-summary", "summary") if result.run_dir else ""
    if summary_file and os.path.exists(summary_file):
        lines.append(f"Run summary: {summary_file}")
    lines.append("Fix the cause and run the same command again: completed steps are reused from the cache.")
    return lines


def _recorded_tensorboard(result: RunResult) -> str:
    """The TensorBoard logdir of this run's full_train, as its record names it (a cached step's: the run that made it).

    The trainer writes its runs ``train`` and ``eval`` under ``tensorboard/`` of the artifact.
    """
    from pipeline import runs

    if not result.run_dir:
        return ""
    logdir = runs.load_run(result.pipeline_root, os.path.basename(result.run_dir)).tensorboard
    inner = os.path.join(logdir, "tensorboard")
    return inner if logdir and os.path.isdir(inner) else logdir
