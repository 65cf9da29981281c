"""``taxifare setup``: the lab's bucket and its bucket-level grants, done by the tool.

The lab created a bucket (``gsutil mb``) and gave the training service account read/write
on it. :func:`plan_setup` lists what that takes; :func:`apply_setup` does it with
google-cloud-storage. Nothing is changed at the project level.

Least privilege: each service account gets ``roles/storage.objectUser`` **on this bucket
only**. It reads, lists, creates, overwrites and deletes objects, which is exactly what the
runs need: the pipeline's steps read the data and write artifacts under the pipeline root
(and replace a split or a report when a step is retried); training writes checkpoints and
TensorBoard files, deletes checkpoints older than the last three, and publishes the export
by a rename (a copy and a delete on Cloud Storage). ``objectViewer`` + ``objectCreator`` (what
the Vertex SDK grants to buckets it creates) cannot delete or overwrite, so resumed training
and retried steps would fail; ``storage.admin`` or ``objectAdmin`` would also allow changing
the bucket's IAM policy or settings, which no run needs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from base.cloud_checks import VERTEX_REGIONS, check_bucket_name, check_project, check_region, check_service_account
from base.errors import InputError

#: The role each run's account gets on the bucket (see the module docstring).
OBJECT_ROLE = "roles/storage.objectUser"
_MULTI_REGIONS = {"us": "US", "northamerica": "US", "southamerica": "US", "europe": "EU", "asia": "ASIA", "australia": "ASIA"}
#: Bucket locations besides the regions: the multi-regions and the predefined dual-regions.
_LOCATIONS = frozenset({"US", "EU", "ASIA", "NAM4", "EUR4", "EUR5", "EUR7", "EUR8", "ASIA1"})


def default_location(region: str) -> str:
    """The multi-region holding ``region`` (``us-central1`` -> ``US``), as the lab's bucket was."""
    return _MULTI_REGIONS.get(region.split("-", 1)[0].lower(), region.upper())


def compute_default_account(project_number: str) -> str:
    """The account Vertex AI runs pipelines and custom jobs as when none is given."""
    return f"{project_number}-compute@developer.gserviceaccount.com"


@dataclasses.dataclass(frozen=True)
class Action:
    """One change :func:`apply_setup` makes."""

    kind: str  # "create_bucket" | "grant"
    bucket: str
    location: str = ""
    role: str = ""
    member: str = ""

    def describe(self) -> str:
        """One line for ``--dry-run``."""
        if self.kind == "create_bucket":
            return (
                f"create bucket gs://{self.bucket} in {self.location} (if missing; uniform bucket-level access, "
                "public access prevention enforced)"
            )
        return f"grant {self.role} on gs://{self.bucket} to {self.member}"


def _member(account: str, flag: str) -> str:
    return f"serviceAccount:{check_service_account(account.strip().removeprefix('serviceAccount:'), flag=flag)}"


def check_location(location: str | None) -> str | None:
    """A bucket location: a region, a multi-region (``US``, ``EU``, ``ASIA``) or a predefined dual-region.

    Raises:
        InputError: for anything else.
    """
    if location is None:
        return None
    value = location.strip().upper()
    if value not in _LOCATIONS and value.lower() not in VERTEX_REGIONS:
        raise InputError(f"--location {location!r} is not a bucket location: use US, EU, ASIA or a region such as us-central1")
    return value


def plan_setup(
    project: str, region: str, bucket: str, pipeline_sa: str, training_sa: str | None = None, location: str | None = None
) -> list[Action]:
    """What ``taxifare setup`` will do, without doing it.

    Args:
        project: project that owns the bucket (and is billed for it).
        region: the Vertex AI region the pipelines run in.
        bucket: bucket name (``gs://`` prefix tolerated).
        pipeline_sa: the service account the pipeline's steps run as.
        training_sa: the service account of the training jobs (default: ``pipeline_sa``).
        location: bucket location (default: the multi-region holding ``region``).

    Returns:
        The bucket creation (done only when the bucket is missing), then one grant per account.

    Raises:
        InputError: a missing or malformed project, region, bucket, location or account.
    """
    check_project(project)
    check_region(region)
    name = check_bucket_name(bucket)
    location = check_location(location)
    if not pipeline_sa or not pipeline_sa.strip():
        raise InputError("missing service account: pass --service-account NAME@PROJECT.iam.gserviceaccount.com (the pipeline's account)")
    members = dict.fromkeys([_member(pipeline_sa, "--service-account"), _member(training_sa or pipeline_sa, "--training-service-account")])
    actions = [Action("create_bucket", name, location=location or default_location(region))]
    actions += [Action("grant", name, role=OBJECT_ROLE, member=m) for m in members]
    return actions


def apply_setup(actions: list[Action], *, project: str, client: Any = None, out: Any = None) -> list[str]:
    """Carry out a plan from :func:`plan_setup` (idempotent: an existing bucket or grant is kept).

    Args:
        actions: the plan.
        project: the bucket's project.
        client: a ``google.cloud.storage.Client`` (default: one for ``project`` with default credentials).
        out: where progress lines go (default: nowhere).

    Returns:
        One line per action, saying what was done or already in place.
    """
    if client is None:
        from google.cloud import storage

        from pipeline.cloud.credentials import default_credentials

        client = storage.Client(project=project, credentials=default_credentials())
    done: list[str] = []

    def say(line: str) -> None:
        done.append(line)
        if out is not None:
            print(line, file=out, flush=True)

    for action in (a for a in actions if a.kind == "create_bucket"):
        bucket = client.bucket(action.bucket)
        if bucket.exists():
            say(f"bucket gs://{action.bucket} exists: kept as it is")
            continue
        bucket.iam_configuration.uniform_bucket_level_access_enabled = True
        bucket.iam_configuration.public_access_prevention = "enforced"
        client.create_bucket(bucket, project=project, location=action.location)
        say(f"created bucket gs://{action.bucket} in {action.location}")
    grants = [a for a in actions if a.kind == "grant"]
    for name in dict.fromkeys(a.bucket for a in grants):
        bucket = client.bucket(name)
        policy = bucket.get_iam_policy(requested_policy_version=3)
        changed = False
        for action in (a for a in grants if a.bucket == name):
            binding = next((b for b in policy.bindings if b["role"] == action.role and not b.get("condition")), None)
            if binding is None:
                binding = {"role": action.role, "members": set()}
                policy.bindings.append(binding)
            if action.member in binding["members"]:
                say(f"{action.member} already has {action.role} on gs://{name}")
                continue
            binding["members"] = set(binding["members"]) | {action.member}
            changed = True
            say(f"granted {action.role} on gs://{name} to {action.member}")
        if changed:
            bucket.set_iam_policy(policy)
    return done
