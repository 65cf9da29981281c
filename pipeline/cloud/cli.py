"""The flags of ``taxifare setup``, ``submit`` and ``schedule``, registered on the CLI by :func:`add_commands`.

What the commands do with them is in :mod:`pipeline.cloud.commands` (:func:`run`).
"""

from __future__ import annotations

import argparse

from base.errors import Command
from pipeline.cloud.commands import run

#: The commands (and the schedule subcommands with flags of their own), as in :data:`serving.cli.COMMANDS`.
COMMANDS: dict[str, Command] = {
    "setup": {
        "help": "create the bucket and grant the run accounts access to it",
        "description": "Create the bucket if missing (in the multi-region of --region unless --location is given; uniform "
        "bucket-level access, public access prevention) and grant roles/storage.objectUser on that bucket only to the "
        "pipeline's and the training jobs' service accounts. Nothing project-wide changes. --dry-run prints the plan.",
    },
    "submit": {
        "help": "run the compiled pipeline on Vertex AI Pipelines (or Kubeflow with --kfp-host)",
        "description": "Submit the compiled pipeline as a Vertex AI PipelineJob and print its console link; --wait streams step "
        "states until it ends. With --kfp-host the run goes to a self-hosted Kubeflow Pipelines instead.",
    },
    "schedule": {
        "help": "scheduled retraining: create, list, pause, resume, delete",
        "description": "Manage scheduled runs: Vertex AI PipelineJobSchedules, or Kubeflow recurring runs with --kfp-host.",
    },
    "schedule create": {
        "help": "run the pipeline on a cron",
        "description": "Run the pipeline on a cron. Vertex takes five fields, optionally after TZ=Area/City ('TZ=America/New_York "
        "0 6 * * *'); for Kubeflow (--kfp-host) the cron is converted to its six fields (seconds first), and a TZ= must match "
        "the controller's zone (--kfp-timezone, UTC by default) because recurring runs have none of their own.",
    },
    "schedule list": {"help": "list schedules", "description": "List the schedules (Vertex: of the project and region)."},
}
__all__ = ["COMMANDS", "add_commands", "run"]

_ENV_HELP = """\
environment (read when a flag is not given):
  GOOGLE_CLOUD_PROJECT     --project
  TAXIFARE_REGION          --region
  TAXIFARE_PIPELINE_ROOT   --pipeline-root
  TAXIFARE_SERVICE_ACCOUNT --service-account
  TAXIFARE_KFP_HOST        --kfp-host
  GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default login`: the credentials
"""


def _add_cloud(parser: argparse.ArgumentParser, *, kfp: bool = True) -> None:
    parser.add_argument("--project", help="Google Cloud project id (default: $GOOGLE_CLOUD_PROJECT)")
    parser.add_argument("--region", help="Vertex AI region, e.g. us-central1 (default: $TAXIFARE_REGION)")
    parser.add_argument(
        "--api-endpoint",
        help="Vertex AI API endpoint HOST:PORT (default: REGION-aiplatform.googleapis.com); for private endpoints, emulators "
        "and tests. A loopback one (127.0.0.1, localhost) gets no credentials unless GOOGLE_APPLICATION_CREDENTIALS is set, "
        "and submit skips the SDK's pipeline-root bucket check there",
    )
    parser.add_argument(
        "--api-transport",
        choices=["grpc", "rest"],
        default="grpc",
        help="how the Vertex AI SDK talks to the API (default %(default)s); rest reaches a plain-HTTP local endpoint",
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
    parser.add_argument(
        "--template",
        help="compiled pipeline YAML (default compiled/taxifare_vertex.yaml; with --kfp-host compiled/taxifare_pipeline.yaml); "
        "a template made for the other engine is refused",
    )
    parser.add_argument(
        "--image",
        metavar="REGISTRY/PATH:TAG",
        help="compile the pipeline on the fly for this pushed image (steps, training job and serving container) instead of "
        "reading --template; it must name its registry host and a version tag (never :latest)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline parameter, repeatable (e.g. --param train_steps=5000); converted to the template's type and checked "
        "as taxifare run checks it",
    )
    parser.add_argument(
        "--notify-email",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="Vertex AI only: e-mail each run's final status to this address, repeatable, at most 3 (VertexNotificationEmailOp "
        "as the exit task around the whole run; with --image the e-mail variant is compiled, a --template must be "
        "compiled/taxifare_vertex_email.yaml or alike)",
    )
    parser.add_argument("--pipeline-root", help="gs:// folder for the runs' artifacts (default: $TAXIFARE_PIPELINE_ROOT)")
    parser.add_argument(
        "--service-account",
        help="account the steps run as, NAME@PROJECT.iam.gserviceaccount.com (Kubeflow: a Kubernetes service account) "
        "(default: $TAXIFARE_SERVICE_ACCOUNT, else the engine's default account)",
    )
    parser.add_argument("--no-cache", action="store_true", help="run every step even when an earlier run has its outputs")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a Vertex resource label, repeatable")
    parser.add_argument("--network", help="VPC network to peer with: projects/NUMBER/global/networks/NAME")
    parser.add_argument(
        "--experiment",
        help="experiment the runs join: on Vertex AI a Vertex AI Experiment (compare runs in the console; default: none), "
        "on Kubeflow (--kfp-host) a Kubeflow experiment (default: taxifare)",
    )


_FMT = argparse.RawDescriptionHelpFormatter


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``setup``, ``submit`` and ``schedule`` on a subparsers object."""
    _add_setup(subparsers)
    _add_submit(subparsers)
    _add_schedule(subparsers)


#: The flags of ``taxifare setup`` that take a value, with their help.
_SETUP_FLAGS = {
    "--project": "project that owns the bucket (default: $GOOGLE_CLOUD_PROJECT)",
    "--region": "Vertex AI region the pipelines run in (default: $TAXIFARE_REGION)",
    "--bucket": "bucket name, e.g. my-project-taxifare (default: $TAXIFARE_BUCKET)",
    "--location": "bucket location (default: the multi-region of --region: US, EU or ASIA)",
    "--service-account": "the pipeline's service account (default: $TAXIFARE_SERVICE_ACCOUNT)",
    "--training-service-account": "the training jobs' service account (default: --service-account)",
    "--project-number": "use the project's Compute Engine default account (NUMBER-compute@developer.gserviceaccount.com, what "
    "Vertex uses when no account is given) when --service-account is not given",
}


def _add_setup(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    setup = subparsers.add_parser("setup", **COMMANDS["setup"], epilog=_ENV_HELP, formatter_class=_FMT)
    for flag, text in _SETUP_FLAGS.items():
        setup.add_argument(flag, help=text)
    setup.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")


def _add_submit(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    submit = subparsers.add_parser("submit", **COMMANDS["submit"], epilog=_ENV_HELP, formatter_class=_FMT)
    _add_run_options(submit)
    _add_cloud(submit)
    submit.add_argument("--display-name", help="the run's name in the console (default: the pipeline's name)")
    submit.add_argument("--wait", action="store_true", help="print step states until the run ends; exit 1 unless it succeeded")
    submit.add_argument(
        "--poll-seconds", type=float, default=15.0, help="seconds between status polls with --wait, above 0 (default %(default)s)"
    )


def _add_schedule(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    schedule = subparsers.add_parser("schedule", **COMMANDS["schedule"], epilog=_ENV_HELP, formatter_class=_FMT)
    sched_sub = schedule.add_subparsers(dest="schedule_command", required=True, metavar="{create,list,pause,resume,delete}")
    create = sched_sub.add_parser("create", **COMMANDS["schedule create"], epilog=_ENV_HELP, formatter_class=_FMT)
    create.add_argument("--cron", required=True, help="five-field cron, e.g. '0 6 * * *' (06:00 daily), optionally 'TZ=Area/City ...'")
    create.add_argument("--display-name", help="the schedule's name (default: <pipeline>-schedule)")
    create.add_argument("--max-concurrent-runs", type=int, default=1, help="runs allowed at the same time (default %(default)s)")
    create.add_argument("--start-time", help="RFC 3339 time of the first possible run, e.g. 2026-12-01T06:00:00Z (default: now)")
    create.add_argument("--end-time", help="RFC 3339 time after which no run starts (default: never)")
    create.add_argument("--max-runs", type=int, help="stop after this many runs (Vertex only; default: no limit)")
    create.add_argument("--kfp-timezone", default="UTC", help="time zone of the Kubeflow recurring-run controller (default %(default)s)")
    _add_run_options(create)
    _add_cloud(create)
    lst = sched_sub.add_parser("list", **COMMANDS["schedule list"])
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
