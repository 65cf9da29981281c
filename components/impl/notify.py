"""The exit step, run_summary: what happened to the run, written down and sent where people look.

The pipeline wraps its steps in ``dsl.ExitHandler(run_summary)``, so this step runs after
them whatever happened, with the final status of the group (``dsl.PipelineTaskFinalStatus``).
:func:`summarize_run` turns that into a summary (status, the failed step, the tail of its log,
the link to the run), writes it as JSON and text, and, when ``notify_webhook`` is set, POSTs it
as JSON (:func:`post_webhook`: ``text`` for Slack / Google Chat style hooks, and the fields).

Where the facts come from:

* **Vertex AI**: the status names the job (``projects/P/locations/L/pipelineJobs/ID``: the link
  to the console) and its error message names the failed tasks ("... The failed tasks are:
  [full-train]."); the step's own log is in Cloud Logging, linked from the run page.
* **kfp.local** (``taxifare run``): the status only says the group failed. ``taxifare run``
  tells the step where its log is (``TAXIFARE_RUN_LOG``, ``TAXIFARE_RUN_LOG_OFFSET``: the
  byte where this run starts), and the step reads the failed task and its lines from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from components.common import summary as print_summary

#: Environment set by ``taxifare run`` for the exit step (kfp.local only).
LOG_ENV, OFFSET_ENV = "TAXIFARE_RUN_LOG", "TAXIFARE_RUN_LOG_OFFSET"
LOG_TAIL_LINES = 30
WEBHOOK_TIMEOUT = 10.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FAILED_TASKS = re.compile(r"failed tasks are:\s*\[([^\]]*)\]", re.IGNORECASE)
_TASK_END = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
_TASK_START = re.compile(r"Executing task '([\w-]+)'")
_JOB = re.compile(r"^projects/([^/]+)/locations/([^/]+)/pipelineJobs/([^/]+)$")
#: The longest reason a chat message carries (the rest is in the log).
MAX_REASON = 500
_ERROR = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


@dataclasses.dataclass
class RunSummary:
    """What a person needs to act on a finished run."""

    run: str
    status: str
    failed_step: str = ""
    error: str = ""
    log_tail: list[str] = dataclasses.field(default_factory=list)
    link: str = ""
    #: The log file holding the failed step's lines (a local run's), '' when there is none to point at.
    log: str = ""

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.status == "SUCCEEDED"

    def text(self) -> str:
        """A few lines for a chat message: what happened, the one-line reason, where the log and the run are.

        The traceback stays out (a chat room wants the reason, not 20 lines of stack): it is in
        ``log_tail`` of the JSON body, in :meth:`details` and in the log.
        """
        head = f"taxifare run {self.run}: {self.status}"
        if self.failed_step:
            head += f" at step {self.failed_step}"
        lines = [head]
        if self.error:
            reason = " ".join(self.error.split())
            lines.append(reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "...")
        if self.log and not self.ok:
            lines.append(f"Log: {self.log}")
        if self.link:
            lines.append(self.link)
        return "\n".join(lines)

    def details(self) -> str:
        """:meth:`text` and, for a failure, the last lines of the step's log (the run's ``summary.txt``)."""
        lines = [self.text()]
        if self.log_tail and not self.ok:
            lines.append("Last lines of the step's log:")
            lines.extend("    " + line for line in self.log_tail)
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """The JSON body of the webhook."""
        return {"text": self.text(), **dataclasses.asdict(self)}


def check_webhook(url: str) -> None:
    """Refuse a webhook URL that cannot work ('' is fine: no webhook).

    Raises:
        InputError: naming the problem and the fix (a ValueError).
    """
    from trainer.checks import webhook_url

    webhook_url("notify_webhook", url)


def console_link(job_resource_name: str) -> str:
    """The Cloud console page of a Vertex pipeline job ('' for anything else)."""
    m = _JOB.match(job_resource_name or "")
    if not m:
        return ""
    project, location, job = m.groups()
    return f"https://console.cloud.google.com/vertex-ai/locations/{location}/pipelines/runs/{job}?project={project}"


def failed_tasks_from_message(message: str) -> list[str]:
    """The task names a Vertex error message lists as failed."""
    m = _FAILED_TASKS.search(message or "")
    return [t.strip().strip("'\"") for t in m.group(1).split(",") if t.strip()] if m else []


def read_local_log(path: str, offset: int = 0) -> list[str]:
    """The lines of the run's log from ``offset`` on, without terminal colours ([] when there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(offset, 0))
            data = fh.read()
    except OSError:
        return []
    return [_ANSI.sub("", line) for line in data.decode("utf-8", "replace").splitlines()]


def failed_step_from_log(lines: list[str]) -> tuple[str, list[str], str]:
    """``(task, its lines, its error line)`` of the first task that finished with a failure in ``lines``."""
    starts: dict[str, int] = {}
    for i, line in enumerate(lines):
        if m := _TASK_START.search(line):
            starts[m.group(1)] = i
        elif (m := _TASK_END.search(line)) and m.group(2) != "SUCCESS":
            task = m.group(1)
            own = lines[starts.get(task, i) + 1 : i]
            errors = [f"{e.group(1)}: {e.group(2)}" for e in map(_ERROR.match, own) if e]
            tracebacks = [k for k, line in enumerate(own) if line.strip().startswith("Traceback (most recent call last)")]
            if tracebacks:  # the step's error, not kfp's echo of its inputs
                own = own[tracebacks[-1] :]
            own = [line for line in textwrap.dedent("\n".join(own)).splitlines() if line.strip()]
            return task, own, errors[-1] if errors else ""
    return "", [], ""


def summarize_run(
    *,
    state: str,
    job_resource_name: str,
    error_message: str,
    run_name: str,
    run_dir: str = "",
    log_path: str = "",
    log_offset: int = 0,
) -> RunSummary:
    """The summary of a finished run from its final status (and, locally, its log).

    Args:
        state: the final state of the steps (``SUCCEEDED``, ``FAILED``, ``CANCELLED``...).
        job_resource_name: the pipeline job's resource name (Vertex: ``projects/.../pipelineJobs/ID``).
        error_message: the status's error message.
        run_name: the run's name (the pipeline job name).
        run_dir: the run's directory or ``gs://`` prefix ('' when unknown), the link of a local run.
        log_path: the run's log file (kfp.local), '' for none.
        log_offset: where this run starts in ``log_path``.
    """
    result = RunSummary(run=run_name, status=state or "UNKNOWN")
    result.link = console_link(job_resource_name) or (run_dir if run_dir else "")
    if result.ok:
        return result
    failed = failed_tasks_from_message(error_message)
    if log_path:
        task, own, error = failed_step_from_log(read_local_log(log_path, log_offset))
        if task:
            failed = failed or [task]
            result.log_tail = own[-LOG_TAIL_LINES:]
            result.error = error
            result.log = log_path
    result.failed_step = ",".join(t.replace("-", "_") for t in failed)
    if not result.error:
        result.error = error_message or "no error message"
    return result


def post_webhook(url: str, body: dict[str, Any], timeout: float = WEBHOOK_TIMEOUT) -> int:
    """POST ``body`` as JSON to ``url``; return the HTTP status.

    Raises:
        RuntimeError: one line naming the URL's host and what went wrong.
    """
    check_webhook(url)
    data = json.dumps(body, default=str).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json; charset=utf-8"})
    host = urllib.parse.urlsplit(url).netloc
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(
            f"the notify_webhook at {host} answered HTTP {exc.code}: check the URL (a revoked hook answers 403/404)"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeError(f"cannot reach the notify_webhook at {host} ({reason}): check the URL and the network") from None


def run_summary_step(
    status: Any,
    *,
    run_name: str,
    notify_webhook: str,
    summary_path: str,
) -> RunSummary:
    """The work of the run_summary exit step: summarize, write ``summary_path`` (JSON) and its ``.txt``, notify.

    Args:
        status: the ``dsl.PipelineTaskFinalStatus`` of the wrapped steps.
        run_name: the pipeline job's name.
        notify_webhook: a URL to POST the summary to ('' for none).
        summary_path: the output artifact's path (its folder is the run's task folder).

    Raises:
        RuntimeError: when the webhook cannot be reached (after the summary is written).
    """
    run_dir = os.path.dirname(os.path.dirname(summary_path))
    result = summarize_run(
        state=str(getattr(status, "state", "") or ""),
        job_resource_name=str(getattr(status, "pipeline_job_resource_name", "") or ""),
        error_message=str(getattr(status, "error_message", "") or ""),
        run_name=run_name,
        run_dir=run_dir,
        log_path=os.environ.get(LOG_ENV, ""),
        log_offset=int(os.environ.get(OFFSET_ENV, "0") or 0),
    )
    os.makedirs(os.path.dirname(summary_path) or ".", exist_ok=True)
    for path, content in ((summary_path, json.dumps(result.payload(), indent=1)), (summary_path + ".txt", result.details() + "\n")):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(content)
        os.replace(tmp, path)
    notified = ""
    if notify_webhook:
        code = post_webhook(notify_webhook, result.payload())
        notified = f"; notified {urllib.parse.urlsplit(notify_webhook).netloc} (HTTP {code})"
    print_summary(
        "run_summary",
        f"{result.status}" + (f" at {result.failed_step}" if result.failed_step else "") + notified,
        status=result.status,
        failed_step=result.failed_step,
    )
    return result
