"""``taxifare rollback --endpoint``: move a Vertex AI endpoint's traffic back to the previously deployed model.

On Vertex AI a model base path's labels are an endpoint's traffic split: the deployed model
holding the traffic is ``stable``, a new one with a small share is a canary. Rolling back gives
100% of the traffic to the model deployed just before the newest one receiving traffic (the
canary, or the one promoted last), or to ``--to DEPLOYED_MODEL_ID``; the bad one stays deployed
with 0% until it is undeployed.
The Vertex AI SDK does the calls (``Endpoint(...)``, ``Endpoint.update(traffic_split=...)``).
"""

from __future__ import annotations

import re
from typing import Any

from base.layout import LayoutError

_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION_RE = re.compile(r"^[a-z]+(?:-[a-z]+)+[0-9]+$")
_ENDPOINT_RE = re.compile(r"^(?:projects/[^/]+/locations/[^/]+/endpoints/)?[0-9]+$")


def check_settings(endpoint: str, project: str | None, region: str | None, api_endpoint: str | None, anonymous: bool) -> None:
    """Refuse settings that cannot work, before any network call.

    Raises:
        LayoutError: naming the setting and a valid value.
    """
    if not _ENDPOINT_RE.match(endpoint):
        raise LayoutError(f"--endpoint {endpoint!r} must be an endpoint ID (digits) or projects/P/locations/L/endpoints/ID")
    if not project or not _PROJECT_RE.match(project):
        raise LayoutError(f"--project {project!r} is not a Google Cloud project ID (6-30 lowercase letters, digits, '-')")
    if not region or not _REGION_RE.match(region):
        raise LayoutError(f"--region {region!r} is not a Vertex AI region such as us-central1")
    if anonymous and not api_endpoint:
        raise LayoutError("--anonymous is only for a local --api-endpoint (a test server)")


def _time(deployed: Any) -> float:
    created = deployed.create_time
    return float(created.timestamp()) if hasattr(created, "timestamp") else 0.0


def rollback(
    endpoint: str,
    *,
    project: str,
    region: str,
    to: str | None = None,
    api_endpoint: str | None = None,
    api_transport: str | None = None,
    credentials: Any = None,
) -> list[str]:
    """Give the previous deployed model (or ``to``) all of the endpoint's traffic; the lines saying what changed.

    Raises:
        LayoutError: when the endpoint has no earlier deployed model or ``to`` is not deployed on it.
    """
    import logging

    from google.cloud import aiplatform

    for name in list(logging.root.manager.loggerDict):  # the SDK's progress lines on stdout: ours say what changed
        if name.startswith("google.cloud.aiplatform"):
            logging.getLogger(name).setLevel(logging.WARNING)
    aiplatform.init(
        project=project,
        location=region,
        credentials=credentials,
        api_endpoint=api_endpoint or f"{region}-aiplatform.googleapis.com",
        api_transport=api_transport,
    )
    ep = aiplatform.Endpoint(endpoint)
    deployed = {d.id: d for d in ep.gca_resource.deployed_models}
    split = {k: int(v) for k, v in (ep.traffic_split or {}).items()}
    if not deployed:
        raise LayoutError(f"endpoint {endpoint} has no deployed model: nothing to roll back")
    # the latest change: the newest deployed model receiving traffic (a canary, or the one promoted last)
    serving = [deployed[k] for k, v in split.items() if v > 0 and k in deployed]
    current = max(serving, key=_time).id if serving else None
    if to is not None:
        if to not in deployed:
            raise LayoutError(f"--to {to}: deployed model {to} is not on endpoint {endpoint} (deployed: {', '.join(sorted(deployed))})")
        target = to
    else:
        reference = _time(deployed[current]) if current in deployed else float("inf")
        older = sorted((d for d in deployed.values() if d.id != current and _time(d) < reference), key=_time)
        if not older:
            raise LayoutError(f"deployed model {current} is the oldest one on endpoint {endpoint}: nothing to roll back to")
        target = older[-1].id
    new_split = {target: 100}
    if new_split != split:
        ep.update(traffic_split=new_split)

    def show(s: dict[str, int]) -> str:
        return ", ".join(f"{k} ({deployed[k].display_name or deployed[k].model}) {v}%" for k, v in sorted(s.items()) if k in deployed)

    return [f"endpoint {endpoint} traffic: {show(split) or 'none'} -> {show(new_split)}"]
