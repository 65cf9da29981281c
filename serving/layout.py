"""What a served model base path holds: the one definition used by deploy and by the server.

Standard library only, so that steps and commands can import it without TensorFlow.

``<model_base_path>/`` (TF Serving's layout, one directory per model) holds:

* ``<N>/`` - version N (N all ASCII digits, > 0). It is **complete** when it holds
  ``saved_model.pb``; anything else named with digits is a **broken** version (reported,
  never served, never compared with). Inside a version, beside the SavedModel:

  - ``taxifare_deploy.json`` - the deploy record: run, verification metrics (``test_rmse``),
    the test split's ``test_data_hash``, when it was deployed;
  - ``metrics.json`` - the trainer's figures (written by the export);
  - ``assets.extra/taxifare_train_stats.json`` - the statistics of the data the version was
    trained on (stage_data's train split metadata), for drift checks;
  - ``assets.extra/tf_serving_warmup_requests`` - TF Serving's warm-up records (optional);

* ``labels.json`` - version labels, ``{"stable": 3, "canary": 4}``, written atomically
  (temporary file + rename); names ``[a-zA-Z0-9_]+`` as in TF Serving;
* ``.tmp-*`` - a version being written (renamed to its number when complete);
* ``.deploy.lock`` - the lock deploy holds while it numbers and publishes a version.

The **default route** (no version, no label) serves the ``stable`` label when it is set,
else the newest complete version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

from trainer import warmup as trainer_warmup

SAVED_MODEL = "saved_model.pb"
DEPLOY_FILE = "taxifare_deploy.json"
METRICS_FILE = "metrics.json"
TRAIN_STATS_FILE = os.path.join("assets.extra", "taxifare_train_stats.json")
WARMUP_FILE = trainer_warmup.WARMUP_FILE
LABELS_FILE = "labels.json"
LOCK_FILE = ".deploy.lock"
TMP_PREFIX = ".tmp-"
STABLE = "stable"
CANARY = "canary"
LABEL_RE = re.compile(r"^[a-zA-Z0-9_]+$")


class LayoutError(ValueError):
    """A model base path, label or version that cannot be used; the message says how to fix it."""


def is_version_name(name: str) -> bool:
    """Whether a directory name is a version number (ASCII digits, > 0)."""
    return name.isascii() and name.isdigit() and int(name) > 0


def is_complete(path: str) -> bool:
    """Whether a version directory holds a SavedModel."""
    return os.path.isfile(os.path.join(path, SAVED_MODEL))


def list_versions(model_dir: str) -> dict[int, str]:
    """Version number -> directory for every complete version under ``model_dir``."""
    try:
        names = os.listdir(model_dir)
    except OSError:
        return {}
    out = {}
    for name in names:
        path = os.path.join(model_dir, name)
        if is_version_name(name) and is_complete(path):
            out[int(name)] = path
    return out


@dataclasses.dataclass
class VersionInfo:
    """One numbered directory of a model base path."""

    version: int
    path: str
    complete: bool
    problem: str = ""
    record: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def test_rmse(self) -> float | None:
        """The test RMSE recorded at deploy (``None`` when not recorded or not finite)."""
        value: Any = (self.record.get("verification") or {}).get("test_rmse")
        try:
            rmse = float(value)
        except (TypeError, ValueError):
            return None
        return rmse if math.isfinite(rmse) else None

    @property
    def test_data_hash(self) -> str:
        """The content hash of the test split the RMSE was measured on ('' when unknown)."""
        return str(self.record.get("test_data_hash") or "")


def _read_json(path: str) -> dict[str, Any] | None:
    with open(path, encoding="utf-8") as fh:
        value = json.load(fh)
    return value if isinstance(value, dict) else None


def missing_model_problem(path: str) -> str:
    """Why a version directory holds no readable SavedModel."""
    try:
        os.listdir(path)
        os.stat(os.path.join(path, SAVED_MODEL))
    except PermissionError:
        return "permission denied: this user cannot read it (fix its mode, e.g. chmod -R a+rX)"
    except OSError:
        pass
    return f"no {SAVED_MODEL}"


def scan(model_dir: str) -> list[VersionInfo]:
    """Every numbered directory under ``model_dir``, oldest first, complete or broken."""
    try:
        names = os.listdir(model_dir)
    except OSError:
        return []
    out = []
    for name in names:
        path = os.path.join(model_dir, name)
        if not is_version_name(name):
            continue
        if not os.path.isdir(path):  # a stray file takes the number: reported, and deploy numbers past it
            out.append(VersionInfo(int(name), path, complete=False, problem="a file, not a version directory: remove or rename it"))
            continue
        info = VersionInfo(int(name), path, complete=is_complete(path))
        if not info.complete:
            info.problem = missing_model_problem(path)
        record_path = os.path.join(path, DEPLOY_FILE)
        if os.path.exists(record_path):
            try:
                info.record = _read_json(record_path) or {}
            except (OSError, ValueError) as exc:
                info.problem = info.problem or f"unreadable {DEPLOY_FILE} ({exc})"
        out.append(info)
    return sorted(out, key=lambda v: v.version)


# -- labels ----------------------------------------------------------------------------------------
def check_label(name: str) -> str:
    """``name`` when it is a valid label name.

    Raises:
        LayoutError: otherwise.
    """
    if not LABEL_RE.match(name):
        raise LayoutError(f"version label {name!r} must be letters, digits or '_' (e.g. stable, canary)")
    return name


def read_labels(model_dir: str) -> dict[str, int]:
    """The labels of ``model_dir`` (``{}`` when there is no labels file).

    Raises:
        LayoutError: when the file exists but is not ``{"label": version, ...}``.
    """
    path = os.path.join(model_dir, LABELS_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LayoutError(f"{path} is not readable JSON ({exc}): fix or delete it, then set labels with `taxifare label`") from None
    if not isinstance(raw, dict):
        raise LayoutError(f'{path} must hold an object such as {{"stable": 3}}')
    labels = {}
    for name, version in raw.items():
        number = isinstance(version, int) and not isinstance(version, bool) and version > 0
        if not isinstance(name, str) or not LABEL_RE.match(name) or not number:
            raise LayoutError(f"{path}: label {name!r}: {version!r} is not a label name and a positive version number")
        labels[name] = version
    return labels


def write_labels(model_dir: str, labels: dict[str, int]) -> None:
    """Write the labels file atomically (a reader sees the old or the new file, never a part)."""
    for name in labels:
        check_label(name)
    path = os.path.join(model_dir, LABELS_FILE)
    tmp = os.path.join(model_dir, f"{TMP_PREFIX}labels-{os.getpid()}-{time.monotonic_ns()}.json")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(dict(sorted(labels.items())), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def default_version(versions: dict[int, str] | list[int], labels: dict[str, int]) -> int | None:
    """The version the default route serves: ``stable`` when set (and complete), else the newest."""
    numbers = sorted(versions)
    stable = labels.get(STABLE)
    if stable is not None and stable in numbers:
        return stable
    return numbers[-1] if numbers else None


def comparison_order(found: list[VersionInfo], labels: dict[str, int]) -> list[VersionInfo]:
    """The complete versions in the order a candidate is compared with them.

    The version the default route serves first, then the other complete versions, newest
    first: the first of them that can be scored is the one to beat (deploy and verify_export).
    """
    complete = {v.version: v for v in found if v.complete}
    served = default_version(list(complete), labels)
    order = ([served] if served is not None else []) + [n for n in sorted(complete, reverse=True) if n != served]
    return [complete[n] for n in order]


def served_version_dir(model_dir: str) -> str | None:
    """The directory of the version the default route serves, or ``None`` when there is none."""
    versions = list_versions(model_dir)
    try:
        labels = read_labels(model_dir)
    except LayoutError:
        labels = {}
    version = default_version(versions, labels)
    return versions[version] if version is not None else None


def deployed_train_stats(model_base_path: str) -> dict[str, Any] | None:
    """The training data statistics of the version the default route serves (``None`` when none recorded).

    The dict is stage_data's metadata of the train split (``rows``, ``columns.<name>.mean``...),
    as deploy copied it to ``<version>/assets.extra/taxifare_train_stats.json``.
    """
    path = served_version_dir(model_base_path)
    if path is None:
        return None
    try:
        return _read_json(os.path.join(path, TRAIN_STATS_FILE))
    except (OSError, ValueError):
        return None


# -- writing ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def locked(model_dir: str) -> Iterator[None]:
    """Hold the model base path's deploy lock (an exclusive ``flock``)."""
    with open(os.path.join(model_dir, LOCK_FILE), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stale_temporaries(model_dir: str, older_than: float) -> list[str]:
    """Delete ``.tmp-*`` entries last changed before ``older_than`` (a Unix time); their names.

    Called with the start time of the running process: a temporary that old was left by a
    writer that died (one still writing would have touched it since). A temporary whose name
    carries the id of a process still running on this machine (``.tmp-<pid>-...``) is kept: its
    writer may be waiting for the lock with its copy complete.
    """
    removed: list[str] = []
    try:
        names = os.listdir(model_dir)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(TMP_PREFIX) or _writer_alive(name):
            continue
        path = os.path.join(model_dir, name)
        try:  # ctime: copies keep their source's mtime, but no writer can set a ctime in the past
            newest = max([os.lstat(path).st_ctime, *(os.lstat(os.path.join(r, f)).st_ctime for r, _, fs in os.walk(path) for f in fs)])
        except OSError:
            continue
        if newest < older_than:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
            removed.append(name)
    return sorted(removed)


def _writer_alive(name: str) -> bool:
    match = re.match(r"^\.tmp-(?:labels-)?(\d+)-", name)
    if not match or int(match.group(1)) in (0, os.getpid()):
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def process_start_time() -> float:
    """When this process started (Unix time): ``/proc/self``'s ctime on Linux, else this module's import."""
    try:
        return os.stat(f"/proc/{os.getpid()}").st_ctime
    except OSError:
        return _IMPORTED


_IMPORTED = time.time()
