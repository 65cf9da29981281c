"""What verify_export and deploy measure a model with.

A staged split read into arrays, a signature checked against the schema, predictions in
batches, the distance rule and the RMSE.

Shared by the step's own process (:mod:`components.verify_export.logic`, which imports no
TensorFlow), its TensorFlow child (:mod:`components.verify_export.scorer`), the champion's
scoring (:mod:`components.verify_export.champion`) and deploy's re-judgement; the functions that
need numpy or TensorFlow import them when called.
"""

from __future__ import annotations

import os
from typing import Any

from base import storage

#: The course's rule of thumb: fare = 2.616 $/km x haversine distance.
DOLLARS_PER_KM = 2.616
#: Rows per call when a signature predicts a whole split.
BATCH = 4096


def load_split(path: str) -> tuple[Any, dict[str, Any], Any]:
    """Read a staged split directory: ``(variant, features by name, labels)`` as numpy arrays."""
    from trainer.arrays import read_arrays

    return read_arrays(storage.expand(os.path.join(path, "*.csv"), what="test data"))


def check_signature(fn: Any, variant: Any) -> list[str]:
    """Problems of a ``serving_default`` signature against the schema (empty when it matches)."""
    import tensorflow as tf

    from trainer import schema

    problems = []
    inputs = fn.structured_input_signature[1]
    expected = {name: tf.string if name == schema.DATETIME else tf.float32 for name in variant.features}
    if set(inputs) != set(expected):
        problems.append(f"inputs are {sorted(inputs)}, the schema wants {sorted(expected)}")
    for name, dtype in expected.items():
        if name in inputs and inputs[name].dtype != dtype:
            problems.append(f"input {name} is {inputs[name].dtype.name}, the schema wants {dtype.name}")
    outputs = fn.structured_outputs
    if set(outputs) != {schema.LABEL}:
        problems.append(f"outputs are {sorted(outputs)}, the schema wants ['{schema.LABEL}']")
    elif outputs[schema.LABEL].dtype != tf.float32:
        problems.append(f"output {schema.LABEL} is {outputs[schema.LABEL].dtype.name}, not float32")
    return problems


def signature_problems(signature: dict[str, Any], variant: Any) -> list[str]:
    """:func:`check_signature` on a signature read from ``saved_model.pb`` (:func:`components.verify_export.gate.read_signature`)."""
    from trainer import schema

    problems = []
    inputs, outputs = signature["inputs"], signature["outputs"]
    expected = {name: "string" if name == schema.DATETIME else "float32" for name in variant.features}
    if set(inputs) != set(expected):
        problems.append(f"inputs are {sorted(inputs)}, the schema wants {sorted(expected)}")
    for name, dtype in expected.items():
        if name in inputs and inputs[name]["dtype"] != dtype:
            problems.append(f"input {name} is {inputs[name]['dtype']}, the schema wants {dtype}")
    if set(outputs) != {schema.LABEL}:
        problems.append(f"outputs are {sorted(outputs)}, the schema wants ['{schema.LABEL}']")
    elif outputs[schema.LABEL]["dtype"] != "float32":
        problems.append(f"output {schema.LABEL} is {outputs[schema.LABEL]['dtype']}, not float32")
    return problems


def predict(fn: Any, feats: dict[str, Any]) -> Any:
    """Predictions of a signature over feature arrays, in batches."""
    import numpy as np
    import tensorflow as tf

    n = len(next(iter(feats.values())))
    out = []
    for start in range(0, n, BATCH):
        batch = {k: tf.constant(v[start : start + BATCH]) for k, v in feats.items()}
        out.append(fn(**batch)["fare_amount"].numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def distance_rule(feats: dict[str, Any]) -> Any:
    """The course's baseline: 2.616 $/km x haversine distance."""
    import numpy as np

    from trainer.geo import haversine_km

    lon1, lat1, lon2, lat2 = (feats[k].astype(np.float64) for k in ("pickuplon", "pickuplat", "dropofflon", "dropofflat"))
    return DOLLARS_PER_KM * haversine_km(lon1, lat1, lon2, lat2, np)


def rmse(pred: Any, label: Any) -> float:
    """Root mean squared error."""
    import numpy as np

    return float(np.sqrt(np.mean((pred - label) ** 2)))
