"""The cloud variant of the DAG, for Vertex AI Pipelines (compiled/taxifare_vertex.yaml).

Same stage_data, smoke_train and verify_export steps as the local pipeline, wired by the same
:mod:`pipeline.dag` helpers (artifacts on ``gs://``, read through the ``/gcs/`` mount); the
parameters and their defaults are the ``vertex`` rows of :mod:`pipeline.parameters`. full_train runs as a Vertex custom training job
(``create_custom_training_job_from_component``): machine type, accelerators and replica count
are pipeline parameters (turned into the job's worker pools at run time), as are the service
account, the Vertex TensorBoard instance and restart on worker restart. Deployment, only when
blessed: the SavedModel as an ``UnmanagedContainerModel`` served by the project's own image (a
custom serving container running ``taxifare serve``), ``ModelUploadOp`` (a new version of the
existing model when there is one), an existing endpoint or a new one, ``ModelDeployOp`` with machine type, replicas and a traffic share.

Project and location are never baked in: the Vertex ops take the pipeline's own project and
location placeholders, resolved by Vertex when the run starts.
"""

import json
from typing import Any

from google_cloud_pipeline_components import _placeholders
from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component
from google_cloud_pipeline_components.v1.endpoint import EndpointCreateOp, ModelDeployOp
from google_cloud_pipeline_components.v1.model import ModelUploadOp
from kfp import dsl

from components.common import DEFAULT_IMAGE
from components.full_train import full_train
from components.run_summary import run_summary
from components.smoke_train import smoke_train
from components.stage_data import stage_data
from components.verify_export import verify_export
from components.vertex_steps import lookup_deployment, prepare_upload, training_worker_pools
from pipeline import dag, parameters
from pipeline.dag import with_image

PIPELINE_NAME = "taxifare-vertex"
PROJECT = _placeholders.PROJECT_ID_PLACEHOLDER
LOCATION = _placeholders.LOCATION_PLACEHOLDER


def create_vertex_pipeline(image: str = DEFAULT_IMAGE, serving_image: str | None = None, name: str = PIPELINE_NAME) -> Any:
    """Build the Vertex pipeline function whose steps run in ``image``.

    Args:
        image: the project's image (every step, and the custom training job).
        serving_image: the custom serving container the model is uploaded with (default: ``image``,
            started as ``taxifare serve``; see components.impl.vertex_steps.serving_container_spec).
        name: the pipeline's name.
    """
    serving_image = serving_image or image
    stage_op, smoke_op, verify_op = (with_image(c, image) for c in (stage_data, smoke_train, verify_export))
    train_job_op = create_custom_training_job_from_component(with_image(full_train, image), display_name="taxifare-full-train")
    pools_template = json.dumps(train_job_op.component_spec.inputs["worker_pool_specs"].default)

    summary_op = with_image(run_summary, image)

    def body(p: dict[str, Any]) -> None:
        with dag.exit_handler(summary_op, p):
            steps(p)

    def steps(p: dict[str, Any]) -> None:
        stage, smoke = dag.stage_and_smoke(
            stage_op, smoke_op, p, scheduled_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER, bigquery_project=PROJECT
        )
        train = _train_job(train_job_op, with_image(training_worker_pools, image), pools_template, stage, p).after(smoke)
        lookup = with_image(lookup_deployment, image)(
            project=PROJECT,
            location=LOCATION,
            model_display_name=p["model_display_name"],
            endpoint_display_name=p["endpoint_display_name"],
            traffic_percentage=p["traffic_percentage"],
        ).set_display_name("Find deployed model")
        lookup.set_caching_options(False)
        verify = dag.verify(
            verify_op,
            stage,
            train,
            p,
            serving_root="",
            model_name=p["model_display_name"],
            infra_validation=True,
            deployed_model_uri=lookup.outputs["deployed_model_uri"],
            deployed_rmse=lookup.outputs["deployed_rmse"],
        )
        with dag.blessed(verify):
            prepared = with_image(prepare_upload, image)(
                model=train.outputs["model"],
                verification=verify.outputs["metrics"],
                test_data=stage.outputs["test_data"],
                serving_image=serving_image,
            ).set_display_name("Prepare upload")
            model = _upload(prepared, lookup, p)
            _deploy(model, lookup, p)

    func = parameters.pipeline_function(
        body, target=parameters.VERTEX, name="taxifare_vertex", summary="Train on Vertex AI and deploy the taxi-fare model."
    )
    return dsl.pipeline(
        name=name, description="Stage NYC taxi trips, smoke-train, train on Vertex AI, verify, upload and deploy when better."
    )(func)


def _train_job(train_job_op: Any, pools_op: Any, pools_template: str, stage: Any, p: dict[str, Any]) -> Any:
    """The worker pools for this run's machine settings, and full_train as a Vertex custom job on them."""
    pools = pools_op(
        template=pools_template,
        machine_type=p["machine_type"],
        accelerator_type=p["accelerator_type"],
        accelerator_count=p["accelerator_count"],
        replica_count=p["replica_count"],
    ).set_display_name("Training machines")
    return train_job_op(
        **dag.train_inputs(stage, p),
        worker_pool_specs=pools.output,
        service_account=p["training_service_account"],
        tensorboard=p["tensorboard"],
        restart_job_on_worker_restart=p["restart_job_on_worker_restart"],
        base_output_directory=dsl.PIPELINE_ROOT_PLACEHOLDER,
        project=PROJECT,
        location=LOCATION,
    ).set_display_name("Full training (Vertex custom job)")


def _upload(prepared: Any, lookup: Any, p: dict[str, Any]) -> Any:
    """Upload the model: a new version of the existing model, or a new model. Returns the uploaded model."""
    upload_args = {
        "project": PROJECT,
        "location": LOCATION,
        "display_name": p["model_display_name"],
        "unmanaged_container_model": prepared.outputs["unmanaged_model"],
        "labels": prepared.outputs["Output"],
    }
    with dsl.If(lookup.outputs["has_model"] == "true", name="new-version"):
        as_version = ModelUploadOp(**upload_args, parent_model=lookup.outputs["parent_model"]).set_display_name("Upload new version")
    with dsl.Else(name="new-model"):
        as_model = ModelUploadOp(**upload_args).set_display_name("Upload new model")
    return dsl.OneOf(as_version.outputs["model"], as_model.outputs["model"])


def _deploy(model: Any, lookup: Any, p: dict[str, Any]) -> None:
    """Deploy ``model`` to the existing endpoint (its traffic split adjusted) or to a new one."""
    deploy_args = {
        "model": model,
        "deployed_model_display_name": p["model_display_name"],
        "dedicated_resources_machine_type": p["deploy_machine_type"],
        "dedicated_resources_min_replica_count": p["min_replicas"],
        "dedicated_resources_max_replica_count": p["max_replicas"],
    }
    with dsl.If(lookup.outputs["has_endpoint"] == "true", name="existing-endpoint"):
        ModelDeployOp(**deploy_args, endpoint=lookup.outputs["endpoint"], traffic_split=lookup.outputs["traffic_split"]).set_display_name(
            "Deploy to endpoint"
        )
    with dsl.Else(name="new-endpoint"):
        created = EndpointCreateOp(project=PROJECT, location=LOCATION, display_name=p["endpoint_display_name"]).set_display_name(
            "Create endpoint"
        )
        ModelDeployOp(**deploy_args, endpoint=created.outputs["endpoint"], traffic_split={"0": 100}).set_display_name(
            "Deploy to new endpoint"
        )
