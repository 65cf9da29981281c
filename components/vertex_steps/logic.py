"""The Vertex AI pieces of the cloud variant, as plain functions (the steps of :mod:`components.vertex_steps.component`).

* :func:`worker_pool_specs` turns the machine settings (pipeline parameters) into the
  ``worker_pool_specs`` of the Vertex custom job that runs full_train: one chief pool, plus a
  worker pool when ``replica_count`` > 1 (MultiWorkerMirroredStrategy; Vertex sets TF_CONFIG).
* :func:`find_model` / :func:`find_endpoint` look up the model and endpoint by display name,
  so a run uploads a new *version* of an existing model and deploys to an existing endpoint.
* :func:`find_deployed_model`: the model version that serves, i.e. the one deployed on the endpoint
  with the largest share of its traffic split (not the newest model of that name: after a
  ``taxifare rollback`` the newest version stays deployed with 0%, and an upload whose deploy
  failed is not deployed at all). lookup_deployment and recheck_deployment both compare with it.
* :func:`upload_labels` / :func:`rmse_from_labels` carry the deployed model's test RMSE and data
  hash in its labels, so verify_export can compare a candidate with what is deployed.
* :func:`recheck_deployment` reads the deployed model again right before the upload and deploy,
  so a run never deploys a model no better than one another run deployed meanwhile.
* :func:`enable_request_logging`: turns on the endpoint's request-response logging to BigQuery
  after a deploy (``request_logging_sampling_rate`` > 0), changing only that field of the endpoint.
* :func:`serving_container_spec`: how Vertex AI starts the project's own image as a custom
  serving container (``taxifare serve`` under Vertex's ``AIP_*`` variables; docs/cloud.md says why
  not the prebuilt TF container).
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from base import checks
from base.errors import InputError

#: Label keys written on every uploaded model version.
RMSE_LABEL = "taxifare-test-rmse-milli"
DATA_LABEL = "taxifare-test-data"
#: The serving container's port: Vertex AI sets ``AIP_HTTP_PORT`` to it and probes it.
SERVING_PORT = 8080
#: The routes Vertex AI sends predictions and health checks to (``AIP_PREDICT_ROUTE``,
#: ``AIP_HEALTH_ROUTE``): TF Serving's REST routes of the model, which ``taxifare serve`` answers.
PREDICT_ROUTE = "/v1/models/taxifare:predict"
HEALTH_ROUTE = "/v1/models/taxifare"


def worker_pool_specs(
    template: str, machine_type: str, accelerator_type: str, accelerator_count: int, replica_count: int
) -> list[dict[str, Any]]:
    """The custom job's worker pools for these machine settings.

    Args:
        template: JSON of the specs compiled by ``create_custom_training_job_from_component``
            (its container spec runs the full_train component).
        machine_type: e.g. ``n1-standard-4``.
        accelerator_type: e.g. ``NVIDIA_TESLA_T4``; empty for none.
        accelerator_count: accelerators per replica (ignored without a type).
        replica_count: machines in all; more than 1 adds a worker pool of ``replica_count - 1``.

    Raises:
        ValueError: for a bad value, naming the parameter.
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", machine_type or ""):
        raise ValueError(f"machine_type {machine_type!r} is not a machine type such as n1-standard-4")
    if replica_count < 1:
        raise ValueError(f"replica_count must be at least 1 (got {replica_count})")
    if accelerator_type and accelerator_count < 1:
        raise ValueError(f"accelerator_count must be at least 1 with accelerator_type {accelerator_type} (got {accelerator_count})")
    specs = json.loads(template)
    chief = copy.deepcopy(specs[0])
    chief["replica_count"] = 1
    chief["machine_spec"] = {"machine_type": machine_type}
    if accelerator_type:
        chief["machine_spec"].update({"accelerator_type": accelerator_type, "accelerator_count": accelerator_count})
    pools = [chief]
    if replica_count > 1:
        workers = copy.deepcopy(chief)
        workers["replica_count"] = replica_count - 1
        pools.append(workers)
    return pools


def serving_container_spec(image: str) -> dict[str, Any]:
    """The ``containerSpec`` (Vertex ``ModelContainerSpec``, camelCase) of a model served by the project's image.

    ``taxifare serve`` with no flags reads ``AIP_HTTP_PORT``, ``AIP_PREDICT_ROUTE``,
    ``AIP_HEALTH_ROUTE`` and ``AIP_STORAGE_URI`` (the ``gs://`` copy Vertex makes of the uploaded
    SavedModel), which Vertex sets from this spec and the model's artifact URI.

    Raises:
        ValueError: for an image not pinned to a version (no tag, or ``:latest``).
    """
    name = image.rsplit("/", 1)[-1]
    tag = name.rsplit(":", 1)[1] if ":" in name.split("@", 1)[0] else ""
    if "@sha256:" not in image and tag in ("", "latest"):
        raise ValueError(f"serving image {image!r} is not pinned to a version: tag it, e.g. :0.1.0 (never :latest)")
    return {
        "imageUri": image,
        "command": ["taxifare", "serve"],
        "ports": [{"containerPort": SERVING_PORT}],
        "predictRoute": PREDICT_ROUTE,
        "healthRoute": HEALTH_ROUTE,
    }


def _aiplatform(project: str, location: str) -> Any:
    from google.cloud import aiplatform

    aiplatform.init(project=project, location=location)
    return aiplatform


def find_model(project: str, location: str, display_name: str) -> dict[str, Any] | None:
    """The newest model named ``display_name``: resource name, default version's URI, labels.

    The parent of the version a run uploads; *not* the deployed model (:func:`find_deployed_model`).
    """
    aiplatform = _aiplatform(project, location)
    models = aiplatform.Model.list(filter=f'display_name="{display_name}"', order_by="update_time desc")
    if not models:
        return None
    model = models[0]
    return {"resource_name": model.resource_name, "uri": model.uri or "", "labels": dict(model.labels or {})}


def find_endpoint(project: str, location: str, display_name: str) -> str | None:
    """The resource name of the newest endpoint named ``display_name``."""
    aiplatform = _aiplatform(project, location)
    endpoints = aiplatform.Endpoint.list(filter=f'display_name="{display_name}"', order_by="update_time desc")
    return endpoints[0].resource_name if endpoints else None


def _deployed_at(deployed: Any) -> float:
    created = deployed.create_time
    return float(created.timestamp()) if hasattr(created, "timestamp") else 0.0


def read_endpoint(project: str, location: str, display_name: str) -> Any | None:
    """The newest endpoint named ``display_name`` (:func:`find_endpoint`) as one read of its resource, or ``None``.

    Its ``deployed_models`` and ``traffic_split`` come from that one read, so they agree.
    """
    endpoint_name = find_endpoint(project, location, display_name)
    return None if endpoint_name is None else _aiplatform(project, location).Endpoint(endpoint_name).gca_resource


def traffic_of(endpoint: Any | None) -> dict[str, int]:
    """An endpoint resource's traffic split now (deployed model ID -> percent); empty for ``None``."""
    return {} if endpoint is None else {k: int(v) for k, v in endpoint.traffic_split.items()}


def find_deployed_model(project: str, location: str, endpoint: Any | None) -> dict[str, Any] | None:
    """The model version serving on ``endpoint`` (a resource from :func:`read_endpoint`), or ``None``.

    It is the deployed model taking the largest share of the endpoint's traffic split; on a tie
    the one deployed last (``DeployedModel.create_time``), then the larger deployed-model ID.
    Its model resource name and version come from the endpoint's ``deployed_models`` (``model``,
    possibly ``name@version``, and ``model_version_id``), its artifact URI and labels from that
    version (``GetModel`` of ``name@version``). ``None`` when there is no such endpoint, nothing is
    deployed on it, or no deployed model receives traffic (then nothing is deployed).

    Returns:
        ``resource_name`` (without version), ``version``, ``deployed_model_id``, ``traffic``
        (percent), ``endpoint`` (resource name), ``uri``, ``labels``.
    """
    if endpoint is None:
        return None
    split = traffic_of(endpoint)
    serving = [d for d in endpoint.deployed_models if split.get(d.id, 0) > 0]
    if not serving:
        return None
    top = max(serving, key=lambda d: (split[d.id], _deployed_at(d), int(d.id) if d.id.isdigit() else -1))
    model_name, _, pinned = top.model.partition("@")
    model = _aiplatform(project, location).Model(model_name, version=top.model_version_id or pinned or None)
    return {
        "resource_name": model_name,
        "version": model.version_id or top.model_version_id,
        "deployed_model_id": top.id,
        "traffic": split[top.id],
        "endpoint": endpoint.name,
        "uri": model.uri or "",
        "labels": dict(model.labels or {}),
    }


def describe_deployed(deployed: dict[str, Any]) -> str:
    """A deployed model in one phrase: ``name@version (deployed model ID, N% of the traffic, artifact URI)``."""
    return (
        f"{deployed['resource_name']}@{deployed['version']} (deployed model {deployed['deployed_model_id']}, "
        f"{deployed['traffic']}% of the traffic, {deployed['uri'] or 'no artifact URI'})"
    )


def compared_with(deployed: dict[str, Any] | None, endpoint_display_name: str) -> str:
    """lookup_deployment's line: which deployed model verify_export compares the candidate with."""
    if deployed is None:
        return f"nothing deployed on endpoint {endpoint_display_name}: the candidate is judged by max_rmse alone"
    rmse = rmse_from_labels(deployed["labels"])
    recorded = f"test RMSE ${rmse:.2f} recorded" if rmse is not None else "no test RMSE recorded"
    return f"the candidate is compared with model {describe_deployed(deployed)} on endpoint {endpoint_display_name}, {recorded}"


def traffic_split(current: dict[str, int], percentage: int) -> dict[str, int]:
    """The endpoint's traffic split once the new model (ID ``"0"``) takes ``percentage``.

    The models deployed now share the rest in proportion to their current shares (largest
    remainders get the odd percent), so the split always sums to 100 as Vertex requires.

    Raises:
        ValueError: for a percentage outside 1..100.
    """
    if not 1 <= percentage <= 100:
        raise ValueError(f"traffic_percentage must be between 1 and 100 (got {percentage})")
    rest = 100 - percentage
    total = sum(current.values())
    if not rest or not total:
        return {"0": 100}
    exact = {k: v * rest / total for k, v in current.items()}
    split = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - split[k], reverse=True)[: rest - sum(split.values())]:
        split[k] += 1
    return {"0": percentage, **{k: v for k, v in split.items() if v}}


def api_uri(location: str, resource_name: str) -> str:
    """The REST URI of a Vertex resource (what GCPC puts in a Vertex artifact's uri)."""
    return f"https://{location}-aiplatform.googleapis.com/v1/{resource_name}"


def evaluation_metrics(verification: Any) -> dict[str, Any]:
    """verify_export's evaluation in the file layout ``ModelImportEvaluationOp`` reads (``slicedMetrics``).

    The first entry is the whole test split, then one per slice (distance bands, airports,
    passengers, hour and weekday): the candidate's RMSE and MAE under the regression metrics
    schema, so Vertex's Model Registry shows the version's evaluation and its slices.

    Args:
        verification: verify_export's :class:`components.contracts.Verification`.
    """

    def regression(rmse: Any, mae: Any) -> dict[str, Any]:
        values = {"rootMeanSquaredError": rmse, "meanAbsoluteError": mae}
        return {"regression": {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}}

    slices = verification.details.get("slices") or []
    overall = next((s for s in slices if s.get("slice") == "all trips"), None)
    first = overall["candidate"] if overall else {"rmse": verification.test_rmse, "mae": None}
    out = [{"singleOutputSlicingSpec": {}, "metrics": regression(first["rmse"], first["mae"])}]
    for entry in slices:
        if entry is overall or not entry.get("count"):
            continue
        spec = {"dimension": "slice", "value": str(entry["slice"])}
        out.append({"singleOutputSlicingSpec": spec, "metrics": regression(entry["candidate"]["rmse"], entry["candidate"]["mae"])})
    return {"slicedMetrics": out}


def upload_labels(test_rmse: float, data_hash: str) -> dict[str, str]:
    """Labels recording the model's test RMSE (in thousandths of a dollar) and test data."""
    labels = {RMSE_LABEL: str(round(test_rmse * 1000))}
    if data_hash:
        labels[DATA_LABEL] = data_hash[:16].lower()
    return labels


def rmse_from_labels(labels: dict[str, str]) -> float | None:
    """The test RMSE recorded in a model's labels, or ``None``."""
    value = labels.get(RMSE_LABEL, "")
    return int(value) / 1000 if value.isdigit() else None


def recheck_deployment(
    project: str, location: str, endpoint_display_name: str, looked_up_uri: str, candidate_rmse: float
) -> tuple[bool, str]:
    """Whether the blessed candidate may still be deployed: the compare of the Vertex compare-and-publish.

    Reads the deployed model again, right before the upload and deploy, with the same look-up as
    lookup_deployment (:func:`find_deployed_model`: the model version taking the largest share of
    the endpoint's traffic, and its recorded RMSE). When it is still the one verify_export compared
    with (same artifact URI), verify's blessing stands; when another model serves now (another run
    deployed one, or a rollback moved the traffic), the candidate must be strictly better than its
    recorded test RMSE.

    Returns:
        (deploy or not, one line saying why).
    """
    deployed = find_deployed_model(project, location, read_endpoint(project, location, endpoint_display_name))
    if deployed is None:
        was = f"verify_export compared with {looked_up_uri}" if looked_up_uri else "as when verify_export looked"
        return True, f"deploying: nothing is deployed on endpoint {endpoint_display_name} now ({was})"
    name = describe_deployed(deployed)
    if deployed["uri"] == looked_up_uri:
        return True, f"deploying: the deployed model is still the one verify_export compared with, {name}"
    now = rmse_from_labels(deployed["labels"])
    if now is None:
        return (
            False,
            f"not deployed: model {name} now serves with no recorded RMSE, so the candidate (${candidate_rmse:.2f}) cannot be compared",
        )
    if candidate_rmse < now:
        return True, f"deploying: the candidate (${candidate_rmse:.2f}) beats model {name}, serving now with RMSE ${now:.2f}"
    return False, f"not deployed: model {name} now serves with RMSE ${now:.2f} (candidate ${candidate_rmse:.2f})"


def logging_destination(project: str, bigquery_destination: str) -> str:
    """Where request-response logging writes: the given ``bq://`` URI, else the run's project (Vertex then creates a dataset)."""
    return bigquery_destination or f"bq://{project}"


def enable_request_logging(project: str, location: str, endpoint_name: str, sampling_rate: float, bigquery_destination: str) -> str:
    """Turn on ``endpoint_name``'s request-response logging (``predict_request_response_logging_config``); returns the step line.

    Only that field is updated (the update mask names it alone), so the traffic split a deploy
    just set is never touched.

    Raises:
        InputError: for a rate outside (0, 1] or a destination that is not ``bq://PROJECT[.DATASET[.TABLE]]``.
    """
    from google.cloud.aiplatform_v1.types import endpoint as endpoint_types
    from google.protobuf import field_mask_pb2

    rate = checks.unit_fraction("request_logging_sampling_rate", sampling_rate)
    if rate <= 0:
        raise InputError("request_logging_sampling_rate must be above 0 to turn request-response logging on, e.g. 0.1")
    destination = logging_destination(project, checks.bigquery_destination("request_logging_bigquery", bigquery_destination))
    endpoint = _aiplatform(project, location).Endpoint(endpoint_name)
    updated = endpoint.gca_resource.__class__(endpoint.gca_resource)
    updated.predict_request_response_logging_config = endpoint_types.PredictRequestResponseLoggingConfig(
        enabled=True, sampling_rate=rate, bigquery_destination={"output_uri": destination}
    )
    mask = field_mask_pb2.FieldMask(paths=["predict_request_response_logging_config"])
    endpoint.api_client.update_endpoint(endpoint=updated, update_mask=mask)
    return f"request-response logging of endpoint {endpoint_name}: {rate:g} of the predictions to {destination}"
