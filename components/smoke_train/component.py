"""Step 2, smoke_train: the trainer for a few steps, a cheap gate before full training.

Proves that the package imports, the staged data parses, a step runs with a finite loss
and a SavedModel is exported, before paying for full training.
"""

from kfp.dsl import Dataset, Input, Model, Output

from components.common import step


@step
def smoke_train(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    smoke_steps: int,
    hidden_units: str,
    learning_rate: float,
    seed: int,
    model: Output[Model],
):
    """Train for a few steps; fail unless the loss is finite and a SavedModel was exported."""
    from components.common import started

    started("smoke_train", output=model.path)  # first: a failure from here on is this step's

    import tempfile

    from components.contracts import Hyperparameters, ModelInfo
    from components.full_train.logic import copy_export, train
    from trainer.config import SMOKE_BATCH_SIZE, SMOKE_EVAL_STEPS

    hyperparameters = Hyperparameters(hidden_units, learning_rate, batch_size=SMOKE_BATCH_SIZE)  # small batches: a few cheap steps
    with tempfile.TemporaryDirectory(prefix="taxifare-smoke-") as scratch:
        result = train(
            train_data.path,
            eval_data.path,
            scratch,
            hyperparameters,
            train_steps=smoke_steps,
            seed=seed,
            eval_steps=SMOKE_EVAL_STEPS,
            step_name="smoke_train",
        )
        copy_export(result["export_dir"], model.path)
    model.metadata.update(ModelInfo(rmse=result["rmse"], steps=result["steps"], smoke=True).to_metadata())
