"""The cloud variant of the DAG, for Vertex AI Pipelines (compiled/taxifare_vertex.yaml).

Same stage_data, smoke_train and verify_export steps as the local pipeline (artifacts on
``gs://``, read through the ``/gcs/`` mount). full_train runs as a Vertex custom training job
(``create_custom_training_job_from_component``): machine type, accelerators and replica count
are pipeline parameters (turned into the job's worker pools at run time), as are the service
account, the Vertex TensorBoard instance and restart on worker restart. Deployment, only when
blessed: the SavedModel as an ``UnmanagedContainerModel`` with the prebuilt TF2 prediction
container, ``ModelUploadOp`` (a new version of the existing model when there is one), an
existing endpoint or a new one, ``ModelDeployOp`` with machine type, replicas and a traffic share.

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
from components.impl.vertex import SERVING_IMAGE
from components.smoke_train import smoke_train
from components.stage_data import stage_data
from components.verify_export import verify_export
from components.vertex import lookup_deployment, prepare_upload, training_worker_pools
from pipeline.pipeline import with_image

PIPELINE_NAME = "taxifare-vertex"
PROJECT = _placeholders.PROJECT_ID_PLACEHOLDER
LOCATION = _placeholders.LOCATION_PLACEHOLDER


def create_vertex_pipeline(image: str = DEFAULT_IMAGE, serving_image: str = SERVING_IMAGE, name: str = PIPELINE_NAME) -> Any:
    """Build the Vertex pipeline function whose steps run in ``image``.

    Args:
        image: the project's image (every step, and the custom training job).
        serving_image: the prediction container the model is uploaded with.
        name: the pipeline's name.
    """
    stage_op = with_image(stage_data, image)
    smoke_op = with_image(smoke_train, image)
    verify_op = with_image(verify_export, image)
    pools_op = with_image(training_worker_pools, image)
    lookup_op = with_image(lookup_deployment, image)
    prepare_op = with_image(prepare_upload, image)
    train_job_op = create_custom_training_job_from_component(with_image(full_train, image), display_name="taxifare-full-train")
    pools_template = json.dumps(train_job_op.component_spec.inputs["worker_pool_specs"].default)

    @dsl.pipeline(name=name, description="Stage NYC taxi trips, smoke-train, train on Vertex AI, verify, upload and deploy when better.")
    def taxifare_vertex(
        source: str = "synthetic",
        eval_source: str = "",
        test_source: str = "",
        synthetic_rows: int = 1_000_000,
        seed: int = 42,
        datetime_layout: bool = False,
        eval_fraction: float = 0.1,
        test_fraction: float = 0.1,
        max_bad_fraction: float = 0.1,
        window_days: int = 0,
        smoke_steps: int = 10,
        train_steps: int = 20_000,
        batch_size: int = 512,
        hidden_units: str = "64,32",
        learning_rate: float = 0.003,
        machine_type: str = "n1-standard-4",
        accelerator_type: str = "",
        accelerator_count: int = 0,
        replica_count: int = 1,
        training_service_account: str = "",
        tensorboard: str = "",
        restart_job_on_worker_restart: bool = True,
        max_rmse: float = 10.0,
        model_display_name: str = "taxifare",
        endpoint_display_name: str = "taxifare",
        deploy_machine_type: str = "n1-standard-2",
        min_replicas: int = 1,
        max_replicas: int = 2,
        traffic_percentage: int = 100,
    ) -> None:
        """Train on Vertex AI and deploy the taxi-fare model.

        Args:
            source: 'synthetic' for generated trips, 'bigquery' for the public NYC trips table (with window_days), or CSV files
                (a glob, globs separated by commas; gs://).
            eval_source: CSV files for the eval split; empty to carve it out of source by a hash of each row's key.
            test_source: CSV files for the test split; empty to carve it out of source by a hash of each row's key.
            synthetic_rows: rows to generate when source is 'synthetic'.
            seed: seed of the generated data and of training.
            datetime_layout: generate the layout with pickup_datetime (when source is 'synthetic').
            eval_fraction: share of source rows carved out for eval.
            test_fraction: share of source rows carved out for test.
            max_bad_fraction: stop at stage_data when a larger share of rows is malformed or out of range.
            window_days: with a source folder of dt=YYYY-MM-DD partitions, or 'bigquery', the days of trips before
                the run's scheduled time to use; 0 for none.
            smoke_steps: steps of the smoke training that gates full training.
            train_steps: optimizer steps of full training.
            batch_size: examples per training step (per replica).
            hidden_units: hidden layer sizes separated by commas, e.g. '64,32'.
            learning_rate: Adam learning rate.
            machine_type: machine type of each training replica.
            accelerator_type: accelerator of each training replica, e.g. NVIDIA_TESLA_T4; empty for none.
            accelerator_count: accelerators per training replica.
            replica_count: training machines; more than 1 trains with MultiWorkerMirroredStrategy.
            training_service_account: service account of the training job; empty for the pipeline's.
            tensorboard: a Vertex TensorBoard instance (projects/P/locations/L/tensorboards/ID) for the training curves; empty for none.
            restart_job_on_worker_restart: restart the training job when a worker restarts (it resumes from its checkpoints).
            max_rmse: the largest test RMSE in dollars that may be deployed.
            model_display_name: the Vertex model: a new version of it when it exists, else a new model.
            endpoint_display_name: the Vertex endpoint: used when it exists, else created.
            deploy_machine_type: machine type of the serving replicas.
            min_replicas: least serving replicas.
            max_replicas: most serving replicas.
            traffic_percentage: share of the endpoint's traffic the new version takes (the rest stays where it was).
        """
        stage = stage_op(
            source=source,
            eval_source=eval_source,
            test_source=test_source,
            synthetic_rows=synthetic_rows,
            seed=seed,
            datetime_layout=datetime_layout,
            eval_fraction=eval_fraction,
            test_fraction=test_fraction,
            max_bad_fraction=max_bad_fraction,
            window_days=window_days,
            scheduled_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
            bigquery_project=PROJECT,
        ).set_display_name("Stage data")
        smoke = smoke_op(
            train_data=stage.outputs["train_data"],
            eval_data=stage.outputs["eval_data"],
            smoke_steps=smoke_steps,
            hidden_units=hidden_units,
            learning_rate=learning_rate,
            seed=seed,
        ).set_display_name("Smoke training")
        pools = pools_op(
            template=pools_template,
            machine_type=machine_type,
            accelerator_type=accelerator_type,
            accelerator_count=accelerator_count,
            replica_count=replica_count,
        ).set_display_name("Training machines")
        train = (
            train_job_op(
                train_data=stage.outputs["train_data"],
                eval_data=stage.outputs["eval_data"],
                train_steps=train_steps,
                batch_size=batch_size,
                hidden_units=hidden_units,
                learning_rate=learning_rate,
                seed=seed,
                worker_pool_specs=pools.output,
                service_account=training_service_account,
                tensorboard=tensorboard,
                restart_job_on_worker_restart=restart_job_on_worker_restart,
                base_output_directory=dsl.PIPELINE_ROOT_PLACEHOLDER,
                project=PROJECT,
                location=LOCATION,
            )
            .set_display_name("Full training (Vertex custom job)")
            .after(smoke)
        )
        lookup = lookup_op(
            project=PROJECT,
            location=LOCATION,
            model_display_name=model_display_name,
            endpoint_display_name=endpoint_display_name,
            traffic_percentage=traffic_percentage,
        ).set_display_name("Find deployed model")
        lookup.set_caching_options(False)
        verify = (
            verify_op(
                model=train.outputs["model"],
                train_data=stage.outputs["train_data"],
                test_data=stage.outputs["test_data"],
                tensorboard=train.outputs["tensorboard"],
                max_rmse=max_rmse,
                serving_root="",
                model_name=model_display_name,
                infra_validation=True,
                deployed_model_uri=lookup.outputs["deployed_model_uri"],
                deployed_rmse=lookup.outputs["deployed_rmse"],
            )
            .set_display_name("Verify export")
            .set_caching_options(False)
        )
        with dsl.If(verify.outputs["Output"] == True, name="blessed"):  # noqa: E712 - a pipeline condition, not Python
            prepared = prepare_op(
                model=train.outputs["model"],
                verification=verify.outputs["metrics"],
                test_data=stage.outputs["test_data"],
                serving_image=serving_image,
            ).set_display_name("Prepare upload")
            upload_args = {
                "project": PROJECT,
                "location": LOCATION,
                "display_name": model_display_name,
                "unmanaged_container_model": prepared.outputs["unmanaged_model"],
                "labels": prepared.outputs["Output"],
            }
            with dsl.If(lookup.outputs["has_model"] == "true", name="new-version"):
                as_version = ModelUploadOp(**upload_args, parent_model=lookup.outputs["parent_model"]).set_display_name(
                    "Upload new version"
                )
            with dsl.Else(name="new-model"):
                as_model = ModelUploadOp(**upload_args).set_display_name("Upload new model")
            deploy_args = {
                "model": dsl.OneOf(as_version.outputs["model"], as_model.outputs["model"]),
                "deployed_model_display_name": model_display_name,
                "dedicated_resources_machine_type": deploy_machine_type,
                "dedicated_resources_min_replica_count": min_replicas,
                "dedicated_resources_max_replica_count": max_replicas,
            }
            with dsl.If(lookup.outputs["has_endpoint"] == "true", name="existing-endpoint"):
                ModelDeployOp(
                    **deploy_args, endpoint=lookup.outputs["endpoint"], traffic_split=lookup.outputs["traffic_split"]
                ).set_display_name("Deploy to endpoint")
            with dsl.Else(name="new-endpoint"):
                created = EndpointCreateOp(project=PROJECT, location=LOCATION, display_name=endpoint_display_name).set_display_name(
                    "Create endpoint"
                )
                ModelDeployOp(**deploy_args, endpoint=created.outputs["endpoint"], traffic_split={"0": 100}).set_display_name(
                    "Deploy to new endpoint"
                )

    return taxifare_vertex
