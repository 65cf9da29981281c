"""Helpers shared by the step functions (standard library only).

A step reports its key figure with :func:`summary`: one marker line on stdout that
``taxifare run`` picks out of the step's log and shows to people; the rest of the step's
output stays in the log file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

#: The image every step runs in; a compile-time setting (``taxifare compile --image``).
DEFAULT_IMAGE = "taxifare:0.1.0"
SUMMARY_MARKER = "TAXIFARE_STEP_SUMMARY "


def summary(step: str, text: str, **figures: Any) -> None:
    """Print the step's one-line summary (and its figures) as a marker line."""
    print(SUMMARY_MARKER + json.dumps({"step": step, "text": text, "figures": figures}, default=str), flush=True)
    print(f"{step}: {text}", file=sys.stderr, flush=True)


def local_path(uri_or_path: str) -> str:
    """The filesystem path of an artifact: ``/gcs/...`` for ``gs://`` on Vertex, else as is."""
    if uri_or_path.startswith("gs://"):
        return "/gcs/" + uri_or_path[len("gs://") :]
    return uri_or_path


def replace_dir(tmp: str, final: str) -> None:
    """Move the finished directory ``tmp`` to ``final``, replacing an empty placeholder there."""
    if os.path.isdir(final) and not os.listdir(final):
        os.rmdir(final)
    elif os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
