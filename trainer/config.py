"""The trainer's settings and their checks (standard library only, so bad input is refused before TensorFlow loads).

:class:`TrainConfig` is what ``python -m trainer.task``, the pipeline's training steps and a
Vertex custom job fill in; :meth:`TrainConfig.check` refuses, with the flag to fix, any value
that cannot work, including an ``--output_dir`` that is a file, is read-only or names an
invalid Cloud Storage bucket.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Sequence

from base import checks, storage
from base.errors import InputError
from trainer import schema, validation

#: Defaults shared by the CLI flags (trainer/task.py) and the dataclass below.
#: By the cross-validation of docs/quality.md (5 folds x seeds 1-3 of the real samples, clipped
#: features, no dropout): 2,000 steps $4.206-4.211 mean RMSE, 3,000 $4.224-4.228, 5,000 $4.233;
#: 10,000 did worse (seed 1's first two folds, before the clip: $3.83 vs $3.71). The sample's
#: 7,770 trips are fitted by then (2,000 batches of 512 are 130 passes over them).
TRAIN_STEPS = 2000
BATCH_SIZE = 512
#: Without the cell cross, 0.003 reaches its best eval RMSE on the real sample by step 500-2,400
#: and then over-fits ($4.47-$5.41 at step 5,000); 0.001 is still improving at step 5,000 and its
#: last step is nearly as good as its best ($4.47-$4.57, seeds 1-3), so the result depends less on
#: the checkpoint picked (README "Quality"). The pipeline's learning_rate defaults to this too.
LEARNING_RATE = 0.001
HIDDEN_UNITS = (64, 32)
EVAL_EVERY_STEPS = 100
EMBEDDING_DIM = 4
#: 0: no pickup x dropoff cell cross. On the real 7,770-trip sample the cross (20,011 hashed bins;
#: the trips fall in 482 cell pairs, 222 seen once) learns the noise of rarely seen pairs: valid
#: RMSE $4.72-$4.76 with it, $4.40-$4.62 without (seeds 1-3, README "Quality").
CROSS_EMBEDDING_DIM = 0
#: Dropout after each hidden layer. By the cross-validation of docs/quality.md (2,000 steps, 15
#: folds), 0.1 lowers every figure against none: RMSE $4.172 vs $4.206 (paired -0.034 ± 0.039),
#: MAE $2.146 vs $2.159, RMSE without the largest 0.5% errors $3.025 vs $3.037.
DROPOUT = 0.1
#: The search space of the pipeline's tune step when its tuning_space parameter is empty (the
#: pipeline's own default, an empty text, means this; components/tune/logic.py parses it).
TUNING_SPACE = "hidden_units=32,16|64,32|128,64|256,128,64; learning_rate=0.0003..0.03; batch_size=128|256|512|1024"
#: The pipeline's smoke_train (a gate, not a model to keep): small batches, a few evaluation batches.
SMOKE_BATCH_SIZE = 64
SMOKE_EVAL_STEPS = 5
#: The default limit of the model-size guard (the default model has about 6,200 parameters).
MAX_MODEL_PARAMS = 10_000_000
#: Bytes per parameter while training: the float32 weight, its gradient and Adam's two moments.
TRAIN_BYTES_PER_PARAM = 16
#: Engineered numeric features (distances, deltas, normalised coordinates, passengers) before
#: the airport proximities (one per airport for pickup and for dropoff): see trainer.features.
BASE_NUMERIC_FEATURES = 10
#: Embedding widths of the datetime layout's hour, weekday and hour x weekday (trainer.model).
DATETIME_EMBEDDINGS = ((schema.N_HOURS, 3), (schema.N_DAYS, 2), (schema.N_HOURS * schema.N_DAYS, 3))


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; the CLI flags of ``trainer.task`` map onto it."""

    train_data_paths: str
    eval_data_paths: str
    output_dir: str
    train_steps: int = TRAIN_STEPS
    batch_size: int = BATCH_SIZE
    eval_batch_size: int = 2048
    eval_steps: int | None = None
    hidden_units: Sequence[int] = HIDDEN_UNITS
    learning_rate: float = LEARNING_RATE
    embedding_dim: int = EMBEDDING_DIM
    #: Embedding size of the pickup x dropoff cell cross; 0 = no cross.
    cross_embedding_dim: int = CROSS_EMBEDDING_DIM
    dropout: float = DROPOUT
    l2: float = 1e-5
    shuffle_buffer: int = 50_000
    steps_per_loop: int = 100
    checkpoint_every_steps: int = 500
    #: Evaluate on the evaluation data every this many steps (and at the end): the eval curve,
    #: the best checkpoint and early stopping all use these evaluations.
    eval_every_steps: int = EVAL_EVERY_STEPS
    #: Stop after this many evaluations in a row without a better eval RMSE; 0 = never stop early.
    early_stopping_patience: int = 0
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
            "--batch_size": self.batch_size,
            "--eval_batch_size": self.eval_batch_size,
            "--steps_per_loop": self.steps_per_loop,
            "--checkpoint_every_steps": self.checkpoint_every_steps,
            "--eval_every_steps": self.eval_every_steps,
            "--embedding_dim": self.embedding_dim,
            "--shuffle_buffer": self.shuffle_buffer,
        }
        for flag, value in positive.items():
            checks.positive_int(flag, value)
        if self.cross_embedding_dim < 0:
            raise InputError(f"--cross_embedding_dim must be 0 (no cell cross) or a positive size (got {self.cross_embedding_dim})")
        if self.eval_steps is not None and self.eval_steps <= 0:
            raise InputError(f"--eval_steps must be positive, or omitted to use all evaluation data (got {self.eval_steps})")
        if self.early_stopping_patience < 0:
            raise InputError(f"--early_stopping_patience must be 0 (off) or a number of evaluations (got {self.early_stopping_patience})")
        if not self.hidden_units or any(u <= 0 for u in self.hidden_units):
            raise InputError(f"--hidden_units must be one or more positive layer sizes, e.g. 64 32 (got {list(self.hidden_units)})")
        checks.learning_rate("--learning_rate", self.learning_rate)
        if not math.isfinite(self.dropout) or not 0 <= self.dropout < 1:
            raise InputError(f"--dropout must be in [0, 1) (got {self.dropout})")
        if not math.isfinite(self.l2) or self.l2 < 0:
            raise InputError(f"--l2 must be 0 (off) or a small positive penalty such as 1e-5 (got {self.l2})")
        checks.unit_fraction("--max_bad_fraction", self.max_bad_fraction)
        check_output_dir(self.output_dir)


def check_output_dir(output_dir: str) -> None:
    """Refuse an output directory the trainer could not write, before any work.

    Local: a path that is a file (or under one), or whose nearest existing directory is not
    writable. ``gs://``: an invalid bucket name (checked locally, no request is made).

    Raises:
        InputError: naming the problem and the fix.
    """
    if not output_dir:
        raise InputError("--output_dir is required (a local directory or gs:// URI)")
    if storage.is_gcs(output_dir):
        bucket, _ = storage.split_gcs(output_dir)
        storage.check_bucket_name(bucket, what="--output_dir")
        return
    path = os.path.abspath(os.path.expanduser(output_dir))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        where = "is a file" if probe == path else f"is under {probe}, which is a file"
        raise InputError(f"--output_dir {output_dir} {where}: pass a directory (it is created when missing)")
    fix = "pass a directory you can write"
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"--output_dir {output_dir} is not writable ({probe} is read-only for this user): {fix}")
    try:  # a read-only file system passes os.access for root: try for real
        fd, name = tempfile.mkstemp(prefix=".taxifare-write-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise InputError(f"--output_dir {output_dir} is not writable ({probe}: {exc.strerror}): {fix}") from None


def model_size(
    hidden: Sequence[int],
    *,
    datetime_layout: bool = False,
    embedding_dim: int = EMBEDDING_DIM,
    cross_embedding_dim: int = CROSS_EMBEDDING_DIM,
) -> int:
    """The number of parameters of :func:`trainer.model.build_model` for these settings."""
    numeric = BASE_NUMERIC_FEATURES + 2 * len(schema.AIRPORTS)
    embeddings = [(schema.N_CELLS, embedding_dim)] * 2
    if cross_embedding_dim:
        embeddings.append((schema.N_CROSS_BINS, cross_embedding_dim))
    if datetime_layout:
        embeddings += list(DATETIME_EMBEDDINGS)
    count = sum(size * dim for size, dim in embeddings)
    width = numeric + sum(dim for _, dim in embeddings)
    for units in (*hidden, 1):  # the hidden layers, then deep_out
        count += width * units + units
        width = units
    return count + numeric + 1  # wide_out


def check_model_size(
    hidden: Sequence[int], *, limit: int = MAX_MODEL_PARAMS, datetime_layout: bool = False, flag: str = "max_model_params"
) -> int:
    """Refuse a model larger than ``limit`` parameters, before anything is built.

    Returns:
        The model's number of parameters.
    """
    count = model_size(hidden, datetime_layout=datetime_layout)
    if count > limit:
        gib = count * TRAIN_BYTES_PER_PARAM / 2**30
        raise InputError(
            f"hidden_units {','.join(map(str, hidden))} makes a model of {count:,} parameters (about {gib:,.1f} GiB to train), "
            f"over the limit of {limit:,}: use smaller hidden_units, or raise the limit with {flag}"
        )
    return count
