"""Step 5, deploy: compare-and-publish the blessed model as the next version of a model base path.

``<serving_root>/<model_name>/`` is a TF-Serving model base path, laid out as
:mod:`base.layout` defines it (versions, labels, deploy records). A version is copied under a
hidden temporary name, completed with ``taxifare_deploy.json`` (run, metrics, data hash) and the
training data statistics, then renamed to its number: a server never sees a half-written
version.

Everything that decides *whether* and *as what* to publish happens under the base path's lock:

1. ``.tmp-*`` leftovers older than this process (a writer that died) are removed;
2. the serving contract: the candidate's signature is compared with that of the version each
   affected route serves (the default route, and in canary mode the version the ``canary``
   label points at); a difference refuses the deploy ("incompatible signature: adds input
   pickup_datetime") unless ``allow_signature_change`` was set, which is then recorded;
3. the deploy decision is re-checked against the version the default route serves *now*
   (another run may have deployed since verify_export looked): when it is the version
   verify_export judged the candidate against, that judgement stands; otherwise both are
   scored on this run's test rows and the gate (:mod:`components.verify_export.gate`) decides again.
   Broken versions (no ``saved_model.pb``, or not loadable) are skipped and reported; when the
   candidate does not pass, nothing is deployed (not a failure). Called without a
   :class:`Judged` (by hand, in tests), the candidate's RMSE must be strictly lower: recorded
   at deploy when measured on the same test split (same content hash), else re-scored;
4. the version gets the next free number (broken numbers are never reused) and, in ``canary``
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

from base import atomic, checks, layout
from base.errors import InputError
from components.verify_export.gate import Decision, GateSettings

DEPLOY_FILE = layout.DEPLOY_FILE
LOCK_FILE = layout.LOCK_FILE


@dataclasses.dataclass
class Judged:
    """What verify_export decided the candidate on, for deploy's re-check under the lock."""

    #: The candidate's serving signature (:func:`components.verify_export.gate.read_signature`).
    signature: dict[str, Any] | None
    #: The version verify_export compared it with (``None``: nothing was deployed then).
    champion_version: int | None
    settings: GateSettings
    #: Judges the candidate against a version directory on this run's test rows (loads TensorFlow);
    #: raises ``ValueError`` when that version is broken.
    judge: Callable[[str, str], Decision] | None = None


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
    #: The signature difference an ``allow_signature_change`` let through ('' for none).
    signature_change: str = ""

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
        from trainer.quiet import import_tensorflow

        tf = import_tensorflow()  # quiet, and without Keras' optional extras
        from components.verify_export.evaluation import check_signature, load_split, predict, rmse

        if "split" not in cache:
            cache["split"] = load_split(test_path)
        variant, feats, label = cache["split"]
        fn = tf.saved_model.load(version_dir).signatures["serving_default"]
        problems = check_signature(fn, variant)
        if problems:
            raise ValueError("; ".join(problems))
        return rmse(predict(fn, feats), label)

    return score


def judger(model_path: str, test_path: str, settings: GateSettings) -> Callable[[str, str], Decision]:
    """A function judging the candidate at ``model_path`` against a version directory on the test rows (loads TensorFlow)."""
    cache: dict[str, Any] = {}

    def judge(version_dir: str, name: str) -> Decision:
        from trainer.quiet import import_tensorflow

        tf = import_tensorflow()  # quiet, and without Keras' optional extras
        from components.verify_export import champion, gate, slices
        from components.verify_export.evaluation import load_split, predict

        if "split" not in cache:
            _, feats, label = cache["split"] = load_split(test_path)
            cache["pred"] = predict(tf.saved_model.load(model_path).signatures["serving_default"], feats)
        _, feats, label = cache["split"]
        champ = champion.score(version_dir, feats, label, name)
        if champ.pred is None:
            return Decision(True, f"{name}: {champ.not_scored}")
        return gate.decide(slices.compare(feats, label, cache["pred"], champ.pred), settings, name)

    return judge


def _check_settings(model_path: str, serving_root: str, model_name: str, mode: str) -> None:

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


def _signature_of(info: layout.VersionInfo) -> dict[str, Any] | None:
    """A version's serving signature: as its deploy record kept it, else read from its SavedModel (``None`` if unreadable)."""
    from components.verify_export.gate import read_signature, recorded_signature

    kept = recorded_signature(info.record)
    if kept is not None:
        return kept
    try:
        return read_signature(info.path)
    except ValueError:
        return None


def _contract(found: list[layout.VersionInfo], labels: dict[str, int], mode: str, judged: Judged) -> tuple[str, str]:
    """``(refusal, change)``: why the candidate may not replace an affected route's contract ('' if it may), and the change."""
    from components.verify_export.gate import contract_changes, contract_verdict

    complete = {v.version: v for v in found if v.complete}
    routes = {}
    served = layout.default_version(list(complete), labels)
    if served is not None:
        routes[served] = f"version {served}, served by the default route"
    if mode == checks.CANARY and labels.get(layout.CANARY) in complete and labels[layout.CANARY] not in routes:
        routes[labels[layout.CANARY]] = f"version {labels[layout.CANARY]}, served by the canary label"
    change = ""
    for number, route in routes.items():
        theirs = _signature_of(complete[number])
        if theirs is None or judged.signature is None:
            continue
        changes = contract_changes(theirs, judged.signature)
        ok, detail = contract_verdict(changes, route, judged.settings.allow_signature_change)
        if not ok:
            return "not deployed: " + detail, ""
        change = change or "; ".join(changes)
    return "", change


def _judge_again(found: list[layout.VersionInfo], labels: dict[str, int], judged: Judged, broken: list[str]) -> tuple[int | None, str]:
    """``(version, refusal)``: the served version judged anew when it is not the one verify_export judged against."""
    for info in layout.comparison_order(found, labels):
        if info.version == judged.champion_version:
            return info.version, ""  # verify_export's judgement stands
        if judged.judge is None:
            return info.version, f"not deployed: version {info.version} serves the default route now, and it cannot be judged here"
        try:
            decision = judged.judge(info.path, f"version {info.version}")
        except Exception as exc:  # a version TensorFlow cannot load or run is broken, not a reason to fail
            broken.append(f"version {info.version}: cannot be scored ({type(exc).__name__}: {str(exc)[:200]})")
            continue
        return info.version, "" if decision.ok else f"not deployed: against version {info.version}, served now: {decision.reason}"
    return None, ""


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
    judged: Judged | None = None,
) -> Published:
    """Copy the SavedModel at ``model_path`` in as the next version, if it is still the better model.

    Args:
        model_path: a SavedModel directory.
        serving_root: the base path holding one directory per model.
        model_name: the served model's name.
        info: what to record in ``taxifare_deploy.json`` (run, verification metrics...).
        candidate_rmse: the candidate's test RMSE; ``None`` (and no ``judged``) publishes without comparing.
        test_data_hash: the content hash of the split ``candidate_rmse`` was measured on.
        rescore: gives a deployed version's RMSE on that split (see :func:`rescorer`).
        mode: ``replace`` (the default route moves to the new version) or ``canary``.
        train_stats: the training data statistics to keep with the version.
        judged: what verify_export decided on (the pipeline's deploy step): the contract and the
            gate are re-checked against the routes as they are now, instead of ``candidate_rmse``.

    Raises:
        InputError: a missing SavedModel, an empty serving root, a bad model name or mode, or
            an unreadable labels file.
    """
    _check_settings(model_path, serving_root, model_name, mode)
    model_dir = os.path.join(serving_root, model_name)
    os.makedirs(model_dir, exist_ok=True)
    tmp = atomic.temp_path(os.path.join(model_dir, "candidate"))
    ask = _Ask(candidate_rmse, test_data_hash, rescore, mode, judged)
    try:
        shutil.copytree(model_path, tmp)
        if train_stats is not None:
            os.makedirs(os.path.dirname(os.path.join(tmp, layout.TRAIN_STATS_FILE)), exist_ok=True)
            with open(os.path.join(tmp, layout.TRAIN_STATS_FILE), "w", encoding="utf-8") as fh:
                json.dump(train_stats, fh, indent=2, default=str)
        with layout.locked(model_dir):
            removed = [name for name in atomic.remove_stale(model_dir) if name != os.path.basename(tmp)]
            result = _compare_and_publish(model_dir, tmp, model_name, info, ask)
            result.removed_temporaries = removed
            return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclasses.dataclass
class _Ask:
    """How publish was asked to compare: by RMSE (by hand), or re-checking verify_export's judgement."""

    candidate_rmse: float | None
    test_data_hash: str
    rescore: Callable[[str], float] | None
    mode: str
    judged: Judged | None


def _decide(model_dir: str, ask: _Ask) -> tuple[dict[str, int], list[layout.VersionInfo], Published | dict[str, Any]]:
    """Under the lock: ``(labels, versions, refusal or what to record of the comparison)``."""
    try:
        labels = layout.read_labels(model_dir)
    except layout.LayoutError as exc:
        raise InputError(str(exc)) from None
    found = layout.scan(model_dir)
    broken = [f"version {v.version}: {v.problem}" for v in found if not v.complete]
    if ask.judged is not None:
        refusal, change = _contract(found, labels, ask.mode, ask.judged)
        version, refusal = (None, refusal) if refusal else _judge_again(found, labels, ask.judged, broken)
        if refusal:
            return labels, found, Published(None, "", refusal, compared_with=version, broken=broken, labels=labels)
        return labels, found, {"compared_with": version, "broken": broken, "signature_change": change}
    reference = _reference(found, labels, ask.test_data_hash, ask.rescore, broken) if ask.candidate_rmse is not None else None
    if ask.candidate_rmse is not None and reference is not None and not ask.candidate_rmse < reference[1]:
        reason = f"not deployed: its test RMSE ${ask.candidate_rmse:.3f} is not better than version {reference[0]}'s ${reference[1]:.3f}"
        reason += " (served now)"
        return labels, found, Published(None, "", reason, reference[0], reference[1], broken=broken, labels=labels)
    number, value = reference if reference else (None, None)
    return labels, found, {"compared_with": number, "reference_rmse": value, "broken": broken}


def _compare_and_publish(model_dir: str, tmp: str, model_name: str, info: dict[str, Any], ask: _Ask) -> Published:
    """Under the lock: compare with the served version, then number, record, rename and label the candidate."""
    labels, found, outcome = _decide(model_dir, ask)
    if isinstance(outcome, Published):
        return outcome
    version = max([0, *(v.version for v in found)]) + 1
    record = {
        **info,
        "version": version,
        "model_name": model_name,
        "deploy_mode": ask.mode,
        "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if ask.judged is not None and ask.judged.signature is not None:
        record["signature"] = ask.judged.signature
    if outcome.get("signature_change"):
        record["signature_change"] = {"change": outcome["signature_change"], "allowed_by": "allow_signature_change"}
    if outcome["compared_with"] is not None:
        record["compared_with"] = {"version": outcome["compared_with"], "test_rmse": outcome.get("reference_rmse")}
    with open(os.path.join(tmp, DEPLOY_FILE), "w") as fh:
        json.dump(record, fh, indent=2, default=str)
    served = layout.default_version([v.version for v in found if v.complete], labels)
    if ask.mode == checks.CANARY and layout.STABLE not in labels and served is not None:
        labels[layout.STABLE] = served  # pin the default route before the new version appears
        layout.write_labels(model_dir, labels)
    final = os.path.join(model_dir, str(version))
    atomic.publish(tmp, final, replace=False)  # fails (not replaces) if the number exists and holds a version
    if ask.mode == checks.CANARY or layout.STABLE in labels:
        labels[layout.CANARY if ask.mode == checks.CANARY else layout.STABLE] = version
        layout.write_labels(model_dir, labels)
    return Published(
        version,
        final,
        f"serves {_route(ask.mode, labels, served)}; {_compared(ask, outcome)}",
        compared_with=outcome["compared_with"],
        reference_rmse=outcome.get("reference_rmse"),
        broken=outcome["broken"],
        labels=labels,
        signature_change=outcome.get("signature_change", ""),
    )


def _route(mode: str, labels: dict[str, int], served: int | None) -> str:
    """Which route the new version serves, in words."""
    if mode != checks.CANARY:
        return "the default route"
    if served is None:
        return "the canary label and, as the first version, the default route too (nothing was served before)"
    return f"the canary label (the default route stays on stable, version {labels.get(layout.STABLE)})"


def _compared(ask: _Ask, outcome: dict[str, Any]) -> str:
    """What the candidate was compared with, in words."""
    change = f"; signature change allowed: {outcome['signature_change']}" if outcome.get("signature_change") else ""
    if ask.judged is not None:
        if outcome["compared_with"] is None:
            return "nothing comparable deployed before" + change
        return f"better than version {outcome['compared_with']} beyond noise, on every slice" + change
    if ask.candidate_rmse is None:
        return "published without comparison"
    if outcome["compared_with"] is None:
        return "nothing comparable deployed before"
    return f"test RMSE ${ask.candidate_rmse:.3f} beats version {outcome['compared_with']}'s ${outcome['reference_rmse']:.3f}"
