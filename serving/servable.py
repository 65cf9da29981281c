"""One loaded model version: its ``serving_default`` signature, metadata and warm-up.

A version runs as TF Serving runs it: the SavedModel loaded in graph mode into a
``tf.compat.v1.Session`` (the stock loader), and each prediction is one ``Session::Run`` of the
signature's feeds and fetch through a TensorFlow callable made once (see
:func:`session_callable`). Measured here (docs/serving.md, docs/benchmarks.md) that costs
about a third of calling the TF2 signature (``loaded.signatures[...](**tensors)``) with
``tf.constant`` inputs. An export that the graph-mode loader cannot run (a ``tf.Module`` saved
with ``tf.saved_model.save``, which TF Serving cannot serve either) falls back to the TF2
signature, with a warning in the log.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from base.errors import InputError
from serving.payload import Feature, Limits, check_column, features_for
from trainer import schema
from trainer.export import read_saved_model
from trainer.stock_check import tf_error_line

SIGNATURE = "serving_default"
METRICS_FILE = "metrics.json"
#: ``runtime`` of :class:`Servable`: TF Serving's label for the session runtime, and the TF2 fallback's
SESSION_RUNTIME = "TF1"
FUNCTION_RUNTIME = "TF2"
log = logging.getLogger("serving")


class LoadError(RuntimeError):
    """A version directory that does not hold a servable model; the message says why."""


def read_signature_defs(version_dir: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the SavedModel in ``version_dir`` (from ``saved_model.pb``).

    Raises:
        LoadError: when the file is missing or not a SavedModel.
    """
    path = os.path.join(version_dir, "saved_model.pb")
    try:
        proto = read_saved_model(path)
    except InputError as exc:
        raise LoadError(str(exc)) from None
    if not proto.meta_graphs:
        raise LoadError(f"{path} holds no meta graph")
    return dict(proto.meta_graphs[0].signature_def)


class Servable:
    """A loaded version of the model, ready to predict (thread-safe).

    Args:
        version_dir: the SavedModel directory.
        version: its version number.
    """

    def __init__(self, version_dir: str, version: int) -> None:
        started = time.monotonic()
        self.path = version_dir
        self.version = version
        self.signature_defs = read_signature_defs(version_dir)
        if SIGNATURE not in self.signature_defs:
            raise LoadError(f"the SavedModel in {version_dir} has no {SIGNATURE!r} signature (it has {', '.join(self.signature_defs)})")
        sig = self.signature_defs[SIGNATURE]
        try:
            self.features: tuple[Feature, ...] = features_for(list(sig.inputs))
        except ValueError as exc:
            raise LoadError(str(exc)) from None
        if list(sig.outputs) != [schema.LABEL]:
            raise LoadError(f"the {SIGNATURE} signature must return {{{schema.LABEL!r}: ...}}, it returns {sorted(sig.outputs)}")
        names = [f.name for f in self.features]
        self._float = {f.name: f.kind == "float" for f in self.features}
        self.runtime = SESSION_RUNTIME
        self._call: Callable[..., Any]
        try:
            self._call = session_callable(version_dir, sig, names)
            self._probe()
        except Exception as session_error:  # not runnable in graph mode: the TF2 signature may still run it
            self.runtime = FUNCTION_RUNTIME
            try:
                self._call = function_callable(version_dir, names)
            except Exception as exc:
                raise LoadError(f"TensorFlow could not load {version_dir}: {type(exc).__name__}: {str(exc)[:500]}") from None
            log.warning(
                "version %d does not run in graph mode as TF Serving runs it (%s); serving it with the TF2 signature",
                version,
                tf_error_line(session_error),
            )
        self.output_name = schema.LABEL
        self.metrics = self._read_metrics()
        self.load_seconds = time.monotonic() - started
        self.warmup_seconds = 0.0

    def _read_metrics(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.path, METRICS_FILE), encoding="utf-8") as fh:
                value = json.load(fh)
            return value if isinstance(value, dict) else {}
        except (OSError, ValueError):
            return {}

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the signature's inputs, in schema order."""
        return tuple(f.name for f in self.features)

    def _probe(self) -> None:
        """One prediction of the lab's test instance (raises what the runtime raises)."""
        instance = schema.TEST_INSTANCE_DATETIME if schema.DATETIME in self.feature_names else schema.TEST_INSTANCE
        self.predict({f.name: check_column(f, [instance[f.name]], Limits()) for f in self.features})

    def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """``fare_amount`` for validated columns (see :mod:`serving.payload`), as float32."""
        args = [np.asarray(columns[name], np.float32) if is_float else columns[name] for name, is_float in self._float.items()]
        return np.asarray(self._call(*args), np.float32).reshape(-1)

    def predict_lone(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """:meth:`predict` for a call that runs alone (the scheduler's inline call): the graph on the calling thread.

        See :func:`session_callable`; the same as :meth:`predict` for the TF2 fallback.
        """
        args = [np.asarray(columns[name], np.float32) if is_float else columns[name] for name, is_float in self._float.items()]
        return np.asarray(getattr(self._call, "lone", self._call)(*args), np.float32).reshape(-1)

    def warm_up(self) -> None:
        """Run the lab's test instance (batch 1 and 100) once, so the first request is not slow.

        Raises:
            LoadError: when the model cannot answer it or answers NaN.
        """
        started = time.monotonic()
        instance = schema.TEST_INSTANCE_DATETIME if schema.DATETIME in self.feature_names else schema.TEST_INSTANCE
        limits = Limits()
        for n in (1, 100):
            columns = {f.name: check_column(f, [instance[f.name]] * n, limits) for f in self.features}
            try:
                out = self.predict(columns)
                self.predict_lone(columns)
            except Exception as exc:
                raise LoadError(f"version {self.version} failed its warm-up prediction: {type(exc).__name__}: {str(exc)[:300]}") from None
            if out.shape != (n,) or not np.isfinite(out).all():
                raise LoadError(f"version {self.version} answered the warm-up request with {out[:3]!r} (shape {out.shape})")
        self.warmup_seconds = time.monotonic() - started

    def signature_def_map(self) -> Any:
        """The ``tensorflow.serving.SignatureDefMap`` proto of this version (for metadata)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        out = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in self.signature_defs.items():
            out.signature_def[name].CopyFrom(sig)
        return out


def session_callable(version_dir: str, sig: meta_graph_pb2.SignatureDef, names: list[str]) -> Callable[..., np.ndarray]:
    """The signature as TF Serving runs it: graph mode, one ``Session::Run`` per call.

    The call goes through a TensorFlow *callable* (``DirectSession::MakeCallable``: feeds and
    fetch resolved once), which the Python ``Session`` offers as ``_make_callable_from_options``
    (the fast path Keras' TF1 backend used). ``Session.make_callable`` with a feed list turns
    every call into a ``Session.run`` with a feed dict, and that Python feed handling costs
    about 300 µs a call here, more than the model: it is the fallback only, should a TensorFlow
    release drop the method.

    TensorFlow's default thread pools, as TF Serving's default: running every call's ops in its
    calling thread (``inter_op_parallelism_threads=-1``) stalls concurrent callers (8 threads: p99
    44 ms vs 4 ms, half the throughput). A call known to run alone (the scheduler's inline call,
    nothing else queued or running) can still skip the hand-over to the pool's threads and back:
    ``call.lone`` is the same signature through a second callable whose ``RunOptions`` ask for
    the calling thread (``inter_op_thread_pool=-1``): about 100 µs of CPU and wall time for 100
    instances against 160-250 µs through the pool (docs/benchmarks.md).

    Returns:
        ``call(*columns)`` taking one array per input of ``names``, in that order, with ``call.lone``.
    """
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.util import deprecation

    session = tf.compat.v1.Session(graph=tf.Graph())
    with deprecation.silence():  # the compat.v1 loader logs "use tf.saved_model.load instead" on every load
        tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], version_dir)
    feeds = [sig.inputs[n].name for n in names]
    fetch = sig.outputs[schema.LABEL].name
    make = getattr(session, "_make_callable_from_options", None)
    if make is None:  # pragma: no cover - present in every TensorFlow release since 1.8
        return session.make_callable(fetch, feed_list=feeds)  # type: ignore[no-any-return]
    run = make(config_pb2.CallableOptions(feed=feeds, fetch=[fetch]))
    lone_options = config_pb2.CallableOptions(feed=feeds, fetch=[fetch])
    lone_options.run_options.inter_op_thread_pool = -1  # DirectSession: run the executor in the calling thread
    run_lone = make(lone_options)

    def call(*columns: np.ndarray) -> np.ndarray:
        return run(*columns)[0]  # type: ignore[no-any-return]

    def lone(*columns: np.ndarray) -> np.ndarray:
        return run_lone(*columns)[0]  # type: ignore[no-any-return]

    call.session = session  # type: ignore[attr-defined]  # the callables' handles live as long as their session
    call.lone = lone  # type: ignore[attr-defined]
    return call


def function_callable(version_dir: str, names: list[str]) -> Callable[..., np.ndarray]:
    """The TF2 signature (``tf.saved_model.load(...).signatures[...]``), for exports graph mode cannot run.

    Returns:
        ``call(*columns)`` taking one array per input of ``names``, in that order.
    """
    loaded = tf.saved_model.load(version_dir)
    fn = loaded.signatures[SIGNATURE]
    _, kwargs = fn.structured_input_signature
    dtypes = [kwargs[n].dtype for n in names]

    def call(*columns: np.ndarray) -> np.ndarray:
        tensors = {name: tf.constant(col, dtype=dtype) for name, col, dtype in zip(names, columns, dtypes, strict=True)}
        return fn(**tensors)[schema.LABEL].numpy()  # type: ignore[no-any-return]

    call.loaded = loaded  # type: ignore[attr-defined]  # keeps the variables alive
    return call
