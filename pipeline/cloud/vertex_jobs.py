"""Runs and schedules of the compiled pipeline on Vertex AI Pipelines (``aiplatform.PipelineJob``).

Plain functions of checked settings: :class:`Location` says where (project, region, endpoint,
transport, credentials), :class:`Run` says what (template, root, parameters, account, labels,
network). :func:`pipeline_job` is the one place a ``PipelineJob`` is built; :func:`submit` sends
it, :func:`create_schedule` wraps it in a ``PipelineJobSchedule``. The command line
(:mod:`pipeline.cloud.commands`) checks every setting before it calls these.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from base.cloud_checks import is_loopback
from pipeline.cloud.template import Template

#: Terminal states of a Vertex pipeline job (``PipelineState`` names).
TERMINAL_STATES = frozenset({"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED", "PIPELINE_STATE_PAUSED"})


@dataclasses.dataclass(frozen=True)
class Location:
    """Where Vertex AI calls go."""

    project: str
    region: str
    api_endpoint: str | None = None  # default: REGION-aiplatform.googleapis.com
    api_transport: str | None = None  # "grpc" (the SDK's default) or "rest"
    credentials: Any = None  # default: Application Default Credentials

    @property
    def local(self) -> bool:
        """Whether the endpoint is on this machine (an emulator or a test server)."""
        return is_loopback(self.api_endpoint)


@dataclasses.dataclass(frozen=True)
class Run:
    """What a pipeline run (or every run of a schedule) is: the template and its run-time settings."""

    template: Template
    pipeline_root: str
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    service_account: str | None = None
    enable_caching: bool | None = None  # None keeps the compiled setting
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    network: str | None = None
    display_name: str | None = None
    #: The Vertex AI Experiment the run joins (checked); ``None``: none.
    experiment: str | None = None


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a schedule runs: cron (checked), concurrency, window (RFC 3339, normalised), run limit."""

    cron: str
    display_name: str | None = None
    max_concurrent_runs: int = 1
    start_time: str | None = None
    end_time: str | None = None
    max_run_count: int | None = None


def init_sdk(where: Location) -> None:
    """Point the SDK at ``where`` (also resets an endpoint left by an earlier call in this process)."""
    from google.cloud import aiplatform

    endpoint = where.api_endpoint or f"{where.region}-aiplatform.googleapis.com"
    if where.api_transport == "rest" and where.local and not re.match(r"https?://", endpoint):
        endpoint = "http://" + endpoint  # a bare HOST:PORT would make the REST transport use https
    elif where.api_transport != "rest":
        endpoint = re.sub(r"^https?://", "", endpoint)  # gRPC takes HOST:PORT
    aiplatform.init(
        project=where.project,
        location=where.region,
        credentials=where.credentials,
        api_endpoint=endpoint,
        api_transport=where.api_transport or "grpc",
    )


def console_link(project: str, region: str, job_id: str) -> str:
    """The Cloud console page of a pipeline run."""
    return f"https://console.cloud.google.com/vertex-ai/locations/{region}/pipelines/runs/{job_id}?project={project}"


def pipeline_job(where: Location, run: Run, *, job_id: str | None = None) -> Any:
    """The ``aiplatform.PipelineJob`` of a run (built here and nowhere else; nothing is sent)."""
    from google.cloud import aiplatform

    init_sdk(where)
    return aiplatform.PipelineJob(
        display_name=run.display_name or run.template.name,
        template_path=run.template.path,
        job_id=job_id,
        pipeline_root=run.pipeline_root,
        parameter_values=dict(run.parameters),
        enable_caching=run.enable_caching,
        labels=dict(run.labels) or None,
        credentials=where.credentials,
        project=where.project,
        location=where.region,
    )


def _create(job: Any, where: Location, run: Run) -> Any:
    """Send the create request of ``job``; returns the created job (``job`` itself, or the created one read back)."""
    if run.experiment:  # the SDK's submit path: it creates the experiment and adds the run to it
        from pipeline.experiments import submit_in_experiment

        submit_in_experiment(job, run.experiment, service_account=run.service_account, network=run.network)
        return job
    if not where.local:
        job.submit(service_account=run.service_account, network=run.network)
        return job
    # A local endpoint: PipelineJob.submit() would first check (and maybe create) the pipeline
    # root's bucket through storage.googleapis.com and cloudresourcemanager.googleapis.com.
    # Send only the create request, as submit() does after that check, with the SDK's public
    # pieces: the request body (to_dict), the job's API client, and PipelineJob.get to read the
    # created job back (the job object keeps its resource in a private attribute).
    from google.cloud import aiplatform, aiplatform_v1

    body = aiplatform_v1.PipelineJob.from_json(json.dumps(job.to_dict()))
    if run.service_account:
        body.service_account = run.service_account
    if run.network:
        body.network = run.network
    parent = aiplatform_v1.PipelineServiceClient.common_location_path(job.project, job.location)
    created = job.api_client.create_pipeline_job(parent=parent, pipeline_job=body, pipeline_job_id=job.job_id)
    return aiplatform.PipelineJob.get(created.name, project=where.project, location=where.region, credentials=where.credentials)


def submit(
    where: Location, run: Run, *, job_id: str | None = None, wait: bool = False, poll_seconds: float = 10.0, out: TextIO | None = None
) -> Any:
    """Submit a run as a Vertex AI ``PipelineJob``; print its name and console link.

    Args:
        where: project, region, endpoint, transport, credentials.
        run: template, pipeline root, parameters (already of the template's types), account, labels, network.
        job_id: the job's id (default: the SDK's ``<pipeline>-<timestamp>``).
        wait: stream step states until the run ends (see :func:`watch`).
        poll_seconds: seconds between status polls when waiting.
        out: where progress lines go (default stdout).

    Returns:
        The submitted ``aiplatform.PipelineJob``.
    """
    job = _create(pipeline_job(where, run, job_id=job_id), where, run)
    stream = out or sys.stdout
    print(f"submitted {job.resource_name}\nconsole: {console_link(where.project, where.region, job.name)}", file=stream, flush=True)
    if wait:
        watch(job, poll_seconds=poll_seconds, out=stream)
    return job


def watch(job: Any, *, poll_seconds: float = 10.0, out: TextIO | None = None, sleep: Callable[[float], None] = time.sleep) -> str:
    """Print each step's state as it changes until the job ends (GetPipelineJob polls).

    Returns:
        The job's final state name, e.g. ``PIPELINE_STATE_SUCCEEDED``.
    """
    stream = out or sys.stdout
    seen: dict[str, str] = {}
    last_state = ""
    while True:
        state = job.state.name  # refreshes the resource from the service
        for task in job.gca_resource.job_detail.task_details:
            task_state = task.state.name
            if task.task_name and seen.get(task.task_name) != task_state:
                seen[task.task_name] = task_state
                print(f"  step {task.task_name}: {task_state}", file=stream, flush=True)
        if state != last_state:
            print(f"pipeline: {state}", file=stream, flush=True)
            last_state = state
        if state in TERMINAL_STATES:
            error = job.gca_resource.error
            if error and error.message:
                print(f"error: {error.message}", file=stream, flush=True)
            return state
        sleep(poll_seconds)


def create_schedule(where: Location, run: Run, when: Schedule) -> Any:
    """Create a Vertex AI ``PipelineJobSchedule`` that starts ``run`` on ``when.cron``.

    Each scheduled run gets its own scheduled time (the pipeline reads it through
    ``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER`` to pick its data window).

    Returns:
        The created ``aiplatform.PipelineJobSchedule``.
    """
    from google.cloud import aiplatform

    job = pipeline_job(where, run)
    schedule = aiplatform.PipelineJobSchedule(
        pipeline_job=job,
        display_name=when.display_name or f"{run.template.name}-schedule",
        credentials=where.credentials,
        project=where.project,
        location=where.region,
    )
    schedule.create(
        cron=when.cron,
        start_time=when.start_time,
        end_time=when.end_time,
        max_run_count=when.max_run_count,
        max_concurrent_run_count=when.max_concurrent_runs,
        service_account=run.service_account,
        network=run.network,
    )
    return schedule


@dataclasses.dataclass
class ScheduleInfo:
    """What ``schedule list`` shows of one schedule (Vertex or Kubeflow)."""

    name: str
    display_name: str
    state: str
    cron: str
    next_run_time: str = ""

    def line(self) -> str:
        """One line for the terminal."""
        after = f"  next {self.next_run_time}" if self.next_run_time else ""
        return f"{self.name}  {self.display_name}  {self.state}  '{self.cron}'{after}"


def schedule_name(schedule: str, where: Location) -> str:
    """The full resource name of a schedule given by id or by full name."""
    if schedule.startswith("projects/"):
        return schedule
    return f"projects/{where.project}/locations/{where.region}/schedules/{schedule}"


def list_schedules(where: Location, *, filter: str | None = None) -> list[ScheduleInfo]:
    """The project's pipeline schedules in the region (ListSchedules)."""
    from google.cloud import aiplatform

    init_sdk(where)
    found = aiplatform.PipelineJobSchedule.list(filter=filter, project=where.project, location=where.region, credentials=where.credentials)
    out = []
    for s in found:
        res = s.gca_resource
        nxt = res.next_run_time.isoformat() if getattr(res, "next_run_time", None) else ""
        out.append(ScheduleInfo(name=res.name, display_name=res.display_name, state=res.state.name, cron=res.cron, next_run_time=nxt))
    return out


def change_schedule(where: Location, schedule: str, action: str, *, catch_up: bool = False) -> None:
    """``pause`` (no new runs), ``resume`` (``catch_up`` also starts the runs missed) or ``delete`` a schedule.

    Deleting a schedule keeps the runs it started.
    """
    from google.cloud import aiplatform

    init_sdk(where)
    found = aiplatform.PipelineJobSchedule.get(
        schedule_name(schedule, where), project=where.project, location=where.region, credentials=where.credentials
    )
    if action == "pause":
        found.pause()
    elif action == "resume":
        found.resume(catch_up=catch_up)
    elif action == "delete":
        found.delete()
    else:
        raise ValueError(f"unknown schedule action {action!r}: use pause, resume or delete")
