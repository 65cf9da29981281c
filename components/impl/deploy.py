"""Step 5, deploy: publish the blessed model as the next version of a TF-Serving model base path.

``<serving_root>/<model_name>/<version>/`` is the layout TensorFlow Serving (and
``taxifare serve``) watches. A version is copied under a hidden temporary name, completed
with ``taxifare_deploy.json`` (run, metrics, data hash), then renamed to its number: a server
never sees a half-written version. A file lock serialises concurrent deploys, and the rename
refuses an existing number, so two runs deploying at once never corrupt a version or reuse
its number.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

DEPLOY_FILE = "taxifare_deploy.json"
LOCK_FILE = ".deploy.lock"


@dataclasses.dataclass
class Published:
    """A published version."""

    version: int
    path: str


def versions(model_dir: str) -> list[int]:
    """The complete versions under ``model_dir``, oldest first (hidden temporaries excluded)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir) if d.isdigit() and os.path.isdir(os.path.join(model_dir, d)))


def latest_version_dir(serving_root: str, model_name: str) -> str | None:
    """The directory of the newest deployed version, or ``None``."""
    model_dir = os.path.join(serving_root, model_name)
    found = versions(model_dir)
    return os.path.join(model_dir, str(found[-1])) if found else None


@contextlib.contextmanager
def _locked(model_dir: str) -> Iterator[None]:
    with open(os.path.join(model_dir, LOCK_FILE), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def publish(model_path: str, serving_root: str, model_name: str, info: dict[str, Any]) -> Published:
    """Copy the SavedModel at ``model_path`` in as the next version.

    Args:
        model_path: a SavedModel directory.
        serving_root: the base path holding one directory per model.
        model_name: the served model's name.
        info: what to record in ``taxifare_deploy.json`` (run, metrics, data hash...).

    Raises:
        InputError: a missing SavedModel, an empty serving root or a bad model name.
    """
    from trainer import checks
    from trainer.errors import InputError

    if not serving_root:
        raise InputError("serving_root is empty: pass the directory that `taxifare serve --model-base-path` watches")
    checks.model_name("model_name", model_name)
    if not os.path.exists(os.path.join(model_path, "saved_model.pb")):
        raise InputError(f"{model_path} holds no saved_model.pb: deploy a SavedModel directory")
    model_dir = os.path.join(serving_root, model_name)
    os.makedirs(model_dir, exist_ok=True)
    tmp = os.path.join(model_dir, f".tmp-{os.getpid()}-{time.monotonic_ns()}")
    try:
        shutil.copytree(model_path, tmp)
        with _locked(model_dir):
            version = (versions(model_dir) or [0])[-1] + 1
            record = {
                **info,
                "version": version,
                "model_name": model_name,
                "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            with open(os.path.join(tmp, DEPLOY_FILE), "w") as fh:
                json.dump(record, fh, indent=2, default=str)
            final = os.path.join(model_dir, str(version))
            os.rename(tmp, final)  # fails (not replaces) if the number exists and holds a version
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Published(version=version, path=final)
