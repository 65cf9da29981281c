"""Warm-up from ``assets.extra/tf_serving_warmup_requests``, as TF Serving does.

The file is a TFRecord of ``tensorflow.serving.PredictionLog`` records, each holding a
``PredictRequest`` (TF Serving's SavedModel warm-up format, at most 1,000 records are read).
When a version has it, every request is run once on the loaded version before it serves; a
request the version cannot answer fails the load, as in TF Serving.
"""

from __future__ import annotations

import os
from typing import Any

from serving import layout

#: TF Serving reads at most this many warm-up records.
MAX_RECORDS = 1000


def read_requests(version_dir: str) -> list[Any]:
    """The ``PredictRequest``s of the version's warm-up file (``[]`` when it has none).

    Raises:
        ValueError: when the file is not a TFRecord of PredictionLog records.
    """
    path = os.path.join(version_dir, layout.WARMUP_FILE)
    if not os.path.exists(path):
        return []
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    try:
        for i, raw in enumerate(tf.data.TFRecordDataset(path).take(MAX_RECORDS)):
            log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                raise ValueError(f"record {i} is a {log.WhichOneof('log_type')}, not a predict_log")
            requests.append(log.predict_log.request)
    except (tf.errors.OpError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise ValueError(f"{path} is not a TFRecord of PredictionLog records: {message[:300]}") from None
    return requests


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
