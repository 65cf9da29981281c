"""Command line of the trainer: ``python -m trainer.task --train_data_paths ... --output_dir ...``.

Keeps the lab's flags, so the same command runs by hand, inside a pipeline step and as a
Vertex AI custom training job (where ``--output_dir`` defaults to ``AIP_MODEL_DIR``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from base.errors import OneLineParser

if TYPE_CHECKING:
    from trainer.config import TrainConfig

_EPILOG = """\
example (the lab's local run):
  python -m trainer.task \\
      --train_data_paths '../shared/data/taxifare/taxi-train*.csv' \\
      --eval_data_paths '../shared/data/taxifare/taxi-valid*.csv' \\
      --output_dir runs/taxi_trained --train_steps 1000

Output: checkpoints/ (with best/, the best model by eval RMSE), tensorboard/{train,eval}/
and export/exporter/<timestamp>/ (the SavedModel of the best evaluation, metrics.json saying
which step it is and why, and TF Serving's warm-up requests) under --output_dir. Starting the
same command again resumes from the last checkpoint. Under hyperparameter tuning (TF_CONFIG names a trial, or CLOUD_ML_TRIAL_ID is
set) each trial writes to <output_dir>/<trial>/ and reports its eval RMSE as the metric "rmse".
"""


def _defaults() -> dict[str, Any]:
    """One default per setting: :class:`trainer.config.TrainConfig`'s."""
    from trainer.config import TrainConfig  # light: stdlib and the schema

    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _data_flags(p: argparse.ArgumentParser) -> None:
    """The data flags."""
    from trainer import validation  # light: stdlib and the schema

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


def _output_flags(p: argparse.ArgumentParser) -> None:
    """The output flags."""
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


#: The training flags, each setting the TrainConfig field of its name (whose default and type it
#: takes), with its help.
_TRAINING_FLAGS = {
    "train_steps": "total optimizer steps, counted across restarts (default %(default)s)",
    "batch_size": "examples per training step (default %(default)s; --train_batch_size is the lab's spelling)",
    "eval_steps": "evaluation batches; default: all the evaluation data",
    "eval_batch_size": "examples per evaluation batch (default %(default)s)",
    "learning_rate": "Adam learning rate (default %(default)s)",
    "seed": "random seed for initialisation and shuffling (default: random)",
    "shuffle_buffer": "lines in the training shuffle buffer (default %(default)s)",
    "steps_per_loop": "steps run in-graph between progress lines and TensorBoard points (default %(default)s)",
    "checkpoint_every_steps": "steps between checkpoints (default %(default)s)",
    "eval_every_steps": "steps between evaluations on the evaluation data (TensorBoard's eval curve, the best checkpoint, "
    "early stopping; also one at the end) (default %(default)s)",
    "early_stopping_patience": "stop after this many evaluations in a row without a better eval RMSE (evaluations are "
    "--eval_every_steps apart); 0 = off (default %(default)s). Either way the best evaluation's model is exported",
}
#: Other spellings of a flag: the lab's --train_batch_size is --batch_size (the pipeline's and TrainConfig's name).
_ALIASES = {"batch_size": ("--train_batch_size",)}
#: The model flags other than --hidden_units, as :data:`_TRAINING_FLAGS`.
_MODEL_FLAGS = {
    "embedding_dim": "embedding size of the pickup and dropoff grid cells (default %(default)s)",
    "cross_embedding_dim": "embedding size of the pickup x dropoff cell cross; 0 = no cross "
    "(default %(default)s: it fits the noise of rare pairs)",
    "dropout": "dropout after each hidden layer (default %(default)s)",
    "l2": "L2 penalty on embeddings and hidden layers (default %(default)s)",
}


#: The flag type of a TrainConfig field's declared type.
_FLAG_TYPES = {"int": int, "int | None": int, "float": float}


def _config_flags(group: Any, d: dict[str, Any], flags: dict[str, str]) -> None:
    """One ``--NAME`` flag per entry of ``flags``, with the TrainConfig field's default ``d[NAME]`` and type."""
    from trainer.config import TrainConfig

    declared = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name, text in flags.items():
        group.add_argument(f"--{name}", *_ALIASES.get(name, ()), type=_FLAG_TYPES[str(declared[name])], default=d[name], help=text)


def _layer_sizes(text: str) -> list[int]:
    """``"64"`` or ``"64,32"`` (one argument, the form Vertex hyperparameter tuning passes) -> layer sizes."""
    try:
        return [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not layer sizes such as 64 32 or 64,32") from None


def _model_flags(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    """The model flags (defaults ``d``)."""
    model = p.add_argument_group("model")
    model.add_argument(
        "--hidden_units",
        type=_layer_sizes,
        nargs="+",
        default=[list(d["hidden_units"])],
        help="sizes of the hidden layers: --hidden_units 64 32, or --hidden_units=64,32 as tuning passes them "
        f"(default: {' '.join(map(str, d['hidden_units']))})",
    )
    _config_flags(model, d, _MODEL_FLAGS)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every flag documented)."""
    p = OneLineParser(
        prog="python -m trainer.task",
        description="Train the NYC taxi-fare model on CSV files, evaluate it and export a SavedModel.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = _defaults()
    _data_flags(p)
    _output_flags(p)
    _config_flags(p.add_argument_group("training"), d, _TRAINING_FLAGS)
    _model_flags(p, d)
    p.add_argument(
        "--verbosity",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="log level (default %(default)s); DEBUG also keeps TensorFlow's own start-up lines (or set TAXIFARE_VERBOSE=1)",
    )
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


def config_from_args(args: argparse.Namespace, output_dir: str) -> TrainConfig:
    """The :class:`TrainConfig` of parsed flags."""
    from trainer.config import TrainConfig

    return TrainConfig(
        train_data_paths=args.train_data_paths,
        eval_data_paths=args.eval_data_paths,
        output_dir=output_dir,
        train_steps=args.train_steps,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        eval_steps=args.eval_steps,
        hidden_units=tuple(u for group in args.hidden_units for u in group),
        learning_rate=args.learning_rate,
        embedding_dim=args.embedding_dim,
        cross_embedding_dim=args.cross_embedding_dim,
        dropout=args.dropout,
        l2=args.l2,
        shuffle_buffer=args.shuffle_buffer,
        steps_per_loop=args.steps_per_loop,
        checkpoint_every_steps=args.checkpoint_every_steps,
        eval_every_steps=args.eval_every_steps,
        early_stopping_patience=args.early_stopping_patience,
        max_bad_fraction=args.max_bad_fraction,
        seed=args.seed,
        validate_data=not args.no_validate,
    )


def next_steps(output_dir: str, export_dir: str) -> str:
    """The commands to look at the run: TensorBoard on its logs, ``saved_model_cli run`` on the export."""
    from trainer import schema

    exprs = ";".join(f"{name}=[{float(schema.TEST_INSTANCE[name])!r}]" for name in schema.NUMERIC_FEATURES)
    tb = os.path.join(output_dir, "tensorboard")
    return (
        f"Next: look at the loss with `tensorboard --logdir {shlex.quote(tb)}` (runs train and eval); "
        f"check a prediction with `saved_model_cli run --dir {shlex.quote(export_dir)} --tag_set serve "
        f"--signature_def serving_default --input_exprs '{exprs}'`"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trainer; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.verbosity, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from trainer import quiet

    if args.verbosity == "DEBUG":  # keep TensorFlow's own start-up and INFO lines (trainer.quiet leaves them out)
        quiet.set_verbose(True)
    output_dir = args.output_dir or args.job_dir
    if not output_dir:
        print("error: --output_dir is required (or set AIP_MODEL_DIR): a local directory or gs:// URI", file=sys.stderr)
        return 2
    trial = trial_id()
    if trial:
        output_dir = os.path.join(output_dir, trial)

    from base.errors import InputError

    config = config_from_args(args, output_dir)
    try:
        config.check()  # before TensorFlow loads: bad settings cost nothing
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    quiet.import_tensorflow()
    from trainer.model import train_and_evaluate

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
    honest = ""
    if m["exported_step"] != m["steps"]:  # the evaluation data chose the checkpoint: its figure flatters it
        honest = f" The step was chosen on this same data: the last step's ${m['last_step_rmse']:.2f} is the unbiased figure."
    print(
        f"\nDone: eval RMSE ${m['rmse']:.2f} on {m['eval_examples']} examples, the model of step {m['exported_step']} "
        f"({m['export_reason']}); {m['steps']} steps ({m['steps_this_run']} this run, {m['examples_per_second']:,.0f} examples/s)."
        f"{honest}\n"
        f"SavedModel: {result.export_dir}{' (unchanged: nothing was trained this run)' if not m['steps_this_run'] else ''}\n"
        f"{next_steps(output_dir, result.export_dir)}",
        flush=True,
    )
    return 0


def failure_line(exc: BaseException) -> str:
    """One line for an error that ended training: a write that failed (disk full, read-only), or else what it was.

    TensorFlow's own file errors (checkpoints, summaries, the export) are ``OpError``s, not
    ``OSError``s: both are named with the path and the fix. Anything else is a bug: its
    traceback is printed first.
    """
    import errno

    op_error = type(exc).__module__.startswith("tensorflow") and hasattr(exc, "message")
    if isinstance(exc, OSError) or op_error:
        text = str(getattr(exc, "message", "") or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "free some space or pass another --output_dir"
        if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            hint = "pass an --output_dir this user can write to"
        return f"cannot write the training output ({type(exc).__name__}: {text[:300]}): {hint}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    import traceback

    traceback.print_exception(exc, file=sys.stderr)
    return f"training failed: {type(exc).__name__}: {str(exc)[:300]}"


def run(argv: Sequence[str] | None = None) -> None:
    """``python -m trainer.task`` (and ``taxifare train``): :func:`main`, then leave without TensorFlow's teardown.

    Once the result or the error line is written, the process ends with ``os._exit``: the
    interpreter's normal exit destroys C++ objects while threads that TensorFlow's tf.data
    pipeline and pyarrow's CSV reader started may still run (the training iterator's
    prefetch and shuffle threads, a validation reader stopped by an error mid-file), and a
    joinable ``std::thread`` destroyed that way aborts the process ("terminate called
    without an active exception", exit 134) about once in 24 runs.
    """
    code = 1
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except BaseException as exc:  # os._exit below would swallow it: say it in one line (a traceback for a bug)
        print(f"error: {failure_line(exc)}", file=sys.stderr)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    run()
