"""Helpers for the serving tests: model versions and a base path, written like the deploy step."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from trainer import schema

INSTANCE = dict(schema.TEST_INSTANCE)


def export_untrained(out: Path, seed: int) -> str:
    """A quick SavedModel with the project's signature and seeded random weights (differs per seed)."""
    import keras

    from trainer.model import TrainConfig, build_model, export_model
    from trainer.schema import Variant

    keras.utils.set_random_seed(seed)
    model = build_model(Variant.LAB, TrainConfig("unused", "unused", "unused"))
    return export_model(model, Variant.LAB, str(out), {"seed": seed})


def publish(model_dir: str, base: Path, version: int) -> Path:
    """Copy ``model_dir`` into ``base/.tmp-pid-V`` and rename it to ``base/V`` (atomic, like deploy)."""
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{os.getpid()}-{version}"
    shutil.copytree(model_dir, tmp)
    final = base / str(version)
    os.rename(tmp, final)
    return final


def inprocess(model_dir: str, instances: list[dict[str, Any]]) -> list[float]:
    """``serving_default`` run in this process as TF Serving runs it (graph mode, a session), as Python floats.

    The server runs versions the same way (serving/servable.py), so its answers are these to the
    bit; :func:`inprocess_tf2` is the TF2 loader's call, which agrees to about 1e-6.
    """
    from trainer.stock_check import graph_mode_predict

    rows = [{name: float(row[name]) for name in schema.NUMERIC_FEATURES} for row in instances]
    return graph_mode_predict(model_dir, rows)


def inprocess_tf2(model_dir: str, instances: list[dict[str, Any]]) -> list[float]:
    """``serving_default`` called through the TF2 loader (``tf.saved_model.load``), as Python floats."""
    import tensorflow as tf

    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    tensors = {name: tf.constant([float(row[name]) for row in instances], tf.float32) for name in schema.NUMERIC_FEATURES}
    return [float(v) for v in fn(**tensors)["fare_amount"].numpy()]


def instances(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` valid trips around Manhattan."""
    import random

    rng = random.Random(seed)
    return [
        {
            "pickuplon": -74.0 + rng.random() * 0.2,
            "pickuplat": 40.65 + rng.random() * 0.2,
            "dropofflon": -74.0 + rng.random() * 0.2,
            "dropofflat": 40.65 + rng.random() * 0.2,
            "passengers": rng.randint(1, 6),
        }
        for _ in range(n)
    ]
