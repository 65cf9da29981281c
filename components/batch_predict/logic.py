"""The optional last step, batch_predict: score ``batch_source`` with the version just deployed (or the served one).

A plain function over :mod:`serving.batch` (the same job as ``taxifare batch-predict``): the
predictions folder (Vertex AI's shape: ``predictions_*``, ``errors_*``, ``batch_summary.json``)
is the step's output artifact.
"""

from __future__ import annotations

import os
from typing import Any

from base import layout


def scoring_version(deployed_path: str, serving_root: str, model_name: str) -> tuple[str, int | None] | None:
    """The version directory to score with: the one deploy just published, else the one the default route serves.

    ``None`` when nothing is deployed under ``serving_root/model_name`` (a first run whose model was not blessed).
    """
    if deployed_path:
        name = os.path.basename(os.path.normpath(deployed_path))
        return deployed_path, int(name) if layout.is_version_name(name) else None
    served = layout.served_version_dir(os.path.join(serving_root, model_name))
    return None if served is None else (served, int(os.path.basename(served)))


def batch_predict(batch_source: str, deployed_path: str, serving_root: str, model_name: str, output_dir: str) -> dict[str, Any] | None:
    """Score ``batch_source`` into ``output_dir``; returns the job's summary (see :func:`serving.batch.run`).

    ``None`` (and an empty ``output_dir``) when no version is deployed to score with: not a failure of the run.

    Raises:
        InputError: bad input, or too many rows that cannot be scored.
    """
    from serving import batch

    found = scoring_version(deployed_path, serving_root, model_name)
    if found is None:
        os.makedirs(output_dir, exist_ok=True)
        return None
    model_dir, version = found
    settings = batch.BatchSettings(inputs=batch_source, output_dir=output_dir, model_dir=model_dir, version=version)
    return batch.run(settings, progress=None)
