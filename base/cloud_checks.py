"""Checks of the cloud settings: project, region, bucket, pipeline root, accounts, network, labels, times, ids.

Each check is a plain function of its value that returns it normalised or raises
:class:`~base.errors.InputError` with one line naming the problem and the fix. Nothing here
touches the network or looks credentials up: the commands run every check first, so a bad value
never reaches a cloud API (nor Google's credential look-up, which probes the GCE metadata server).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping

from base.errors import InputError

#: Regions where Vertex AI runs pipelines, custom jobs and endpoints: the regional locations of
#: google-cloud-aiplatform 1.165 (``constants.base.SUPPORTED_REGIONS`` without ``global``, which
#: has no pipelines). A test keeps this list inside the SDK's.
VERTEX_REGIONS = frozenset(
    {
        "africa-south1",
        "asia-east1",
        "asia-east2",
        "asia-northeast1",
        "asia-northeast2",
        "asia-northeast3",
        "asia-south1",
        "asia-south2",
        "asia-southeast1",
        "asia-southeast2",
        "australia-southeast1",
        "australia-southeast2",
        "europe-central2",
        "europe-north1",
        "europe-north2",
        "europe-southwest1",
        "europe-west1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        "europe-west8",
        "europe-west9",
        "europe-west12",
        "me-central1",
        "me-central2",
        "me-west1",
        "northamerica-northeast1",
        "northamerica-northeast2",
        "southamerica-east1",
        "southamerica-west1",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-east7",
        "us-south1",
        "us-west1",
        "us-west2",
        "us-west3",
        "us-west4",
        "us-west8",
    }
)
#: Where a missing setting can come from, for the error messages (flag, environment variable).
SETTING_SOURCES = {
    "project": ("--project", "GOOGLE_CLOUD_PROJECT"),
    "region": ("--region", "TAXIFARE_REGION"),
    "bucket": ("--bucket", "TAXIFARE_BUCKET"),
    "pipeline_root": ("--pipeline-root", "TAXIFARE_PIPELINE_ROOT"),
}
_PROJECT = re.compile(r"(?:[a-z0-9][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
_BUCKET_PART = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?")
_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}@[a-z0-9][a-z0-9.-]*\.gserviceaccount\.com")
_K8S_NAME = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
_NETWORK = re.compile(r"projects/(?P<number>[^/]*)/global/networks/(?P<name>[^/]*)")
_RESOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_PROJECT_NUMBER = re.compile(r"[1-9][0-9]{0,19}")


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


def check_project(project: str | None) -> str:
    """A Google Cloud project id: 6-30 lowercase letters, digits and hyphens, starting with a letter.

    Raises:
        InputError: when it is missing or not a project id.
    """
    require(project=project)
    value = str(project).strip()
    if not _PROJECT.fullmatch(value):
        raise InputError(
            f"--project {project!r} is not a project id: use 6-30 lowercase letters, digits or hyphens, starting with a "
            "letter and not ending with a hyphen (the id, not the display name: see `gcloud projects list`)"
        )
    return value


def check_region(region: str | None) -> str:
    """A region where Vertex AI runs pipelines (:data:`VERTEX_REGIONS`).

    Raises:
        InputError: when it is missing or not such a region.
    """
    require(region=region)
    value = str(region).strip()
    if value not in VERTEX_REGIONS:
        raise InputError(f"--region {region!r} is not a Vertex AI region: use one such as us-central1 or europe-west4")
    return value


def check_bucket_name(bucket: str | None, flag: str = "--bucket") -> str:
    """Check a bucket name (``gs://`` prefix and trailing slash tolerated) and return the bare name.

    Cloud Storage's rules: 3-63 characters (up to 222 with dots, 63 between dots), lowercase
    letters, digits, ``-``, ``_`` and ``.``, starting and ending with a letter or digit; not an IP
    address; not starting with ``goog`` nor containing ``google``.

    Raises:
        InputError: when it is missing or not a valid bucket name.
    """
    require(bucket=bucket)
    name = str(bucket).strip().removeprefix("gs://").rstrip("/")
    parts = name.split(".")
    valid = (
        3 <= len(name) <= (222 if len(parts) > 1 else 63)
        and all(_BUCKET_PART.fullmatch(p) for p in parts)
        and not name.startswith("goog")
        and "google" not in name
        and not _is_ip(name)
    )
    if not valid:
        raise InputError(
            f"{flag} {bucket!r} is not a valid bucket name: use 3-63 lowercase letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit, not an IP address (e.g. my-project-taxifare)"
        )
    return name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def check_pipeline_root(pipeline_root: str | None) -> str:
    """Check that the pipeline root is ``gs://BUCKET[/PATH]`` with a valid bucket name.

    Returns:
        The root without a trailing slash.

    Raises:
        InputError: when it is empty, not on Cloud Storage, or its bucket name is invalid.
    """
    require(pipeline_root=pipeline_root)
    root = str(pipeline_root).strip().rstrip("/")
    if not root.startswith("gs://"):
        raise InputError(
            f"pipeline root {pipeline_root!r} is not on Cloud Storage: pass --pipeline-root gs://BUCKET/pipeline-root "
            "(Vertex AI writes every step's artifacts there)"
        )
    bucket, _, path = root[len("gs://") :].partition("/")
    if not bucket.strip():
        raise InputError(f"pipeline root {pipeline_root!r} names no bucket: write gs://BUCKET/pipeline-root")
    check_bucket_name(bucket, flag="--pipeline-root bucket")
    check_object_path(path, f"pipeline root {pipeline_root!r}", "gs://BUCKET/pipeline-root")
    return root


def check_object_path(path: str, what: str, example: str) -> None:
    """Refuse a Cloud Storage object path (or a ``/gcs/`` mount path) with segments that are not names.

    ``..`` and ``.`` are plain object names to Cloud Storage but climb out of the bucket through
    the ``/gcs/`` mount the steps read (``/gcs/my-bucket/../x`` is another bucket); an empty or
    blank segment is a name nobody meant.

    Raises:
        InputError: naming the path and the fix.
    """
    segments = path.split("/") if path else []
    if any(not seg.strip() or seg in (".", "..") or any(c in seg for c in "\n\r\t") for seg in segments):
        raise InputError(f"{what} has an empty, blank, '.' or '..' path segment: write {example}")


def check_service_account(account: str | None, flag: str = "--service-account") -> str | None:
    """A service account e-mail (``NAME@PROJECT.iam.gserviceaccount.com``), or ``None`` when not given.

    Raises:
        InputError: when it is not a service account e-mail.
    """
    fix = "write NAME@PROJECT.iam.gserviceaccount.com (or NUMBER-compute@developer.gserviceaccount.com)"
    return _optional(account, _ACCOUNT, flag, "a service account e-mail", fix)


def check_kubernetes_account(account: str | None) -> str | None:
    """A Kubernetes service account name (what ``--service-account`` means with ``--kfp-host``).

    Raises:
        InputError: when it is not a Kubernetes object name.
    """
    fix = "use lowercase letters, digits, '-' and '.', e.g. pipeline-runner"
    return _optional(account, _K8S_NAME, "--service-account", "a Kubernetes service account name", fix)


def check_project_number(number: str | None) -> str | None:
    """A project number (digits only, as in ``gcloud projects describe P --format='value(projectNumber)'``).

    Raises:
        InputError: when it is not all digits.
    """
    fix = "use the digits shown by `gcloud projects describe PROJECT --format='value(projectNumber)'`"
    return _optional(number, _PROJECT_NUMBER, "--project-number", "a project number", fix)


def _optional(value: str | None, pattern: re.Pattern[str], flag: str, what: str, fix: str) -> str | None:
    """``value`` without surrounding blanks, ``None`` when not given (or blank).

    Raises:
        InputError: ``FLAG 'VALUE' is not WHAT: FIX`` when it does not match ``pattern`` whole.
    """
    if value is None or not value.strip():
        return None
    if not pattern.fullmatch(value.strip()):
        raise InputError(f"{flag} {value!r} is not {what}: {fix}")
    return value.strip()


def check_network(network: str | None) -> str | None:
    """A VPC network path ``projects/NUMBER/global/networks/NAME``, or ``None`` when not given.

    Raises:
        InputError: when it is not such a path.
    """
    if network is None or not network.strip():
        return None
    match = _NETWORK.fullmatch(network.strip())
    if not (match and re.fullmatch(r"[1-9][0-9]*", match["number"]) and re.fullmatch(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?", match["name"])):
        raise InputError(
            f"--network {network!r} is not a network path: write projects/PROJECT_NUMBER/global/networks/NAME "
            "(the project number, digits, not its id)"
        )
    return network.strip()


def check_positive(value: float, flag: str) -> float:
    """A finite number above zero (e.g. ``--poll-seconds``).

    Raises:
        InputError: for zero, a negative number, NaN or infinity.
    """
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{flag} must be a positive number of seconds (got {value})")
    return value


def check_at_least_one(value: int | None, flag: str) -> int | None:
    """``None`` or an integer of at least 1 (``--max-runs``, ``--max-concurrent-runs``).

    Raises:
        InputError: for a value below 1.
    """
    if value is not None and value < 1:
        raise InputError(f"{flag} must be at least 1 (got {value})")
    return value


#: Vertex AI's limit on a pipeline run's or schedule's display name.
MAX_DISPLAY_NAME = 128


def check_display_name(name: str | None) -> str | None:
    """A run's or schedule's ``--display-name``: at most 128 characters, not blank (``None``: the default).

    Raises:
        InputError: naming the length and the limit.
    """
    if name is None:
        return None
    if not name.strip() or len(name) > MAX_DISPLAY_NAME:
        raise InputError(
            f"--display-name has {len(name)} characters{' (blank)' if not name.strip() else ''}: Vertex AI takes 1 to "
            f"{MAX_DISPLAY_NAME}; shorten it"
        )
    return name


def check_resource_id(value: str | None, what: str, fix: str) -> str:
    """A schedule id (or its full name ``projects/P/locations/L/schedules/ID``), or a recurring run's id.

    Raises:
        InputError: when it is empty or not an id.
    """
    text = (value or "").strip()
    if not text:
        raise InputError(f"missing {what}: pass its id ({fix})")
    last = text.rsplit("/", 1)[-1]
    full = re.fullmatch(r"projects/[^/\s]+/locations/[^/\s]+/schedules/[^/\s]+", text)
    if ("/" in text and not full) or not _RESOURCE_ID.fullmatch(last):
        raise InputError(f"{what} {value!r} is not an id: pass the id or projects/P/locations/L/schedules/ID ({fix})")
    return text


def check_api_endpoint(endpoint: str | None) -> str | None:
    """``HOST[:PORT]`` or ``http(s)://HOST[:PORT]`` of a Vertex AI API endpoint, or ``None``.

    Raises:
        InputError: when it is not such an address.
    """
    if endpoint is None or not endpoint.strip():
        return None
    value = endpoint.strip()
    host_port = re.sub(r"^https?://", "", value)
    if not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?", host_port):
        raise InputError(f"--api-endpoint {endpoint!r} is not HOST:PORT: write e.g. us-central1-aiplatform.googleapis.com")
    return value


def is_loopback(endpoint: str | None) -> bool:
    """Whether an endpoint (``HOST:PORT`` or a URL) is on this machine: an emulator or a test server."""
    if not endpoint:
        return False
    host = re.sub(r"^[a-z]+://", "", endpoint.strip()).split("/", 1)[0]
    host = host[1 : host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def check_window(start_time: str | None, end_time: str | None) -> None:
    """Check that a schedule's end comes after its start (both normalised by :func:`parse_time`).

    Raises:
        InputError: when the end is not after the start.
    """
    if start_time and end_time and end_time <= start_time:
        raise InputError(f"--end-time {end_time} is not after --start-time {start_time}: the schedule would never run")
