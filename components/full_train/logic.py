"""Step 3, full_train: the trainer with the full budget on the staged data.

Outputs the exported SavedModel as a ``Model`` artifact (``framework`` and the evaluation
metrics in its metadata), a ``Metrics`` artifact (RMSE, steps, examples/s) and the training
directory as an artifact holding the TensorBoard logs (``tensorboard --logdir URI`` works on
it) and the checkpoints: a retry of this step finds them and resumes.
"""

import math
import os
import shutil
from typing import Any

from base import atomic, checks
from components.common import progress, summary
from components.contracts import Hyperparameters


def parse_hidden_units(text: str) -> tuple[int, ...]:
    """``"64,32"`` or ``"64 32"`` -> ``(64, 32)``.

    Raises:
        InputError: for anything but positive integers.
    """
    return checks.hidden_units("hidden_units", text)


def data_pattern(dataset_path: str) -> str:
    """The CSV glob inside a staged ``Dataset`` directory."""
    return os.path.join(dataset_path, "*.csv")


def train(
    train_path: str,
    eval_path: str,
    output_dir: str,
    hyperparameters: Hyperparameters,
    *,
    train_steps: int,
    seed: int,
    eval_steps: int | None,
    step_name: str,
) -> dict[str, Any]:
    """Train, evaluate and export with :mod:`trainer` (the work of both training steps).

    Args:
        train_path: the staged train ``Dataset`` directory.
        eval_path: the staged eval ``Dataset`` directory.
        output_dir: checkpoints, TensorBoard logs and the export go here; a rerun resumes.
        hyperparameters: hidden layer sizes (e.g. ``"64,32"``), Adam's learning rate, examples per step.
        train_steps: total optimizer steps (:attr:`trainer.config.TrainConfig.train_steps`).
        seed: random seed.
        eval_steps: evaluation batches (``None``: the whole eval split).
        step_name: the step (``smoke_train``, ``full_train``), for the summary line.

    Returns:
        The metrics, plus ``export_dir`` and ``variant``.

    Raises:
        InputError: a bad parameter.
        FloatingPointError: the loss is not finite.
        RuntimeError: no SavedModel was exported.
    """
    from trainer.quiet import import_tensorflow

    import_tensorflow()  # without its start-up lines in the step's log (unless TAXIFARE_VERBOSE=1)
    from trainer.model import TrainConfig, is_chief, train_and_evaluate

    config = TrainConfig(
        train_data_paths=data_pattern(train_path),
        eval_data_paths=data_pattern(eval_path),
        output_dir=output_dir,
        train_steps=train_steps,
        batch_size=hyperparameters.batch_size,
        hidden_units=parse_hidden_units(hyperparameters.hidden_units),
        learning_rate=hyperparameters.learning_rate,
        seed=seed,
        eval_steps=eval_steps,
        validate_data=False,  # stage_data validated every row
        extra_tensorboard_dir=os.environ.get("AIP_TENSORBOARD_LOG_DIR") or None,  # set by Vertex custom jobs
    )
    result = train_and_evaluate(
        config, progress=lambda line: print(line, flush=True), on_step=lambda **figures: progress(step_name, **figures)
    )
    metrics = result.metrics
    if not is_chief():  # a worker of a multi-worker job: the chief writes the outputs
        return {**metrics, "export_dir": "", "variant": result.variant.value}
    if not math.isfinite(metrics["rmse"]):
        raise FloatingPointError(f"{step_name}: evaluation RMSE is {metrics['rmse']}: lower learning_rate")
    if not result.export_dir or not os.path.exists(os.path.join(result.export_dir, "saved_model.pb")):
        raise RuntimeError(f"{step_name}: the trainer exported no SavedModel under {output_dir}")
    summary(
        step_name,
        f"eval RMSE ${metrics['rmse']:.2f} after {metrics['steps']:,} steps ({metrics['examples_per_second']:,.0f} examples/s)",
        rmse=metrics["rmse"],
        steps=metrics["steps"],
    )
    return {**metrics, "export_dir": result.export_dir, "variant": result.variant.value}


def copy_export(export_dir: str, model_path: str) -> None:
    """Copy the SavedModel into the ``Model`` artifact's directory (through a temporary name)."""
    with atomic.replacing(model_path.rstrip("/")) as tmp:
        shutil.copytree(export_dir, tmp)
