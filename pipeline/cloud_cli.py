"""``taxifare setup``, ``taxifare submit`` and ``taxifare schedule``: registered on the CLI by :func:`add_commands`.

Flags and environment variables are read here, at the edge, and passed to the plain
functions of :mod:`pipeline.vertex` and :mod:`pipeline.cloud_setup`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

COMMANDS = ("setup", "submit", "schedule")
VERTEX_TEMPLATE = os.path.join("compiled", "taxifare_vertex.yaml")

_ENV_HELP = """\
environment (read when a flag is not given):
  GOOGLE_CLOUD_PROJECT     --project
  TAXIFARE_REGION          --region
  TAXIFARE_PIPELINE_ROOT   --pipeline-root
  TAXIFARE_SERVICE_ACCOUNT --service-account
  TAXIFARE_KFP_HOST        --kfp-host
  GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default login`: the credentials
"""


def _env(value: str | None, name: str) -> str | None:
    return value if value else os.environ.get(name) or None


def _add_cloud(parser: argparse.ArgumentParser, *, kfp: bool = True) -> None:
    parser.add_argument("--project", help="Google Cloud project id (default: $GOOGLE_CLOUD_PROJECT)")
    parser.add_argument("--region", help="Vertex AI region, e.g. us-central1 (default: $TAXIFARE_REGION)")
    parser.add_argument(
        "--api-endpoint", help="Vertex AI API endpoint HOST:PORT (default: REGION-aiplatform.googleapis.com); for private endpoints, tests"
    )
    if kfp:
        parser.add_argument(
            "--kfp-host",
            help="use the Kubeflow Pipelines at this URL (e.g. http://localhost:8080) instead of Vertex AI (default: $TAXIFARE_KFP_HOST)",
        )
        parser.add_argument("--kfp-token", help="bearer token for a Kubeflow Pipelines behind authentication")
    parser.add_argument(
        "--anonymous",
        action="store_true",
        help="send no credentials: only for a local emulator or test server given with --api-endpoint or --kfp-host",
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--template", default=VERTEX_TEMPLATE, help="compiled pipeline YAML (default %(default)s)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline parameter, repeatable (e.g. --param train_steps=5000); converted to the template's type",
    )
    parser.add_argument("--pipeline-root", help="gs:// folder for the runs' artifacts (default: $TAXIFARE_PIPELINE_ROOT)")
    parser.add_argument(
        "--service-account", help="account the steps run as (default: $TAXIFARE_SERVICE_ACCOUNT, else the engine's default account)"
    )
    parser.add_argument("--no-cache", action="store_true", help="run every step even when an earlier run has its outputs")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a Vertex resource label, repeatable")
    parser.add_argument("--network", help="VPC network to peer with: projects/NUMBER/global/networks/NAME")
    parser.add_argument("--experiment", default="taxifare", help="Kubeflow experiment of the runs (default %(default)s; --kfp-host only)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``setup``, ``submit`` and ``schedule`` on a subparsers object."""
    fmt = argparse.RawDescriptionHelpFormatter
    setup = subparsers.add_parser(
        "setup",
        help="create the bucket and grant the run accounts access to it",
        description=(
            "Create the bucket if missing (in the multi-region of --region unless --location is given; uniform bucket-level access, "
            "public access prevention) and grant roles/storage.objectUser on that bucket only to the pipeline's and the training "
            "jobs' service accounts. Nothing project-wide changes. --dry-run prints the plan."
        ),
        epilog=_ENV_HELP,
        formatter_class=fmt,
    )
    setup.add_argument("--project", help="project that owns the bucket (default: $GOOGLE_CLOUD_PROJECT)")
    setup.add_argument("--region", help="Vertex AI region the pipelines run in (default: $TAXIFARE_REGION)")
    setup.add_argument("--bucket", help="bucket name, e.g. my-project-taxifare (default: $TAXIFARE_BUCKET)")
    setup.add_argument("--location", help="bucket location (default: the multi-region of --region: US, EU or ASIA)")
    setup.add_argument("--service-account", help="the pipeline's service account (default: $TAXIFARE_SERVICE_ACCOUNT)")
    setup.add_argument("--training-service-account", help="the training jobs' service account (default: --service-account)")
    setup.add_argument(
        "--project-number",
        help="use the project's Compute Engine default account (NUMBER-compute@developer.gserviceaccount.com, what Vertex uses "
        "when no account is given) when --service-account is not given",
    )
    setup.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")

    submit = subparsers.add_parser(
        "submit",
        help="run the compiled pipeline on Vertex AI Pipelines (or Kubeflow with --kfp-host)",
        description=(
            "Submit the compiled pipeline as a Vertex AI PipelineJob and print its console link; --wait streams step states until "
            "it ends. With --kfp-host the run goes to a self-hosted Kubeflow Pipelines instead."
        ),
        epilog=_ENV_HELP,
        formatter_class=fmt,
    )
    _add_run_options(submit)
    _add_cloud(submit)
    submit.add_argument("--display-name", help="the run's name in the console (default: the pipeline's name)")
    submit.add_argument("--wait", action="store_true", help="print step states until the run ends; exit 1 unless it succeeded")
    submit.add_argument("--poll-seconds", type=float, default=15.0, help="seconds between status polls with --wait (default %(default)s)")

    schedule = subparsers.add_parser(
        "schedule",
        help="scheduled retraining: create, list, pause, resume, delete",
        description="Manage scheduled runs: Vertex AI PipelineJobSchedules, or Kubeflow recurring runs with --kfp-host.",
        epilog=_ENV_HELP,
        formatter_class=fmt,
    )
    sched_sub = schedule.add_subparsers(dest="schedule_command", required=True, metavar="{create,list,pause,resume,delete}")
    create = sched_sub.add_parser(
        "create",
        help="run the pipeline on a cron",
        description=(
            "Run the pipeline on a cron. Vertex takes five fields, optionally after TZ=Area/City ('TZ=America/New_York 0 6 * * *'); "
            "for Kubeflow (--kfp-host) the cron is converted to its six fields (seconds first), and a TZ= must match the "
            "controller's zone (--kfp-timezone, UTC by default) because recurring runs have none of their own."
        ),
        epilog=_ENV_HELP,
        formatter_class=fmt,
    )
    create.add_argument("--cron", required=True, help="five-field cron, e.g. '0 6 * * *' (06:00 daily), optionally 'TZ=Area/City ...'")
    create.add_argument("--display-name", help="the schedule's name (default: <pipeline>-schedule)")
    create.add_argument("--max-concurrent-runs", type=int, default=1, help="runs allowed at the same time (default %(default)s)")
    create.add_argument("--start-time", help="RFC 3339 time of the first possible run, e.g. 2026-12-01T06:00:00Z (default: now)")
    create.add_argument("--end-time", help="RFC 3339 time after which no run starts (default: never)")
    create.add_argument("--max-runs", type=int, help="stop after this many runs (Vertex only; default: no limit)")
    create.add_argument("--kfp-timezone", default="UTC", help="time zone of the Kubeflow recurring-run controller (default %(default)s)")
    _add_run_options(create)
    _add_cloud(create)
    lst = sched_sub.add_parser("list", help="list schedules", description="List the schedules (Vertex: of the project and region).")
    lst.add_argument("--filter", help="Vertex list filter, e.g. 'display_name=\"taxifare-schedule\"'")
    _add_cloud(lst)
    for verb, text in (
        ("pause", "stop starting runs until resumed"),
        ("resume", "start runs again"),
        ("delete", "delete the schedule (its past runs are kept)"),
    ):
        p = sched_sub.add_parser(verb, help=text, description=f"{text[0].upper()}{text[1:]}.")
        p.add_argument("schedule", help="schedule id or projects/.../schedules/ID (Kubeflow: the recurring run id)")
        if verb == "resume":
            p.add_argument("--catch-up", action="store_true", help="also start the runs missed while paused (Vertex only)")
        _add_cloud(p)


def _credentials(args: argparse.Namespace) -> Any:
    from trainer.errors import InputError

    if not args.anonymous:
        return None  # Application Default Credentials, checked before any call
    if not (args.api_endpoint or getattr(args, "kfp_host", None)):
        raise InputError("--anonymous is only for a local emulator or test server: pass --api-endpoint or --kfp-host too")
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def _setup(args: argparse.Namespace) -> int:
    from pipeline import cloud_setup
    from pipeline.vertex import require

    project, region = _env(args.project, "GOOGLE_CLOUD_PROJECT"), _env(args.region, "TAXIFARE_REGION")
    require(project=project, region=region, bucket=_env(args.bucket, "TAXIFARE_BUCKET"))
    pipeline_sa = _env(args.service_account, "TAXIFARE_SERVICE_ACCOUNT")
    if not pipeline_sa and args.project_number:
        pipeline_sa = cloud_setup.compute_default_account(args.project_number)
    plan = cloud_setup.plan_setup(
        project or "",
        region or "",
        _env(args.bucket, "TAXIFARE_BUCKET") or "",
        pipeline_sa or "",
        args.training_service_account,
        args.location,
    )
    if args.dry_run:
        print("taxifare setup would:")
        for action in plan:
            print(f"  {action.describe()}")
        return 0
    cloud_setup.apply_setup(plan, project=project or "", out=sys.stdout)
    return 0


def _run_settings(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.vertex import check_labels, parse_pairs

    return {
        "parameters": parse_pairs(args.param, "--param"),
        "service_account": _env(args.service_account, "TAXIFARE_SERVICE_ACCOUNT"),
        "enable_caching": False if args.no_cache else None,
        "labels": check_labels(parse_pairs(args.label, "--label")),
    }


def _submit(args: argparse.Namespace) -> int:
    from pipeline import vertex

    settings = _run_settings(args)
    credentials = _credentials(args)
    kfp_host = _env(args.kfp_host, "TAXIFARE_KFP_HOST")
    if kfp_host:
        vertex.submit_kfp(
            args.template,
            kfp_host,
            settings["parameters"],
            pipeline_root=_env(args.pipeline_root, "TAXIFARE_PIPELINE_ROOT"),
            enable_caching=settings["enable_caching"],
            service_account=settings["service_account"],
            experiment=args.experiment,
            run_name=args.display_name,
            existing_token=args.kfp_token,
        )
        return 0
    job = vertex.submit(
        args.template,
        project=_env(args.project, "GOOGLE_CLOUD_PROJECT") or "",
        region=_env(args.region, "TAXIFARE_REGION") or "",
        pipeline_root=_env(args.pipeline_root, "TAXIFARE_PIPELINE_ROOT") or "",
        network=args.network,
        display_name=args.display_name,
        wait=args.wait,
        poll_seconds=args.poll_seconds,
        api_endpoint=args.api_endpoint,
        credentials=credentials,
        **settings,
    )
    if args.wait:
        return 0 if job.state.name == "PIPELINE_STATE_SUCCEEDED" else 1
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from pipeline import vertex

    credentials = _credentials(args)
    kfp_host = _env(args.kfp_host, "TAXIFARE_KFP_HOST")
    token = args.kfp_token
    where = {
        "project": _env(args.project, "GOOGLE_CLOUD_PROJECT") or "",
        "region": _env(args.region, "TAXIFARE_REGION") or "",
        "api_endpoint": args.api_endpoint,
        "credentials": credentials,
    }
    command = args.schedule_command
    if command == "create":
        settings = _run_settings(args)
        common = {
            "cron": args.cron,
            "parameters": settings["parameters"],
            "display_name": args.display_name,
            "enable_caching": settings["enable_caching"],
            "service_account": settings["service_account"],
            "max_concurrent_runs": args.max_concurrent_runs,
            "start_time": args.start_time,
            "end_time": args.end_time,
        }
        root = _env(args.pipeline_root, "TAXIFARE_PIPELINE_ROOT")
        if kfp_host:
            run = vertex.create_kfp_schedule(
                args.template,
                kfp_host,
                pipeline_root=root,
                experiment=args.experiment,
                controller_timezone=args.kfp_timezone,
                existing_token=token,
                **common,
            )
            print(f"created recurring run {run.recurring_run_id}")
            return 0
        sched = vertex.create_schedule(
            args.template,
            pipeline_root=root or "",
            labels=settings["labels"],
            network=args.network,
            max_run_count=args.max_runs,
            **common,
            **where,
        )
        print(f"created schedule {sched.resource_name} (cron '{sched.cron}')")
        return 0
    if command == "list":
        if kfp_host:
            found = vertex.list_kfp_schedules(kfp_host, existing_token=token)
        else:
            found = vertex.list_schedules(filter=args.filter, **where)
        for info in found:
            print(info.line())
        if not found:
            print("no schedule")
        return 0
    if kfp_host:
        vertex.set_kfp_schedule(kfp_host, args.schedule, command, existing_token=token)
    elif command == "pause":
        vertex.pause_schedule(args.schedule, **where)
    elif command == "resume":
        vertex.resume_schedule(args.schedule, catch_up=args.catch_up, **where)
    else:
        vertex.delete_schedule(args.schedule, **where)
    print(f"{command}d {args.schedule}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``setup``, ``submit`` or ``schedule``.

    User errors print one ``error:`` line and return 2; a refusal by the service prints its
    message and returns 1.
    """
    from trainer.errors import InputError

    try:
        if args.command == "setup":
            return _setup(args)
        if args.command == "submit":
            return _submit(args)
        return _schedule(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from google.api_core.exceptions import GoogleAPIError

        if isinstance(exc, GoogleAPIError):
            print(f"error: the service refused the request: {exc}", file=sys.stderr)
            return 1
        raise
