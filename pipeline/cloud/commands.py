"""What ``taxifare setup``, ``submit`` and ``schedule`` do with their flags.

Every command runs in the same order: read flags and the environment, check every value
(:mod:`base.cloud_checks`, :mod:`pipeline.cloud.cron`, :mod:`pipeline.cloud.template`),
compile the template when ``--image`` asks for it, look credentials up
(:mod:`pipeline.cloud.credentials`), and only then talk to a service. A user error is one
``error:`` line and exit code 2, with nothing created and nothing sent.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
from typing import Any

from base import cloud_checks as s
from base.errors import InputError
from pipeline.cloud.cron import cron_to_kfp, validate_cron
from pipeline.cloud.template import (
    DEFAULT_TEMPLATES,
    Template,
    check_image,
    check_kind,
    check_parameters,
    check_step_images,
    load_template,
    with_fingerprint,
)
from pipeline.experiments import DEFAULT_EXPERIMENT, check_experiment


def _env(value: str | None, name: str) -> str | None:
    return value if value else os.environ.get(name) or None


def _kfp_host(args: argparse.Namespace) -> str | None:
    return _env(getattr(args, "kfp_host", None), "TAXIFARE_KFP_HOST")


def _template(args: argparse.Namespace, engine: str, scratch: contextlib.ExitStack) -> Template:
    """The template to send: ``--template`` (checked for ``engine``), or the pipeline compiled for ``--image``.

    With ``--notify-email`` the e-mail variant is compiled (``--image``); a ``--template`` must take
    ``notify_emails`` (:func:`pipeline.cloud.template.check_parameters` says so).
    """
    email = bool(args.notify_email)
    if email and engine != "vertex":
        raise InputError(
            "--notify-email works on Vertex AI Pipelines only (Vertex sends the mail): on Kubeflow pass --param notify_webhook=URL"
        )
    if args.image:
        if args.template:
            raise InputError("pass --template or --image, not both: --image compiles the project's pipeline for that image")
        image = check_image(args.image, registry=engine == "vertex")
        from pipeline.cloud.template import compile_for_image

        directory = scratch.enter_context(tempfile.TemporaryDirectory(prefix="taxifare-submit-"))
        return compile_for_image(engine, image, directory, email=email)
    template = load_template(args.template or DEFAULT_TEMPLATES[engine])
    check_kind(template, engine)
    if engine == "vertex":
        check_step_images(template)
    return template


def _parameters(args: argparse.Namespace, template: Template) -> dict[str, Any]:
    values: dict[str, Any] = s.parse_pairs(args.param, "--param")
    if args.notify_email:
        values["notify_emails"] = list(args.notify_email)
    return check_parameters(template, values)


def _location(args: argparse.Namespace) -> dict[str, Any]:
    """The checked settings of a Vertex call but the credentials (looked up last, by :func:`_where`)."""
    return {
        "project": s.check_project(_env(args.project, "GOOGLE_CLOUD_PROJECT")),
        "region": s.check_region(_env(args.region, "TAXIFARE_REGION")),
        "api_endpoint": s.check_api_endpoint(args.api_endpoint),
        "api_transport": args.api_transport,
    }


def _where(args: argparse.Namespace, location: dict[str, Any]) -> Any:
    from pipeline.cloud.credentials import credentials_for
    from pipeline.cloud.vertex_jobs import Location

    return Location(**location, credentials=credentials_for(anonymous=args.anonymous, api_endpoint=location["api_endpoint"]))


def _vertex_run(args: argparse.Namespace, scratch: contextlib.ExitStack) -> tuple[dict[str, Any], Any]:
    """Every check of a Vertex run or schedule, in order; returns the location (no credentials yet) and the run."""
    from pipeline.cloud.vertex_jobs import Run

    location = _location(args)
    root = s.check_pipeline_root(_env(args.pipeline_root, "TAXIFARE_PIPELINE_ROOT"))
    account = s.check_service_account(_env(args.service_account, "TAXIFARE_SERVICE_ACCOUNT"))
    network = s.check_network(args.network)
    labels = s.check_labels(s.parse_pairs(args.label, "--label"))
    experiment = check_experiment(args.experiment) if getattr(args, "experiment", None) else None
    template = _template(args, "vertex", scratch)
    run = Run(
        template=template,
        pipeline_root=root,
        parameters=_parameters(args, template),
        service_account=account,
        enable_caching=False if args.no_cache else None,
        labels=labels,
        network=network,
        display_name=s.check_display_name(args.display_name),
        experiment=experiment,
    )
    return location, run


def _kubeflow_run(args: argparse.Namespace, scratch: contextlib.ExitStack) -> dict[str, Any]:
    """Every check of a Kubeflow run or recurring run (the host checked before); keyword arguments of :mod:`pipeline.cloud.kubeflow`."""
    from pipeline.cloud import kubeflow

    root = kubeflow.check_root(_env(args.pipeline_root, "TAXIFARE_PIPELINE_ROOT"))
    account = s.check_kubernetes_account(_env(args.service_account, "TAXIFARE_SERVICE_ACCOUNT"))
    template = _template(args, "kubeflow", scratch)
    return {
        "template": template,
        "parameters": _parameters(args, template),
        "pipeline_root": root,
        "enable_caching": False if args.no_cache else None,
        "service_account": account,
        "experiment": args.experiment or DEFAULT_EXPERIMENT,
    }


def setup(args: argparse.Namespace) -> int:
    """``taxifare setup``: plan (and unless ``--dry-run``, apply) the bucket and its grants."""
    from pipeline.cloud import setup as cloud_setup

    project = s.check_project(_env(args.project, "GOOGLE_CLOUD_PROJECT"))
    region = s.check_region(_env(args.region, "TAXIFARE_REGION"))
    bucket = s.check_bucket_name(_env(args.bucket, "TAXIFARE_BUCKET"))
    number = s.check_project_number(args.project_number)
    pipeline_sa = _env(args.service_account, "TAXIFARE_SERVICE_ACCOUNT")
    if not pipeline_sa and number:
        pipeline_sa = cloud_setup.compute_default_account(number)
    plan = cloud_setup.plan_setup(project, region, bucket, pipeline_sa or "", args.training_service_account, args.location)
    if args.dry_run:
        print("taxifare setup would:")
        for action in plan:
            print(f"  {action.describe()}")
        return 0
    cloud_setup.apply_setup(plan, project=project, out=sys.stdout)
    return 0


def submit(args: argparse.Namespace) -> int:
    """``taxifare submit``: one run on Vertex AI (or Kubeflow with ``--kfp-host``)."""
    from pipeline.cloud.credentials import check_anonymous

    host = _kfp_host(args)
    check_anonymous(args.anonymous, args.api_endpoint, host)
    s.check_positive(args.poll_seconds, "--poll-seconds")
    s.check_display_name(args.display_name)
    with contextlib.ExitStack() as scratch:
        if host:
            from pipeline.cloud import kubeflow

            host = kubeflow.check_host(host)
            run_args = _kubeflow_run(args, scratch)
            client = kubeflow.connect(host, args.kfp_token)
            run_args["parameters"] = with_fingerprint(run_args["template"], run_args["parameters"])
            kubeflow.submit(client, host, run_name=args.display_name, **run_args)
            return 0
        from pipeline.cloud import vertex_jobs

        location, run = _vertex_run(args, scratch)
        where = _where(args, location)
        run = dataclasses.replace(run, parameters=with_fingerprint(run.template, run.parameters))
        job = vertex_jobs.submit(where, run, wait=args.wait, poll_seconds=args.poll_seconds)
    if args.wait:
        return 0 if job.state.name == "PIPELINE_STATE_SUCCEEDED" else 1
    return 0


def _schedule_create(args: argparse.Namespace, host: str | None) -> int:
    from pipeline.cloud import kubeflow, vertex_jobs

    cron = cron_to_kfp(args.cron, controller_timezone=args.kfp_timezone) if host else str(validate_cron(args.cron))
    s.check_at_least_one(args.max_concurrent_runs, "--max-concurrent-runs")
    s.check_at_least_one(args.max_runs, "--max-runs")
    start, end = s.parse_time(args.start_time, "--start-time"), s.parse_time(args.end_time, "--end-time")
    s.check_window(start, end)
    when = {
        "display_name": s.check_display_name(args.display_name),
        "max_concurrent_runs": args.max_concurrent_runs,
        "start_time": start,
        "end_time": end,
    }
    with contextlib.ExitStack() as scratch:
        if host:
            host = kubeflow.check_host(host)
            run_args = _kubeflow_run(args, scratch)
            made = kubeflow.create_schedule(kubeflow.connect(host, args.kfp_token), cron=cron, **run_args, **when)
            print(f"created recurring run {made.recurring_run_id}")
            return 0
        location, run = _vertex_run(args, scratch)
        schedule = vertex_jobs.Schedule(cron=cron, max_run_count=args.max_runs, **when)
        created = vertex_jobs.create_schedule(_where(args, location), run, schedule)
    print(f"created schedule {created.resource_name} (cron '{created.cron}')")
    return 0


def schedule(args: argparse.Namespace) -> int:
    """``taxifare schedule create|list|pause|resume|delete``."""
    from pipeline.cloud import kubeflow, vertex_jobs
    from pipeline.cloud.credentials import check_anonymous

    host = _kfp_host(args)
    check_anonymous(args.anonymous, args.api_endpoint, host)
    command = args.schedule_command
    if command == "create":
        return _schedule_create(args, host)
    if command != "list":
        what, fix = (
            ("recurring run", "see `taxifare schedule list --kfp-host URL`") if host else ("schedule", "see `taxifare schedule list`")
        )
        s.check_resource_id(args.schedule, what, fix)
    if host:
        client = kubeflow.connect(kubeflow.check_host(host), args.kfp_token)
        if command == "list":
            found = kubeflow.list_schedules(client)
        else:
            kubeflow.change_schedule(client, args.schedule.strip(), command)
    else:
        where = _where(args, _location(args))
        if command == "list":
            found = vertex_jobs.list_schedules(where, filter=args.filter)
        else:
            vertex_jobs.change_schedule(where, args.schedule.strip(), command, catch_up=getattr(args, "catch_up", False))
    if command != "list":
        print(f"{command}d {args.schedule.strip()}")
        return 0
    for info in found:
        print(info.line())
    if not found:
        print("no schedule")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``setup``, ``submit`` or ``schedule``.

    User errors print one ``error:`` line and return 2; a refusal by the service prints its
    message on one line and returns 1.
    """
    try:
        if args.command == "setup":
            return setup(args)
        if args.command == "submit":
            return submit(args)
        return schedule(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from google.api_core.exceptions import GoogleAPIError
        from kfp_server_api.exceptions import ApiException

        if isinstance(exc, GoogleAPIError | ApiException):
            reason = " ".join(str(exc).split())
            print(f"error: the service refused the request: {reason}", file=sys.stderr)
            return 1
        raise
