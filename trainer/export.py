"""The SavedModel export: written for TF Serving's own loader, checked when read back.

:func:`export_model` writes the model with ``keras.export.ExportArchive`` (the model tracked,
one ``serving_default`` endpoint), not by wrapping it in a ``tf.Module`` for
``tf.saved_model.save``: a Keras 3 model saved that way loads with TF2's
``tf.saved_model.load`` but not with the graph-mode (session) loader that
``tensorflow_model_server``, Vertex AI's prebuilt prediction containers, KServe and
``saved_model_cli run`` use ("Could not find variable wide_out/kernel",
tensorflow/serving#2250). The signature is the lab's: the raw features by name (float32, and
the ``pickup_datetime`` string in the datetime layout), shape ``[-1]``, returning
``fare_amount`` (float32, ``[-1]``).

Inside the export: ``metrics.json`` (the run's figures) and
``assets.extra/tf_serving_warmup_requests`` (see :mod:`trainer.warmup`). The directory is
written under a temporary name and renamed, so a reader never sees a partial export.

:func:`check_export_dir` is the one place that says what a taxifare export is: the trainer,
``verify_export`` and the server call it before loading one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from base import atomic, process, storage
from base.errors import InputError
from trainer import schema
from trainer.schema import Variant

METRICS_FILE = "metrics.json"
EXPORT_SUBDIR = os.path.join("export", "exporter")
SIGNATURE = "serving_default"
log = logging.getLogger(__name__)


def remove_stale_exports(export_base: str, older_than: float | None = None) -> list[str]:
    """Remove ``.tmp-*`` exports under ``export_base`` left by an earlier process (a killed export).

    The rule is :func:`base.atomic.is_stale` (last written before this process started, its
    writer not running here), also for ``gs://`` (through ``tf.io.gfile``); ``older_than`` stands
    for this process's start time. Returns the folders removed.
    """
    import tensorflow as tf

    if not storage.is_gcs(export_base):
        removed = [os.path.join(export_base, name) for name in atomic.remove_stale(export_base, older_than)]
    else:
        removed = []
        limit = process.start_time() if older_than is None else older_than
        for path in tf.io.gfile.glob(os.path.join(export_base, atomic.TMP_PREFIX + "*")):
            name = os.path.basename(path.rstrip("/"))
            if atomic.is_stale(name, tf.io.gfile.stat(path).mtime_nsec / 1e9, limit):
                tf.io.gfile.rmtree(path)
                removed.append(path)
    if removed:
        log.info("removed %d unfinished export(s) of earlier runs: %s", len(removed), ", ".join(removed))
    return removed


def serving_specs(variant: Variant) -> list[Any]:
    """The ``serving_default`` inputs: one named ``[None]`` tensor per raw feature."""
    import tensorflow as tf

    return [tf.TensorSpec([None], tf.string if name == schema.DATETIME else tf.float32, name=name) for name in variant.features]


def export_model(
    model: Any,
    variant: Variant,
    export_base: str,
    metrics: Mapping[str, Any],
    warmup_instances: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Write a SavedModel with the raw-feature ``serving_default`` signature.

    Written to ``<export_base>/.tmp-<pid>-<ts>/`` then renamed to ``<export_base>/<ts>/``, so
    a reader never sees a partial export. ``metrics`` goes into ``metrics.json`` inside it; the
    lab's test instance and ``warmup_instances`` (raw-feature dicts, e.g. a few real
    evaluation rows) into ``assets.extra/tf_serving_warmup_requests``.

    Returns:
        The final export directory.
    """
    import keras
    import tensorflow as tf

    from trainer import warmup

    names = variant.features

    def serve(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        pred = model(dict(zip(names, args, strict=True)), training=False)
        return {schema.LABEL: tf.squeeze(pred, -1)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve, input_signature=serving_specs(variant))
    tf.io.gfile.makedirs(export_base)
    remove_stale_exports(export_base)
    stamp = str(int(time.time()))
    while tf.io.gfile.exists(os.path.join(export_base, stamp)):
        stamp = str(int(stamp) + 1)
    tmp = os.path.join(export_base, f"{atomic.TMP_PREFIX}{os.getpid()}-{stamp}")
    final = os.path.join(export_base, stamp)
    archive.write_out(tmp, verbose=False)
    with tf.io.gfile.GFile(os.path.join(tmp, METRICS_FILE), "w") as fh:
        json.dump({**metrics, "variant": variant.value, "features": list(names)}, fh, indent=2)
    warmup.write_warmup_requests(tmp, variant, warmup_instances)
    tf.io.gfile.rename(tmp, final, overwrite=False)
    return final


def unchanged_export(output_dir: str, metrics: Mapping[str, Any]) -> str | None:
    """The newest export when it already holds the model ``metrics`` describe (else ``None``).

    A run that trained nothing (its step budget was reached before) chooses the same
    checkpoint as the run that exported last; writing it again under a new timestamp would make
    a server watching ``export/exporter/`` switch to an identical model. Same model means: the
    same exported step and total steps, the same evaluation (rows and RMSE).
    """
    import tensorflow as tf

    last = latest_export(output_dir)
    if last is None or not tf.io.gfile.exists(os.path.join(last, METRICS_FILE)):
        return None
    try:
        with tf.io.gfile.GFile(os.path.join(last, METRICS_FILE)) as fh:
            before = json.load(fh)
    except (OSError, ValueError):
        return None
    same = all(before.get(key) == metrics.get(key) for key in ("exported_step", "steps", "eval_examples"))
    rmse_before, rmse_now = before.get("rmse"), metrics.get("rmse")
    if not same or not isinstance(rmse_before, (int, float)) or not isinstance(rmse_now, (int, float)):
        return None
    return last if abs(rmse_before - rmse_now) <= 1e-4 * max(1.0, abs(rmse_now)) else None


def latest_export(output_dir: str) -> str | None:
    """The newest complete export under ``output_dir`` (``None`` when there is none)."""
    import tensorflow as tf

    base = os.path.join(output_dir, EXPORT_SUBDIR)
    if not tf.io.gfile.isdir(base):
        return None
    stamps = sorted((d.rstrip("/") for d in tf.io.gfile.listdir(base) if d.rstrip("/").isdigit()), key=int)
    return os.path.join(base, stamps[-1]) if stamps else None


def check_export_dir(export_dir: str, what: str = "export directory") -> Variant:
    """Check that ``export_dir`` holds a complete taxifare SavedModel; return its data layout.

    Reads only ``saved_model.pb`` (no variable is loaded). Refused, in one line naming the
    problem: a missing directory or a file, a partial export (no ``saved_model.pb``, no
    ``variables/``), a file that is not a SavedModel, and another model (no
    ``serving_default`` signature, or one that does not take the taxi features and return
    ``fare_amount``).

    Raises:
        InputError: naming the problem and the fix.
    """
    fix = "point to a SavedModel the trainer exported (<output_dir>/export/exporter/<timestamp>)"
    if not export_dir or not os.path.exists(export_dir):
        raise InputError(f"{what} {export_dir!r} does not exist: {fix}")
    if not os.path.isdir(export_dir):
        raise InputError(f"{what} {export_dir} is a file, not a SavedModel directory: {fix}")
    pb = os.path.join(export_dir, "saved_model.pb")
    if not os.path.isfile(pb):
        raise InputError(f"{what} {export_dir} holds no saved_model.pb (a partial or interrupted export?): {fix}")
    if not os.path.isfile(os.path.join(export_dir, "variables", "variables.index")):
        raise InputError(f"{what} {export_dir} has no variables/variables.index (a partial copy of an export?): {fix}")
    sig = _read_signature(pb, what, fix)
    inputs, outputs = set(sig.inputs), set(sig.outputs)
    for variant in Variant:
        if inputs == set(variant.features) and schema.LABEL in outputs:
            return variant
    raise InputError(
        f"{what} {export_dir} holds another model: its {SIGNATURE} signature takes {sorted(inputs)} and returns {sorted(outputs)}, "
        f"not the taxi features ({', '.join(Variant.LAB.features)}[, {schema.DATETIME}]) -> {schema.LABEL}: {fix}"
    )


def read_saved_model(pb: str) -> Any:
    """The ``SavedModel`` protocol buffer in the file ``pb`` (a ``saved_model.pb``), read by the trainer and the server.

    Raises:
        InputError: the file cannot be read or does not hold a SavedModel.
    """
    from trainer import protos

    saved_model_pb2 = protos.load("tensorflow.core.protobuf.saved_model_pb2")  # without importing TensorFlow
    try:
        with open(pb, "rb") as fh:
            return saved_model_pb2.SavedModel.FromString(fh.read())
    except OSError as exc:
        raise InputError(f"cannot read {pb}: {exc.strerror}") from None
    except Exception as exc:  # protobuf's DecodeError and friends
        raise InputError(f"{pb} is not a SavedModel ({type(exc).__name__}: {exc})") from None


def _read_signature(pb: str, what: str, fix: str) -> Any:
    try:
        proto = read_saved_model(pb)
    except InputError as exc:
        raise InputError(f"{what}: {exc}: {fix}") from None
    meta = next((m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags), None)
    if meta is None:
        raise InputError(f"{what}: {pb} has no meta graph tagged 'serve' (not a serving export): {fix}")
    if SIGNATURE not in meta.signature_def:
        found = ", ".join(sorted(meta.signature_def)) or "none"
        raise InputError(f"{what}: {pb} has no {SIGNATURE!r} signature (it has {found}): it holds another model; {fix}")
    return meta.signature_def[SIGNATURE]
