"""The best model so far by eval RMSE, and early stopping on it.

Every evaluation during training goes through :meth:`BestCheckpoint.update`: a strictly lower
eval RMSE than any before copies the model's weights into a shadow set of variables (in
memory: a copy costs microseconds, a checkpoint write tens of milliseconds, and evaluations
are frequent). :meth:`BestCheckpoint.flush`, called whenever the trainer writes its regular
checkpoint and at the end, saves the shadow to ``<output_dir>/checkpoints/best/`` (one
checkpoint kept) with ``best.json`` (``{"step", "rmse", "evals_since_best", "last_step"}``),
so a run that is stopped and started again still knows its best model (as of its last
checkpoint, like the rest of its state). At the end the trainer exports the best model
rather than the last step's.

Early stopping counts evaluations: with ``patience`` P > 0, training stops after P
evaluations in a row (``--eval_every_steps`` apart) without a better eval RMSE; 0 turns it off.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import tensorflow as tf

from base import atomic

STATE_FILE = "best.json"


@dataclasses.dataclass
class BestState:
    """The best evaluation so far (``step`` -1 and ``rmse`` inf before the first)."""

    step: int = -1
    rmse: float = math.inf
    evals_since_best: int = 0
    last_step: int = -1


class BestCheckpoint:
    """Keeps the weights of the best evaluation of ``model``, in memory and in ``directory``.

    Args:
        model: the Keras model being trained.
        directory: where the best checkpoint and ``best.json`` go.
        patience: evaluations without improvement before :attr:`should_stop`; 0 = never.
    """

    def __init__(self, model: Any, directory: str, patience: int = 0) -> None:
        self.patience = patience
        self._model = model
        self._shadow = [tf.Variable(v, trainable=False, name=f"best_{i}") for i, v in enumerate(model.weights)]
        self._checkpoint = tf.train.Checkpoint(weights=self._shadow)
        self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep=1, checkpoint_name="best")
        self._state_path = os.path.join(directory, STATE_FILE)
        self.state = BestState()
        self._dirty = False
        if self._manager.latest_checkpoint:
            self.state = self._read_state()
            if self.state.step >= 0:
                self._checkpoint.restore(self._manager.latest_checkpoint).assert_existing_objects_matched()

    def _read_state(self) -> BestState:
        try:
            with tf.io.gfile.GFile(self._state_path) as fh:
                raw = json.load(fh)
            return BestState(int(raw["step"]), float(raw["rmse"]), int(raw["evals_since_best"]), int(raw["last_step"]))
        except (OSError, ValueError, KeyError, TypeError, tf.errors.OpError):
            return BestState()  # a checkpoint without its record: start afresh

    def update(self, step: int, rmse: float) -> bool:
        """Record the evaluation at ``step``; returns whether it is the best so far.

        An evaluation at a step already counted (a resumed run re-evaluating) does not count
        towards the patience.
        """
        improved = rmse < self.state.rmse
        if improved:
            for shadow, weight in zip(self._shadow, self._model.weights, strict=True):
                shadow.assign(weight)
            self.state = BestState(step, rmse, 0, max(step, self.state.last_step))
        else:
            if step > self.state.last_step:
                self.state.evals_since_best += 1
            self.state.last_step = max(step, self.state.last_step)
        self._dirty = True
        return improved

    def flush(self) -> None:
        """Write the best weights and ``best.json`` (when anything changed since the last write)."""
        if not self._dirty or self.state.step < 0:
            return
        self._manager.save(checkpoint_number=self.state.step)
        tmp = atomic.temp_path(self._state_path)
        with tf.io.gfile.GFile(tmp, "w") as fh:
            json.dump(dataclasses.asdict(self.state), fh)
        tf.io.gfile.rename(tmp, self._state_path, overwrite=True)
        self._dirty = False

    @property
    def should_stop(self) -> bool:
        """Whether the patience has run out."""
        return self.patience > 0 and self.state.evals_since_best >= self.patience

    def restore(self) -> bool:
        """Load the best weights into the model; False before any evaluation."""
        if self.state.step < 0:
            return False
        for weight, shadow in zip(self._model.weights, self._shadow, strict=True):
            weight.assign(shadow)
        return True
