"""The taxi-fare model: Keras wide-and-deep network, training loop with resume, best-model export.

``train_and_evaluate`` is what ``python -m trainer.task``, the pipeline's training steps and
a Vertex custom job all call. In order, it

* validates the data files (counts and reports bad rows, stops when too many are bad),
* builds the model (feature engineering inside it, see :mod:`trainer.features`) and
  restores the latest checkpoint under ``output_dir`` when there is one, so a run killed
  and started again continues where it stopped (managed training restarts preempted
  workers this way),
* trains for ``train_steps`` optimizer steps, writing TensorBoard scalars (loss, RMSE,
  examples/s, runs ``train`` and ``eval`` under ``<output_dir>/tensorboard``) and
  checkpoints, and evaluates RMSE on the evaluation files every ``eval_every_steps`` steps
  and at the end, keeping the best checkpoint by eval RMSE (:mod:`trainer.best`) and
  stopping early when ``early_stopping_patience`` evaluations in a row did not improve,
* exports the best model (not the last step's, when an earlier evaluation was better) as a
  SavedModel whose ``serving_default`` signature takes the raw features by name and returns
  ``fare_amount`` (:mod:`trainer.export`), to ``<output_dir>/export/exporter/<timestamp>/``,
  with ``metrics.json`` saying which step was exported and why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from base.errors import InputError
from trainer import features, inputs, schema, validation
from trainer.best import BestCheckpoint
from trainer.config import TrainConfig
from trainer.export import EXPORT_SUBDIR, METRICS_FILE, export_model, latest_export, remove_stale_exports, unchanged_export
from trainer.schema import Variant

__all__ = [
    "EXPORT_SUBDIR",
    "METRICS_FILE",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "export_model",
    "latest_export",
    "remove_stale_exports",
    "train_and_evaluate",
]

log = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
BEST_SUBDIR = "best"
TENSORBOARD_SUBDIR = "tensorboard"
#: Real evaluation rows written into the export's warm-up file.
WARMUP_SAMPLE = 100
#: Evaluation files up to this size (CSV bytes) are decoded once and kept in memory.
EVAL_CACHE_BYTES = 256 * 1024 * 1024


@dataclasses.dataclass
class TrainResult:
    """What a training run produced."""

    export_dir: str
    metrics: dict[str, Any]
    variant: Variant
    train_report: validation.ScanReport | None = None
    eval_report: validation.ScanReport | None = None


def build_model(variant: Variant, config: TrainConfig) -> keras.Model:
    """The wide-and-deep fare model on raw features (feature engineering inside).

    Deep part: the numeric features (distances, deltas, normalised coordinates, airport
    proximity) and embeddings of the pickup and dropoff grid cells (and of their cross when
    ``cross_embedding_dim`` > 0; plus hour, weekday and their cross for the datetime variant)
    through ``hidden_units``.
    Wide part: a linear function of the numeric features. The output is their sum.
    """
    raw: dict[str, keras.KerasTensor] = {name: keras.Input(shape=(), dtype="float32", name=name) for name in schema.NUMERIC_FEATURES}
    if variant is Variant.DATETIME:
        raw[schema.DATETIME] = keras.Input(shape=(), dtype="string", name=schema.DATETIME)
    feats = features.TaxiFeatures(variant.value, name="features")(raw)
    reg = keras.regularizers.L2(config.l2) if config.l2 else None

    def embed(name: str, size: int, dim: int) -> keras.KerasTensor:
        return keras.layers.Embedding(size, dim, embeddings_regularizer=reg, name=f"embed_{name}")(feats[name])

    parts = [
        feats["numeric"],
        embed("pickup_cell", features.N_CELLS, config.embedding_dim),
        embed("dropoff_cell", features.N_CELLS, config.embedding_dim),
    ]
    if config.cross_embedding_dim:  # off by default: it fits the noise of rare pairs (trainer.config.CROSS_EMBEDDING_DIM)
        parts.append(embed("cell_cross", features.N_CROSS_BINS, config.cross_embedding_dim))
    if variant is Variant.DATETIME:
        parts += [
            embed("hour", features.N_HOURS, 3),
            embed("weekday", features.N_DAYS, 2),
            embed("hour_weekday", features.N_HOURS * features.N_DAYS, 3),
        ]
    x = keras.layers.Concatenate(name="deep_input")(parts)
    for i, units in enumerate(config.hidden_units):
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=reg, name=f"hidden_{i}")(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout, seed=config.seed)(x)
    deep = keras.layers.Dense(1, name="deep_out")(x)
    wide = keras.layers.Dense(1, name="wide_out")(feats["numeric"])
    fare = keras.layers.Add(name="fare")([deep, wide])
    return keras.Model(inputs=raw, outputs=fare, name=f"taxifare_{variant.value}")


def _strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG describes a cluster of several workers."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = tf_config.get("cluster", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """Whether this process writes the checkpoints and the export (chief, or worker 0 without a chief)."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = tf_config.get("task", {})
    kind = task.get("type", "chief")
    if kind == "worker" and "chief" not in tf_config.get("cluster", {}):
        return int(task.get("index", 0)) == 0
    return kind in ("chief", "master")  # "master" is the legacy AI Platform name


def make_evaluator(model: keras.Model) -> Callable[[tf.data.Dataset, int | None], dict[str, float]]:
    """An evaluation function for ``model``, traced once and reused for every evaluation.

    The returned function gives the RMSE, MSE and example count over a dataset (``steps``
    batches, or all of it).
    """

    @tf.function(reduce_retracing=True)  # batches differ in size (bad rows dropped, the last one): one trace for all
    def batch_sse(x: dict[str, tf.Tensor], y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pred = tf.squeeze(model(x, training=False), -1)
        return tf.reduce_sum(tf.square(tf.cast(pred, tf.float64) - tf.cast(y, tf.float64))), tf.size(y)

    def evaluate(dataset: tf.data.Dataset, steps: int | None = None) -> dict[str, float]:
        sse, count = 0.0, 0
        for x, y in dataset.take(steps) if steps else dataset:
            s, n = batch_sse(x, y)
            sse += float(s)
            count += int(n)
        if not count:
            raise InputError("the evaluation data holds no valid row: check --eval_data_paths")
        return {"rmse": math.sqrt(sse / count), "mse": sse / count, "examples": count}

    return evaluate


@dataclasses.dataclass
class _Data:
    """The files of a run, their layout and (when validated) their reports."""

    train_files: list[str]
    eval_files: list[str]
    variant: Variant
    train_report: validation.ScanReport | None = None
    eval_report: validation.ScanReport | None = None


@dataclasses.dataclass
class _Run:
    """The model being trained and everything that saves, restores and evaluates it."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    checkpoint: tf.train.Checkpoint
    manager: tf.train.CheckpointManager
    ckpt_dir: str
    best: BestCheckpoint
    train_loop: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
    evaluate: Callable[[], dict[str, float]]
    eval_ds: tf.data.Dataset
    tb_dir: str


@dataclasses.dataclass
class _Outcome:
    """What the training loop did."""

    step: int
    start_step: int
    seen: int
    train_seconds: float
    train_rmse: float
    last_eval: dict[str, float]
    evaluations: int
    stopped_early: bool
    eval_seconds: float = 0.0


def check_data(config: TrainConfig, say: Callable[[str], None]) -> _Data:
    """Expand the file patterns, detect the layout and (unless turned off) validate every row."""
    train_files = validation.storage.expand(config.train_data_paths, what="training data")
    eval_files = validation.storage.expand(config.eval_data_paths, what="evaluation data")
    data = _Data(train_files, eval_files, validation.detect_layout(train_files, what="training data"))
    eval_variant = validation.detect_layout(eval_files, what="evaluation data")
    if eval_variant is not data.variant:
        raise InputError(
            f"training data is in the {data.variant.value} layout but evaluation data in the {eval_variant.value} layout: use one"
        )
    if config.validate_data:
        t0 = time.monotonic()
        scan = dict(max_bad_fraction=config.max_bad_fraction, variant=data.variant)
        data.train_report = validation.scan(train_files, what="training data", **scan)  # type: ignore[arg-type]
        data.eval_report = validation.scan(eval_files, what="evaluation data", **scan)  # type: ignore[arg-type]
        say(f"data checked in {time.monotonic() - t0:.1f}s: train {data.train_report.summary()}; eval {data.eval_report.summary()}")
    return data


def build_run(config: TrainConfig, data: _Data, say: Callable[[str], None]) -> _Run:
    """Build the model, the optimizer, the datasets and the train step; resume from the latest checkpoint."""
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    strategy = _strategy()
    workers = strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_model(data.variant, config)
        optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
        optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    ckpt_dir = os.path.join(config.output_dir, CHECKPOINT_SUBDIR)
    if not is_chief():  # other workers write to a scratch directory (MultiWorkerMirroredStrategy rule)
        ckpt_dir = os.path.join(ckpt_dir, f".worker-{os.getpid()}")
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=3)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        say(f"resuming from {manager.latest_checkpoint} at step {int(optimizer.iterations.numpy())}")
    best = BestCheckpoint(model, os.path.join(ckpt_dir, BEST_SUBDIR), config.early_stopping_patience)

    train_ds = inputs.make_dataset(
        data.train_files, data.variant, config.batch_size, training=True, shuffle_buffer=config.shuffle_buffer, seed=config.seed
    )
    eval_ds = inputs.make_dataset(data.eval_files, data.variant, config.eval_batch_size, training=False)
    if config.eval_steps:
        eval_ds = eval_ds.take(config.eval_steps)
    if sum(tf.io.gfile.stat(f).length for f in data.eval_files) <= EVAL_CACHE_BYTES:
        eval_ds = eval_ds.cache()  # decoded once, then every evaluation reads memory
    iterator = iter(strategy.experimental_distribute_dataset(train_ds))

    def step_fn(x: dict[str, tf.Tensor], y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            pred = tf.squeeze(model(x, training=True), -1)
            sse = tf.reduce_sum(tf.square(pred - y))
            n = tf.cast(tf.size(y), tf.float32)
            loss = sse / tf.maximum(n, 1.0) / workers + tf.add_n(model.losses or [tf.constant(0.0)]) / workers
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return sse, n

    @tf.function
    def train_loop(steps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        sse, count = tf.constant(0.0), tf.constant(0.0)
        for _ in tf.range(steps):
            x, y = next(iterator)
            s, n = strategy.run(step_fn, args=(x, y))
            sse += strategy.reduce("SUM", s, axis=None)
            count += strategy.reduce("SUM", n, axis=None)
        return sse, count

    evaluator = make_evaluator(model)
    tb_dir = config.extra_tensorboard_dir or os.path.join(config.output_dir, TENSORBOARD_SUBDIR)
    return _Run(model, optimizer, checkpoint, manager, ckpt_dir, best, train_loop, lambda: evaluator(eval_ds, None), eval_ds, tb_dir)


def train(run: _Run, config: TrainConfig, say: Callable[[str], None], on_step: Callable[..., None] | None = None) -> _Outcome:
    """Train to ``train_steps``, evaluating every ``eval_every_steps`` and at the end; stop early when patience runs out."""
    train_writer = tf.summary.create_file_writer(os.path.join(run.tb_dir, "train"))
    eval_writer = tf.summary.create_file_writer(os.path.join(run.tb_dir, "eval"))
    step = start_step = last_saved = int(run.optimizer.iterations.numpy())
    out = _Outcome(step, start_step, 0, 0.0, math.nan, {}, 0, False)
    last_eval_step = step
    t_start = time.monotonic()
    eval_seconds = 0.0
    while step < config.train_steps and not out.stopped_early:
        n_steps = min(config.steps_per_loop, config.train_steps - step, max(1, last_eval_step + config.eval_every_steps - step))
        t0 = time.monotonic()
        sse, count = run.train_loop(tf.constant(n_steps))
        dt = time.monotonic() - t0
        mse = float(sse) / max(float(count), 1.0)
        if not math.isfinite(mse):
            raise FloatingPointError(f"training loss is {mse} at step {step + n_steps}: lower --learning_rate")
        step = int(run.optimizer.iterations.numpy())
        out.seen += int(count)
        out.train_rmse = math.sqrt(mse)
        rate = float(count) / dt if dt > 0 else 0.0
        with train_writer.as_default(step=step):
            tf.summary.scalar("loss", mse)
            tf.summary.scalar("rmse", out.train_rmse)
            tf.summary.scalar("examples_per_second", rate)
        say(f"step {step}/{config.train_steps}  loss {mse:.3f}  rmse {out.train_rmse:.3f}  {rate:,.0f} examples/s")
        if on_step:  # the same figures as a record (what `taxifare run` shows)
            on_step(at=step, of=config.train_steps, loss=mse, rmse=out.train_rmse, examples_per_second=rate)
        if step - last_eval_step >= config.eval_every_steps or step >= config.train_steps:
            t0 = time.monotonic()
            _evaluate(run, out, step, eval_writer, say)
            eval_seconds += time.monotonic() - t0
            last_eval_step = step
        if step - last_saved >= config.checkpoint_every_steps or step >= config.train_steps or out.stopped_early:
            run.manager.save(checkpoint_number=step)
            run.best.flush()
            last_saved = step
    out.step = step
    out.train_seconds = time.monotonic() - t_start - eval_seconds
    out.eval_seconds = eval_seconds
    if run.manager.latest_checkpoint is None or last_saved != step:
        run.manager.save(checkpoint_number=step)
    if not out.last_eval:  # nothing left to train (a finished run started again): evaluate what is there
        _evaluate(run, out, step, eval_writer, say)
    run.best.flush()
    train_writer.flush()
    eval_writer.flush()
    return out


def _evaluate(run: _Run, out: _Outcome, step: int, writer: Any, say: Callable[[str], None]) -> None:
    ev = run.evaluate()
    with writer.as_default(step=step):
        tf.summary.scalar("loss", ev["mse"])
        tf.summary.scalar("rmse", ev["rmse"])
    improved = run.best.update(step, ev["rmse"])
    out.last_eval, out.evaluations = ev, out.evaluations + 1
    out.stopped_early = run.best.should_stop
    note = "  (best so far)" if improved else f"  (best {run.best.state.rmse:.3f} at step {run.best.state.step})"
    say(f"step {step}: eval rmse {ev['rmse']:.3f} on {ev['examples']} examples{note}")
    if out.stopped_early:
        say(f"stopping early at step {step}: no better eval RMSE in the last {run.best.patience} evaluations")


def choose_model(run: _Run, out: _Outcome) -> dict[str, Any]:
    """Load the best checkpoint into the model when it beats the last step; the exported model's figures.

    Returns:
        ``rmse`` and ``eval_examples`` of the model to export, ``exported_step`` and
        ``export_reason`` (best eval RMSE at step N vs the last step M).
    """
    last = out.last_eval
    best = run.best.state
    if best.step != out.step and best.rmse < last["rmse"] and run.best.restore():
        ev = run.evaluate()
        reason = f"best eval RMSE {ev['rmse']:.4f} at step {best.step}; the last step {out.step} had {last['rmse']:.4f}"
        return {"rmse": ev["rmse"], "eval_examples": ev["examples"], "exported_step": best.step, "export_reason": reason}
    reason = f"the last step {out.step} has the best eval RMSE ({last['rmse']:.4f})"
    return {"rmse": last["rmse"], "eval_examples": last["examples"], "exported_step": out.step, "export_reason": reason}


def collect_metrics(config: TrainConfig, data: _Data, out: _Outcome, chosen: dict[str, Any]) -> dict[str, Any]:
    """The figures of the run that go into ``metrics.json`` (and the pipeline's Metrics)."""
    metrics: dict[str, Any] = {
        **chosen,
        "steps": out.step,
        "steps_this_run": out.step - out.start_step,
        "last_step_rmse": out.last_eval["rmse"],
        "stopped_early": out.stopped_early,
        "evaluations_this_run": out.evaluations,
        "train_rmse_last": out.train_rmse,
        "train_examples_this_run": out.seen,
        "examples_per_second": out.seen / out.train_seconds if out.train_seconds > 0 and out.seen else 0.0,
        "train_seconds": out.train_seconds,
        "eval_seconds": out.eval_seconds,
        "batch_size": config.batch_size,
        "hidden_units": list(config.hidden_units),
        "learning_rate": config.learning_rate,
        "early_stopping_patience": config.early_stopping_patience,
    }
    if data.train_report is not None and data.eval_report is not None:
        metrics["train_rows"] = data.train_report.valid
        metrics["train_dropped_rows"] = data.train_report.bad
        metrics["eval_dropped_rows"] = data.eval_report.bad
    return metrics


def sample_instances(eval_ds: tf.data.Dataset, n: int = WARMUP_SAMPLE) -> list[dict[str, Any]]:
    """The first ``n`` valid evaluation rows as raw-feature instances (for the warm-up file)."""
    rows: list[dict[str, Any]] = []
    for x, _ in eval_ds:
        cols = {k: v.numpy() for k, v in x.items()}
        for i in range(len(cols[schema.NUMERIC_FEATURES[0]])):
            rows.append({k: (v[i].decode() if isinstance(v[i], bytes) else float(v[i])) for k, v in cols.items()})
            if len(rows) >= n:
                return rows
    return rows


def copy_tensorboard(config: TrainConfig, run: _Run) -> None:
    """Copy the logs written to ``extra_tensorboard_dir`` (Vertex's) under ``output_dir`` too."""
    if not config.extra_tensorboard_dir or not is_chief():
        return
    for split in ("train", "eval"):
        src = os.path.join(run.tb_dir, split)
        for name in tf.io.gfile.listdir(src) if tf.io.gfile.isdir(src) else []:
            dst = os.path.join(config.output_dir, TENSORBOARD_SUBDIR, split)
            tf.io.gfile.makedirs(dst)
            tf.io.gfile.copy(os.path.join(src, name), os.path.join(dst, name), overwrite=True)


def train_and_evaluate(
    config: TrainConfig, progress: Callable[[str], None] | None = None, on_step: Callable[..., None] | None = None
) -> TrainResult:
    """Check the data, train (resuming) with periodic evaluation, keep the best model and export it.

    See the module docstring.

    Args:
        config: the run's settings.
        progress: called with one human-readable line per logging interval.
        on_step: called with that interval's figures as keywords (``at``, ``of``, ``loss``, ``rmse``, ``examples_per_second``).

    Raises:
        InputError: bad settings, no matching file, too many bad rows.
        FloatingPointError: the training loss is not finite.
    """
    config.check()
    say = progress or log.info
    data = check_data(config, say)
    run = build_run(config, data, say)
    outcome = train(run, config, say, on_step)
    chosen = choose_model(run, outcome)
    copy_tensorboard(config, run)
    metrics = collect_metrics(config, data, outcome, chosen)
    sample = sample_instances(run.eval_ds)
    if not is_chief():  # workers export to a scratch directory and drop it (MultiWorkerMirroredStrategy rule)
        scratch = os.path.join(config.output_dir, ".worker-export")
        export_model(run.model, data.variant, scratch, metrics, sample)
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(run.ckpt_dir, ignore_errors=True)
        return TrainResult(export_dir="", metrics=metrics, variant=data.variant)
    if kept := (unchanged_export(config.output_dir, metrics) if not metrics["steps_this_run"] else None):  # nothing trained
        say(f"nothing to train (step {outcome.step} reached before): the export of step {metrics['exported_step']} stays {kept}")
        return TrainResult(kept, metrics, data.variant, data.train_report, data.eval_report)
    export_dir = export_model(run.model, data.variant, os.path.join(config.output_dir, EXPORT_SUBDIR), metrics, sample)
    say(f"eval rmse {metrics['rmse']:.3f} on {metrics['eval_examples']} examples, {metrics['export_reason']}; exported to {export_dir}")
    return TrainResult(export_dir, metrics, data.variant, data.train_report, data.eval_report)
