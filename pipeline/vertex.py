"""Submit and schedule the compiled pipeline on Vertex AI Pipelines or a self-hosted Kubeflow Pipelines.

Plain functions with explicit arguments; the command line (:mod:`pipeline.cloud_cli`) reads
settings from flags and the environment and passes them in. Nothing here schedules or
orchestrates by itself: Vertex runs go through ``google.cloud.aiplatform.PipelineJob`` and
``PipelineJobSchedule``, Kubeflow runs through ``kfp.Client``.

Every check a user can fail (a missing project, region or bucket, a pipeline root that is
not ``gs://``, a malformed cron, a parameter the template does not have, missing
credentials) raises :class:`~trainer.errors.InputError` with one line naming the problem
and the fix, before any request leaves the machine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

from trainer.errors import InputError

#: Terminal states of a Vertex pipeline job (``PipelineState`` names).
TERMINAL_STATES = frozenset({"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED", "PIPELINE_STATE_PAUSED"})
#: Where a missing setting can come from, for the error messages (flag, environment variable).
SETTING_SOURCES = {
    "project": ("--project", "GOOGLE_CLOUD_PROJECT"),
    "region": ("--region", "TAXIFARE_REGION"),
    "bucket": ("--bucket", "TAXIFARE_BUCKET"),
    "pipeline_root": ("--pipeline-root", "TAXIFARE_PIPELINE_ROOT"),
}
_CREDENTIALS_FIX = (
    "no Google Cloud credentials found: run `gcloud auth application-default login`, "
    "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
)


# --------------------------------------------------------------------------- checks


def require(**settings: str | None) -> None:
    """Check that each named setting is given.

    Raises:
        InputError: for the first empty one, naming its flag and environment variable.
    """
    for name, value in settings.items():
        if value is None or not str(value).strip():
            flag, env = SETTING_SOURCES.get(name, ("--" + name.replace("_", "-"), None))
            hint = f" or set {env}" if env else ""
            raise InputError(f"missing {name.replace('_', ' ')}: pass {flag}{hint}")


def check_pipeline_root(pipeline_root: str) -> str:
    """Check that the pipeline root is a ``gs://BUCKET/...`` URI (Vertex writes artifacts there).

    Returns:
        The root without a trailing slash.

    Raises:
        InputError: when it is empty or not on Cloud Storage.
    """
    require(pipeline_root=pipeline_root)
    root = pipeline_root.strip().rstrip("/")
    if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?", root):
        raise InputError(
            f"pipeline root {pipeline_root!r} is not on Cloud Storage: pass --pipeline-root gs://BUCKET/pipeline-root "
            "(Vertex AI writes every step's artifacts there)"
        )
    return root


def check_bucket_name(bucket: str) -> str:
    """Check a bucket name (``gs://`` prefix and trailing slash tolerated) and return the bare name.

    Raises:
        InputError: when it is missing or not a valid Cloud Storage bucket name.
    """
    require(bucket=bucket)
    name = bucket.strip().removeprefix("gs://").rstrip("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", name) or ".." in name or name.startswith("goog"):
        raise InputError(
            f"bucket {bucket!r} is not a valid bucket name: use 3-63 lowercase letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (e.g. my-project-taxifare)"
        )
    return name


def default_credentials() -> Any:
    """Application Default Credentials, or one clear error when there are none.

    Raises:
        InputError: when ``google.auth.default()`` finds no credentials.
    """
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{_CREDENTIALS_FIX} ({reason})" if reason else _CREDENTIALS_FIX) from exc
    return credentials


def parse_time(value: str | None, flag: str) -> str | None:
    """Check an RFC 3339 time (``2026-12-01T06:00:00Z``) and return it normalised to UTC ``...Z``.

    Raises:
        InputError: when it does not parse or has no time zone.
    """
    if value is None or not value.strip():
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{flag} {value!r} is not an RFC 3339 time: write e.g. 2026-12-01T06:00:00Z") from exc
    if parsed.tzinfo is None:
        raise InputError(f"{flag} {value!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_window(start_time: str | None, end_time: str | None) -> None:
    if start_time and end_time and end_time <= start_time:
        raise InputError(f"--end-time {end_time} is not after --start-time {start_time}: the schedule would never run")


# --------------------------------------------------------------------------- cron

_MONTHS = {m: i + 1 for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_CRON_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_CRON_HELP = (
    "write five fields 'MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK', e.g. '0 6 * * *' for 06:00 every day, "
    "optionally after 'TZ=Area/City ' (e.g. 'TZ=America/New_York 0 6 * * 1-5')"
)


@dataclasses.dataclass(frozen=True)
class Cron:
    """A checked five-field cron with its optional time zone."""

    fields: tuple[str, str, str, str, str]
    timezone: str | None = None

    def __str__(self) -> str:
        text = " ".join(self.fields)
        return f"TZ={self.timezone} {text}" if self.timezone else text


def _check_cron_value(token: str, name: str, low: int, high: int, names: Mapping[str, int], cron: str) -> int:
    value = names.get(token.upper()) if token.isalpha() else None
    if value is None:
        if not token.isdigit():
            raise InputError(f"cron {cron!r}: {name} has {token!r}, not a number; {_CRON_HELP}")
        value = int(token)
    if not low <= value <= high:
        raise InputError(f"cron {cron!r}: {name} {value} is outside {low}-{high}; {_CRON_HELP}")
    return value


def validate_cron(cron: str) -> Cron:
    """Check a Vertex AI schedule cron: five unix-cron fields, optionally after ``TZ=`` or ``CRON_TZ=``.

    Each field is ``*``, a value, a range ``a-b``, any of those with a step ``/n``, or a
    comma-separated list of them; months and weekdays may be names (``JAN``, ``MON``).

    Returns:
        The parsed cron.

    Raises:
        InputError: naming the bad field and showing the expected form.
    """
    if not cron or not cron.strip():
        raise InputError(f"the cron is empty; {_CRON_HELP}")
    parts = cron.split()
    timezone = None
    if parts[0].upper().startswith(("TZ=", "CRON_TZ=")):
        timezone = parts.pop(0).split("=", 1)[1]
        _check_timezone(timezone, cron)
    if parts and parts[0].startswith("@"):
        raise InputError(f"cron {cron!r}: macros such as {parts[0]} are not accepted by both engines; {_CRON_HELP}")
    if len(parts) != 5:
        raise InputError(f"cron {cron!r} has {len(parts)} fields, not 5; {_CRON_HELP}")
    for field, (name, low, high, names) in zip(parts, _CRON_FIELDS, strict=True):
        for item in field.split(","):
            base, _, step = item.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise InputError(f"cron {cron!r}: {name} step {step!r} must be a positive number; {_CRON_HELP}")
            if base in ("*", "?") if name.startswith("day") else base == "*":
                continue
            first, dash, last = base.partition("-")
            a = _check_cron_value(first, name, low, high, names, cron)
            if dash and _check_cron_value(last, name, low, high, names, cron) < a:
                raise InputError(f"cron {cron!r}: {name} range {base!r} runs backwards; {_CRON_HELP}")
    return Cron(fields=tuple(parts), timezone=timezone)  # type: ignore[arg-type]


def _check_timezone(timezone: str, cron: str) -> None:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(f"cron {cron!r}: unknown time zone {timezone!r}; use an IANA name such as America/New_York or UTC") from exc


def cron_to_kfp(cron: str, *, controller_timezone: str = "UTC") -> str:
    """Convert a Vertex (unix) cron to a Kubeflow Pipelines recurring-run cron.

    Kubeflow's recurring runs take six fields, seconds first (robfig/cron), and weekdays 0-6
    only; so ``0 6 * * 1-5`` becomes ``0 0 6 * * 1-5`` and a weekday 7 (Sunday) becomes 0.

    Time zones: a Kubeflow recurring run has no time zone of its own; the ScheduledWorkflow
    controller evaluates every cron in its zone (``CRON_SCHEDULE_TIMEZONE``, UTC unless the
    cluster operator changed it). A ``TZ=`` prefix equal to ``controller_timezone`` is
    therefore dropped; any other zone is refused rather than silently shifted (daylight
    saving makes a fixed hour offset wrong half the year).

    Raises:
        InputError: for a malformed cron or a time zone the controller does not use.
    """
    parsed = validate_cron(cron)
    if parsed.timezone and not _same_zone(parsed.timezone, controller_timezone):
        raise InputError(
            f"cron {cron!r}: Kubeflow recurring runs use the controller's time zone ({controller_timezone}), "
            f"not {parsed.timezone}: write the hours in {controller_timezone} without TZ=, or pass the controller's zone"
        )
    fields = list(parsed.fields)
    fields[4] = _weekday_seven_to_zero(fields[4])
    return " ".join(["0", *fields])


def _same_zone(a: str, b: str) -> bool:
    utc = {"UTC", "ETC/UTC", "ETC/UCT", "UCT", "ZULU", "ETC/ZULU", "GMT", "ETC/GMT"}
    return a.upper() == b.upper() or (a.upper() in utc and b.upper() in utc)


def _weekday_seven_to_zero(field: str) -> str:
    items = []
    for item in field.split(","):
        base, slash, step = item.partition("/")
        first, dash, last = base.partition("-")
        if base == "7":
            items.append("0" + slash + step)
        elif dash and last == "7":
            items.append(f"{first}-6{slash}{step}")
            if not slash and first != "0":
                items.append("0")
        else:
            items.append(item)
    return ",".join(dict.fromkeys(items))


# --------------------------------------------------------------------------- parameters


def template_parameters(template_path: str) -> dict[str, str]:
    """The pipeline's input parameters and their types (``NUMBER_INTEGER``, ``STRING``...).

    Raises:
        InputError: when the template cannot be read or is not a compiled pipeline.
    """
    import yaml

    try:
        with open(template_path, encoding="utf-8") as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d]
    except FileNotFoundError as exc:
        raise InputError(f"pipeline template {template_path!r} not found: compile it first (taxifare compile) or pass --template") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"pipeline template {template_path!r} is not YAML: pass a file written by taxifare compile") from exc
    spec = docs[0] if docs else {}
    if not isinstance(spec, dict) or "root" not in spec:
        raise InputError(f"{template_path!r} is not a compiled pipeline (no 'root'): pass a file written by taxifare compile")
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {name: p.get("parameterType", "STRING") for name, p in params.items()}


def coerce_parameters(template_path: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check parameter names against the template and convert ``name=value`` strings to their types.

    Raises:
        InputError: for a name the pipeline does not have or a value of the wrong type.
    """
    types = template_parameters(template_path)
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in types:
            raise InputError(f"the pipeline has no parameter {name!r}: use one of {', '.join(sorted(types))}")
        kind = types[name]
        if not isinstance(value, str):
            out[name] = value
            continue
        try:
            if kind == "NUMBER_INTEGER":
                out[name] = int(value)
            elif kind == "NUMBER_DOUBLE":
                out[name] = float(value)
            elif kind == "BOOLEAN":
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[name] = value.lower() in ("true", "1", "yes")
            else:
                out[name] = value
        except ValueError as exc:
            expected = {"NUMBER_INTEGER": "an integer", "NUMBER_DOUBLE": "a number", "BOOLEAN": "true or false"}.get(kind, kind)
            raise InputError(f"parameter {name}={value!r} is not {expected}") from exc
    return out


def parse_pairs(pairs: Iterable[str], flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``.

    Raises:
        InputError: for an item without ``=`` or with an empty name.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise InputError(f"{flag} {pair!r} is not NAME=VALUE: write e.g. {flag} train_steps=5000")
        out[name.strip()] = value
    return out


def check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """Check Vertex resource labels (lowercase keys and values, at most 63 characters).

    Raises:
        InputError: for a label Vertex would refuse.
    """
    out = dict(labels or {})
    for key, value in out.items():
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
            raise InputError(
                f"label {key}={value!r} is not a valid label: keys start with a lowercase letter; keys and values use "
                "lowercase letters, digits, '_' and '-', at most 63 characters"
            )
    return out


# --------------------------------------------------------------------------- Vertex AI


def _init_sdk(project: str, region: str, api_endpoint: str | None, credentials: Any, api_transport: str | None) -> None:
    from google.cloud import aiplatform

    aiplatform.init(
        project=project,
        location=region,
        credentials=credentials,
        # The regional endpoint is what the SDK computes itself; passing it explicitly resets a
        # test endpoint left in the SDK's global configuration by an earlier call.
        api_endpoint=api_endpoint or f"{region}-aiplatform.googleapis.com",
        api_transport=api_transport,
    )


def _pipeline_name(template_path: str) -> str:
    import yaml

    with open(template_path, encoding="utf-8") as fh:
        spec = next(d for d in yaml.safe_load_all(fh) if d)
    return str(spec.get("pipelineInfo", {}).get("name") or "taxifare")


def console_link(project: str, region: str, job_id: str) -> str:
    """The Cloud console page of a pipeline run."""
    return f"https://console.cloud.google.com/vertex-ai/locations/{region}/pipelines/runs/{job_id}?project={project}"


def _prepare(
    template_path: str,
    *,
    project: str,
    region: str,
    pipeline_root: str,
    parameters: Mapping[str, Any] | None,
    labels: Mapping[str, str] | None,
    credentials: Any,
) -> tuple[str, dict[str, Any], dict[str, str], Any]:
    require(project=project, region=region)
    root = check_pipeline_root(pipeline_root)
    values = coerce_parameters(template_path, parameters or {})
    checked_labels = check_labels(labels)
    return root, values, checked_labels, credentials if credentials is not None else default_credentials()


def submit(
    template_path: str,
    *,
    project: str,
    region: str,
    pipeline_root: str,
    parameters: Mapping[str, Any] | None = None,
    service_account: str | None = None,
    enable_caching: bool | None = None,
    labels: Mapping[str, str] | None = None,
    network: str | None = None,
    display_name: str | None = None,
    job_id: str | None = None,
    wait: bool = False,
    poll_seconds: float = 10.0,
    out: TextIO | None = None,
    api_endpoint: str | None = None,
    api_transport: str | None = None,
    credentials: Any = None,
) -> Any:
    """Submit the compiled pipeline as a Vertex AI ``PipelineJob``.

    Args:
        template_path: the compiled pipeline YAML.
        project: Google Cloud project id.
        region: Vertex AI region, e.g. ``us-central1``.
        pipeline_root: ``gs://`` directory for the run's artifacts.
        parameters: pipeline parameters (strings are converted to the template's types).
        service_account: the account the steps run as (default: the Compute Engine default account).
        enable_caching: ``False`` reruns every step; ``None`` keeps the compiled setting.
        labels: resource labels of the job.
        network: VPC network to peer with, ``projects/NUMBER/global/networks/NAME``.
        display_name: the run's name in the console (default: the pipeline's name).
        job_id: the job's id (default: the SDK's ``<pipeline>-<timestamp>``).
        wait: stream step states until the run ends (see :func:`watch`).
        poll_seconds: seconds between status polls when waiting.
        out: where progress lines go (default stdout).
        api_endpoint: Vertex AI API endpoint (default: the regional one); for private endpoints and tests.
        api_transport: ``grpc`` (default) or ``rest``.
        credentials: credentials to use (default: Application Default Credentials).

    Returns:
        The submitted ``aiplatform.PipelineJob``.

    Raises:
        InputError: a missing setting, a root not on ``gs://``, a bad parameter or label, no credentials.
    """
    root, values, checked_labels, credentials = _prepare(
        template_path,
        project=project,
        region=region,
        pipeline_root=pipeline_root,
        parameters=parameters,
        labels=labels,
        credentials=credentials,
    )
    from google.cloud import aiplatform

    _init_sdk(project, region, api_endpoint, credentials, api_transport)
    job = aiplatform.PipelineJob(
        display_name=display_name or _pipeline_name(template_path),
        template_path=template_path,
        job_id=job_id,
        pipeline_root=root,
        parameter_values=values,
        enable_caching=enable_caching,
        labels=checked_labels or None,
        credentials=credentials,
        project=project,
        location=region,
    )
    job.submit(service_account=service_account, network=network)
    stream = out or sys.stdout
    print(f"submitted {job.resource_name}\nconsole: {console_link(project, region, job.name)}", file=stream, flush=True)
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


def create_schedule(
    template_path: str,
    *,
    project: str,
    region: str,
    pipeline_root: str,
    cron: str,
    parameters: Mapping[str, Any] | None = None,
    display_name: str | None = None,
    service_account: str | None = None,
    enable_caching: bool | None = None,
    labels: Mapping[str, str] | None = None,
    network: str | None = None,
    max_concurrent_runs: int = 1,
    start_time: str | None = None,
    end_time: str | None = None,
    max_run_count: int | None = None,
    api_endpoint: str | None = None,
    api_transport: str | None = None,
    credentials: Any = None,
) -> Any:
    """Create a Vertex AI ``PipelineJobSchedule`` that runs the pipeline on a cron.

    Each scheduled run gets its own scheduled time (the pipeline reads it through
    ``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER`` to pick its data window).

    Args:
        template_path: the compiled pipeline YAML.
        project: Google Cloud project id.
        region: Vertex AI region.
        pipeline_root: ``gs://`` directory for the runs' artifacts.
        cron: five-field cron, optionally after ``TZ=Area/City``.
        parameters: pipeline parameters of every run.
        display_name: the schedule's name (default ``<pipeline>-schedule``).
        service_account: the account the runs execute as.
        enable_caching: ``False`` reruns every step of every run.
        labels: labels of the runs.
        network: VPC network of the runs.
        max_concurrent_runs: runs allowed at the same time (later ones wait).
        start_time: RFC 3339 time of the first possible run (default: now).
        end_time: RFC 3339 time after which no run starts (default: never).
        max_run_count: stop after this many runs (default: no limit).
        api_endpoint: Vertex AI API endpoint (default: the regional one).
        api_transport: ``grpc`` (default) or ``rest``.
        credentials: credentials to use (default: Application Default Credentials).

    Returns:
        The created ``aiplatform.PipelineJobSchedule``.

    Raises:
        InputError: a missing setting, a root not on ``gs://``, a malformed cron or time, no credentials.
    """
    checked = validate_cron(cron)
    if max_concurrent_runs < 1:
        raise InputError(f"--max-concurrent-runs must be at least 1 (got {max_concurrent_runs})")
    if max_run_count is not None and max_run_count < 1:
        raise InputError(f"--max-runs must be at least 1 (got {max_run_count})")
    start, end = parse_time(start_time, "--start-time"), parse_time(end_time, "--end-time")
    _check_window(start, end)
    root, values, checked_labels, credentials = _prepare(
        template_path,
        project=project,
        region=region,
        pipeline_root=pipeline_root,
        parameters=parameters,
        labels=labels,
        credentials=credentials,
    )
    from google.cloud import aiplatform

    _init_sdk(project, region, api_endpoint, credentials, api_transport)
    name = _pipeline_name(template_path)
    job = aiplatform.PipelineJob(
        display_name=name,
        template_path=template_path,
        pipeline_root=root,
        parameter_values=values,
        enable_caching=enable_caching,
        labels=checked_labels or None,
        credentials=credentials,
        project=project,
        location=region,
    )
    schedule = aiplatform.PipelineJobSchedule(
        pipeline_job=job, display_name=display_name or f"{name}-schedule", credentials=credentials, project=project, location=region
    )
    schedule.create(
        cron=str(checked),
        start_time=start,
        end_time=end,
        max_run_count=max_run_count,
        max_concurrent_run_count=max_concurrent_runs,
        service_account=service_account,
        network=network,
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


def _schedule_name(schedule: str, project: str, region: str) -> str:
    if not schedule or not schedule.strip():
        raise InputError("missing schedule: pass its id or full name (see `taxifare schedule list`)")
    if schedule.startswith("projects/"):
        return schedule
    return f"projects/{project}/locations/{region}/schedules/{schedule}"


def _schedule_sdk(project: str, region: str, api_endpoint: str | None, api_transport: str | None, credentials: Any) -> Any:
    require(project=project, region=region)
    credentials = credentials if credentials is not None else default_credentials()
    _init_sdk(project, region, api_endpoint, credentials, api_transport)
    return credentials


def list_schedules(
    *,
    project: str,
    region: str,
    filter: str | None = None,
    api_endpoint: str | None = None,
    api_transport: str | None = None,
    credentials: Any = None,
) -> list[ScheduleInfo]:
    """The project's pipeline schedules in ``region`` (ListSchedules).

    Raises:
        InputError: a missing project or region, no credentials.
    """
    credentials = _schedule_sdk(project, region, api_endpoint, api_transport, credentials)
    from google.cloud import aiplatform

    found = aiplatform.PipelineJobSchedule.list(filter=filter, project=project, location=region, credentials=credentials)
    out = []
    for s in found:
        res = s.gca_resource
        nxt = res.next_run_time.isoformat() if getattr(res, "next_run_time", None) else ""
        out.append(ScheduleInfo(name=res.name, display_name=res.display_name, state=res.state.name, cron=res.cron, next_run_time=nxt))
    return out


def _get_schedule(schedule: str, project: str, region: str, credentials: Any) -> Any:
    from google.cloud import aiplatform

    return aiplatform.PipelineJobSchedule.get(
        _schedule_name(schedule, project, region), project=project, location=region, credentials=credentials
    )


def pause_schedule(
    schedule: str, *, project: str, region: str, api_endpoint: str | None = None, api_transport: str | None = None, credentials: Any = None
) -> None:
    """Pause a schedule (no new runs until resumed).

    Raises:
        InputError: a missing project, region or schedule, no credentials.
    """
    credentials = _schedule_sdk(project, region, api_endpoint, api_transport, credentials)
    _get_schedule(schedule, project, region, credentials).pause()


def resume_schedule(
    schedule: str,
    *,
    project: str,
    region: str,
    catch_up: bool = False,
    api_endpoint: str | None = None,
    api_transport: str | None = None,
    credentials: Any = None,
) -> None:
    """Resume a paused schedule; ``catch_up`` also starts the runs missed while paused.

    Raises:
        InputError: a missing project, region or schedule, no credentials.
    """
    credentials = _schedule_sdk(project, region, api_endpoint, api_transport, credentials)
    _get_schedule(schedule, project, region, credentials).resume(catch_up=catch_up)


def delete_schedule(
    schedule: str, *, project: str, region: str, api_endpoint: str | None = None, api_transport: str | None = None, credentials: Any = None
) -> None:
    """Delete a schedule (runs it started are kept).

    Raises:
        InputError: a missing project, region or schedule, no credentials.
    """
    credentials = _schedule_sdk(project, region, api_endpoint, api_transport, credentials)
    _get_schedule(schedule, project, region, credentials).delete()


# --------------------------------------------------------------------------- Kubeflow Pipelines


def _kfp_client(host: str, client: Any = None, existing_token: str | None = None) -> Any:
    if client is not None:
        return client
    if not host or not re.match(r"https?://[^/]", host):
        raise InputError(f"--kfp-host {host!r} is not a URL: pass the Kubeflow Pipelines API address, e.g. http://localhost:8080")
    import warnings

    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host.rstrip("/"), existing_token=existing_token)


def _kfp_root(pipeline_root: str | None) -> str | None:
    if pipeline_root and not re.match(r"(gs|s3|minio)://[^/]", pipeline_root):
        raise InputError(f"pipeline root {pipeline_root!r} is not object storage: pass gs://BUCKET/root (or s3://, minio://)")
    return pipeline_root or None


def submit_kfp(
    template_path: str,
    host: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    pipeline_root: str | None = None,
    enable_caching: bool | None = None,
    service_account: str | None = None,
    experiment: str = "taxifare",
    run_name: str | None = None,
    existing_token: str | None = None,
    client: Any = None,
    out: TextIO | None = None,
) -> Any:
    """Start a run on a self-hosted Kubeflow Pipelines (``kfp.Client().create_run_from_pipeline_package``).

    Args:
        template_path: the compiled pipeline YAML.
        host: the KFP API address, e.g. ``http://localhost:8080``.
        parameters: pipeline parameters (strings converted to the template's types).
        pipeline_root: artifact root (default: the cluster's).
        enable_caching: ``False`` reruns every step.
        service_account: Kubernetes service account of the run's pods.
        experiment: experiment the run belongs to (created when missing).
        run_name: the run's name (default: ``<pipeline> <time>``).
        existing_token: a bearer token for clusters behind authentication.
        client: a ready ``kfp.Client`` (default: one for ``host``).
        out: where the run's link goes (default stdout).

    Returns:
        kfp's ``RunPipelineResult``.

    Raises:
        InputError: a host that is not a URL, a bad parameter or root.
    """
    values = coerce_parameters(template_path, parameters or {})
    root = _kfp_root(pipeline_root)
    kfp_client = _kfp_client(host, client, existing_token)
    result = kfp_client.create_run_from_pipeline_package(
        template_path,
        arguments=values,
        run_name=run_name,
        experiment_name=experiment,
        pipeline_root=root,
        enable_caching=enable_caching,
        service_account=service_account,
    )
    print(f"submitted run {result.run_id}\nconsole: {host.rstrip('/')}/#/runs/details/{result.run_id}", file=out or sys.stdout, flush=True)
    return result


def create_kfp_schedule(
    template_path: str,
    host: str,
    *,
    cron: str,
    parameters: Mapping[str, Any] | None = None,
    display_name: str | None = None,
    pipeline_root: str | None = None,
    enable_caching: bool | None = None,
    service_account: str | None = None,
    max_concurrent_runs: int = 1,
    start_time: str | None = None,
    end_time: str | None = None,
    experiment: str = "taxifare",
    controller_timezone: str = "UTC",
    existing_token: str | None = None,
    client: Any = None,
) -> Any:
    """Create a Kubeflow recurring run; the five-field cron is converted by :func:`cron_to_kfp`.

    Returns:
        kfp's ``V2beta1RecurringRun``.

    Raises:
        InputError: a malformed cron or time, a host that is not a URL, a bad parameter.
    """
    kfp_cron = cron_to_kfp(cron, controller_timezone=controller_timezone)
    if max_concurrent_runs < 1:
        raise InputError(f"--max-concurrent-runs must be at least 1 (got {max_concurrent_runs})")
    start, end = parse_time(start_time, "--start-time"), parse_time(end_time, "--end-time")
    _check_window(start, end)
    values = coerce_parameters(template_path, parameters or {})
    root = _kfp_root(pipeline_root)
    kfp_client = _kfp_client(host, client, existing_token)
    exp = kfp_client.create_experiment(name=experiment)
    return kfp_client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name=display_name or f"{_pipeline_name(template_path)}-schedule",
        cron_expression=kfp_cron,
        start_time=start,
        end_time=end,
        max_concurrency=max_concurrent_runs,
        no_catchup=True,
        params=values,
        pipeline_package_path=template_path,
        pipeline_root=root,
        enable_caching=enable_caching,
        service_account=service_account,
    )


def list_kfp_schedules(host: str, *, existing_token: str | None = None, client: Any = None) -> list[ScheduleInfo]:
    """The recurring runs of a Kubeflow Pipelines deployment."""
    response = _kfp_client(host, client, existing_token).list_recurring_runs(page_size=100)
    out = []
    for run in response.recurring_runs or []:
        cron = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else ""
        out.append(ScheduleInfo(name=run.recurring_run_id, display_name=run.display_name or "", state=str(run.status or ""), cron=cron))
    return out


def set_kfp_schedule(host: str, recurring_run_id: str, action: str, *, existing_token: str | None = None, client: Any = None) -> None:
    """``pause`` (disable), ``resume`` (enable) or ``delete`` a Kubeflow recurring run.

    Raises:
        InputError: a missing id or unknown action.
    """
    if not recurring_run_id:
        raise InputError("missing schedule: pass the recurring run's id (see `taxifare schedule list --kfp-host URL`)")
    kfp_client = _kfp_client(host, client, existing_token)
    calls = {
        "pause": kfp_client.disable_recurring_run,
        "resume": kfp_client.enable_recurring_run,
        "delete": kfp_client.delete_recurring_run,
    }
    if action not in calls:
        raise InputError(f"unknown schedule action {action!r}: use pause, resume or delete")
    calls[action](recurring_run_id)
