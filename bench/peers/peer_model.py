"""The model call every peer server wraps: the same graph-mode session call as taxifare's server.

Imported by the peer servers of ``bench/bench_peers.py``, each in its own virtualenv (not the
project's), so it uses only TensorFlow and numpy. :func:`load` is ``serving.servable.session_callable``
without the project's imports: the SavedModel loaded by the stock graph-mode loader into a
default ``tf.compat.v1.Session``, and one ``Session::Run`` per call through a callable made once.
The model directory and the signature's input names (in the order taxifare's server feeds them)
come from ``BENCH_MODEL_DIR`` and ``BENCH_INPUTS`` (comma-separated). With ``BENCH_CALLING_THREAD=1``
every call runs its graph on the calling thread (``RunOptions.inter_op_thread_pool=-1``, what
taxifare's server does for a call that runs alone), to see what a peer gets from the same trick.
"""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

NAMES = os.environ.get("BENCH_INPUTS", "").split(",")
OUTPUT = "fare_amount"


def load() -> Callable[..., np.ndarray]:
    """``call(*columns)``: one float32 array per name of ``NAMES``, the fares as float32."""
    session = tf.compat.v1.Session(graph=tf.Graph())
    meta = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], os.environ["BENCH_MODEL_DIR"])
    sig = meta.signature_def["serving_default"]
    options = config_pb2.CallableOptions(feed=[sig.inputs[n].name for n in NAMES], fetch=[sig.outputs[OUTPUT].name])
    if os.environ.get("BENCH_CALLING_THREAD") == "1":
        options.run_options.inter_op_thread_pool = -1
    run = session._make_callable_from_options(options)

    def call(*columns: np.ndarray) -> np.ndarray:
        return np.asarray(run(*columns)[0], np.float32).reshape(-1)

    call.session = session  # type: ignore[attr-defined]
    return call


def columns(instances: list[dict[str, float]]) -> list[np.ndarray]:
    """The row-format instances as one float32 column per input name."""
    return [np.array([row[name] for row in instances], np.float32) for name in NAMES]
