"""The taxifare DAG: stage_data -> check_drift -> smoke_train -> tune -> full_train -> verify_export -> deploy (if blessed).

:func:`create_pipeline` is a pure factory: every setting is an argument (the image at
compile time; everything else a pipeline parameter, declared with its default and
description in :mod:`pipeline.parameters`), and nothing reads the environment. Runners
(``taxifare run``, ``compile``, ``submit``) compute paths and pass them in. The body shared
with the Vertex variant is in :mod:`pipeline.dag`.
"""

from kfp import dsl
from kfp.components import BaseComponent

from components.batch_predict.component import batch_predict
from components.check_drift.component import check_drift
from components.common import DEFAULT_IMAGE
from components.deploy.component import deploy
from components.full_train.component import full_train
from components.smoke_train.component import smoke_train
from components.stage_data.component import stage_data
from components.tune.component import tune
from components.verify_export.component import verify_export
from pipeline import dag, parameters
from pipeline.dag import with_image
from pipeline.parameters import Parameters

__all__ = ["PIPELINE_NAME", "STEPS", "create_pipeline", "with_image"]

PIPELINE_NAME = "taxifare"
STEPS = ("stage-data", "check-drift", "smoke-train", "tune", "full-train", "verify-export", "deploy", "batch-predict")


def create_pipeline(image: str = DEFAULT_IMAGE, name: str = PIPELINE_NAME) -> BaseComponent:
    """Build the pipeline function whose steps run in ``image``.

    Args:
        image: the container image of every step (the project's own image).
        name: the pipeline's name.

    Returns:
        A ``@dsl.pipeline`` function, ready to compile or run with ``kfp.local``.
    """
    stage_op, drift_op, smoke_op, tune_op, train_op, verify_op, deploy_op, batch_op = (
        with_image(c, image) for c in (stage_data, check_drift, smoke_train, tune, full_train, verify_export, deploy, batch_predict)
    )

    def steps(p: Parameters) -> None:
        stage, smoke = dag.stage_and_smoke(
            stage_op,
            smoke_op,
            p,
            scheduled_time=p.scheduled_time,
            bigquery_project=p.bigquery_project,
            drift_op=drift_op,
            serving_root=p.serving_root,
            model_name=p.model_name,
            deployed_stats_uri="",
        )
        tuned = dag.tuned_locally(tune_op, stage, smoke, p)
        train = dag.full_training(train_op, stage, p, tuned)
        train.set_display_name("Full training").after(smoke).set_retry(num_retries=2, backoff_duration="10s")
        verify = dag.verify(
            verify_op,
            stage,
            train,
            p,
            serving_root=p.serving_root,
            model_name=p.model_name,
            infra_validation=p.infra_validation,
            deployed_model_uri="",
            deployed_rmse=-1.0,
        )
        with dag.blessed(verify):
            deployed = (
                deploy_op(
                    model=train.outputs["model"],
                    train_data=stage.outputs["train_data"],
                    test_data=stage.outputs["test_data"],
                    serving_root=p.serving_root,
                    model_name=p.model_name,
                    verification=verify.outputs["metrics"],
                    run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                    deploy_mode=p.deploy_mode,
                )
                .set_display_name("Deploy")
                .set_caching_options(False)  # a side effect: never skipped by the cache
            )
            dag.batch_scoring(
                batch_op, p, name="batch-deployed", deployed_path=deployed.output, serving_root=p.serving_root, model_name=p.model_name
            )
        with dsl.Else(name="not-blessed"):
            dag.batch_scoring(batch_op, p, name="batch-served", deployed_path="", serving_root=p.serving_root, model_name=p.model_name)

    description = "Stage NYC taxi trips, smoke-train, train, verify the export and deploy it when it is better."
    return dag.pipeline(
        steps, image=image, target=parameters.LOCAL, name=name, summary="Train and deploy the taxi-fare model.", description=description
    )
