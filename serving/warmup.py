"""Warm-up from ``assets.extra/tf_serving_warmup_requests``, as TF Serving does.

The file is a TFRecord of ``tensorflow.serving.PredictionLog`` records, each holding a
``PredictRequest`` (TF Serving's SavedModel warm-up format, at most 1,000 records: more fail the load, as in TF Serving).
When a version has it, every request is run once on the loaded version before it serves; a
request the version cannot answer fails the load, as in TF Serving.
"""

from __future__ import annotations

from typing import Any


def read_requests(version_dir: str) -> list[Any]:
    """The ``PredictRequest``s of the version's warm-up file (``[]`` when it has none).

    The trainer writes the file and reads it back with the same function
    (:func:`trainer.warmup.read_warmup_requests`), so both agree on what a valid file is.

    Raises:
        InputError: (a ``ValueError``) when the file is not a TFRecord of PredictionLog records,
            or holds more than TF Serving's 1,000 records.
    """
    from trainer.warmup import read_warmup_requests

    return read_warmup_requests(version_dir)


def replay(servable: Any, version_dir: str) -> int:
    """Run the version's warm-up requests on ``servable``; how many ran.

    Raises:
        ValueError: when a request does not fit the version or the answer is not finite.
    """
    import numpy as np
    import tensorflow as tf

    requests = read_requests(version_dir)
    for i, request in enumerate(requests):
        missing = [f.name for f in servable.features if f.name not in request.inputs]
        if missing:
            raise ValueError(f"warm-up request {i} lacks the inputs {', '.join(missing)}")
        columns = {}
        for feature in servable.features:
            values = tf.make_ndarray(request.inputs[feature.name]).reshape(-1)
            columns[feature.name] = values.astype(np.float32) if feature.kind == "float" else values
        out = servable.predict(columns)
        if not np.isfinite(out).all():
            raise ValueError(f"warm-up request {i} got a non-finite answer {out[:3]!r}")
    return len(requests)
