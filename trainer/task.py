"""Command line of the trainer: ``python -m trainer.task --train_data_paths ... --output_dir ...``.

Keeps the lab's flags, so the same command runs by hand, inside a pipeline step and as a
Vertex AI custom training job (where ``--output_dir`` defaults to ``AIP_MODEL_DIR``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

_EPILOG = """\
example (the lab's local run):
  python -m trainer.task \\
      --train_data_paths '../shared/data/taxifare/taxi-train*.csv' \\
      --eval_data_paths '../shared/data/taxifare/taxi-valid*.csv' \\
      --output_dir runs/taxi_trained --train_steps 1000

Output: checkpoints/, tensorboard/ and export/exporter/<timestamp>/ (the SavedModel and
metrics.json) under --output_dir. Starting the same command again resumes from the last
checkpoint. Under hyperparameter tuning (TF_CONFIG names a trial, or CLOUD_ML_TRIAL_ID is
set) each trial writes to <output_dir>/<trial>/ and reports its eval RMSE as the metric "rmse".
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every flag documented)."""
    from trainer import validation  # light: stdlib and the schema

    p = argparse.ArgumentParser(
        prog="python -m trainer.task",
        description="Train the NYC taxi-fare model on CSV files, evaluate it and export a SavedModel.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--train_data_paths", required=True, help="training CSV files: a glob, a directory, or several separated by commas; local or gs://"
    )
    data.add_argument("--eval_data_paths", required=True, help="evaluation CSV files, same forms as --train_data_paths")
    data.add_argument(
        "--max_bad_fraction",
        type=float,
        default=validation.MAX_BAD_FRACTION,
        help="stop when a larger share of rows is malformed or out of range (default %(default)s)",
    )
    data.add_argument(
        "--no_validate",
        action="store_true",
        help="skip the validation pass over the files before training (bad rows are still dropped in the input pipeline, but not counted)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--output_dir",
        default=os.environ.get("AIP_MODEL_DIR"),
        help="where checkpoints, TensorBoard logs and the export go (default: $AIP_MODEL_DIR, set by Vertex AI custom jobs)",
    )
    out.add_argument(
        "--job-dir",
        dest="job_dir",
        default=None,
        help="accepted for compatibility with the cloud training service; used as --output_dir when that is not given",
    )
    train = p.add_argument_group("training")
    train.add_argument("--train_steps", type=int, default=5000, help="total optimizer steps, counted across restarts (default %(default)s)")
    train.add_argument("--train_batch_size", type=int, default=512, help="examples per training step (default %(default)s)")
    train.add_argument("--eval_steps", type=int, default=None, help="evaluation batches; default: all the evaluation data")
    train.add_argument("--eval_batch_size", type=int, default=2048, help="examples per evaluation batch (default %(default)s)")
    train.add_argument("--learning_rate", type=float, default=0.003, help="Adam learning rate (default %(default)s)")
    train.add_argument("--seed", type=int, default=None, help="random seed for initialisation and shuffling (default: random)")
    train.add_argument("--shuffle_buffer", type=int, default=50_000, help="lines in the training shuffle buffer (default %(default)s)")
    train.add_argument(
        "--steps_per_loop",
        type=int,
        default=100,
        help="steps run in-graph between progress lines and TensorBoard points (default %(default)s)",
    )
    train.add_argument("--checkpoint_every_steps", type=int, default=500, help="steps between checkpoints (default %(default)s)")
    train.add_argument(
        "--eval_every_steps", type=int, default=1000, help="steps between evaluations written to TensorBoard (default %(default)s)"
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--hidden_units",
        type=int,
        nargs="+",
        default=[64, 32],
        help="sizes of the hidden layers, e.g. --hidden_units 64 32 (default: 64 32)",
    )
    model.add_argument(
        "--embedding_dim", type=int, default=4, help="embedding size of the pickup and dropoff grid cells (default %(default)s)"
    )
    model.add_argument(
        "--cross_embedding_dim", type=int, default=4, help="embedding size of the pickup x dropoff cell cross (default %(default)s)"
    )
    model.add_argument("--dropout", type=float, default=0.0, help="dropout after each hidden layer (default %(default)s)")
    model.add_argument("--l2", type=float, default=1e-5, help="L2 penalty on embeddings and hidden layers (default %(default)s)")
    p.add_argument("--verbosity", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default="INFO", help="log level (default %(default)s)")
    return p


def trial_id() -> str | None:
    """The hyperparameter-tuning trial this process runs, if any."""
    trial = os.environ.get("CLOUD_ML_TRIAL_ID")
    if trial:
        return trial
    try:
        task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    except json.JSONDecodeError:
        return None
    value = task.get("trial")
    return str(value) if value not in (None, "") else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trainer; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.verbosity, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    output_dir = args.output_dir or args.job_dir
    if not output_dir:
        print("error: --output_dir is required (or set AIP_MODEL_DIR): a local directory or gs:// URI", file=sys.stderr)
        return 2
    trial = trial_id()
    if trial:
        output_dir = os.path.join(output_dir, trial)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer.errors import InputError
    from trainer.model import TrainConfig, train_and_evaluate

    config = TrainConfig(
        train_data_paths=args.train_data_paths,
        eval_data_paths=args.eval_data_paths,
        output_dir=output_dir,
        train_steps=args.train_steps,
        train_batch_size=args.train_batch_size,
        eval_batch_size=args.eval_batch_size,
        eval_steps=args.eval_steps,
        hidden_units=tuple(args.hidden_units),
        learning_rate=args.learning_rate,
        embedding_dim=args.embedding_dim,
        cross_embedding_dim=args.cross_embedding_dim,
        dropout=args.dropout,
        l2=args.l2,
        shuffle_buffer=args.shuffle_buffer,
        steps_per_loop=args.steps_per_loop,
        checkpoint_every_steps=args.checkpoint_every_steps,
        eval_every_steps=args.eval_every_steps,
        max_bad_fraction=args.max_bad_fraction,
        seed=args.seed,
        validate_data=not args.no_validate,
    )

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        result = train_and_evaluate(config, progress=progress)
    except (InputError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = result.metrics
    if trial:  # hyperparameter tuning: report the objective the way the tuning service reads it
        import hypertune

        hypertune.HyperTune().report_hyperparameter_tuning_metric(
            hyperparameter_metric_tag="rmse", metric_value=m["rmse"], global_step=m["steps"]
        )
    if not result.export_dir:  # a worker of a multi-worker job
        print(f"\nDone: worker finished {m['steps']} steps; the chief evaluates and exports the model.", flush=True)
        return 0
    print(
        f"\nDone: eval RMSE ${m['rmse']:.2f} on {m['eval_examples']} examples after {m['steps']} steps "
        f"({m['steps_this_run']} this run, {m['examples_per_second']:,.0f} examples/s).\n"
        f"SavedModel: {result.export_dir}\n"
        f"Next: look at the loss with `tensorboard --logdir {output_dir}`; "
        f"check a prediction with `saved_model_cli run --dir {result.export_dir} --tag_set serve "
        "--signature_def serving_default --input_exprs 'pickuplon=[-73.885262];pickuplat=[40.773008];"
        "dropofflon=[-73.987232];dropofflat=[40.732403];passengers=[2.0]'`",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
