"""The cloud variant of the DAG, for Vertex AI Pipelines (compiled/taxifare_vertex.yaml).

Same stage_data, smoke_train and verify_export steps as the local pipeline, wired by the same
:mod:`pipeline.dag` helpers (artifacts on ``gs://``, read through the ``/gcs/`` mount); the
parameters and their defaults are the ``vertex`` rows of :mod:`pipeline.parameters`. full_train runs as a Vertex custom training job
(``create_custom_training_job_from_component``): machine type, accelerators and replica count
are pipeline parameters (turned into the job's worker pools at run time), as are the service
account, the Vertex TensorBoard instance and restart on worker restart. Deployment, only when
blessed and still better than the model deployed right before it (recheck_deployment reads it again,
since another run may have deployed one meanwhile; "the deployed model" is the one taking the largest
share of the endpoint's traffic, not the newest model of that name): the SavedModel as an
``UnmanagedContainerModel`` served by the project's own image (a custom serving container running
``taxifare serve``), ``ModelUploadOp`` (a new version of the existing model when there is one),
an existing endpoint or a new one, ``ModelDeployOp`` with machine type, replicas and a traffic share.
When ``batch_source`` is set, ``ModelBatchPredictOp`` then scores it with the uploaded version
(or, when the model was not blessed, with the version the endpoint serves).

check_drift compares the staged training split with the ``assets.extra/taxifare_train_stats.json`` kept in the
deployed model's artifact folder (full_train writes it beside the SavedModel, so the uploaded
model carries its training statistics). With ``tuning_trials`` > 0 a Vertex hyperparameter
tuning job (``HyperparameterTuningJobRunOp``) runs the trainer's image for the trials and the
best trial's hidden units, learning rate and batch size go into the custom training job; with
0, the tune step passes the given ones through.

Project and location are never baked in: the Vertex ops take the pipeline's own project and
location placeholders, resolved by Vertex when the run starts.
"""

import json
import warnings

from google_cloud_pipeline_components.v1.batch_predict_job import ModelBatchPredictOp
from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component
from google_cloud_pipeline_components.v1.endpoint import EndpointCreateOp, ModelDeployOp
from google_cloud_pipeline_components.v1.hyperparameter_tuning_job import HyperparameterTuningJobRunOp
from google_cloud_pipeline_components.v1.model import ModelUploadOp
from kfp import dsl
from kfp.components import BaseComponent
from kfp.dsl.pipeline_channel import PipelineChannel

from components.check_drift.component import check_drift
from components.common import DEFAULT_IMAGE
from components.contracts import Hyperparameters
from components.full_train.component import full_train
from components.smoke_train.component import smoke_train
from components.stage_data.component import stage_data
from components.tune.component import best_trial, tune, tuning_job_spec
from components.verify_export.component import verify_export
from components.vertex_batch.component import batch_inputs, served_model
from components.vertex_steps.component import (
    enable_request_logging,
    lookup_deployment,
    prepare_upload,
    recheck_deployment,
    training_worker_pools,
)
from pipeline import dag, parameters
from pipeline.dag import with_image
from pipeline.parameters import Parameters

with warnings.catch_warnings():
    # ModelImportEvaluationOp is public under preview (the v1 evaluation pipelines import it from there too); that
    # package defines other components with kfp's default base image, which warns about its future default: not ours.
    warnings.filterwarnings("ignore", message="The default base_image used by the @dsl.component", category=FutureWarning)
    from google_cloud_pipeline_components.preview.model_evaluation import ModelImportEvaluationOp

PIPELINE_NAME = "taxifare-vertex"
#: The run's own project and location, resolved by Vertex AI Pipelines when the run starts. Neither
#: kfp nor google-cloud-pipeline-components exports them publicly (GCPC keeps them in its private
#: ``_placeholders``); they are the defaults of GCPC's public ``CustomTrainingJobOp``, which
#: tests/test_vertex_pipeline.py checks, so a change in GCPC fails a test instead of a run.
PROJECT = "{{$.pipeline_google_cloud_project_id}}"
LOCATION = "{{$.pipeline_google_cloud_location}}"


def create_vertex_pipeline(
    image: str = DEFAULT_IMAGE, serving_image: str | None = None, name: str = PIPELINE_NAME, *, email: bool = False
) -> BaseComponent:
    """Build the Vertex pipeline function whose steps run in ``image``.

    Args:
        image: the project's image (every step, and the custom training job).
        serving_image: the custom serving container the model is uploaded with (default: ``image``,
            started as ``taxifare serve``; see components.vertex_steps.logic.serving_container_spec).
        name: the pipeline's name.
        email: wrap the whole pipeline in Vertex AI's e-mail notification (:func:`with_email_notification`).
    """
    if email:
        return with_email_notification(create_vertex_pipeline(image, serving_image, f"{name}-steps"), name)
    serving_image = serving_image or image
    stage_op, smoke_op, verify_op = (with_image(c, image) for c in (stage_data, smoke_train, verify_export))
    train_job_op = create_custom_training_job_from_component(with_image(full_train, image), display_name="taxifare-full-train")
    pools_template = json.dumps(train_job_op.component_spec.inputs["worker_pool_specs"].default)

    def steps(p: Parameters) -> None:
        lookup = with_image(lookup_deployment, image)(
            project=PROJECT,
            location=LOCATION,
            model_display_name=p.model_display_name,
            endpoint_display_name=p.endpoint_display_name,
            traffic_percentage=p.traffic_percentage,
        ).set_display_name("Find deployed model")
        lookup.set_caching_options(False)
        stage, smoke = dag.stage_and_smoke(
            stage_op,
            smoke_op,
            p,
            scheduled_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
            bigquery_project=PROJECT,
            drift_op=with_image(check_drift, image),
            # the deployed model's artifact folder holds the training statistics full_train wrote into the SavedModel folder
            serving_root="",
            model_name=p.model_display_name,
            deployed_stats_uri=lookup.outputs["deployed_model_uri"],
        )
        tuned = _tuned(image, stage, smoke, p)
        train = _train_job(train_job_op, with_image(training_worker_pools, image), pools_template, stage, p, tuned).after(smoke)
        verify = dag.verify(
            verify_op,
            stage,
            train,
            p,
            serving_root="",
            model_name=p.model_display_name,
            infra_validation=True,
            deployed_model_uri=lookup.outputs["deployed_model_uri"],
            deployed_rmse=lookup.outputs["deployed_rmse"],
        )
        with dag.blessed(verify):
            # compare-and-publish: another run may have deployed a model (or a rollback moved the traffic) since lookup_deployment looked
            recheck = with_image(recheck_deployment, image)(
                project=PROJECT,
                location=LOCATION,
                endpoint_display_name=p.endpoint_display_name,
                deployed_model_uri=lookup.outputs["deployed_model_uri"],
                verification=verify.outputs["metrics"],
            ).set_display_name("Recheck deployed model")
            recheck.set_caching_options(False)
            with dsl.If(recheck.output == "true", name="still-better"):
                model = _publish(image, serving_image, stage, train, verify, lookup, p)
                _batch_predict(image, model, p, name="batch-deployed")
        _batch_with_served_model(image, p)

    description = "Stage NYC taxi trips, smoke-train, train on Vertex AI, verify, upload and deploy when better."
    summary = "Train on Vertex AI and deploy the taxi-fare model."
    return dag.pipeline(steps, image=image, target=parameters.VERTEX, name=name, summary=summary, description=description)


def _tuned(image: str, stage: dsl.PipelineTask, smoke: dsl.PipelineTask, p: Parameters) -> Hyperparameters:
    """With tuning_trials > 0, a Vertex hyperparameter tuning job of the trainer's image and its best trial; else the given set."""
    with dsl.If(p.tuning_trials > 0, name="tuning"):
        spec = (
            with_image(tuning_job_spec, image)(
                **dag.splits(stage),
                image=image,
                machine_type=p.machine_type,
                tuning_trials=p.tuning_trials,
                tuning_space=p.tuning_space,
                train_steps=p.train_steps,
                seed=p.seed,
            )
            .set_display_name("Tuning job spec")
            .after(smoke)
        )
        job = HyperparameterTuningJobRunOp(
            display_name="taxifare-tune",
            base_output_directory=dsl.PIPELINE_ROOT_PLACEHOLDER,
            worker_pool_specs=spec.outputs["worker_pool_specs"],
            study_spec_metrics=spec.outputs["study_spec_metrics"],
            study_spec_parameters=spec.outputs["study_spec_parameters"],
            max_trial_count=p.tuning_trials,
            parallel_trial_count=p.tuning_parallel_trials,
            service_account=p.training_service_account,
            project=PROJECT,
            location=LOCATION,
        ).set_display_name("Tune (Vertex hyperparameter tuning job)")
        best = with_image(best_trial, image)(gcp_resources=job.outputs["gcp_resources"]).set_display_name("Best trial")
    with dsl.Else(name="no-tuning"):
        given = dag.tuned_locally(with_image(tune, image), stage, smoke, p)  # tuning_trials is 0 here: passes the given set through
    return Hyperparameters(
        hidden_units=dsl.OneOf(best.outputs["hidden_units"], given.hidden_units),
        learning_rate=dsl.OneOf(best.outputs["learning_rate"], given.learning_rate),
        batch_size=dsl.OneOf(best.outputs["batch_size"], given.batch_size),
    )


def _train_job(
    train_job_op: BaseComponent,
    pools_op: BaseComponent,
    pools_template: str,
    stage: dsl.PipelineTask,
    p: Parameters,
    tuned: Hyperparameters,
) -> dsl.PipelineTask:
    """The worker pools for this run's machine settings, and full_train as a Vertex custom job on them."""
    pools = pools_op(
        template=pools_template,
        machine_type=p.machine_type,
        accelerator_type=p.accelerator_type,
        accelerator_count=p.accelerator_count,
        replica_count=p.replica_count,
    ).set_display_name("Training machines")
    return dag.full_training(
        train_job_op,
        stage,
        p,
        tuned,
        worker_pool_specs=pools.output,
        service_account=p.training_service_account,
        tensorboard=p.tensorboard,
        restart_job_on_worker_restart=p.restart_job_on_worker_restart,
        base_output_directory=dsl.PIPELINE_ROOT_PLACEHOLDER,
        project=PROJECT,
        location=LOCATION,
    ).set_display_name("Full training (Vertex custom job)")


def _publish(
    image: str,
    serving_image: str,
    stage: dsl.PipelineTask,
    train: dsl.PipelineTask,
    verify: dsl.PipelineTask,
    lookup: dsl.PipelineTask,
    p: Parameters,
) -> PipelineChannel:
    """Prepare, upload (with verify_export's evaluation imported into the version) and deploy the candidate; the uploaded model."""
    prepared = with_image(prepare_upload, image)(
        model=train.outputs["model"],
        verification=verify.outputs["metrics"],
        test_data=stage.outputs["test_data"],
        serving_image=serving_image,
    ).set_display_name("Prepare upload")
    model = _upload(prepared, lookup, p)
    ModelImportEvaluationOp(
        model=model, regression_metrics=prepared.outputs["evaluation"], display_name="taxifare verify_export"
    ).set_display_name("Import evaluation")
    _deploy(model, lookup, p, with_image(enable_request_logging, image))
    return model


def _upload(prepared: dsl.PipelineTask, lookup: dsl.PipelineTask, p: Parameters) -> PipelineChannel:
    """Upload the model: a new version of the existing model, or a new model. Returns the uploaded model."""
    upload_args = {
        "project": PROJECT,
        "location": LOCATION,
        "display_name": p.model_display_name,
        "unmanaged_container_model": prepared.outputs["unmanaged_model"],
        "labels": prepared.outputs["Output"],
    }
    with dsl.If(lookup.outputs["has_model"] == "true", name="new-version"):
        as_version = ModelUploadOp(**upload_args, parent_model=lookup.outputs["parent_model"]).set_display_name("Upload new version")
    with dsl.Else(name="new-model"):
        as_model = ModelUploadOp(**upload_args).set_display_name("Upload new model")
    return dsl.OneOf(as_version.outputs["model"], as_model.outputs["model"])


def _deploy(model: PipelineChannel, lookup: dsl.PipelineTask, p: Parameters, logging_op: BaseComponent) -> None:
    """Deploy ``model`` to the existing endpoint (its traffic split adjusted) or to a new one; then its request logging, if asked."""
    deploy_args = {
        "model": model,
        "deployed_model_display_name": p.model_display_name,
        "dedicated_resources_machine_type": p.deploy_machine_type,
        "dedicated_resources_min_replica_count": p.min_replicas,
        "dedicated_resources_max_replica_count": p.max_replicas,
    }
    with dsl.If(lookup.outputs["has_endpoint"] == "true", name="existing-endpoint"):
        deployed = ModelDeployOp(
            **deploy_args, endpoint=lookup.outputs["endpoint"], traffic_split=lookup.outputs["traffic_split"]
        ).set_display_name("Deploy to endpoint")
        _request_logging(logging_op, lookup.outputs["endpoint"], deployed, p)
    with dsl.Else(name="new-endpoint"):
        created = EndpointCreateOp(project=PROJECT, location=LOCATION, display_name=p.endpoint_display_name).set_display_name(
            "Create endpoint"
        )
        deployed = ModelDeployOp(**deploy_args, endpoint=created.outputs["endpoint"], traffic_split={"0": 100}).set_display_name(
            "Deploy to new endpoint"
        )
        _request_logging(logging_op, created.outputs["endpoint"], deployed, p)


def _request_logging(logging_op: BaseComponent, endpoint: PipelineChannel, deployed: dsl.PipelineTask, p: Parameters) -> None:
    """With request_logging_sampling_rate > 0, turn on the endpoint's request-response logging once the deploy is done."""
    with dsl.If(p.request_logging_sampling_rate > 0, name="request-logging"):
        logging_op(
            project=PROJECT,
            location=LOCATION,
            endpoint=endpoint,
            request_logging_sampling_rate=p.request_logging_sampling_rate,
            request_logging_bigquery=p.request_logging_bigquery,
        ).set_display_name("Request-response logging").set_caching_options(False).after(deployed)


def _batch_with_served_model(image: str, p: Parameters) -> None:
    """When the run's model is not blessed (the Else of the blessed group): batch prediction with the version the endpoint serves."""
    with dsl.Else(name="not-blessed"), dsl.If(p.batch_source != "", name="batch-served"):
        served = with_image(served_model, image)(
            project=PROJECT, location=LOCATION, endpoint_display_name=p.endpoint_display_name
        ).set_display_name("Find served model")
        served.set_caching_options(False)
        _batch_predict(image, served.outputs["model"], p)


def _batch_predict(image: str, model: PipelineChannel, p: Parameters, name: str | None = None) -> None:
    """The optional last step: a Vertex AI BatchPredictionJob of ``batch_source`` with ``model``, under the pipeline root.

    With ``name``, inside a condition group of that name that runs it only when ``batch_source`` is set.
    """
    if name is not None:
        with dsl.If(p.batch_source != "", name=name):
            _batch_predict(image, model, p)
        return
    source = with_image(batch_inputs, image)(batch_source=p.batch_source).set_display_name("Batch source")
    ModelBatchPredictOp(
        project=PROJECT,
        location=LOCATION,
        job_display_name="taxifare-batch-predict",
        model=model,
        instances_format=source.outputs["instances_format"],
        gcs_source_uris=source.outputs["gcs_source_uris"],
        bigquery_source_input_uri=source.outputs["bigquery_source_input_uri"],
        instance_type="object",
        key_field="key",
        excluded_fields=source.outputs["excluded_fields"],
        predictions_format="jsonl",
        gcs_destination_output_uri_prefix=dsl.PIPELINE_ROOT_PLACEHOLDER,
        machine_type=p.batch_machine_type,
        starting_replica_count=p.batch_starting_replica_count,
        max_replica_count=p.batch_max_replica_count,
    ).set_display_name("Batch predict (Vertex batch prediction job)")


def with_email_notification(steps_pipeline: BaseComponent, name: str) -> BaseComponent:
    """The Vertex pipeline as a sub-pipeline inside an exit handler whose exit task is ``VertexNotificationEmailOp``.

    kfp allows one exit handler per pipeline level, and the plain pipeline's is run_summary (the
    summary and the webhook). Vertex AI documents its e-mail component as an exit task, so the
    e-mail handler is one level up: it gets the final status of everything inside, run_summary
    included, and e-mails it to ``notify_emails`` (at most three addresses; Vertex sends the
    mail, with the run's link). The parameters are the plain pipeline's plus ``notify_emails``.
    """
    from google_cloud_pipeline_components.v1.vertex_notification_email import VertexNotificationEmailOp

    def body(p: Parameters) -> None:
        notify = VertexNotificationEmailOp(recipients=p.notify_emails).set_display_name("E-mail the run's status")
        with dsl.ExitHandler(notify, name="notify-email"):
            steps_pipeline(**parameters.arguments(p, parameters.VERTEX)).set_display_name("taxifare")

    summary = "Train on Vertex AI and deploy the taxi-fare model; e-mail the run's final status."
    func = parameters.pipeline_function(
        body, target=parameters.VERTEX, name="taxifare_vertex_email", summary=summary, extra=("notify_emails",)
    )
    description = "The taxifare Vertex pipeline, with Vertex AI's e-mail notification of its final status."
    return dsl.pipeline(name=name, description=description)(func)
