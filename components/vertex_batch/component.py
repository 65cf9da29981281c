"""The Vertex-only helpers of the batch prediction step (google-cloud-pipeline-components' ``ModelBatchPredictOp``).

batch_inputs turns the ``batch_source`` parameter into the op's source inputs; served_model finds
the model version an endpoint serves, for the run whose candidate was not deployed. Both run in
the project's image on Vertex AI Pipelines; their logic is :mod:`serving.batch_vertex`'s and
:mod:`components.vertex_steps.logic`'.
"""

from typing import NamedTuple

from google_cloud_pipeline_components.types.artifact_types import VertexModel
from kfp.dsl import Output

from components.common import step


@step
def batch_inputs(batch_source: str) -> NamedTuple(  # type: ignore[valid-type]
    "Outputs", [("gcs_source_uris", list), ("bigquery_source_input_uri", str), ("instances_format", str), ("excluded_fields", list)]
):
    """The BatchPredictionJob's source: gs:// JSON-lines files (separated by commas) or one bq://PROJECT.DATASET.TABLE."""
    from typing import NamedTuple

    from serving.batch_vertex import job_source

    source = job_source(batch_source)
    Outputs = NamedTuple(  # noqa: UP014 - the component's declared outputs, as in its signature
        "Outputs", [("gcs_source_uris", list), ("bigquery_source_input_uri", str), ("instances_format", str), ("excluded_fields", list)]
    )
    return Outputs(source.gcs_uris, source.bigquery_uri, source.instances_format, source.excluded_fields)


@step
def served_model(project: str, location: str, endpoint_display_name: str, model: Output[VertexModel]) -> None:
    """The model version taking the largest share of the endpoint's traffic, as a VertexModel artifact (for ModelBatchPredictOp)."""
    from base.errors import InputError
    from components.vertex_steps.logic import api_uri, find_deployed_model, read_endpoint

    deployed = find_deployed_model(project, location, read_endpoint(project, location, endpoint_display_name))
    if deployed is None:
        raise InputError(f"batch_source is set but endpoint {endpoint_display_name!r} serves no model to score with: deploy one first")
    name = f"{deployed['resource_name']}@{deployed['version']}" if deployed["version"] else deployed["resource_name"]
    model.uri = api_uri(location, name)
    model.metadata["resourceName"] = name
    print(f"batch_predict scores with {name} (serving {deployed['traffic']}% on {endpoint_display_name})")
