"""Step 4, verify_export: decide whether the trained model may be deployed.

It checks the SavedModel's ``serving_default`` signature against the schema, predicts the
test split and the lab's ``test.json`` instance (finite, positive fares), computes the test
RMSE and compares it with

* an absolute threshold (``max_rmse``),
* the course's distance rule (2.616 $/km) and the training-mean predictor on the same split,
* the model currently deployed under ``serving_root/model_name`` on the same split, when
  there is one (the candidate must be strictly better): as deploy's compare-and-publish
  chooses it, the version the default route serves, else the next newest one that loads and
  scores; broken versions are skipped and named in the reason (:mod:`base.layout`),

and, when asked, serves the candidate with ``taxifare serve`` in its own process and checks
that REST and gRPC answers equal TF2's predictions (infra validation). Always, it runs the
candidate with stock TF Serving's graph-mode loader in a process of its own and checks that it
answers what TF2 and the served model answer: an export the real server cannot run is not
blessed.

The step's own process does not import TensorFlow. The TensorFlow work (the stock loader first,
then TF2's predictions of the candidate and the champion) runs in one child process
(:mod:`components.verify_export.scorer`), started at once beside the infra-validation server; while
both start, this process reads the test split and trains the gradient-boosted baseline.

The verdict is ``blessed`` with a reason, a ``Metrics`` artifact, and an HTML report that the
pipeline UI renders (drawn by :mod:`components.verify_export.report`).
"""

import dataclasses
import glob
import json
import math
import os
import time
from typing import Any

from components.common import summary
from components.contracts import Verification
from components.verify_export.consumers import STOCK_CHECK
from components.verify_export.evaluation import distance_rule, load_split, rmse, signature_problems
from components.verify_export.gate import GateSettings

__all__ = ["STOCK_CHECK", "Verdict", "verify"]


@dataclasses.dataclass
class Verdict(Verification):
    """The outcome of verification: what the Metrics artifact records, the checks behind it and the report page."""

    #: ``(check, passed, detail)`` per check, in the report's order.
    checks: list[tuple[str, bool, str]] = dataclasses.field(default_factory=list)
    report_html: str = ""


def read_loss_curve(training_dir: str) -> dict[str, list[tuple[int, float]]]:
    """``{"train": [(step, loss)...], "eval": [...]}`` from the TensorBoard event files (read without TensorFlow)."""
    from trainer.protos import read_scalars

    curves: dict[str, list[tuple[int, float]]] = {}
    for split in ("train", "eval"):
        points = []
        for path in sorted(glob.glob(os.path.join(training_dir, "tensorboard", split, "events.out.tfevents.*"))):
            for step, tag, value in read_scalars(path):
                if tag == "rmse":
                    points.append((step, value))
        curves[split] = sorted(points)
    return curves


@dataclasses.dataclass
class _Evidence:
    """What verification has measured so far: the test split, the candidate's answers, the checks."""

    variant: Any
    feats: dict[str, Any]
    label: Any
    problems: list[str]
    pred: Any = None
    instance: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = dataclasses.field(default_factory=list)
    #: The baselines' predictions of the test rows, by the name the report gives them.
    baselines: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The candidate's serving signature (see :func:`components.verify_export.gate.read_signature`).
    signature: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Candidate beside the champion on the same rows, overall first (:func:`components.verify_export.slices.compare`).
    comparison: list[Any] = dataclasses.field(default_factory=list)
    #: What deploy and the records need beyond the figures (signature, champion, change, slices).
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def verify(
    model_path: str,
    test_path: str,
    *,
    train_fare_mean: float,
    training_dir: str = "",
    max_rmse: float,
    serving_root: str = "",
    model_name: str,
    infra_validation: bool = False,
    deployed_model_uri: str = "",
    deployed_rmse: float = -1.0,
    gate: GateSettings | None = None,
    test_rows_id: str = "",
    train_path: str = "",
    require_beat_baseline: bool = False,
) -> Verdict:
    """Verify the candidate SavedModel (the work of the verify_export step); see the module doc.

    Args:
        model_path: the candidate SavedModel directory.
        test_path: the staged test split directory.
        train_fare_mean: mean fare of the train split (the mean predictor's constant).
        training_dir: the training directory with TensorBoard logs ('' for no curve).
        max_rmse: the absolute RMSE threshold in dollars (the pipeline's ``max_rmse``).
        serving_root: where models are deployed ('' when nothing is deployed locally).
        model_name: the deployed model's name under ``serving_root`` (the pipeline's ``model_name``).
        infra_validation: also serve the model in its own process and compare answers.
        deployed_model_uri: the deployed model's SavedModel (on Vertex: the model registry's
            artifact URI, read through the ``/gcs/`` mount); takes precedence over ``serving_root``.
        deployed_rmse: the deployed model's test RMSE as recorded at deploy (Vertex labels),
            used when the deployed SavedModel cannot be read; negative for none.
        gate: the deploy decision's thresholds (:class:`components.verify_export.gate.GateSettings`;
            default: strictly better, no slice or noise checks).
        test_rows_id: the id of the test rows (their content hash), recorded beside the figures
            so that figures from different rows are never set side by side as comparable.
        train_path: the staged train split directory: the gradient-boosted baseline is trained
            on it and scored beside the model ('' for no such baseline).
        require_beat_baseline: refuse a model that does not beat that baseline (else it is reported).
    """
    from components.verify_export import scorer
    from components.verify_export.consumers import check_serving, consumer_instances
    from trainer.export import check_export_dir

    check_export_dir(model_path, what="the candidate model")
    server = None
    if infra_validation:
        from serving import infra

        server = infra.start(model_path)  # first: its process imports TensorFlow and loads the model meanwhile
    job = None
    try:
        ev = _load_candidate(model_path, test_path)
        instances = consumer_instances(ev)
        champion = {"serving_root": serving_root, "model_name": model_name, "uri": deployed_model_uri, "recorded_rmse": deployed_rmse}
        job = scorer.start(model_path, ev.feats, ev.label, instances, predict=not ev.problems, champion=champion)
        trees = _fit_gbt(ev, train_path) if train_path and not ev.problems else None  # while both processes start
        scores = job.result()
        _check_predictions(ev, scores)
        _compare_with_baselines(ev, train_fare_mean, max_rmse)
        if trees is not None:
            _gbt_baseline(ev, trees, require_beat_baseline)
        _judge(ev, scores.champion, gate or GateSettings())
        check_serving(ev, instances, scores, server, infra_validation, meanwhile=_import_plotting)
    finally:  # after an error above: no process left behind
        if job is not None:
            job.cancel()
        if server is not None:
            server.close()
    ev.details["test_rows_id"] = test_rows_id
    ev.details["exported_step"] = _exported_step(model_path)
    return _conclude(ev, scores.champion, train_fare_mean, training_dir)


def _import_plotting() -> None:
    """Import what the report draws with (about a second of CPU), while the infra-validation server stops."""
    import matplotlib.pyplot  # noqa: F401


def _exported_step(model_path: str) -> int | None:
    """The training step the export holds, from the trainer's ``metrics.json`` beside it (``None`` when unknown)."""
    try:
        with open(os.path.join(model_path, "metrics.json"), encoding="utf-8") as fh:
            return int(json.load(fh)["exported_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_candidate(model_path: str, test_path: str) -> _Evidence:
    """Load the test split and the candidate's ``serving_default`` signature; check it against the schema."""
    from components.verify_export.gate import read_signature

    variant, feats, label = load_split(test_path)
    signature = read_signature(model_path)
    ev = _Evidence(variant, feats, label, signature_problems(signature, variant), signature=signature)
    ev.metrics["test_examples"] = len(label)
    detail = "; ".join(ev.problems) or f"inputs {', '.join(variant.features)} -> fare_amount"
    ev.checks.append(("signature matches the schema", not ev.problems, detail))
    return ev


def _check_predictions(ev: _Evidence, scores: Any) -> None:
    """TF2's predictions of the test split and the lab's ``test.json`` instance: finite, positive fares."""
    import numpy as np

    ev.pred = scores.pred if not ev.problems else np.full(len(ev.label), np.nan)
    finite = bool(np.all(np.isfinite(ev.pred)) and np.all(ev.pred > 0))
    span = f"min {np.nanmin(ev.pred):.2f}, max {np.nanmax(ev.pred):.2f}" if len(ev.pred) else "no rows"
    ev.checks.append(("test predictions are finite and positive", finite, span))
    lab_fare = scores.instances[0] if not ev.problems else math.nan  # the lab instance comes first
    lab_ok = math.isfinite(lab_fare) and lab_fare > 0
    ev.checks.append(("the lab's test.json instance gets a finite, positive fare", lab_ok, f"${lab_fare:.2f}"))
    ev.metrics["test_json_fare"] = lab_fare
    ev.metrics["test_rmse"] = rmse(ev.pred, ev.label) if finite else math.inf


def _compare_with_baselines(ev: _Evidence, train_fare_mean: float, max_rmse: float) -> None:
    """The absolute threshold, the distance rule and the training-mean predictor, on the same split."""
    import numpy as np

    model_rmse = ev.metrics["test_rmse"]
    rule_rmse = rmse(distance_rule(ev.feats), ev.label)
    mean_rmse = rmse(np.full(len(ev.label), train_fare_mean), ev.label)
    ev.metrics.update({"distance_rule_rmse": rule_rmse, "mean_predictor_rmse": mean_rmse})
    ev.baselines.update({"distance rule": distance_rule(ev.feats), "training mean": np.full(len(ev.label), train_fare_mean)})
    ev.checks.append((f"test RMSE at most max_rmse ${max_rmse:.2f}", model_rmse <= max_rmse, f"${model_rmse:.3f}"))
    ev.checks.append(("beats the distance rule (2.616 $/km)", model_rmse < rule_rmse, f"${model_rmse:.3f} vs ${rule_rmse:.3f}"))
    ev.checks.append(("beats the training-mean predictor", model_rmse < mean_rmse, f"${model_rmse:.3f} vs ${mean_rmse:.3f}"))


#: The check of the gradient-boosted baseline (what a data scientist would try first).
BASELINE_CHECK = "beats gradient-boosted trees on the same features and data"


def _fit_gbt(ev: _Evidence, train_path: str) -> tuple[Any, int, float]:
    """Train the gradient-boosted baseline on the train split (seconds): its test predictions, the rows, the seconds."""
    from components.verify_export.baseline import fit_predict

    started = time.monotonic()
    _, train_feats, train_label = load_split(train_path)
    pred = fit_predict({k: train_feats[k] for k in ev.feats}, train_label, ev.feats, seed=0)
    return pred, len(train_label), time.monotonic() - started


def _gbt_baseline(ev: _Evidence, trees: tuple[Any, int, float], required: bool) -> None:
    """Score the gradient-boosted baseline (:func:`_fit_gbt`) on the test rows beside the model."""
    pred, rows, seconds = trees
    value = rmse(pred, ev.label)
    ev.metrics["gbt_baseline_rmse"] = value
    ev.baselines["gradient-boosted trees"] = pred
    model_rmse = ev.metrics["test_rmse"]
    detail = f"${model_rmse:.3f} vs ${value:.3f} (trained on this run's {rows:,} train rows in {seconds:.1f}s)"
    if not required:
        detail += "; reported only (require_beat_baseline is off)" + ("" if model_rmse < value else ": the trees are better here")
    ev.checks.append((BASELINE_CHECK, model_rmse < value or not required, detail))


#: The checks of the deploy decision (:mod:`components.verify_export.gate`), as the report and the step line name them.
CONTRACT_CHECK = "keeps the served signature (the contract with its callers)"
GATE_CHECK = "better than the served model beyond noise, on every slice"


def _judge(ev: _Evidence, champ: Any, settings: GateSettings) -> None:
    """The contract and the quality gate against the champion (:mod:`components.verify_export.gate`), on the same rows."""
    from components.verify_export import gate, slices

    ev.details = {"signature": ev.signature, "champion": champ.name, "champion_version": champ.version, "gate": vars(settings)}
    scored = champ.pred is not None and not ev.problems
    # the candidate per slice, beside the champion when it predicted the same rows (the report, the records, Vertex)
    ev.comparison = [] if ev.problems else slices.compare(ev.feats, ev.label, ev.pred, champ.pred if scored else None)
    ev.details["slices"] = [r.to_dict() for r in ev.comparison]
    skipped = f"; skipped broken {', '.join(champ.broken)}" if champ.broken else ""
    if not champ.found:
        what = "nothing comparable deployed" if champ.broken else "nothing deployed yet"
        ev.checks.append((GATE_CHECK, True, what + skipped))
        return
    if champ.signature is not None:
        changes = gate.contract_changes(champ.signature, ev.signature)
        ok, detail = gate.contract_verdict(changes, f"{champ.name}, {champ.route}", settings.allow_signature_change)
        ev.checks.append((CONTRACT_CHECK, ok, detail))
        if changes:
            ev.details["signature_change"] = "; ".join(changes)
    model_rmse = ev.metrics["test_rmse"]
    if scored:
        decision = gate.decide(ev.comparison, settings, champ.name)
        ev.metrics["deployed_rmse"] = champ.rmse
        ev.metrics["rmse_difference"] = ev.comparison[0].difference
        ev.metrics["rmse_difference_low"], ev.metrics["rmse_difference_high"] = ev.comparison[0].interval or (math.nan, math.nan)
        ev.checks.append((GATE_CHECK, decision.ok, decision.reason + skipped))
    elif champ.recorded and champ.rmse is not None:  # Vertex: only the figure recorded at deploy, on other rows
        ev.metrics["deployed_rmse"] = champ.rmse
        better = model_rmse < champ.rmse - settings.min_improvement
        detail = f"${model_rmse:.3f} vs ${champ.rmse:.3f} (the deployed model's RMSE recorded at deploy, on other rows: no interval)"
        ev.checks.append((GATE_CHECK, better, detail + skipped))
    else:
        ev.checks.append((GATE_CHECK, True, f"{champ.name}: {champ.not_scored}" + skipped))


def _reason(ev: _Evidence, champ: Any) -> tuple[bool, str]:
    """``(blessed, reason)``: every check passed, or the failed ones with their details."""
    failed = [name + f" ({detail})" for name, ok, detail in ev.checks if not ok]
    decision = [detail for name, ok, detail in ev.checks if name in (CONTRACT_CHECK, GATE_CHECK) and not ok]
    if decision and len(decision) == len(failed):  # only the deploy decision said no: its own line says why
        return False, decision[0]
    contract = [detail for name, ok, detail in ev.checks if name == CONTRACT_CHECK and not ok]
    if contract:  # what a user must decide about comes first, then the rest
        return False, contract[0] + "; also failed: " + "; ".join(f for f in failed if not f.startswith(CONTRACT_CHECK))
    if failed:
        return False, "failed: " + "; ".join(failed)
    m = ev.metrics
    if "deployed_rmse" in m:
        deployed = (
            f"deployed ${m['deployed_rmse']:.2f} (recorded at deploy, on other rows)"
            if champ.recorded
            else f"{champ.name} ${m['deployed_rmse']:.2f}"
        )
        if "rmse_difference" in m:
            low, high = m["rmse_difference_low"], m["rmse_difference_high"]
            deployed += f" on the same rows, difference {m['rmse_difference']:+.3f} (95% {low:+.3f} to {high:+.3f})"
    else:
        deployed = "nothing deployed" if not champ.found else f"{champ.name} not compared"
    trees = f", gradient-boosted trees ${m['gbt_baseline_rmse']:.2f}" if "gbt_baseline_rmse" in m else ""
    if champ.broken:  # say which version was compared with, and which were not
        deployed += f"; skipped broken {', '.join(champ.broken)}"
    if "signature_change" in ev.details:
        deployed += f"; signature change allowed ({ev.details['signature_change']})"
    return True, (
        f"test RMSE ${m['test_rmse']:.2f} passes every check (distance rule ${m['distance_rule_rmse']:.2f}, "
        f"mean ${m['mean_predictor_rmse']:.2f}{trees}, {deployed})"
    )


def _conclude(ev: _Evidence, champ: Any, train_fare_mean: float, training_dir: str) -> Verdict:
    """The verdict, its reason and the HTML report; the step's summary line."""
    from components.verify_export.report import ReportInput, render_report

    blessed, reason = _reason(ev, champ)
    curves = read_loss_curve(training_dir) if training_dir else {}
    report = render_report(
        ReportInput(
            verdict_text=reason,
            blessed=blessed,
            metrics=ev.metrics,
            checks=ev.checks,
            label=ev.label,
            pred=ev.pred,
            baselines=ev.baselines,
            feats=ev.feats,
            curves=curves,
            deployed_name=champ.name,
            deployed_pred=champ.pred,
            deployed_rmse=ev.metrics.get("deployed_rmse"),
            comparison=ev.comparison,
            exported_step=ev.details.get("exported_step"),
        )
    )
    figures = {**ev.metrics, "test_rows_id": ev.details.get("test_rows_id", "")}
    summary("verify_export", ("blessed: " if blessed else "NOT blessed: ") + reason, blessed=blessed, **figures)
    return Verdict(blessed=blessed, reason=reason, metrics=ev.metrics, details=ev.details, checks=ev.checks, report_html=report)
