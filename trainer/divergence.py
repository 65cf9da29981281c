"""How far two data sets are apart: Jensen-Shannon divergence per feature over the fixed bins of :mod:`trainer.statistics`.

The one definition of "moved", shared by the drift gate (``components/check_drift/logic.py``, the
``check_drift`` step), the server's skew gauges (``serving/skew.py``) and ``taxifare monitor``:

* per feature, the Jensen-Shannon divergence (base 2, so 0 = the same distribution, 1 = no
  overlap) between the two normalised histograms; numeric features and the label alike;
* a threshold (``max_drift``, ``--max-skew``) is 0 (off) or a divergence in (0, 1].

numpy and the standard library only (TF-free, no kfp).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

#: How many features the step line names.
TOP = 3


def read_stats(path: str) -> dict[str, Any] | None:
    """A statistics document from a file (local, ``/gcs/`` or ``gs://``), or ``None`` when there is none or it is unreadable."""
    from base import storage

    try:
        with storage.open_binary(path) as fh:
            document = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    except Exception as exc:  # google.api_core NotFound and friends on gs://
        if type(exc).__name__ in ("NotFound", "Forbidden"):
            return None
        raise
    return document if isinstance(document, dict) and isinstance(document.get("columns"), dict) else None


def js_divergence(p_counts: list[int], q_counts: list[int]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two histograms over the same bins."""
    import numpy as np

    p = np.asarray(p_counts, dtype=np.float64)
    q = np.asarray(q_counts, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: Any, b: Any) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return max(0.0, min(1.0, 0.5 * kl(p, m) + 0.5 * kl(q, m)))


@dataclasses.dataclass
class FeatureDrift:
    """How one feature moved."""

    feature: str
    divergence: float
    current: dict[str, Any]
    reference: dict[str, Any]


@dataclasses.dataclass
class DriftResult:
    """The comparison of a training split with the deployed version's."""

    features: list[FeatureDrift]
    reference_version: str = ""
    skipped: list[str] = dataclasses.field(default_factory=list)

    def ranked(self) -> list[FeatureDrift]:
        """Features by divergence, largest first."""
        return sorted(self.features, key=lambda f: -f.divergence)

    def over(self, max_drift: float) -> list[FeatureDrift]:
        """The features whose divergence exceeds ``max_drift`` (none when the gate is off, ``max_drift`` 0)."""
        if max_drift <= 0:
            return []
        return [f for f in self.ranked() if f.divergence > max_drift]

    @property
    def largest(self) -> float:
        """The largest divergence (0 when nothing was compared)."""
        return max((f.divergence for f in self.features), default=0.0)

    def line(self, top: int = TOP) -> str:
        """The step line: the features that moved most."""
        if not self.features:
            return "no feature could be compared"
        moved = ", ".join(f"{f.feature} {f.divergence:.3f}" for f in self.ranked()[:top])
        return f"largest drift vs deployed version {self.reference_version or '?'} (Jensen-Shannon): {moved}"

    def as_metrics(self) -> dict[str, float]:
        """``{"drift_<feature>": divergence, "drift_max": largest}`` (for a Metrics artifact)."""
        return {**{f"drift_{f.feature}": round(f.divergence, 6) for f in self.features}, "drift_max": round(self.largest, 6)}


def compare(current: dict[str, Any], reference: dict[str, Any], *, reference_version: str = "") -> DriftResult:
    """Per-feature Jensen-Shannon divergence of the current training statistics from the reference's.

    Args:
        current: the new train split's ``columns`` metadata (or a :func:`stats_document`).
        reference: the deployed version's statistics document (or its ``columns``).
        reference_version: the deployed version, for messages.

    Returns:
        The divergences; features whose histograms are missing or use other bin edges are
        listed in ``skipped`` (statistics written before histograms existed).
    """
    cur = current.get("columns", current)
    ref = reference.get("columns", reference)
    result = DriftResult(features=[], reference_version=reference_version)
    from trainer.statistics import features

    for name in features():
        a, b = (cur.get(name) or {}).get("histogram"), (ref.get(name) or {}).get("histogram")
        if not a or not b or [round(e, 6) for e in a["edges"]] != [round(e, 6) for e in b["edges"]]:
            result.skipped.append(name)
            continue
        divergence = js_divergence(a["counts"], b["counts"])
        if math.isnan(divergence):
            result.skipped.append(name)
            continue
        result.features.append(FeatureDrift(name, divergence, cur[name], ref[name]))
    return result


def check_max_drift(value: Any) -> float:
    """``max_drift`` as a float: 0 (off) or a divergence in (0, 1].

    Raises:
        InputError: for a value that is not a number, negative or above 1.
    """
    from base.errors import InputError

    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0 or number > 1:
        raise InputError(f"max_drift must be 0 (off) or a Jensen-Shannon divergence between 0 and 1 such as 0.1 (got {value!r})")
    return number


def report_rows(result: DriftResult) -> list[dict[str, Any]]:
    """The drift table of the verification report, largest first.

    Per feature: the divergence, both means and medians, and both normalised histograms over
    the shared bins (for a plot).
    """
    rows = []
    for f in result.ranked():
        hist_now, hist_then = f.current["histogram"], f.reference["histogram"]
        total_now, total_then = sum(hist_now["counts"]) or 1, sum(hist_then["counts"]) or 1
        rows.append(
            {
                "feature": f.feature,
                "divergence": f.divergence,
                "mean_now": f.current.get("mean"),
                "mean_deployed": f.reference.get("mean"),
                "median_now": f.current.get("quantiles", {}).get("p50"),
                "median_deployed": f.reference.get("quantiles", {}).get("p50"),
                "edges": hist_now["edges"],
                "share_now": [c / total_now for c in hist_now["counts"]],
                "share_deployed": [c / total_then for c in hist_then["counts"]],
            }
        )
    return rows
