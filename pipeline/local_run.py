"""``taxifare run``: the whole DAG on this machine with ``kfp.local``.

The SubprocessRunner runs each step as a process in the current environment (no venv per
step, no Docker), with kfp's file cache on, so a second run with the same inputs reuses the
steps it already ran, and a killed run resumes from its last completed step.

kfp.local runs in a process of its own (:mod:`pipeline.local_kfp`) whose output, every line kfp
and the steps print, goes to the step log; this process's streams and loggers stay as they are.
People see one line per step as it starts and ends (status, duration, key figure), progress
lines, and a summary, all made from records (:class:`StepTracker`): the steps' own
(:mod:`components.common`: ``started``, ``progress``, ``summary``, ``finished``) and the DAG's
``plan``. A step without records of its own did not run in this run: it came from kfp's cache
when kfp may cache it and a step after it started (or the run went on to its end), and was
skipped when a step it runs after failed or a condition group around it was false.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import dataclasses
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from components.common import DEFAULT_IMAGE
from components.contracts import SUMMARY_DIR_ENV, read_events
from components.run_summary.logic import LOG_ENV
from pipeline.runs import RunResult, StepRecord
from pipeline.scratch import run_scratch
from trainer import quiet

#: Seconds between two progress lines of a training step.
PROGRESS_EVERY = 10.0
#: Why a step that ended without a record of how (its process was killed) failed.
STOPPED = "the step stopped without a Python error (killed, or out of memory?): see the log"
#: What a condition group's name says when it was false (else "condition NAME was false").
NOT_MET = {"blessed": "model not blessed"}


@dataclasses.dataclass(frozen=True)
class PlannedTask:
    """A step task of the DAG, as the ``plan`` record gives it (see :func:`pipeline.local_kfp.plan`)."""

    task: str
    step: str
    after: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    cache: bool = False
    attempts: int = 1
    exit: bool = False

    @classmethod
    def from_record(cls, task: dict[str, Any]) -> PlannedTask:
        """One of a ``plan`` record's tasks."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in task.items() if k in fields}
        return cls(**values)


class StepLog:
    """The step log: what the kfp.local process prints, without TensorFlow's start-up lines (unless verbose)."""

    def __init__(self, log: TextIO, console: Callable[[str], None]) -> None:
        """Write to ``log``; say on ``console`` (once) when it cannot be written."""
        self.log = log
        self.console = console
        self.problem = ""  # why the log could not be written ('' while it can)
        self._buffer = ""  # an unfinished line (complete lines are checked for noise)

    def write(self, text: str) -> None:
        """Log ``text`` (the lines complete so far) and flush: the exit step reads the lines of the steps before it."""
        if quiet.verbose():
            kept = text
        else:
            self._buffer += text
            *complete, self._buffer = self._buffer.split("\n")
            kept = "".join(line + "\n" for line in complete if not quiet.is_noise(line))
        if kept and not self.problem:
            self._guard(self.log.write, kept)
        if not self.problem:
            self._guard(self.log.flush)

    def flush(self) -> None:
        """Write the unfinished line too, and flush."""
        pending, self._buffer = self._buffer, ""
        if pending and not self.problem:
            self._guard(self.log.write, pending)
        if not self.problem:
            self._guard(self.log.flush)

    def _guard(self, call: Callable[..., Any], *args: Any) -> None:
        """A write to the log; when it fails (disk full, read-only), one console line and no more writes."""
        try:
            call(*args)
        except OSError as exc:
            self.problem = f"{getattr(self.log, 'name', 'the log')}: {exc.strerror or exc}"
            self.console(f"  !!  the step log cannot be written ({self.problem}): the run goes on, its steps' lines are not kept")


class StepTracker:
    """Turns the run's records into step states and one console line per step event."""

    def __init__(self, console: Callable[[str], None], plan: Iterable[PlannedTask] = ()) -> None:
        """Call ``console`` with each line; ``plan`` is the DAG's (a ``plan`` record gives it too)."""
        self.console = console
        self.plan = list(plan)
        self.steps: dict[str, StepRecord] = {}
        self.open = ""  # the step started and not finished
        self.run_name = ""  # this run's folder, named by a step's record
        self.planned = 0.0  # when the plan was made (kfp.local names the run's folder after it)
        self.first_start = 0.0  # when the first step started
        self.ended = False  # kfp.local ran the pipeline to its end
        self._attempts: collections.Counter[str] = collections.Counter()
        self._cache_keys: dict[str, str] = {}
        self._resolved: set[str] = set()  # planned tasks whose fate is known
        self._last_progress = 0.0

    def add(self, record: dict[str, Any]) -> None:
        """Take one record into account (see the module docstring)."""
        kind, step, at = record.get("event"), str(record.get("step", "")), float(record.get("time") or time.time())
        if kind == "plan":
            self.plan = [PlannedTask.from_record(task) for task in record["tasks"]]
            self.planned = at
        elif kind == "started":
            self._started(step, float(record.get("since") or at), str(record.get("run", "")))
        elif kind == "progress":
            self._progress(step, record)
        elif kind == "summary":
            rec = self._rec(step)
            rec.summary, rec.figures = str(record.get("text", "")), dict(record.get("figures") or {})
        elif kind == "finished":
            self._finished(step, str(record.get("status")), str(record.get("error") or ""), at)
        elif kind == "cache_hit":
            self._cache_keys[str(record.get("task"))] = str(record.get("key", ""))
        elif kind == "pipeline" and record.get("status") == "failed":
            self.fail_current(str(record.get("error") or "kfp.local stopped: see the log"))
        elif kind == "pipeline":
            self.ended = True

    def close(self) -> None:
        """All records are in: a step still open stopped without saying how; the rest is resolved if the run went to its end."""
        if self.open:
            self._finished(self.open, "failed", STOPPED, time.time())
        if self.ended:
            self._resolve(len(self.plan))

    def fail_current(self, error: str) -> None:
        """The step running now failed outside its own process (kfp.local could not write its files)."""
        rec = self._rec(self.open or "the pipeline")
        rec.status, rec.error, self.open = "failed", error[:500], ""
        self.console(f"  FAIL {rec.name:<13} {rec.error}")

    def _rec(self, step: str) -> StepRecord:
        return self.steps.setdefault(step, StepRecord(step))

    def _started(self, step: str, at: float, run: str) -> None:
        if self.open:  # the step before ended without a record of how
            self._finished(self.open, "failed", STOPPED, at)
        self._resolve(min((i for i, t in enumerate(self.plan) if t.step == step and t.task not in self._resolved), default=0))
        rec = self._rec(step)
        rec.status, rec.started, rec.error = "running", at, ""
        self.open, self.run_name = step, self.run_name or run
        self.first_start = self.first_start or at
        self._attempts[step] += 1
        self._last_progress = time.monotonic()
        self.console(f"  ... {step:<14} started")

    def _progress(self, step: str, record: dict[str, Any]) -> None:
        if "text" in record:  # a tuning trial: every one is shown
            self.console(f"  ... {step:<14} {record['text']}")
            return
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY and record.get("of"):
            self._last_progress = now
            at, of = int(record["at"]), int(record["of"])
            self.console(
                f"  ... {step:<14} step {at:,}/{of:,} ({at / of:.0%}), train RMSE ${float(record['rmse']):.2f}, "
                f"{float(record['examples_per_second']):,.0f} examples/s"
            )

    def _finished(self, step: str, status: str, error: str, at: float) -> None:
        rec = self._rec(step)
        self.open = "" if self.open == step else self.open
        rec.seconds = max(0.0, at - rec.started) if rec.started else 0.0
        if status == "succeeded":
            rec.status = "succeeded"
            self.console(f"  ok  {rec.name:<14} {rec.seconds:6.1f}s  {rec.summary}")
            return
        rec.status, rec.error = "failed", error or STOPPED
        self.console(f"  FAIL {rec.name:<13} {rec.seconds:6.1f}s  {rec.error}")
        attempts = max((t.attempts for t in self.plan if t.step == step), default=1)
        if self._attempts[step] < attempts:
            self.console(f"  ... {step:<14} failed attempt {self._attempts[step]}/{attempts}; retrying (resumes from checkpoints)")
            return
        tasks = {t.task for t in self.plan if t.step == step}
        for task in self.plan:
            if task.task not in self._resolved and not task.exit and tasks & set(task.after):
                self._resolve_task(task)

    def _resolve(self, before: int) -> None:
        """Decide the fate of the planned tasks before position ``before`` that have not been decided."""
        for task in self.plan[:before]:
            if task.task not in self._resolved:
                self._resolve_task(task)

    def _resolve_task(self, task: PlannedTask) -> None:
        """A planned task without records of its own (or whose step has them from another copy of it)."""
        self._resolved.add(task.task)
        if task.step in self.steps or task.exit:  # it ran (in this or another branch), or the run was stopped before its end
            return
        failed = any(self.steps.get(t.step, StepRecord(t.step)).status in ("failed", "skipped") for t in self.plan if t.task in task.after)
        alternatives = sum(t.step == task.step for t in self.plan) > 1  # branches of one step: shown only for the one that runs
        # Inside a condition group, no records mean "from the cache" only when kfp said so (its group may not have run).
        if task.cache and not failed and (not task.conditions or task.task in self._cache_keys):
            rec = self._rec(task.step)
            rec.status, rec.cache_key = "cached", self._cache_keys.get(task.task, "")
            self.console(f"  ok  {task.step:<14} cached  (outputs of an earlier run reused)")
        elif (failed or task.conditions) and not alternatives:
            reason = "an earlier step failed" if failed else NOT_MET.get(task.conditions[-1], f"condition {task.conditions[-1]} was false")
            self._rec(task.step).status = "skipped"
            self.console(f"  --  {task.step:<14} skipped ({reason})")


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
        console: receives the per-step lines (default: print them to this process's stdout;
            what kfp.local and the steps print goes to the log, from their own processes).
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
    from pipeline import parameters, runs, runs_page

    os.makedirs(os.path.dirname(os.path.abspath(log_path)) or ".", exist_ok=True)
    # Pass every parameter explicitly: kfp.local reads defaults from the spec as floats (42.0)
    # but explicit ints stay ints (42), and its cache key tells them apart, so a run with
    # defaults and one with the same values given would never share cached steps.
    arguments = {**parameters.defaults(parameters.LOCAL), **arguments}
    if not arguments.get("data_fingerprint"):  # key stage_data's cache on the data the sources hold now
        from components.stage_data.fingerprint import data_fingerprint

        arguments["data_fingerprint"] = data_fingerprint(arguments)
    start, started_at = time.monotonic(), time.time()
    before = set(runs.list_run_dirs(pipeline_root))
    console = console or (lambda line: print(line, flush=True))
    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below, whatever a full disk does to it
    step_log, tracker = StepLog(log, console), StepTracker(console)
    step_log.write(f"\n===== taxifare run {time.strftime('%Y-%m-%d %H:%M:%S')} arguments={json.dumps(arguments)}\n")
    records = tempfile.mkdtemp(prefix=".step-records-", dir=scratch)  # a killed run's goes with its scratch
    request: dict[str, Any] = {"arguments": arguments, "pipeline_root": pipeline_root, "workspace_root": os.path.join(scratch, "workspace")}
    request |= {"cache": cache, "cache_root": cache_root, "image": image, "records": records}
    called = time.time()
    try:
        code = _follow(_kfp_process(request, log_path), step_log, tracker, records)
        if code and not tracker.ended and not any(r.status == "failed" for r in tracker.steps.values()):
            tracker.fail_current(f"the kfp.local process stopped (exit code {code}): see the log")
        tracker.close()
    finally:
        shutil.rmtree(records, ignore_errors=True)
        with contextlib.suppress(OSError):  # already said once by the step log
            log.close()
    failed = [r.name for r in tracker.steps.values() if r.status == "failed"]
    if cache:
        drop_suspect_cache(tracker.steps, cache_root or os.path.join(pipeline_root, ".kfp_cache"), console)
    result = RunResult(
        ok=not failed,
        steps=tracker.steps,
        log_path=os.path.abspath(log_path),
        pipeline_root=pipeline_root,
        seconds=time.monotonic() - start,
        failed_step=failed[0] if failed else "",
    )
    try:
        window = (tracker.planned or called, tracker.first_start or time.time())  # when kfp.local stamped this run's folder
        result.run_dir, result.index = runs_page.record(
            result, arguments, before=before, started=started_at, name=tracker.run_name, window=window
        )
    except OSError as exc:
        console(f"  !!  the run's record cannot be written ({exc.strerror or exc}: {exc.filename or pipeline_root})")
    return result


def _kfp_process(request: dict[str, Any], log_path: str) -> subprocess.Popen[bytes]:
    """Start :mod:`pipeline.local_kfp` on ``request`` (written into the records' folder), its output on a pipe."""
    path = os.path.join(request["records"], "request.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(request, fh)
    env = {
        **os.environ,
        # Steps start `python3` from PATH: make it this interpreter.
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        LOG_ENV: os.path.abspath(log_path),  # the exit step (run_summary) points people at it
        SUMMARY_DIR_ENV: request["records"],  # the steps' processes inherit it
    }
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, "-m", "pipeline.local_kfp", path]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def _follow(proc: subprocess.Popen[bytes], step_log: StepLog, tracker: StepTracker, records: str) -> int:
    """Follow the kfp.local process: its output to the step log, the records to the tracker as they come; its exit code."""
    assert proc.stdout is not None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset = 0
    try:
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
            if chunk:
                step_log.write(decoder.decode(chunk))
            events, offset = read_events(records, offset)
            for event in events:
                tracker.add(event)
            if ready and not chunk:  # the end of its output
                break
        step_log.write(decoder.decode(b"", final=True))
        step_log.flush()
        code = proc.wait()
        events, offset = read_events(records, offset)
        for event in events:
            tracker.add(event)
        return code
    finally:
        if proc.poll() is None:  # this process was interrupted (Ctrl-C): so is the run
            proc.terminate()
            proc.wait()
        proc.stdout.close()


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
