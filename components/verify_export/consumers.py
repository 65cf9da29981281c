"""The candidate run by the programs that really consume it: stock TF Serving's loader, and our server.

verify_export calls :func:`check_serving`: the stock loader (graph mode, what
``tensorflow_model_server``, Vertex's prebuilt containers and ``saved_model_cli run`` use) runs
the export in a process of its own, and, with infra validation, ``taxifare serve`` serves it
in another; both must answer what TF2 answers in verify_export's own process.
"""

from __future__ import annotations

import concurrent.futures
import math
from typing import Any

#: Largest difference accepted between the stock loader's answers and TF2's or the served ones.
STOCK_TOLERANCE = 1e-4
STOCK_CHECK = "stock TF Serving loader (graph mode) runs it and agrees with TF2 and the served answers"


def stock_loader_check(
    model_path: str, fn: Any, instances: list[dict[str, Any]], served: dict[str, list[float]], result: Any = None
) -> tuple[bool, str, float]:
    """Run ``instances`` through the graph-mode loader (own process); compare with TF2 (``fn``) and ``served``.

    Args:
        model_path: the SavedModel directory.
        fn: its TF2 ``serving_default``.
        instances: raw-feature instances.
        served: the answers of the served model by protocol (may be empty).
        result: the :class:`trainer.stock_check.StockResult` when the caller ran it already.

    Returns:
        ``(ok, detail, max_abs_diff)``.
    """
    import numpy as np

    from components.verify_export.logic import predict
    from trainer import schema
    from trainer.stock_check import stock_predict

    result = result or stock_predict(model_path, instances)
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


def check_serving(ev: Any, model_path: str, infra_validation: bool) -> None:
    """Infra validation (when asked) and stock TF Serving's graph-mode loader, on the lab instance and a sample."""
    from trainer import schema
    from trainer.stock_check import stock_predict

    n = min(20, len(ev.label))
    sample = [{k: (str(v[i]) if k == schema.DATETIME else float(v[i])) for k, v in ev.feats.items()} for i in range(n)]
    instances = [dict(ev.instance), *sample]
    served: dict[str, list[float]] = {}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # the stock loader's process and the served model's start side by side (each imports TensorFlow: seconds)
        stock = pool.submit(stock_predict, model_path, instances) if not ev.problems else None
        if infra_validation:
            from serving import infra

            result = infra.validate(model_path, instances)
            ev.checks.append(("serves over REST and gRPC with in-process answers (infra validation)", result.ok, result.reason))
            served = {"REST": result.rest_predictions, "gRPC": result.grpc_predictions}  # type: ignore[dict-item]
        if stock is not None:
            stock_ok, stock_detail, ev.metrics["stock_loader_max_diff"] = stock_loader_check(
                model_path, ev.fn, instances, served, stock.result()
            )
            ev.checks.append((STOCK_CHECK, stock_ok, stock_detail))
