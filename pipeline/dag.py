"""The DAG body both targets share: stage_data -> check_drift -> smoke_train -> (tune) -> (full_train) -> verify_export.

:mod:`pipeline.pipeline` (kfp.local, Kubeflow) and :mod:`pipeline.vertex_pipeline` (Vertex AI)
call these helpers inside their ``@dsl.pipeline`` function, with the pipeline parameters as
one :class:`~pipeline.parameters.Parameters` (``p``): every step input that is a pipeline
parameter is passed as ``name=p.name``, the same name from the table to the step's function
(and on to the trainer's :class:`~trainer.config.TrainConfig`). Each target adds only what
differs: how full training runs (a step, or a Vertex custom job) and what deploys (a local
publish, or the upload/deploy chain), and the few step inputs that come from elsewhere on
Vertex (the schedule time, the project, the deployed model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from kfp import dsl
from kfp.components import BaseComponent
from kfp.dsl.pipeline_channel import PipelineChannel

from components.common import DEFAULT_IMAGE, step
from components.contracts import Hyperparameters
from pipeline.parameters import Parameters

#: A step input given by the target: a constant, or a channel (a pipeline parameter, a placeholder's or another task's output).
Value: TypeAlias = str | int | float | bool | PipelineChannel


def splits(stage: dsl.PipelineTask) -> dict[str, PipelineChannel]:
    """The staged train and eval splits, as the ``train_data`` and ``eval_data`` inputs of a step."""
    return {"train_data": stage.outputs["train_data"], "eval_data": stage.outputs["eval_data"]}


def with_image(component: BaseComponent, image: str) -> BaseComponent:
    """The same lightweight component, built to run in ``image``."""
    if image == DEFAULT_IMAGE:
        return component
    return step(component.python_func, image=image)  # type: ignore[attr-defined]


def stage_and_smoke(
    stage_op: BaseComponent,
    smoke_op: BaseComponent,
    p: Parameters,
    *,
    scheduled_time: Value,
    bigquery_project: Value,
    drift_op: BaseComponent,
    serving_root: Value,
    model_name: Value,
    deployed_stats_uri: Value,
) -> tuple[dsl.PipelineTask, dsl.PipelineTask]:
    """The stage_data task, the check_drift gate on its train split, and the smoke_train task on the splits.

    Args:
        stage_op: the stage_data component (:func:`components.stage_data.component.stage_data`).
        smoke_op: the smoke_train component (:func:`components.smoke_train.component.smoke_train`).
        p: the pipeline parameters.
        scheduled_time: stage_data's scheduled time (a parameter locally, the schedule's time on Vertex).
        bigquery_project: the project of a BigQuery export.
        drift_op: the check_drift component (:func:`components.check_drift.component.check_drift`).
        serving_root: check_drift's model base path root (empty on Vertex).
        model_name: the served model's name (on Vertex the model's display name).
        deployed_stats_uri: the deployed model's folder with its training statistics (empty locally).
    """
    stage = stage_op(
        source=p.source,
        eval_source=p.eval_source,
        test_source=p.test_source,
        synthetic_rows=p.synthetic_rows,
        seed=p.seed,
        datetime_layout=p.datetime_layout,
        eval_fraction=p.eval_fraction,
        test_fraction=p.test_fraction,
        max_bad_fraction=p.max_bad_fraction,
        window_days=p.window_days,
        scheduled_time=scheduled_time,
        bigquery_project=bigquery_project,
        data_fingerprint=p.data_fingerprint,
    )
    stage.set_display_name("Stage data")
    drift = (
        drift_op(
            train_data=stage.outputs["train_data"],
            max_drift=p.max_drift,
            serving_root=serving_root,
            model_name=model_name,
            deployed_stats_uri=deployed_stats_uri,
        )
        .set_display_name("Check drift")
        .set_caching_options(False)  # compares with what is deployed now
    )
    smoke = smoke_op(**splits(stage), smoke_steps=p.smoke_steps, hidden_units=p.hidden_units, learning_rate=p.learning_rate, seed=p.seed)
    smoke.set_display_name("Smoke training").after(drift)
    return stage, smoke


def tuned_locally(tune_op: BaseComponent, stage: dsl.PipelineTask, smoke: dsl.PipelineTask, p: Parameters) -> Hyperparameters:
    """The tune step (:func:`components.tune.component.tune`: an Optuna search, or the given set when tuning_trials is 0); its best set."""
    tune = tune_op(
        **splits(stage),
        tuning_trials=p.tuning_trials,
        tuning_space=p.tuning_space,
        train_steps=p.train_steps,
        hidden_units=p.hidden_units,
        learning_rate=p.learning_rate,
        batch_size=p.batch_size,
        seed=p.seed,
    )
    tune.set_display_name("Tune").after(smoke)
    return hyperparameters_of(tune)


def hyperparameters_of(task: dsl.PipelineTask) -> Hyperparameters:
    """The hyperparameters a tune task (or the Vertex best trial) outputs, as channels by their names."""
    return Hyperparameters(
        hidden_units=task.outputs["hidden_units"], learning_rate=task.outputs["learning_rate"], batch_size=task.outputs["batch_size"]
    )


def full_training(
    train_op: BaseComponent, stage: dsl.PipelineTask, p: Parameters, tuned: Hyperparameters, **job: Value
) -> dsl.PipelineTask:
    """full_train on the staged splits with the training parameters and the tuned hyperparameters.

    Args:
        train_op: the full_train component (:func:`components.full_train.component.full_train`, or its Vertex custom job).
        stage: the stage_data task.
        p: the pipeline parameters.
        tuned: the tune step's hyperparameters.
        job: the custom job's own inputs (worker pools, service account, ...) on Vertex.
    """
    return train_op(
        **splits(stage),
        train_steps=p.train_steps,
        batch_size=tuned.batch_size,
        hidden_units=tuned.hidden_units,
        learning_rate=tuned.learning_rate,
        seed=p.seed,
        **job,
    )


def verify(
    verify_op: BaseComponent,
    stage: dsl.PipelineTask,
    train: dsl.PipelineTask,
    p: Parameters,
    *,
    serving_root: Value,
    model_name: Value,
    infra_validation: Value,
    deployed_model_uri: Value,
    deployed_rmse: Value,
) -> dsl.PipelineTask:
    """The verify_export task on the trained model (never cached: it compares with what is deployed now).

    Args:
        verify_op: the verify_export component (:func:`components.verify_export.component.verify_export`).
        stage: the stage_data task.
        train: the full_train task (or custom job).
        p: the pipeline parameters (the deploy decision's thresholds).
        serving_root: the local model base paths' root (empty on Vertex).
        model_name: the served model's name (on Vertex the model's display name).
        infra_validation: serve the candidate and check its answers (always on Vertex).
        deployed_model_uri: the deployed model's folder (Vertex; empty locally).
        deployed_rmse: the deployed model's recorded RMSE (Vertex; -1 locally).
    """
    return (
        verify_op(
            model=train.outputs["model"],
            train_data=stage.outputs["train_data"],
            test_data=stage.outputs["test_data"],
            tensorboard=train.outputs["tensorboard"],
            max_rmse=p.max_rmse,
            min_improvement=p.min_improvement,
            require_significant=p.require_significant,
            max_slice_regression=p.max_slice_regression,
            min_slice_rows=p.min_slice_rows,
            allow_signature_change=p.allow_signature_change,
            require_beat_baseline=p.require_beat_baseline,
            serving_root=serving_root,
            model_name=model_name,
            infra_validation=infra_validation,
            deployed_model_uri=deployed_model_uri,
            deployed_rmse=deployed_rmse,
        )
        .set_display_name("Verify export")
        .set_caching_options(False)
    )


def pipeline(steps: Callable[[Parameters], None], *, image: str, target: str, name: str, summary: str, description: str) -> BaseComponent:
    """The ``@dsl.pipeline`` of ``target`` whose body runs ``steps(p)`` inside the run-summary exit handler.

    Its signature and docstring (parameters, defaults, descriptions) come from :mod:`pipeline.parameters`.
    """
    from pipeline import parameters

    func = parameters.pipeline_function(with_run_summary(steps, image), target=target, name=f"taxifare_{target}", summary=summary)
    return dsl.pipeline(name=name, description=description)(func)


def with_run_summary(steps: Callable[[Parameters], None], image: str) -> Callable[[Parameters], None]:
    """The pipeline body: ``steps(p)`` inside :func:`exit_handler`, whose exit task runs in ``image``."""
    from components.run_summary.component import run_summary

    summary_op = with_image(run_summary, image)

    def body(p: Parameters) -> None:
        with exit_handler(summary_op, p):
            steps(p)

    return body


def exit_handler(summary_op: BaseComponent, p: Parameters) -> dsl.ExitHandler:
    """The group around every step: its exit task, run_summary, runs whatever happened to them.

    run_summary gets their final status, writes the run's summary and POSTs it to
    ``notify_webhook`` when set (see :mod:`components.run_summary.logic`).
    """
    exit_task = (
        summary_op(run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, notify_webhook=p.notify_webhook)
        .set_display_name("Run summary")
        .set_caching_options(False)  # it reports this run
    )
    return dsl.ExitHandler(exit_task, name="taxifare-steps")


def blessed(verify_task: dsl.PipelineTask) -> dsl.If:
    """The condition group of the deployment steps: the verification blessed the model."""
    return dsl.If(verify_task.outputs["Output"] == True, name="blessed")  # noqa: E712 - a pipeline condition, not Python


def batch_scoring(
    batch_op: BaseComponent, p: Parameters, *, name: str, deployed_path: Value, serving_root: Value, model_name: Value
) -> None:
    """The optional last step: batch_predict on ``batch_source`` when it is set (a condition group named ``name``).

    Args:
        batch_op: the batch_predict component (:func:`components.batch_predict.component.batch_predict`).
        p: the pipeline parameters.
        name: the condition group's name (unique in the pipeline).
        deployed_path: the version deploy published (empty: the served one).
        serving_root: the model base paths' root.
        model_name: the served model's name.
    """
    with dsl.If(p.batch_source != "", name=name):
        (
            batch_op(batch_source=p.batch_source, deployed_path=deployed_path, serving_root=serving_root, model_name=model_name)
            .set_display_name("Batch predict")
            .set_caching_options(False)  # scores with what is deployed now
        )
