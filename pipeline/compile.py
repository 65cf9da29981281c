"""``taxifare compile``: write the pipeline spec that users upload to the pipeline UI."""

from __future__ import annotations

import functools
import os
from typing import Any

from base import atomic
from base.storage import check_output_file
from components.common import DEFAULT_IMAGE

LOCAL_YAML = os.path.join("compiled", "taxifare_pipeline.yaml")
VERTEX_YAML = os.path.join("compiled", "taxifare_vertex.yaml")
VERTEX_EMAIL_YAML = os.path.join("compiled", "taxifare_vertex_email.yaml")
#: What each target compiles to by default.
OUTPUTS = {"local": LOCAL_YAML, "vertex": VERTEX_YAML, "vertex-email": VERTEX_EMAIL_YAML}
TARGETS = tuple(OUTPUTS)


def compile_pipeline(out_path: str | None = None, *, image: str = DEFAULT_IMAGE, target: str = "local") -> str:
    """Compile the pipeline to ``out_path`` (written beside it first, then renamed).

    Args:
        out_path: the YAML to write (default: ``compiled/taxifare_<target>.yaml``).
        image: the image every step runs in.
        target: ``local`` (the kfp.local / Kubeflow DAG), ``vertex`` (custom job training, Vertex deployment)
            or ``vertex-email`` (the same inside Vertex AI's e-mail notification exit handler).

    Returns:
        The path written (mode 0644 under the usual umask).

    Raises:
        InputError: ``out_path`` is a directory or cannot be written (nothing is created).
    """
    from kfp import compiler

    from pipeline.pipeline import create_pipeline
    from pipeline.vertex_pipeline import create_vertex_pipeline

    factories: dict[str, Any] = {
        "local": create_pipeline,
        "vertex": create_vertex_pipeline,
        "vertex-email": functools.partial(create_vertex_pipeline, email=True),
    }
    if target not in factories:
        raise ValueError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    out_path = out_path or OUTPUTS[target]
    check_output_file(out_path, "--output")

    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    with atomic.replacing(out_path) as tmp:  # the temporary keeps the .yaml kfp asks for
        compiler.Compiler().compile(factories[target](image=image), tmp)
    return out_path
