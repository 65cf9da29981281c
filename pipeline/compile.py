"""``taxifare compile``: write the pipeline spec that users upload to the pipeline UI."""

from __future__ import annotations

import os
import tempfile

from components.common import DEFAULT_IMAGE

LOCAL_YAML = os.path.join("compiled", "taxifare_pipeline.yaml")


def compile_pipeline(out_path: str = LOCAL_YAML, *, image: str = DEFAULT_IMAGE) -> str:
    """Compile the pipeline to ``out_path`` (written beside it first, then renamed).

    Returns:
        The path written.
    """
    from kfp import compiler

    from pipeline.pipeline import create_pipeline

    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".compile-", suffix=".yaml")
    os.close(fd)
    try:
        compiler.Compiler().compile(create_pipeline(image=image), tmp)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path
