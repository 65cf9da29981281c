"""Runs and recurring runs on a self-hosted Kubeflow Pipelines (``kfp.Client``).

:func:`connect` checks that the API answers (one plain request to ``/apis/v2beta1/healthz``,
no retries) before building the client, so an unreachable ``--kfp-host`` is one line instead of
kfp's retries and tracebacks. Parameters and the template are checked by the caller.
"""

from __future__ import annotations

import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, TextIO

from base.errors import InputError
from pipeline.cloud.template import Template
from pipeline.cloud.vertex_jobs import ScheduleInfo

_HEALTHZ = "/apis/v2beta1/healthz"


def check_host(host: str | None) -> str:
    """``http(s)://HOST[:PORT]`` of the Kubeflow Pipelines API, without a trailing slash.

    Raises:
        InputError: when it is not such a URL.
    """
    if not host or not re.fullmatch(r"https?://[A-Za-z0-9.\[\]:-]+(/[^\s]*)?", host.strip()):
        raise InputError(f"--kfp-host {host!r} is not a URL: pass the Kubeflow Pipelines API address, e.g. http://localhost:8080")
    return host.strip().rstrip("/")


def check_root(pipeline_root: str | None) -> str | None:
    """A Kubeflow pipeline root: object storage (``gs://``, ``s3://``, ``minio://``), or ``None`` for the cluster's.

    Raises:
        InputError: for anything else.
    """
    if pipeline_root and not re.match(r"(gs|s3|minio)://[^/\s]", pipeline_root):
        raise InputError(f"pipeline root {pipeline_root!r} is not object storage: pass gs://BUCKET/root (or s3://, minio://)")
    return pipeline_root or None


def connect(host: str, existing_token: str | None = None, *, timeout: float = 10.0) -> Any:
    """A ``kfp.Client`` for ``host``, once its API has answered.

    Raises:
        InputError: when the host does not answer, or answers but not as Kubeflow Pipelines.
    """
    request = urllib.request.Request(host + _HEALTHZ, headers={"Authorization": f"Bearer {existing_token}"} if existing_token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # the scheme is checked by check_host
            pass
    except urllib.error.HTTPError as exc:
        raise InputError(
            f"--kfp-host {host} answered HTTP {exc.code} on {_HEALTHZ}: is it the Kubeflow Pipelines API "
            "(e.g. kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80), and is --kfp-token right?"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(
            f"--kfp-host {host} cannot be reached ({reason}): check the address and that the API runs "
            "(e.g. kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80)"
        ) from exc
    import warnings

    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host, existing_token=existing_token)


def submit(
    client: Any,
    host: str,
    template: Template,
    parameters: Mapping[str, Any],
    *,
    pipeline_root: str | None = None,
    enable_caching: bool | None = None,
    service_account: str | None = None,
    experiment: str = "taxifare",
    run_name: str | None = None,
    out: TextIO | None = None,
) -> Any:
    """Start a run (``create_run_from_pipeline_package``) and print its link.

    Returns:
        kfp's ``RunPipelineResult``.
    """
    result = client.create_run_from_pipeline_package(
        template.path,
        arguments=dict(parameters),
        run_name=run_name,
        experiment_name=experiment,
        pipeline_root=pipeline_root,
        enable_caching=enable_caching,
        service_account=service_account,
    )
    print(f"submitted run {result.run_id}\nconsole: {host}/#/runs/details/{result.run_id}", file=out or sys.stdout, flush=True)
    return result


def create_schedule(
    client: Any,
    template: Template,
    parameters: Mapping[str, Any],
    *,
    cron: str,
    display_name: str | None = None,
    pipeline_root: str | None = None,
    enable_caching: bool | None = None,
    service_account: str | None = None,
    max_concurrent_runs: int = 1,
    start_time: str | None = None,
    end_time: str | None = None,
    experiment: str = "taxifare",
) -> Any:
    """Create a recurring run (``no_catchup``) with a six-field Kubeflow cron (see :func:`pipeline.cloud.cron.cron_to_kfp`).

    Returns:
        kfp's ``V2beta1RecurringRun``.
    """
    exp = client.create_experiment(name=experiment)
    return client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name=display_name or f"{template.name}-schedule",
        cron_expression=cron,
        start_time=start_time,
        end_time=end_time,
        max_concurrency=max_concurrent_runs,
        no_catchup=True,
        params=dict(parameters),
        pipeline_package_path=template.path,
        pipeline_root=pipeline_root,
        enable_caching=enable_caching,
        service_account=service_account,
    )


def list_schedules(client: Any) -> list[ScheduleInfo]:
    """The recurring runs of the deployment."""
    response = client.list_recurring_runs(page_size=100)
    out = []
    for run in response.recurring_runs or []:
        cron = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else ""
        out.append(ScheduleInfo(name=run.recurring_run_id, display_name=run.display_name or "", state=str(run.status or ""), cron=cron))
    return out


def change_schedule(client: Any, recurring_run_id: str, action: str) -> None:
    """``pause`` (disable), ``resume`` (enable) or ``delete`` a recurring run."""
    calls = {"pause": client.disable_recurring_run, "resume": client.enable_recurring_run, "delete": client.delete_recurring_run}
    if action not in calls:
        raise ValueError(f"unknown schedule action {action!r}: use pause, resume or delete")
    calls[action](recurring_run_id)
