"""The full_train step as a kfp component: a thin wrapper of :mod:`components.full_train.logic`.

Step 3, full_train: the trainer with the full budget on the staged data.
"""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.common import step


@step
def full_train(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    train_steps: int,
    batch_size: int,
    hidden_units: str,
    learning_rate: float,
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
    tensorboard: Output[Artifact],
):
    """Train the model with the full budget; export it with its metrics and TensorBoard logs."""
    from components.common import started

    started("full_train", output=model.path)  # first: a failure from here on is this step's

    from components.contracts import Hyperparameters, ModelInfo
    from components.full_train.logic import copy_export, train

    hyperparameters = Hyperparameters(hidden_units, learning_rate, batch_size)  # the tune step's set
    result = train(
        train_data.path,
        eval_data.path,
        tensorboard.path,
        hyperparameters,
        train_steps=train_steps,
        seed=seed,
        eval_steps=None,  # the whole eval split
        step_name="full_train",
    )
    if not result["export_dir"]:
        # A worker of a multi-worker custom job: every replica runs this same command, so a
        # worker leaves before kfp writes the executor output and cannot clobber the chief's.
        import sys

        sys.exit(0)
    copy_export(result["export_dir"], model.path)
    from components.check_drift.logic import write_stats

    write_stats(dict(train_data.metadata), model.path)  # the training data's statistics travel with the model (drift checks)
    info = ModelInfo(rmse=result["rmse"], steps=result["steps"], variant=result["variant"], hyperparameters=hyperparameters._asdict())
    model.metadata.update(info.to_metadata())
    from components.common import write_metrics

    write_metrics(metrics, {key: float(result[key]) for key in ("rmse", "steps", "examples_per_second", "eval_examples", "train_seconds")})
    tensorboard.metadata["logdir"] = tensorboard.uri
