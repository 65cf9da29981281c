"""The taxi-fare model: Keras wide-and-deep network, training loop with resume, export.

``train_and_evaluate`` is what ``python -m trainer.task``, the pipeline's training steps and
a Vertex custom job all call. It

* validates the data files (counts and reports bad rows, stops when too many are bad),
* builds the model (feature engineering inside it, see :mod:`trainer.features`),
* restores the latest checkpoint under ``output_dir`` when there is one, so a run killed
  and started again continues where it stopped (managed training restarts preempted
  workers this way),
* trains for ``train_steps`` optimizer steps, writing TensorBoard scalars (loss, RMSE,
  examples/s) and checkpoints,
* evaluates RMSE on the evaluation files and exports a SavedModel whose
  ``serving_default`` signature takes the raw features by name and returns
  ``fare_amount``, to ``<output_dir>/export/exporter/<timestamp>/`` through a temporary
  directory and a rename, with ``metrics.json`` inside it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from trainer import features, inputs, schema, validation
from trainer.errors import InputError
from trainer.schema import Variant

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
EXPORT_SUBDIR = os.path.join("export", "exporter")
CHECKPOINT_SUBDIR = "checkpoints"
TENSORBOARD_SUBDIR = "tensorboard"


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; the CLI flags of ``trainer.task`` map onto it."""

    train_data_paths: str
    eval_data_paths: str
    output_dir: str
    train_steps: int = 5000
    train_batch_size: int = 512
    eval_batch_size: int = 2048
    eval_steps: int | None = None
    hidden_units: Sequence[int] = (64, 32)
    learning_rate: float = 0.003
    embedding_dim: int = 4
    cross_embedding_dim: int = 4
    dropout: float = 0.0
    l2: float = 1e-5
    shuffle_buffer: int = 50_000
    steps_per_loop: int = 100
    checkpoint_every_steps: int = 500
    eval_every_steps: int = 1000
    max_bad_fraction: float = validation.MAX_BAD_FRACTION
    seed: int | None = None
    validate_data: bool = True
    #: Also write the TensorBoard logs here (Vertex sets AIP_TENSORBOARD_LOG_DIR and uploads
    #: from it to a Vertex TensorBoard); they are copied under output_dir at the end too.
    extra_tensorboard_dir: str | None = None

    def check(self) -> None:
        """Reject settings that cannot work, with the flag to fix.

        Raises:
            InputError: for a bad value.
        """
        positive = {
            "--train_steps": self.train_steps,
            "--train_batch_size": self.train_batch_size,
            "--eval_batch_size": self.eval_batch_size,
            "--steps_per_loop": self.steps_per_loop,
            "--checkpoint_every_steps": self.checkpoint_every_steps,
            "--eval_every_steps": self.eval_every_steps,
            "--embedding_dim": self.embedding_dim,
            "--cross_embedding_dim": self.cross_embedding_dim,
        }
        for flag, value in positive.items():
            if value <= 0:
                raise InputError(f"{flag} must be a positive integer (got {value})")
        if self.eval_steps is not None and self.eval_steps <= 0:
            raise InputError(f"--eval_steps must be positive, or omitted to use all evaluation data (got {self.eval_steps})")
        if not self.hidden_units or any(u <= 0 for u in self.hidden_units):
            raise InputError(f"--hidden_units must be one or more positive layer sizes, e.g. 64 32 (got {list(self.hidden_units)})")
        if not 0 < self.learning_rate < 10 or not math.isfinite(self.learning_rate):
            raise InputError(f"--learning_rate must be a small positive number such as 0.003 (got {self.learning_rate})")
        if not 0 <= self.dropout < 1:
            raise InputError(f"--dropout must be in [0, 1) (got {self.dropout})")
        if not 0 <= self.max_bad_fraction <= 1:
            raise InputError(f"--max_bad_fraction must be between 0 and 1 (got {self.max_bad_fraction})")
        if not self.output_dir:
            raise InputError("--output_dir is required (a local directory or gs:// URI)")


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
    proximity) and embeddings of the pickup and dropoff grid cells and their cross (plus
    hour, weekday and their cross for the datetime variant) through ``hidden_units``.
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
        embed("cell_cross", features.N_CROSS_BINS, config.cross_embedding_dim),
    ]
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

    @tf.function
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


def _process_start() -> float:
    """When this process started (seconds since the epoch; import time where /proc is missing)."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


#: When this process started: ``.tmp-*`` exports last written before that are leftovers.
PROCESS_START = _process_start()


def remove_stale_exports(export_base: str) -> list[str]:
    """Remove ``.tmp-*`` exports under ``export_base`` left by an earlier process (a killed export).

    A temporary export is stale when it was last written before this process started and the
    process named in it (``.tmp-<stamp>-<pid>``) is not running here; exports of a live
    process are never touched. Returns the folders removed.
    """
    removed = []
    for path in tf.io.gfile.glob(os.path.join(export_base, ".tmp-*")):
        pid = path.rstrip("/").rsplit("-", 1)[-1]
        if pid.isdigit() and _alive(int(pid)):
            continue
        if tf.io.gfile.stat(path).mtime_nsec / 1e9 >= PROCESS_START:
            continue
        tf.io.gfile.rmtree(path)
        removed.append(path)
    if removed:
        log.info("removed %d unfinished export(s) of earlier runs: %s", len(removed), ", ".join(removed))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def export_model(model: keras.Model, variant: Variant, export_base: str, metrics: dict[str, Any]) -> str:
    """Write a SavedModel with the raw-feature ``serving_default`` signature.

    Written to ``<export_base>/.tmp-<ts>/`` then renamed to ``<export_base>/<ts>/``, so a
    reader never sees a partial export. ``metrics`` goes into ``metrics.json`` inside it.

    Returns:
        The final export directory.
    """
    specs = [tf.TensorSpec([None], tf.float32, name=name) for name in schema.NUMERIC_FEATURES]
    if variant is Variant.DATETIME:
        specs.append(tf.TensorSpec([None], tf.string, name=schema.DATETIME))
    names = variant.features

    class Serving(tf.Module):
        def __init__(self, keras_model: keras.Model) -> None:
            super().__init__()
            self.model = keras_model

        @tf.function(input_signature=specs)
        def serve(self, *args: tf.Tensor) -> dict[str, tf.Tensor]:
            pred = self.model(dict(zip(names, args, strict=True)), training=False)
            return {schema.LABEL: tf.squeeze(pred, -1)}

    module = Serving(model)
    tf.io.gfile.makedirs(export_base)
    remove_stale_exports(export_base)
    stamp = str(int(time.time()))
    while tf.io.gfile.exists(os.path.join(export_base, stamp)):
        stamp = str(int(stamp) + 1)
    tmp = os.path.join(export_base, f".tmp-{stamp}-{os.getpid()}")
    final = os.path.join(export_base, stamp)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
    with tf.io.gfile.GFile(os.path.join(tmp, METRICS_FILE), "w") as fh:
        json.dump({**metrics, "variant": variant.value, "features": list(names)}, fh, indent=2)
    tf.io.gfile.rename(tmp, final, overwrite=False)
    return final


def latest_export(output_dir: str) -> str | None:
    """The newest complete export under ``output_dir`` (``None`` when there is none)."""
    base = os.path.join(output_dir, EXPORT_SUBDIR)
    if not tf.io.gfile.isdir(base):
        return None
    stamps = sorted((d.rstrip("/") for d in tf.io.gfile.listdir(base) if d.rstrip("/").isdigit()), key=int)
    return os.path.join(base, stamps[-1]) if stamps else None


def train_and_evaluate(config: TrainConfig, progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train (resuming from checkpoints), evaluate and export; see the module docstring.

    Args:
        config: the run's settings.
        progress: called with one human-readable line per logging interval.

    Raises:
        InputError: bad settings, no matching file, too many bad rows.
    """
    config.check()
    say = progress or log.info
    train_files = validation.storage.expand(config.train_data_paths, what="training data")
    eval_files = validation.storage.expand(config.eval_data_paths, what="evaluation data")
    variant = validation.detect_layout(train_files, what="training data")
    eval_variant = validation.detect_layout(eval_files, what="evaluation data")
    if eval_variant is not variant:
        raise InputError(f"training data is in the {variant.value} layout but evaluation data in the {eval_variant.value} layout: use one")
    train_report = eval_report = None
    if config.validate_data:
        t0 = time.monotonic()
        train_report = validation.scan(train_files, what="training data", max_bad_fraction=config.max_bad_fraction, variant=variant)
        eval_report = validation.scan(eval_files, what="evaluation data", max_bad_fraction=config.max_bad_fraction, variant=variant)
        say(f"data checked in {time.monotonic() - t0:.1f}s: train {train_report.summary()}; eval {eval_report.summary()}")

    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    strategy = _strategy()
    workers = strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_model(variant, config)
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

    train_ds = inputs.make_dataset(
        train_files, variant, config.train_batch_size, training=True, shuffle_buffer=config.shuffle_buffer, seed=config.seed
    )
    eval_ds = inputs.make_dataset(eval_files, variant, config.eval_batch_size, training=False)
    iterator = iter(strategy.experimental_distribute_dataset(train_ds))
    evaluate = make_evaluator(model)

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

    tb_dir = config.extra_tensorboard_dir or os.path.join(config.output_dir, TENSORBOARD_SUBDIR)
    train_writer = tf.summary.create_file_writer(os.path.join(tb_dir, "train"))
    eval_writer = tf.summary.create_file_writer(os.path.join(tb_dir, "eval"))
    step = int(optimizer.iterations.numpy())
    start_step = step
    seen = 0
    t_start = time.monotonic()
    train_rmse = math.nan
    last_saved = step
    while step < config.train_steps:
        n_steps = min(config.steps_per_loop, config.train_steps - step)
        t0 = time.monotonic()
        sse, count = train_loop(tf.constant(n_steps))
        dt = time.monotonic() - t0
        mse = float(sse) / max(float(count), 1.0)
        if not math.isfinite(mse):
            raise FloatingPointError(f"training loss is {mse} at step {step + n_steps}: lower --learning_rate")
        step = int(optimizer.iterations.numpy())
        seen += int(count)
        train_rmse = math.sqrt(mse)
        rate = float(count) / dt if dt > 0 else 0.0
        with train_writer.as_default(step=step):
            tf.summary.scalar("loss", mse)
            tf.summary.scalar("rmse", train_rmse)
            tf.summary.scalar("examples_per_second", rate)
        say(f"step {step}/{config.train_steps}  loss {mse:.3f}  rmse {train_rmse:.3f}  {rate:,.0f} examples/s")
        if step - last_saved >= config.checkpoint_every_steps or step >= config.train_steps:
            manager.save(checkpoint_number=step)
            last_saved = step
        if step % config.eval_every_steps == 0 and step < config.train_steps:
            ev = evaluate(eval_ds, config.eval_steps)
            with eval_writer.as_default(step=step):
                tf.summary.scalar("loss", ev["mse"])
                tf.summary.scalar("rmse", ev["rmse"])
            say(f"step {step}: eval rmse {ev['rmse']:.3f} on {ev['examples']} examples")
    train_seconds = time.monotonic() - t_start
    if manager.latest_checkpoint is None or last_saved != step:
        manager.save(checkpoint_number=step)

    ev = evaluate(eval_ds, config.eval_steps)
    with eval_writer.as_default(step=step):
        tf.summary.scalar("loss", ev["mse"])
        tf.summary.scalar("rmse", ev["rmse"])
    train_writer.flush()
    eval_writer.flush()
    if config.extra_tensorboard_dir and is_chief():
        for split in ("train", "eval"):
            src = os.path.join(tb_dir, split)
            for name in tf.io.gfile.listdir(src) if tf.io.gfile.isdir(src) else []:
                dst = os.path.join(config.output_dir, TENSORBOARD_SUBDIR, split)
                tf.io.gfile.makedirs(dst)
                tf.io.gfile.copy(os.path.join(src, name), os.path.join(dst, name), overwrite=True)
    metrics: dict[str, Any] = {
        "rmse": ev["rmse"],
        "eval_examples": ev["examples"],
        "steps": step,
        "steps_this_run": step - start_step,
        "train_rmse_last": train_rmse,
        "train_examples_this_run": seen,
        "examples_per_second": seen / train_seconds if train_seconds > 0 and seen else 0.0,
        "train_seconds": train_seconds,
        "batch_size": config.train_batch_size,
        "hidden_units": list(config.hidden_units),
        "learning_rate": config.learning_rate,
    }
    if train_report is not None and eval_report is not None:
        metrics["train_rows"] = train_report.valid
        metrics["train_dropped_rows"] = train_report.bad
        metrics["eval_dropped_rows"] = eval_report.bad
    if not is_chief():
        scratch = os.path.join(config.output_dir, ".worker-export")
        export_dir = export_model(model, variant, scratch, metrics)
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return TrainResult(export_dir="", metrics=metrics, variant=variant)
    export_dir = export_model(model, variant, os.path.join(config.output_dir, EXPORT_SUBDIR), metrics)
    say(f"eval rmse {ev['rmse']:.3f} on {ev['examples']} examples after {step} steps; exported to {export_dir}")
    return TrainResult(export_dir=export_dir, metrics=metrics, variant=variant, train_report=train_report, eval_report=eval_report)
