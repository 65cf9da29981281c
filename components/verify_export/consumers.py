"""The candidate run by the programs that really consume it: stock TF Serving's loader, and our server.

verify_export calls :func:`check_serving`: the stock loader (graph mode, what
``tensorflow_model_server``, Vertex's prebuilt containers and ``saved_model_cli run`` use) runs
the export first in a fresh process of its own (:mod:`components.verify_export.scorer`, where TF2's
answers are computed after it), and, with infra validation, ``taxifare serve`` serves it in
another; both must answer what TF2 answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from trainer.schema import Variant

#: Largest difference accepted between the stock loader's answers and TF2's or the served ones.
STOCK_TOLERANCE = 1e-4
STOCK_CHECK = "stock TF Serving loader (graph mode) runs it and agrees with TF2 and the served answers"


def consumer_instances(ev: Any) -> list[dict[str, Any]]:
    """The instances the consumers answer: the lab's ``test.json`` instance (``ev.instance``), then up to 20 test rows."""
    from trainer import schema

    ev.instance = dict(schema.TEST_INSTANCE_DATETIME if ev.variant is Variant.DATETIME else schema.TEST_INSTANCE)
    n = min(20, len(ev.label))
    sample = [{k: (str(v[i]) if k == schema.DATETIME else float(v[i])) for k, v in ev.feats.items()} for i in range(n)]
    return [dict(ev.instance), *sample]


def stock_loader_check(result: Any, tf2: list[float], served: dict[str, list[float]]) -> tuple[bool, str, float]:
    """Compare the graph-mode loader's answers (a :class:`trainer.stock_check.StockResult`) with TF2's and ``served``.

    Args:
        result: what the stock loader answered, in a process of its own.
        tf2: TF2's answers of the same instances.
        served: the answers of the served model by protocol (may be empty).

    Returns:
        ``(ok, detail, max_abs_diff)``.
    """
    import numpy as np

    if not result.ok:
        return False, f"the graph-mode loader fails: {result.error}", math.inf
    stock = np.asarray(result.fares, dtype=np.float64)
    answers = {
        "TF2": np.asarray(tf2, dtype=np.float64),
        **{name: np.asarray(v, dtype=np.float64) for name, v in served.items() if v is not None},
    }
    diffs = {name: float(np.max(np.abs(stock - other))) if len(other) == len(stock) else math.inf for name, other in answers.items()}
    worst = max(diffs.values())
    detail = ", ".join(f"{name} max diff {d:.2g}" for name, d in diffs.items())
    if not np.all(np.isfinite(stock)):
        return False, f"the graph-mode loader answers non-finite fares ({detail})", worst
    return worst <= STOCK_TOLERANCE, f"{len(stock)} instances in {result.seconds:.1f}s: {detail} (tolerance {STOCK_TOLERANCE})", worst


def check_serving(
    ev: Any, instances: list[dict[str, Any]], scores: Any, server: Any, infra_validation: bool, meanwhile: Callable[[], Any] = lambda: None
) -> None:
    """Infra validation (when asked) and stock TF Serving's graph-mode loader, on the lab instance and a sample.

    Args:
        ev: verify_export's evidence (checks and metrics are added to it).
        instances: :func:`consumer_instances`.
        scores: the TensorFlow process's answers (:class:`components.verify_export.scorer.Scores`): the
            stock loader's and TF2's.
        server: the candidate being served (:func:`serving.infra.start`), ``None`` without infra validation.
        infra_validation: whether infra validation was asked for.
        meanwhile: work to do while the server stops (its process takes a second to end).
    """
    served: dict[str, list[float]] = {}
    if infra_validation and server is not None:
        expected = scores.instances if scores.instances is not None else "not run in TF2: its signature does not match the schema"
        result = server.query(instances, expected)  # then it is asked to stop
        meanwhile()
        result = server.close(result)
        ev.checks.append(("serves over REST and gRPC with in-process answers (infra validation)", result.ok, result.reason))
        served = {"REST": result.rest_predictions, "gRPC": result.grpc_predictions}  # type: ignore[dict-item]
    else:
        meanwhile()
    if not ev.problems:
        stock_ok, stock_detail, ev.metrics["stock_loader_max_diff"] = stock_loader_check(scores.stock, scores.instances, served)
        ev.checks.append((STOCK_CHECK, stock_ok, stock_detail))
