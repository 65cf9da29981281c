"""Step 5, deploy: compare-and-publish the blessed model as the next version of a model base path.

``<serving_root>/<model_name>/`` is a TF-Serving model base path, laid out as
:mod:`serving.layout` defines it (versions, labels, deploy records). A version is copied under a
hidden temporary name, completed with ``taxifare_deploy.json`` (run, metrics, data hash) and the
training data statistics, then renamed to its number: a server never sees a half-written
version.

Everything that decides *whether* and *as what* to publish happens under the base path's lock:

1. ``.tmp-*`` leftovers older than this process (a writer that died) are removed;
2. the candidate's test RMSE is compared with the version the default route serves, re-read
   now (another run may have deployed since verify_export looked): its RMSE recorded at deploy
   when it was measured on the same test split (same content hash), else re-scored on this
   run's test split. Broken versions (no ``saved_model.pb``, or not loadable) are skipped and
   reported; when the candidate is not strictly better, nothing is deployed (not a failure);
3. the version gets the next free number (broken numbers are never reused) and, in ``canary``
   mode, the ``canary`` label (``stable`` is pinned to the version served so far, so the
   default route does not move); in ``replace`` mode the default route moves to it (``stable``
   follows when it is set).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from serving import layout
from trainer import checks

DEPLOY_FILE = layout.DEPLOY_FILE
LOCK_FILE = layout.LOCK_FILE


@dataclasses.dataclass
class Published:
    """What deploy did: a published version, or why nothing was."""

    version: int | None
    path: str
    reason: str
    compared_with: int | None = None
    reference_rmse: float | None = None
    broken: list[str] = dataclasses.field(default_factory=list)
    removed_temporaries: list[str] = dataclasses.field(default_factory=list)
    labels: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def deployed(self) -> bool:
        """Whether a version was published."""
        return self.version is not None


def versions(model_dir: str) -> list[int]:
    """The complete versions under ``model_dir``, oldest first."""
    return sorted(layout.list_versions(model_dir))


def latest_version_dir(serving_root: str, model_name: str) -> str | None:
    """The directory of the version the default route serves (``stable``, else the newest), or ``None``."""
    return layout.served_version_dir(os.path.join(serving_root, model_name))


def rescorer(test_path: str) -> Callable[[str], float]:
    """A function giving a SavedModel's RMSE on the staged test split at ``test_path`` (loads TensorFlow)."""
    cache: dict[str, Any] = {}

    def score(version_dir: str) -> float:
        import tensorflow as tf

        from components.impl.verify_export import check_signature, load_split, predict, rmse

        if "split" not in cache:
            cache["split"] = load_split(test_path)
        variant, feats, label = cache["split"]
        fn = tf.saved_model.load(version_dir).signatures["serving_default"]
        problems = check_signature(fn, variant)
        if problems:
            raise ValueError("; ".join(problems))
        return rmse(predict(fn, feats), label)

    return score


def _check_settings(model_path: str, serving_root: str, model_name: str, mode: str) -> None:
    from trainer.errors import InputError

    if not serving_root:
        raise InputError("serving_root is empty: pass the directory that `taxifare serve --model-base-path` watches")
    checks.model_name("model_name", model_name)
    checks.deploy_mode("deploy_mode", mode)
    if not os.path.exists(os.path.join(model_path, layout.SAVED_MODEL)):
        raise InputError(f"{model_path} holds no saved_model.pb: deploy a SavedModel directory")


def _reference(
    found: list[layout.VersionInfo],
    labels: dict[str, int],
    test_data_hash: str,
    rescore: Callable[[str], float] | None,
    broken: list[str],
) -> tuple[int, float] | None:
    """The version to beat and its RMSE: the served one, else the next newest that can be scored."""
    for info in layout.comparison_order(found, labels):
        number = info.version
        recorded = info.test_rmse
        if recorded is not None and test_data_hash and info.test_data_hash == test_data_hash:
            return number, recorded
        if rescore is None:
            broken.append(f"version {number}: no RMSE recorded on this test split and no way to re-score it")
            continue
        try:
            value = float(rescore(info.path))
        except Exception as exc:  # a version TensorFlow cannot load or run is broken, not a reason to fail
            broken.append(f"version {number}: cannot be scored ({type(exc).__name__}: {str(exc)[:200]})")
            continue
        if value != value or value in (float("inf"), float("-inf")):
            broken.append(f"version {number}: scores a non-finite RMSE")
            continue
        return number, value
    return None


def publish(
    model_path: str,
    serving_root: str,
    model_name: str,
    info: dict[str, Any],
    *,
    candidate_rmse: float | None = None,
    test_data_hash: str = "",
    rescore: Callable[[str], float] | None = None,
    mode: str = checks.REPLACE,
    train_stats: dict[str, Any] | None = None,
) -> Published:
    """Copy the SavedModel at ``model_path`` in as the next version, if it is still the better model.

    Args:
        model_path: a SavedModel directory.
        serving_root: the base path holding one directory per model.
        model_name: the served model's name.
        info: what to record in ``taxifare_deploy.json`` (run, verification metrics...).
        candidate_rmse: the candidate's test RMSE; ``None`` publishes without comparing.
        test_data_hash: the content hash of the split ``candidate_rmse`` was measured on.
        rescore: gives a deployed version's RMSE on that split (see :func:`rescorer`).
        mode: ``replace`` (the default route moves to the new version) or ``canary``.
        train_stats: the training data statistics to keep with the version.

    Raises:
        InputError: a missing SavedModel, an empty serving root, a bad model name or mode, or
            an unreadable labels file.
    """
    _check_settings(model_path, serving_root, model_name, mode)
    model_dir = os.path.join(serving_root, model_name)
    os.makedirs(model_dir, exist_ok=True)
    started = layout.process_start_time()
    tmp = os.path.join(model_dir, f"{layout.TMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}")
    try:
        shutil.copytree(model_path, tmp)
        if train_stats is not None:
            os.makedirs(os.path.dirname(os.path.join(tmp, layout.TRAIN_STATS_FILE)), exist_ok=True)
            with open(os.path.join(tmp, layout.TRAIN_STATS_FILE), "w", encoding="utf-8") as fh:
                json.dump(train_stats, fh, indent=2, default=str)
        with layout.locked(model_dir):
            removed = [name for name in layout.remove_stale_temporaries(model_dir, older_than=started) if name != os.path.basename(tmp)]
            result = _compare_and_publish(model_dir, tmp, model_name, info, candidate_rmse, test_data_hash, rescore, mode)
            result.removed_temporaries = removed
            return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _compare_and_publish(
    model_dir: str,
    tmp: str,
    model_name: str,
    info: dict[str, Any],
    candidate_rmse: float | None,
    test_data_hash: str,
    rescore: Callable[[str], float] | None,
    mode: str,
) -> Published:
    """Under the lock: compare with the served version, then number, record, rename and label the candidate."""
    from trainer.errors import InputError

    try:
        labels = layout.read_labels(model_dir)
    except layout.LayoutError as exc:
        raise InputError(str(exc)) from None
    found = layout.scan(model_dir)
    broken = [f"version {v.version}: {v.problem}" for v in found if not v.complete]
    reference = _reference(found, labels, test_data_hash, rescore, broken) if candidate_rmse is not None else None
    if candidate_rmse is not None and reference is not None and not candidate_rmse < reference[1]:
        reason = f"not deployed: its test RMSE ${candidate_rmse:.3f} is not better than version {reference[0]}'s ${reference[1]:.3f}"
        reason += " (served now)"
        return Published(None, "", reason, compared_with=reference[0], reference_rmse=reference[1], broken=broken, labels=labels)
    version = max([0, *(v.version for v in found)]) + 1
    record = {
        **info,
        "version": version,
        "model_name": model_name,
        "deploy_mode": mode,
        "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if reference is not None:
        record["compared_with"] = {"version": reference[0], "test_rmse": reference[1]}
    with open(os.path.join(tmp, DEPLOY_FILE), "w") as fh:
        json.dump(record, fh, indent=2, default=str)
    served = layout.default_version([v.version for v in found if v.complete], labels)
    if mode == checks.CANARY and layout.STABLE not in labels and served is not None:
        labels[layout.STABLE] = served  # pin the default route before the new version appears
        layout.write_labels(model_dir, labels)
    final = os.path.join(model_dir, str(version))
    os.rename(tmp, final)  # fails (not replaces) if the number exists and holds a version
    if mode == checks.CANARY or layout.STABLE in labels:
        labels[layout.CANARY if mode == checks.CANARY else layout.STABLE] = version
        layout.write_labels(model_dir, labels)
    if candidate_rmse is None:
        compared = "published without comparison"
    elif reference is None:
        compared = "nothing comparable deployed before"
    else:
        compared = f"test RMSE ${candidate_rmse:.3f} beats version {reference[0]}'s ${reference[1]:.3f}"
    route = f"canary label (stable stays version {labels.get(layout.STABLE)})" if mode == checks.CANARY else "the default route"
    return Published(
        version,
        final,
        f"serves {route}; {compared}",
        compared_with=reference[0] if reference else None,
        reference_rmse=reference[1] if reference else None,
        broken=broken,
        labels=labels,
    )
