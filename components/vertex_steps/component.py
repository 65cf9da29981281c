"""The Vertex-only steps of the cloud variant: thin wrappers of :mod:`components.vertex_steps.logic`.

They run in the project's image on Vertex AI Pipelines (not with kfp.local: they call the
Vertex API).
"""

from typing import NamedTuple

from google_cloud_pipeline_components.types.artifact_types import RegressionMetrics, UnmanagedContainerModel, VertexEndpoint, VertexModel
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.common import step


@step
def training_worker_pools(template: str, machine_type: str, accelerator_type: str, accelerator_count: int, replica_count: int) -> list:
    """The full_train custom job's worker pools for the machine settings of this run."""
    from components.vertex_steps.logic import worker_pool_specs

    return worker_pool_specs(template, machine_type, accelerator_type, accelerator_count, replica_count)


@step
def lookup_deployment(
    project: str,
    location: str,
    model_display_name: str,
    endpoint_display_name: str,
    traffic_percentage: int,
    parent_model: Output[VertexModel],
    endpoint: Output[VertexEndpoint],
) -> NamedTuple(  # type: ignore[valid-type]
    "Outputs", [("has_model", str), ("has_endpoint", str), ("deployed_model_uri", str), ("deployed_rmse", float), ("traffic_split", dict)]
):
    """Find the model (the parent of the new version) and the endpoint by display name; the deployed model; the new traffic split.

    The deployed model, whose artifact URI and recorded test RMSE verify_export compares the
    candidate with, is the one taking the largest share of the endpoint's traffic
    (``find_deployed_model``), not the newest model named ``model_display_name``.
    """
    from typing import NamedTuple

    from components.vertex_steps.logic import (
        api_uri,
        compared_with,
        find_deployed_model,
        find_model,
        read_endpoint,
        rmse_from_labels,
        traffic_of,
        traffic_split,
    )

    model = find_model(project, location, model_display_name)
    if model:
        parent_model.uri = api_uri(location, model["resource_name"])
        parent_model.metadata["resourceName"] = model["resource_name"]
    found = read_endpoint(project, location, endpoint_display_name)  # one read: its deployed models and traffic split
    endpoint_name = found.name if found is not None else None
    if endpoint_name:
        endpoint.uri = api_uri(location, endpoint_name)
        endpoint.metadata["resourceName"] = endpoint_name
    deployed = find_deployed_model(project, location, found)
    print(compared_with(deployed, endpoint_display_name))
    rmse = rmse_from_labels(deployed["labels"]) if deployed else None
    split = traffic_split(traffic_of(found), traffic_percentage)
    Outputs = NamedTuple(  # noqa: UP014
        "Outputs",
        [("has_model", str), ("has_endpoint", str), ("deployed_model_uri", str), ("deployed_rmse", float), ("traffic_split", dict)],
    )
    return Outputs(
        "true" if model else "false",
        "true" if endpoint_name else "false",
        deployed["uri"] if deployed else "",
        rmse if rmse is not None else -1.0,
        split,
    )


@step
def recheck_deployment(
    project: str, location: str, endpoint_display_name: str, deployed_model_uri: str, verification: Input[Metrics]
) -> str:
    """Read the deployed model (largest traffic share) again right before the upload and deploy: "true" if the candidate may still go."""
    from components.contracts import Verification
    from components.vertex_steps.logic import recheck_deployment as recheck

    deploy, why = recheck(
        project, location, endpoint_display_name, deployed_model_uri, Verification.from_metadata(verification.metadata).test_rmse
    )
    print(why)
    return "true" if deploy else "false"


@step
def prepare_upload(
    model: Input[Model],
    verification: Input[Metrics],
    test_data: Input[Dataset],
    serving_image: str,
    unmanaged_model: Output[UnmanagedContainerModel],
    evaluation: Output[RegressionMetrics],
) -> dict:
    """The SavedModel as an UnmanagedContainerModel served by ``serving_image``; returns the labels to upload with.

    ``evaluation`` is verify_export's evaluation (overall and per slice) as ``ModelImportEvaluationOp``
    reads it, imported into the uploaded version so the Model Registry shows it.
    """
    import json

    from components.contracts import DatasetStats, Verification
    from components.vertex_steps.logic import evaluation_metrics, serving_container_spec, upload_labels

    verdict = Verification.from_metadata(verification.metadata)
    unmanaged_model.uri = model.uri
    unmanaged_model.metadata["containerSpec"] = serving_container_spec(serving_image)
    with open(evaluation.path, "w", encoding="utf-8") as fh:
        json.dump(evaluation_metrics(verdict), fh)
    return upload_labels(verdict.test_rmse, DatasetStats.from_metadata(test_data.metadata).content_hash)


@step
def enable_request_logging(
    project: str, location: str, endpoint: Input[VertexEndpoint], request_logging_sampling_rate: float, request_logging_bigquery: str
) -> str:
    """Turn on the endpoint's request-response logging to BigQuery (after the deploy); returns the destination."""
    from components.vertex_steps.logic import enable_request_logging as enable
    from components.vertex_steps.logic import logging_destination

    print(enable(project, location, endpoint.metadata["resourceName"], request_logging_sampling_rate, request_logging_bigquery))
    return logging_destination(project, request_logging_bigquery)
