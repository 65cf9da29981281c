"""Step 4, verify_export: decide whether the trained model may be deployed.

In the step's own process (a fresh one, as any step) it loads the SavedModel, checks its
``serving_default`` signature against the schema, predicts the test split and the lab's
``test.json`` instance (finite, positive fares), computes the test RMSE and compares it with

* an absolute threshold (``max_rmse``),
* the course's distance rule (2.616 $/km) and the training-mean predictor on the same split,
* the model currently deployed under ``serving_root/model_name`` on the same split, when
  there is one (the candidate must be strictly better),

and, when asked, serves the candidate with ``taxifare serve`` in its own process and checks
that REST and gRPC answers equal the in-process predictions (infra validation). Always, it
runs the candidate with stock TF Serving's graph-mode loader in a process of its own
(:mod:`trainer.stock_check`) and checks that it answers what TF2 and the served model answer:
an export the real server cannot run is not blessed.

The verdict is ``blessed`` with a reason, a ``Metrics`` artifact, and an HTML report that the
pipeline UI renders (drawn by :mod:`components.impl.report`).
"""

import dataclasses
import math
import os
from typing import Any

from components.common import local_path, summary

#: The course's rule of thumb: fare = 2.616 $/km x haversine distance.
DOLLARS_PER_KM = 2.616
BATCH = 4096
#: Largest difference accepted between the stock loader's answers and TF2's or the served ones.
STOCK_TOLERANCE = 1e-4
STOCK_CHECK = "stock TF Serving loader (graph mode) runs it and agrees with TF2 and the served answers"


@dataclasses.dataclass
class Verdict:
    """The outcome of verification."""

    blessed: bool
    reason: str
    metrics: dict[str, float]
    checks: list[tuple[str, bool, str]]
    report_html: str


def load_split(path: str) -> tuple[Any, dict[str, Any], Any]:
    """Read a staged split directory: ``(variant, features by name, labels)`` as numpy arrays."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from trainer import schema, storage, validation

    files = storage.expand(os.path.join(path, "*.csv"), what="test data")
    variant = validation.detect_variant(files[0])
    types = {name: pa.string() if name in (schema.DATETIME, schema.KEY) else pa.float64() for name in variant.columns}
    tables = [
        pacsv.read_csv(
            f, read_options=pacsv.ReadOptions(column_names=list(variant.columns)), convert_options=pacsv.ConvertOptions(column_types=types)
        )
        for f in files
    ]
    table = pa.concat_tables(tables)
    feats: dict[str, Any] = {}
    for name in variant.features:
        col = table.column(name)
        feats[name] = np.array(col.to_pylist(), dtype=object) if name == schema.DATETIME else col.to_numpy().astype(np.float32)
    return variant, feats, table.column(schema.LABEL).to_numpy().astype(np.float64)


def check_signature(fn: Any, variant: Any) -> list[str]:
    """Problems of a ``serving_default`` signature against the schema (empty when it matches)."""
    import tensorflow as tf

    from trainer import schema

    problems = []
    inputs = fn.structured_input_signature[1]
    expected = {name: tf.string if name == schema.DATETIME else tf.float32 for name in variant.features}
    if set(inputs) != set(expected):
        problems.append(f"inputs are {sorted(inputs)}, the schema wants {sorted(expected)}")
    for name, dtype in expected.items():
        if name in inputs and inputs[name].dtype != dtype:
            problems.append(f"input {name} is {inputs[name].dtype.name}, the schema wants {dtype.name}")
    outputs = fn.structured_outputs
    if set(outputs) != {schema.LABEL}:
        problems.append(f"outputs are {sorted(outputs)}, the schema wants ['{schema.LABEL}']")
    elif outputs[schema.LABEL].dtype != tf.float32:
        problems.append(f"output {schema.LABEL} is {outputs[schema.LABEL].dtype.name}, not float32")
    return problems


def predict(fn: Any, feats: dict[str, Any]) -> Any:
    """Predictions of a signature over feature arrays, in batches."""
    import numpy as np
    import tensorflow as tf

    n = len(next(iter(feats.values())))
    out = []
    for start in range(0, n, BATCH):
        batch = {k: tf.constant(v[start : start + BATCH]) for k, v in feats.items()}
        out.append(fn(**batch)["fare_amount"].numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def distance_rule(feats: dict[str, Any]) -> Any:
    """The course's baseline: 2.616 $/km x haversine distance."""
    import numpy as np

    from trainer.geo import haversine_km

    lon1, lat1, lon2, lat2 = (feats[k].astype(np.float64) for k in ("pickuplon", "pickuplat", "dropofflon", "dropofflat"))
    return DOLLARS_PER_KM * haversine_km(lon1, lat1, lon2, lat2, np)


def rmse(pred: Any, label: Any) -> float:
    """Root mean squared error."""
    import numpy as np

    return float(np.sqrt(np.mean((pred - label) ** 2)))


def read_loss_curve(training_dir: str) -> dict[str, list[tuple[int, float]]]:
    """``{"train": [(step, loss)...], "eval": [...]}`` from the TensorBoard event files."""
    import glob

    import tensorflow as tf

    curves: dict[str, list[tuple[int, float]]] = {}
    for split in ("train", "eval"):
        points = []
        for path in sorted(glob.glob(os.path.join(training_dir, "tensorboard", split, "events.out.tfevents.*"))):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.tag == "rmse":
                        points.append((int(event.step), float(tf.make_ndarray(value.tensor))))
        curves[split] = sorted(points)
    return curves


def stock_loader_check(
    model_path: str, fn: Any, instances: list[dict[str, Any]], served: dict[str, list[float]]
) -> tuple[bool, str, float]:
    """Run ``instances`` through the graph-mode loader (own process); compare with TF2 (``fn``) and ``served``.

    Returns:
        ``(ok, detail, max_abs_diff)``.
    """
    import numpy as np

    from trainer import schema
    from trainer.stock_check import stock_predict

    result = stock_predict(model_path, instances)
    if not result.ok:
        return False, f"the graph-mode loader fails: {result.error}", math.inf
    stock = np.asarray(result.fares, dtype=np.float64)
    feats = {k: np.array([row[k] for row in instances], dtype=object if k == schema.DATETIME else np.float32) for k in instances[0]}
    answers = {"TF2": predict(fn, feats), **{name: np.asarray(v, dtype=np.float64) for name, v in served.items() if v is not None}}
    diffs = {name: float(np.max(np.abs(stock - other))) if len(other) == len(stock) else math.inf for name, other in answers.items()}
    worst = max(diffs.values())
    detail = ", ".join(f"{name} max diff {d:.2g}" for name, d in diffs.items())
    if not np.all(np.isfinite(stock)):
        return False, f"the graph-mode loader answers non-finite fares ({detail})", worst
    return worst <= STOCK_TOLERANCE, f"{len(stock)} instances in {result.seconds:.1f}s: {detail} (tolerance {STOCK_TOLERANCE})", worst


def verify(
    model_path: str,
    test_path: str,
    *,
    train_fare_mean: float,
    training_dir: str = "",
    max_rmse: float = 10.0,
    serving_root: str = "",
    model_name: str = "taxifare",
    infra_validation: bool = False,
    deployed_model_uri: str = "",
    deployed_rmse: float = -1.0,
) -> Verdict:
    """Verify the candidate SavedModel (the work of the verify_export step); see the module doc.

    Args:
        model_path: the candidate SavedModel directory.
        test_path: the staged test split directory.
        train_fare_mean: mean fare of the train split (the mean predictor's constant).
        training_dir: the training directory with TensorBoard logs ('' for no curve).
        max_rmse: the absolute RMSE threshold in dollars.
        serving_root: where models are deployed ('' when nothing is deployed locally).
        model_name: the deployed model's name under ``serving_root``.
        infra_validation: also serve the model in its own process and compare answers.
        deployed_model_uri: the deployed model's SavedModel (on Vertex: the model registry's
            artifact URI, read through the ``/gcs/`` mount); takes precedence over ``serving_root``.
        deployed_rmse: the deployed model's test RMSE as recorded at deploy (Vertex labels),
            used when the deployed SavedModel cannot be read; negative for none.
    """
    import numpy as np
    import tensorflow as tf

    from components.impl.deploy import latest_version_dir
    from trainer import schema
    from trainer.export import check_export_dir
    from trainer.schema import Variant

    check_export_dir(model_path, what="the candidate model")
    checks: list[tuple[str, bool, str]] = []
    metrics: dict[str, Any] = {}
    variant, feats, label = load_split(test_path)
    metrics["test_examples"] = len(label)
    fn = tf.saved_model.load(model_path).signatures["serving_default"]
    problems = check_signature(fn, variant)
    checks.append(
        ("signature matches the schema", not problems, "; ".join(problems) or f"inputs {', '.join(variant.features)} -> fare_amount")
    )
    pred = predict(fn, feats) if not problems else np.full(len(label), np.nan)
    finite = bool(np.all(np.isfinite(pred)) and np.all(pred > 0))
    checks.append(
        (
            "test predictions are finite and positive",
            finite,
            f"min {np.nanmin(pred):.2f}, max {np.nanmax(pred):.2f}" if len(pred) else "no rows",
        )
    )

    instance = schema.TEST_INSTANCE_DATETIME if variant is Variant.DATETIME else schema.TEST_INSTANCE
    lab_fare = math.nan
    if not problems:
        lab_feats = {k: np.array([instance[k]], dtype=object if k == schema.DATETIME else np.float32) for k in variant.features}
        lab_fare = float(predict(fn, lab_feats)[0])
    lab_ok = math.isfinite(lab_fare) and lab_fare > 0
    checks.append(("the lab's test.json instance gets a finite, positive fare", lab_ok, f"${lab_fare:.2f}"))
    metrics["test_json_fare"] = lab_fare

    model_rmse = rmse(pred, label) if finite else math.inf
    rule_rmse = rmse(distance_rule(feats), label)
    mean_rmse = rmse(np.full(len(label), train_fare_mean), label)
    metrics.update({"test_rmse": model_rmse, "distance_rule_rmse": rule_rmse, "mean_predictor_rmse": mean_rmse})
    checks.append((f"test RMSE at most max_rmse ${max_rmse:.2f}", model_rmse <= max_rmse, f"${model_rmse:.3f}"))
    checks.append(("beats the distance rule (2.616 $/km)", model_rmse < rule_rmse, f"${model_rmse:.3f} vs ${rule_rmse:.3f}"))
    checks.append(("beats the training-mean predictor", model_rmse < mean_rmse, f"${model_rmse:.3f} vs ${mean_rmse:.3f}"))

    deployed: str | None = None
    deployed_pred: Any = None
    if deployed_model_uri:
        deployed = local_path(deployed_model_uri)
        if not os.path.exists(os.path.join(deployed, "saved_model.pb")):
            deployed = None
    else:
        deployed = latest_version_dir(serving_root, model_name) if serving_root else None
    if deployed:
        try:
            deployed_fn = tf.saved_model.load(deployed).signatures["serving_default"]
            deployed_problems = check_signature(deployed_fn, variant)
            deployed_pred = predict(deployed_fn, feats) if not deployed_problems else None
            deployed_rmse = rmse(deployed_pred, label) if deployed_pred is not None else math.inf
        except (OSError, ValueError, KeyError, tf.errors.OpError) as exc:
            deployed_rmse, deployed_problems = math.inf, [f"cannot be loaded ({exc})"]
        metrics["deployed_rmse"] = deployed_rmse
        detail = f"${model_rmse:.3f} vs ${deployed_rmse:.3f} (version {os.path.basename(deployed)})"
        if deployed_problems:
            detail = f"deployed version {os.path.basename(deployed)} is not comparable: {'; '.join(deployed_problems)}"
        checks.append(("strictly better than the deployed model", model_rmse < deployed_rmse, detail))
    elif deployed_rmse >= 0:
        metrics["deployed_rmse"] = deployed_rmse
        detail = f"${model_rmse:.3f} vs ${deployed_rmse:.3f} (the deployed model's RMSE recorded at deploy)"
        checks.append(("strictly better than the deployed model", model_rmse < deployed_rmse, detail))
    else:
        checks.append(("strictly better than the deployed model", True, "nothing deployed yet"))

    sample = [{k: (str(v[i]) if k == schema.DATETIME else float(v[i])) for k, v in feats.items()} for i in range(min(20, len(label)))]
    served: dict[str, list[float]] = {}
    if infra_validation:
        from serving import infra

        result = infra.validate(model_path, [dict(instance), *sample])
        checks.append(("serves over REST and gRPC with in-process answers (infra validation)", result.ok, result.reason))
        served = {"REST": result.rest_predictions, "gRPC": result.grpc_predictions}  # type: ignore[dict-item]
    if not problems:
        stock_ok, stock_detail, metrics["stock_loader_max_diff"] = stock_loader_check(model_path, fn, [dict(instance), *sample], served)
        checks.append((STOCK_CHECK, stock_ok, stock_detail))

    failed = [name + f" ({detail})" for name, ok, detail in checks if not ok]
    blessed = not failed
    reason = (
        f"test RMSE ${model_rmse:.2f} passes every check (distance rule ${rule_rmse:.2f}, mean ${mean_rmse:.2f}"
        + (f", deployed ${metrics['deployed_rmse']:.2f})" if "deployed_rmse" in metrics else ", nothing deployed)")
        if blessed
        else "failed: " + "; ".join(failed)
    )
    curves = read_loss_curve(training_dir) if training_dir else {}
    from components.impl.report import ReportInput, render_report

    report = render_report(
        ReportInput(
            verdict_text=reason,
            blessed=blessed,
            metrics=metrics,
            checks=checks,
            label=label,
            pred=pred,
            baselines={"distance rule": distance_rule(feats), "training mean": np.full(len(label), train_fare_mean)},
            feats=feats,
            curves=curves,
            deployed_name=f"version {os.path.basename(deployed)}" if deployed else "",
            deployed_pred=deployed_pred,
            deployed_rmse=metrics.get("deployed_rmse"),
        )
    )
    summary("verify_export", ("blessed: " if blessed else "NOT blessed: ") + reason, blessed=blessed, **{k: v for k, v in metrics.items()})
    return Verdict(blessed=blessed, reason=reason, metrics=metrics, checks=checks, report_html=report)
