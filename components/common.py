"""Helpers shared by the step functions (standard library only at module level).

Every step is built by :func:`step` (kfp's lightweight component in the project's image). A
step reports its key figure with :func:`summary`: a line on stderr for the log, and a
:class:`~components.impl.contracts.StepSummary` file in the folder ``taxifare run`` names in
``TAXIFARE_STEP_SUMMARIES``, which it reads when the step ends and shows to people.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

#: The image every step runs in; a compile-time setting (``taxifare compile --image``).
DEFAULT_IMAGE = "taxifare:0.1.0"


def step(func: Callable[..., Any], *, image: str = DEFAULT_IMAGE) -> Any:
    """``func`` as a kfp lightweight component that runs in ``image``, where kfp is already installed.

    The decorator of every step, and how ``taxifare compile --image`` rebuilds a step for
    another image (:func:`pipeline.dag.with_image`): the build settings are declared here only.
    kfp reads the component's inputs and outputs from ``func``'s signature and copies its source
    (from ``def`` on) into the spec.
    """
    from kfp import dsl

    return dsl.component(func, base_image=image, install_kfp_package=False)


def write_metrics(artifact: Any, figures: dict[str, float], **extra: Any) -> None:
    """Log ``figures`` on a Metrics artifact, and write them (with ``extra``) as JSON at its path.

    The file makes the artifact exist on disk, which kfp.local's cache checks.
    """
    import json

    for key, value in figures.items():
        artifact.log_metric(key, value)
    with open(artifact.path, "w") as fh:
        json.dump({**extra, **figures}, fh, default=str)


def summary(step: str, text: str, **figures: Any) -> None:
    """Report the step's one-line summary (and its figures): to the log, and as a file when asked."""
    from components.impl.contracts import SUMMARY_DIR_ENV, StepSummary

    directory = os.environ.get(SUMMARY_DIR_ENV)
    if directory:
        StepSummary(step, text, figures).write(directory)
    print(f"{step}: {text}", file=sys.stderr, flush=True)


def local_path(uri_or_path: str) -> str:
    """The filesystem path of an artifact: ``/gcs/...`` for ``gs://`` on Vertex, else as is."""
    if uri_or_path.startswith("gs://"):
        return "/gcs/" + uri_or_path[len("gs://") :]
    return uri_or_path
