"""The DAG body both targets share: stage_data -> check_drift -> smoke_train -> (tune) -> (full_train) -> verify_export.

:mod:`pipeline.pipeline` (kfp.local, Kubeflow) and :mod:`pipeline.vertex_pipeline` (Vertex AI)
call these helpers inside their ``@dsl.pipeline`` function, with the pipeline parameters as
a dict (``params``, see :mod:`pipeline.parameters`); each target adds only what differs: how
full training runs (a step, or a Vertex custom job) and what deploys (a local publish, or the
upload/deploy chain), and the few step inputs that come from elsewhere on Vertex (the schedule
time, the project, the deployed model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kfp import dsl

from components.common import DEFAULT_IMAGE, step
from components.impl.contracts import Hyperparameters

#: stage_data's inputs that are pipeline parameters of the same name.
STAGE_PARAMS = (
    "source",
    "eval_source",
    "test_source",
    "synthetic_rows",
    "seed",
    "datetime_layout",
    "eval_fraction",
    "test_fraction",
    "max_bad_fraction",
    "window_days",
    "data_fingerprint",
)
#: smoke_train's inputs that are pipeline parameters of the same name.
SMOKE_PARAMS = ("smoke_steps", "hidden_units", "learning_rate", "seed")
#: full_train's inputs that are pipeline parameters of the same name.
TRAIN_PARAMS = ("train_steps", "batch_size", "hidden_units", "learning_rate", "seed")
#: The hyperparameters the tune step hands to full training (its outputs, full_train's inputs).
TUNED = Hyperparameters._fields
#: The tune step's inputs that are pipeline parameters of the same name.
TUNE_PARAMS = ("tuning_trials", "tuning_space", "train_steps", *TUNED, "seed")
#: verify_export's inputs that are pipeline parameters of the same name (the deploy decision's thresholds).
VERIFY_PARAMS = (
    "max_rmse",
    "min_improvement",
    "require_significant",
    "max_slice_regression",
    "min_slice_rows",
    "allow_signature_change",
    "require_beat_baseline",
)


def named(params: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The pipeline parameters ``names``, as the inputs of the same names of a step."""
    return {name: params[name] for name in names}


def splits(stage: Any) -> dict[str, Any]:
    """The staged train and eval splits, as the ``train_data`` and ``eval_data`` inputs of a step."""
    return {"train_data": stage.outputs["train_data"], "eval_data": stage.outputs["eval_data"]}


def with_image(component: Any, image: str) -> Any:
    """The same lightweight component, built to run in ``image``."""
    if image == DEFAULT_IMAGE:
        return component
    return step(component.python_func, image=image)


def stage_and_smoke(
    stage_op: Any,
    smoke_op: Any,
    params: dict[str, Any],
    *,
    scheduled_time: Any,
    bigquery_project: Any,
    drift_op: Any,
    drift_inputs: dict[str, Any],
) -> tuple[Any, Any]:
    """The stage_data task, the check_drift gate on its train split, and the smoke_train task on the splits.

    Args:
        stage_op: the stage_data component.
        smoke_op: the smoke_train component.
        params: the pipeline parameters.
        scheduled_time: stage_data's scheduled time (a parameter locally, the schedule's time on Vertex).
        bigquery_project: the project of a BigQuery export.
        drift_op: the check_drift component.
        drift_inputs: ``serving_root``, ``model_name`` and ``deployed_stats_uri`` as the target provides them.
    """
    stage = stage_op(**named(params, STAGE_PARAMS), scheduled_time=scheduled_time, bigquery_project=bigquery_project)
    stage.set_display_name("Stage data")
    drift = (
        drift_op(train_data=stage.outputs["train_data"], max_drift=params["max_drift"], **drift_inputs)
        .set_display_name("Check drift")
        .set_caching_options(False)  # compares with what is deployed now
    )
    smoke = smoke_op(**splits(stage), **named(params, SMOKE_PARAMS)).set_display_name("Smoke training").after(drift)
    return stage, smoke


def tuned_locally(tune_op: Any, stage: Any, smoke: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The tune step (an Optuna search, or the given set passed through when tuning_trials is 0) and its best set."""
    tune = tune_op(**splits(stage), **named(params, TUNE_PARAMS)).set_display_name("Tune")
    tune.after(smoke)
    return {name: tune.outputs[name] for name in TUNED}


def train_inputs(stage: Any, params: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """full_train's inputs: the staged splits, the training parameters and the tuned hyperparameters."""
    return {**splits(stage), **named(params, TRAIN_PARAMS), **tuned}


def verify(verify_op: Any, stage: Any, train: Any, params: dict[str, Any], **target_inputs: Any) -> Any:
    """The verify_export task on the trained model (never cached: it compares with what is deployed now).

    Args:
        verify_op: the verify_export component.
        stage: the stage_data task.
        train: the full_train task (or custom job).
        params: the pipeline parameters.
        target_inputs: ``serving_root``, ``model_name``, ``infra_validation``,
            ``deployed_model_uri`` and ``deployed_rmse`` as the target provides them.
    """
    return (
        verify_op(
            model=train.outputs["model"],
            train_data=stage.outputs["train_data"],
            test_data=stage.outputs["test_data"],
            tensorboard=train.outputs["tensorboard"],
            **named(params, VERIFY_PARAMS),
            **target_inputs,
        )
        .set_display_name("Verify export")
        .set_caching_options(False)
    )


def pipeline(steps: Callable[[dict[str, Any]], None], *, image: str, target: str, name: str, summary: str, description: str) -> Any:
    """The ``@dsl.pipeline`` of ``target`` whose body runs ``steps(params)`` inside the run-summary exit handler.

    Its signature and docstring (parameters, defaults, descriptions) come from :mod:`pipeline.parameters`.
    """
    from pipeline import parameters

    func = parameters.pipeline_function(with_run_summary(steps, image), target=target, name=f"taxifare_{target}", summary=summary)
    return dsl.pipeline(name=name, description=description)(func)


def with_run_summary(steps: Callable[[dict[str, Any]], None], image: str) -> Callable[[dict[str, Any]], None]:
    """The pipeline body: ``steps(params)`` inside :func:`exit_handler`, whose exit task runs in ``image``."""
    from components.run_summary import run_summary

    summary_op = with_image(run_summary, image)

    def body(params: dict[str, Any]) -> None:
        with exit_handler(summary_op, params):
            steps(params)

    return body


def exit_handler(summary_op: Any, params: dict[str, Any]) -> dsl.ExitHandler:
    """The group around every step: its exit task, run_summary, runs whatever happened to them.

    run_summary gets their final status, writes the run's summary and POSTs it to
    ``notify_webhook`` when set (see :mod:`components.impl.notify`).
    """
    exit_task = (
        summary_op(run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, notify_webhook=params["notify_webhook"])
        .set_display_name("Run summary")
        .set_caching_options(False)  # it reports this run
    )
    return dsl.ExitHandler(exit_task, name="taxifare-steps")


def blessed(verify_task: Any) -> dsl.If:
    """The condition group of the deployment steps: the verification blessed the model."""
    return dsl.If(verify_task.outputs["Output"] == True, name="blessed")  # noqa: E712 - a pipeline condition, not Python


def batch_scoring(batch_op: Any, params: dict[str, Any], *, name: str, **inputs: Any) -> None:
    """The optional last step: batch_predict on ``batch_source`` when it is set (a condition group named ``name``).

    Args:
        batch_op: the batch_predict component.
        params: the pipeline parameters.
        name: the condition group's name (unique in the pipeline).
        inputs: ``deployed_path``, ``serving_root`` and ``model_name`` as the branch provides them.
    """
    with dsl.If(params["batch_source"] != "", name=name):
        (
            batch_op(batch_source=params["batch_source"], **inputs)
            .set_display_name("Batch predict")
            .set_caching_options(False)  # scores with what is deployed now
        )
