"""The exit step, run_summary: what happened to the run, written down and sent where people look.

The pipeline wraps its steps in ``dsl.ExitHandler(run_summary)``, so this step runs after
them whatever happened, with the final status of the group (``dsl.PipelineTaskFinalStatus``).
:func:`summarize_run` turns that into a summary (status, the failed step, the tail of its log,
the link to the run), writes it as JSON and text, and, when ``notify_webhook`` is set, POSTs it
as JSON (:func:`base.webhook.post_webhook`: ``text`` for Slack / Google Chat style hooks, and the fields).

Where the facts come from:

* **Vertex AI**: the status names the job (``projects/P/locations/L/pipelineJobs/ID``: the link
  to the console) and its error message names the failed tasks ("... The failed tasks are:
  [full-train]."); the step's own log is in Cloud Logging, linked from the run page.
* **kfp.local** (``taxifare run``): the status only says the group failed. The steps' own
  records (:mod:`components.common`, in the folder ``TAXIFARE_STEP_SUMMARIES`` names) say which
  step failed for good, its error line and its traceback; ``taxifare run`` tells the step where
  the run's log is (``TAXIFARE_RUN_LOG``), for people to read on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from base import atomic
from base.webhook import post_webhook
from components.common import summary as print_summary
from components.contracts import SUMMARY_DIR_ENV, read_events

#: Environment set by ``taxifare run`` for the exit step (kfp.local only): the run's log file.
LOG_ENV = "TAXIFARE_RUN_LOG"
LOG_TAIL_LINES = 30
_FAILED_TASKS = re.compile(r"failed tasks are:\s*\[([^\]]*)\]", re.IGNORECASE)
_JOB = re.compile(r"^projects/([^/]+)/locations/([^/]+)/pipelineJobs/([^/]+)$")
#: The longest reason a chat message carries (the rest is in the log).
MAX_REASON = 500


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


def failed_step_from_records(records: str) -> tuple[str, list[str], str]:
    """``(step, its traceback, its error line)`` of the first step whose last attempt failed, from the run's records.

    A step whose last record is its start, before another step's (this one's), was killed.
    """
    last: dict[str, dict[str, Any]] = {}
    for record in read_events(records)[0]:
        if record.get("event") in ("started", "finished") and record.get("step"):
            last[str(record["step"])] = record
    running = [step for step, record in last.items() if record.get("event") == "started"]
    for step, record in last.items():
        if record.get("event") == "finished" and record.get("status") == "failed":
            return step, [str(line) for line in record.get("traceback") or []], str(record.get("error", ""))
        if record.get("event") == "started" and step != running[-1]:
            return step, [], "the step stopped without a Python error (killed, or out of memory?): see the log"
    return "", [], ""


def summarize_run(
    *,
    state: str,
    job_resource_name: str,
    error_message: str,
    run_name: str,
    run_dir: str = "",
    log_path: str = "",
    records: str = "",
) -> RunSummary:
    """The summary of a finished run from its final status (and, locally, its steps' records).

    Args:
        state: the final state of the steps (``SUCCEEDED``, ``FAILED``, ``CANCELLED``...).
        job_resource_name: the pipeline job's resource name (Vertex: ``projects/.../pipelineJobs/ID``).
        error_message: the status's error message.
        run_name: the run's name (the pipeline job name).
        run_dir: the run's directory or ``gs://`` prefix ('' when unknown), the link of a local run.
        log_path: the run's log file (kfp.local), '' for none.
        records: the folder of the run's step records (kfp.local), '' for none.
    """
    result = RunSummary(run=run_name, status=state or "UNKNOWN")
    result.link = console_link(job_resource_name) or (run_dir if run_dir else "")
    if result.ok:
        return result
    failed = failed_tasks_from_message(error_message)
    if records:
        step, tail, error = failed_step_from_records(records)
        if step:
            failed = failed or [step]
            result.log_tail = tail[-LOG_TAIL_LINES:]
            result.error = error
            result.log = log_path
    result.failed_step = ",".join(t.replace("-", "_") for t in failed)
    if not result.error:
        result.error = error_message or "no error message"
    return result


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
        records=os.environ.get(SUMMARY_DIR_ENV, ""),
    )
    os.makedirs(os.path.dirname(summary_path) or ".", exist_ok=True)
    for path, content in ((summary_path, json.dumps(result.payload(), indent=1)), (summary_path + ".txt", result.details() + "\n")):
        atomic.write_text(path, content)
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
