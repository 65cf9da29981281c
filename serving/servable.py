"""One loaded model version: its ``serving_default`` signature, metadata and warm-up."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from serving.payload import Feature, Limits, check_column, features_for
from trainer import schema
from trainer.errors import InputError
from trainer.export import read_saved_model

SIGNATURE = "serving_default"
METRICS_FILE = "metrics.json"


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
        try:
            self._loaded = tf.saved_model.load(version_dir)
            self._fn = self._loaded.signatures[SIGNATURE]
        except Exception as exc:
            raise LoadError(f"TensorFlow could not load {version_dir}: {type(exc).__name__}: {str(exc)[:500]}") from None
        _, kwargs = self._fn.structured_input_signature
        try:
            self.features: tuple[Feature, ...] = features_for(list(kwargs))
        except ValueError as exc:
            raise LoadError(str(exc)) from None
        self._dtypes = {name: spec.dtype for name, spec in kwargs.items()}
        outputs = self._fn.structured_outputs
        if list(outputs) != [schema.LABEL]:
            raise LoadError(f"the {SIGNATURE} signature must return {{{schema.LABEL!r}: ...}}, it returns {sorted(outputs)}")
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

    def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """``fare_amount`` for validated columns (see :mod:`serving.payload`), as float32."""
        tensors = {name: tf.constant(columns[name], dtype=self._dtypes[name]) for name in self._dtypes}
        return self._fn(**tensors)[self.output_name].numpy()

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
