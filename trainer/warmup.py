"""TF Serving's warm-up file inside an export: written by the trainer, read by any server.

``<export>/assets.extra/tf_serving_warmup_requests`` is a TFRecord file of
``tensorflow.serving.PredictionLog`` records whose ``predict_log.request`` is a
``PredictRequest`` for the ``serving_default`` signature. ``tensorflow_model_server`` (and so
Vertex AI's prebuilt containers) replays it when it loads a version, before the version
serves, so the first real request is not slow; it reads at most 1,000 records.

The file holds the lab's ``test.json`` instance (batch 1), then each instance of a small
sample (batch 1, e.g. real evaluation rows), then the whole sample as one batched request.

The project's own server warms up from the same file with :func:`read_warmup_requests` and
:func:`request_columns`, so both servers run the same requests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from base.errors import InputError
from base.layout import MODEL_NAME, WARMUP_FILE
from trainer import schema
from trainer.schema import Variant

#: TF Serving reads at most this many warm-up records.
MAX_RECORDS = 1000
#: Instances of the sample written one per request (the batched request holds all of them).
MAX_SINGLE = 100
SIGNATURE = "serving_default"


def warmup_path(export_dir: str) -> str:
    """Where the warm-up file of ``export_dir`` is."""
    return os.path.join(export_dir, WARMUP_FILE)


def make_request(variant: Variant, instances: Sequence[Mapping[str, Any]], model_name: str = MODEL_NAME) -> Any:
    """A ``PredictRequest`` for ``serving_default`` holding ``instances`` (raw-feature dicts) as one batch."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = SIGNATURE
    for name in variant.features:
        values = [row[name] for row in instances]
        if name == schema.DATETIME:
            proto = tf.make_tensor_proto([str(v).encode() for v in values], dtype=tf.string, shape=[len(values)])
        else:
            proto = tf.make_tensor_proto(np.asarray(values, dtype=np.float32), dtype=tf.float32, shape=[len(values)])
        request.inputs[name].CopyFrom(proto)
    return request


def write_warmup_requests(export_dir: str, variant: Variant, sample: Sequence[Mapping[str, Any]] = ()) -> str:
    """Write ``assets.extra/tf_serving_warmup_requests`` into ``export_dir``; return its path.

    Args:
        export_dir: the SavedModel directory (before it is renamed into place).
        variant: the data layout (which features the requests carry).
        sample: raw-feature instances to add after the lab's test instance.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    instance = schema.TEST_INSTANCE_DATETIME if variant is Variant.DATETIME else schema.TEST_INSTANCE
    sample = list(sample)[: MAX_RECORDS - 2]
    batches: list[list[Mapping[str, Any]]] = [[instance], *([row] for row in sample[:MAX_SINGLE])]
    if len(sample) > 1:
        batches.append(sample)
    path = warmup_path(export_dir)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for batch in batches:
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=make_request(variant, batch)))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(export_dir: str) -> list[Any]:
    """The ``PredictRequest``s of the warm-up file of ``export_dir``, in file order.

    Returns an empty list when the export has no warm-up file (older exports).

    Raises:
        InputError: when the file is not a TFRecord of ``PredictionLog`` with predict requests,
            or holds more than :data:`MAX_RECORDS` records.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = warmup_path(export_dir)
    if not tf.io.gfile.exists(path):
        return []
    requests = []
    try:
        for i, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
            log = prediction_log_pb2.PredictionLog.FromString(record)
            if log.WhichOneof("log_type") != "predict_log":
                raise InputError(f"{path}: record {i} is a {log.WhichOneof('log_type')}, not a predict_log")
            requests.append(log.predict_log.request)
    except tf.errors.OpError as exc:
        raise InputError(f"{path} is not a TFRecord file of PredictionLog records ({exc.message.splitlines()[0]})") from None
    except InputError:
        raise
    except Exception as exc:  # protobuf's DecodeError
        raise InputError(f"{path} holds a record that is not a PredictionLog ({type(exc).__name__})") from None
    if len(requests) > MAX_RECORDS:
        raise InputError(f"{path} holds {len(requests)} warm-up records; TF Serving reads at most {MAX_RECORDS}")
    return requests


def request_columns(request: Any) -> dict[str, Any]:
    """The inputs of a ``PredictRequest`` as numpy columns (float32, or ``str`` objects for strings)."""
    import numpy as np
    import tensorflow as tf

    columns: dict[str, Any] = {}
    for name, proto in request.inputs.items():
        values = tf.make_ndarray(proto)
        if values.dtype == object:
            values = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1)], dtype=object)
        columns[name] = values.reshape(-1)
    return columns


def request_instances(request: Any) -> list[dict[str, Any]]:
    """The inputs of a ``PredictRequest`` as raw-feature instances (``test.json``-style dicts)."""
    columns = request_columns(request)
    n = len(next(iter(columns.values()))) if columns else 0
    return [{name: (col[i] if col.dtype == object else float(col[i])) for name, col in columns.items()} for i in range(n)]
