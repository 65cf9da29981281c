"""The taxifare DAG: stage_data -> smoke_train -> full_train -> verify_export -> deploy (if blessed).

:func:`create_pipeline` is a pure factory: every setting is an argument (the image at
compile time; everything else a pipeline parameter with a default and a description), and
nothing reads the environment. Runners (``taxifare run``, ``compile``, ``submit``) compute
paths and pass them in.
"""

from typing import Any

from kfp import dsl

from components.common import DEFAULT_IMAGE
from components.deploy import deploy
from components.full_train import full_train
from components.smoke_train import smoke_train
from components.stage_data import stage_data
from components.verify_export import verify_export

PIPELINE_NAME = "taxifare"
STEPS = ("stage-data", "smoke-train", "full-train", "verify-export", "deploy")


def with_image(component: Any, image: str) -> Any:
    """The same lightweight component, built to run in ``image``."""
    if image == DEFAULT_IMAGE:
        return component
    return dsl.component(component.python_func, base_image=image, install_kfp_package=False)


def create_pipeline(image: str = DEFAULT_IMAGE, name: str = PIPELINE_NAME) -> Any:
    """Build the pipeline function whose steps run in ``image``.

    Args:
        image: the container image of every step (the project's own image).
        name: the pipeline's name.

    Returns:
        A ``@dsl.pipeline`` function, ready to compile or run with ``kfp.local``.
    """
    stage_op = with_image(stage_data, image)
    smoke_op = with_image(smoke_train, image)
    train_op = with_image(full_train, image)
    verify_op = with_image(verify_export, image)
    deploy_op = with_image(deploy, image)

    @dsl.pipeline(name=name, description="Stage NYC taxi trips, smoke-train, train, verify the export and deploy it when it is better.")
    def taxifare_pipeline(
        source: str = "synthetic",
        eval_source: str = "",
        test_source: str = "",
        synthetic_rows: int = 50_000,
        seed: int = 42,
        datetime_layout: bool = False,
        eval_fraction: float = 0.1,
        test_fraction: float = 0.1,
        max_bad_fraction: float = 0.1,
        window_days: int = 0,
        scheduled_time: str = "",
        bigquery_project: str = "",
        smoke_steps: int = 10,
        train_steps: int = 2000,
        batch_size: int = 512,
        hidden_units: str = "64,32",
        learning_rate: float = 0.003,
        max_rmse: float = 10.0,
        serving_root: str = "",
        model_name: str = "taxifare",
        infra_validation: bool = True,
    ) -> None:
        """Train and deploy the taxi-fare model.

        Args:
            source: 'synthetic' for generated trips, 'bigquery' for the public NYC trips table (with window_days), or CSV files
                (a glob, globs separated by commas, or a directory; local or gs://).
            eval_source: CSV files for the eval split; empty to carve it out of source by a hash of each row's key.
            test_source: CSV files for the test split; empty to carve it out of source by a hash of each row's key.
            synthetic_rows: rows to generate when source is 'synthetic'.
            seed: seed of the generated data and of training.
            datetime_layout: generate the layout with pickup_datetime (when source is 'synthetic').
            eval_fraction: share of source rows carved out for eval.
            test_fraction: share of source rows carved out for test.
            max_bad_fraction: stop at stage_data when a larger share of rows is malformed or out of range.
            window_days: with a source folder of dt=YYYY-MM-DD partitions, or 'bigquery', the days of trips before
                scheduled_time to use; 0 for none.
            scheduled_time: the end of the data window, RFC 3339 (e.g. 2026-11-28T06:00:00Z); empty for now.
                (kfp.local cannot resolve the schedule-time placeholder, so this pipeline takes it as a parameter.)
            bigquery_project: the project that runs the BigQuery export of source 'bigquery'; empty for the credentials' project.
            smoke_steps: steps of the smoke training that gates full training.
            train_steps: optimizer steps of full training.
            batch_size: examples per training step.
            hidden_units: hidden layer sizes separated by commas, e.g. '64,32'.
            learning_rate: Adam learning rate.
            max_rmse: the largest test RMSE in dollars that may be deployed.
            serving_root: the directory of TF-Serving model base paths that deploy publishes into.
            model_name: the served model's name (a directory under serving_root).
            infra_validation: serve the candidate in its own process and check its REST and gRPC answers before blessing it.
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
            scheduled_time=scheduled_time,
            bigquery_project=bigquery_project,
        ).set_display_name("Stage data")
        smoke = smoke_op(
            train_data=stage.outputs["train_data"],
            eval_data=stage.outputs["eval_data"],
            smoke_steps=smoke_steps,
            hidden_units=hidden_units,
            learning_rate=learning_rate,
            seed=seed,
        ).set_display_name("Smoke training")
        train = (
            train_op(
                train_data=stage.outputs["train_data"],
                eval_data=stage.outputs["eval_data"],
                train_steps=train_steps,
                batch_size=batch_size,
                hidden_units=hidden_units,
                learning_rate=learning_rate,
                seed=seed,
            )
            .set_display_name("Full training")
            .after(smoke)
            .set_retry(num_retries=2, backoff_duration="10s")
        )
        verify = (
            verify_op(
                model=train.outputs["model"],
                train_data=stage.outputs["train_data"],
                test_data=stage.outputs["test_data"],
                tensorboard=train.outputs["tensorboard"],
                max_rmse=max_rmse,
                serving_root=serving_root,
                model_name=model_name,
                infra_validation=infra_validation,
                deployed_model_uri="",
                deployed_rmse=-1.0,
            )
            .set_display_name("Verify export")
            .set_caching_options(False)  # compares with what is deployed now
        )
        with dsl.If(verify.outputs["Output"] == True, name="blessed"):  # noqa: E712 - a pipeline condition, not Python
            (
                deploy_op(
                    model=train.outputs["model"],
                    test_data=stage.outputs["test_data"],
                    serving_root=serving_root,
                    model_name=model_name,
                    verification=verify.outputs["metrics"],
                    run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                )
                .set_display_name("Deploy")
                .set_caching_options(False)  # a side effect: never skipped by the cache
            )

    return taxifare_pipeline


def parameter_docs() -> dict[str, tuple[Any, str]]:
    """``{name: (default, description)}`` of every pipeline parameter, from the factory itself."""
    import inspect

    func = create_pipeline().pipeline_func
    docs: dict[str, str] = {}
    in_args, name = False, ""
    for line in inspect.getdoc(func).splitlines():  # type: ignore[union-attr]
        if line.strip() == "Args:":
            in_args = True
        elif in_args and line.startswith("        ") and name:  # a continuation line
            docs[name] += " " + line.strip()
        elif in_args and line.startswith("    ") and ": " in line:
            name, text = line.strip().split(": ", 1)
            docs[name] = text
    return {name: (p.default, docs.get(name, "")) for name, p in inspect.signature(func).parameters.items()}


def check_arguments(arguments: dict[str, Any]) -> None:
    """Reject pipeline arguments that cannot work, before anything runs.

    Raises:
        InputError: naming the parameter and a valid value.
    """
    from components.impl.full_train import parse_hidden_units
    from trainer.storage import InputError

    known = parameter_docs()
    for name in arguments:
        if name not in known:
            raise InputError(f"unknown pipeline parameter {name!r}: known ones are {', '.join(known)}")
    merged = {name: arguments.get(name, default) for name, (default, _) in known.items()}
    for name in ("synthetic_rows", "smoke_steps", "train_steps", "batch_size"):
        if int(merged[name]) <= 0:
            raise InputError(f"{name} must be a positive integer (got {merged[name]})")
    for name in ("eval_fraction", "test_fraction"):
        if not 0 < float(merged[name]) < 0.5:
            raise InputError(f"{name} must be between 0 and 0.5 (got {merged[name]})")
    if not 0 <= float(merged["max_bad_fraction"]) <= 1:
        raise InputError(f"max_bad_fraction must be between 0 and 1 (got {merged['max_bad_fraction']})")
    if not 0 < float(merged["learning_rate"]) < 10:
        raise InputError(f"learning_rate must be a small positive number such as 0.003 (got {merged['learning_rate']})")
    if float(merged["max_rmse"]) <= 0:
        raise InputError(f"max_rmse must be a positive number of dollars (got {merged['max_rmse']})")
    if not str(merged["source"]).strip():
        raise InputError("source is empty: pass 'synthetic' or a CSV glob such as data/*.csv")
    if int(merged["window_days"]) < 0:
        raise InputError(f"window_days must be 0 (no window) or a number of days (got {merged['window_days']})")
    if str(merged["source"]).strip() == "bigquery" and int(merged["window_days"]) < 1:
        raise InputError("source 'bigquery' needs --window-days of at least 1 (the days of trips before the run to train on)")
    parse_hidden_units(str(merged["hidden_units"]))
