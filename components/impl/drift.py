"""Data drift: per-feature statistics of a split, and how far a new training split moved from the deployed model's.

``stage_data`` adds :func:`components.impl.statistics.describe` to each split's ``columns``
metadata: per feature the count, quantiles and a histogram over **fixed bin edges**
(derived from :mod:`trainer.schema`'s ranges and location grid), so any two data sets share
their bins and can be compared without the rows. The deployed version keeps its training split's statistics
(:data:`STATS_FILE`, written by deploy from :func:`stats_document`), and the ``check_drift``
step compares a new run's training split with them (:func:`compare`):

* per feature, the Jensen-Shannon divergence (base 2, so 0 = the same distribution, 1 = no
  overlap) between the two normalised histograms; numeric features and the label alike;
* the step line names the features that moved most; above ``max_drift`` (off when 0) the run
  stops before training with one line naming them and how to accept the new data.

TF-free: numpy and pyarrow only; no kfp.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

#: The file holding a model's (and so a deployed version's) training statistics, inside its SavedModel
#: folder (the serving layout's ``TRAIN_STATS_FILE``; TF Serving ignores ``assets.extra``).
STATS_FILE = os.path.join("assets.extra", "taxifare_train_stats.json")
#: Version of the statistics document.
STATS_FORMAT = 1
#: How many features the step line names.
TOP = 3


class DriftError(ValueError):
    """The training data moved further from the deployed model's than ``max_drift`` allows."""


def stats_document(metadata: dict[str, Any]) -> dict[str, Any]:
    """The statistics kept with a deployed version (:data:`STATS_FILE`), from the train split's artifact metadata."""
    return {
        "format": STATS_FORMAT,
        "rows": metadata.get("rows"),
        "variant": metadata.get("variant"),
        "content_hash": metadata.get("content_hash", ""),
        "columns": metadata.get("columns", {}),
    }


def write_stats(metadata: dict[str, Any], directory: str) -> str:
    """Write :func:`stats_document` of ``metadata`` as ``directory/`` :data:`STATS_FILE` (through a temporary name)."""
    path = os.path.join(directory, STATS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(stats_document(metadata), fh, indent=1)
    os.replace(tmp, path)
    return path


def read_stats(path: str) -> dict[str, Any] | None:
    """A statistics document from a file (local, ``/gcs/`` or ``gs://``), or ``None`` when there is none or it is unreadable."""
    from trainer import storage

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


def read_deployed_stats(serving_root: str, model_name: str) -> tuple[str, dict[str, Any] | None]:
    """The served version's training statistics: ``(version, document or None)``; ``("", None)`` when nothing is deployed.

    Uses the serving layout (``serving.layout.served_version_dir`` and ``deployed_train_stats``:
    the version the default route serves) when the serving package provides it, else the newest version.
    """
    if not serving_root:
        return "", None
    model_dir = os.path.join(serving_root, model_name)
    try:
        from serving import layout  # type: ignore[attr-defined]

        served = layout.served_version_dir(model_dir)
        return (os.path.basename(served), layout.deployed_train_stats(model_dir)) if served else ("", None)
    except (ImportError, AttributeError):
        pass
    from components.impl.deploy import latest_version_dir

    latest = latest_version_dir(serving_root, model_name)
    if not latest:
        return "", None
    return os.path.basename(latest), read_stats(os.path.join(latest, STATS_FILE))


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
    from components.impl.statistics import features

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


def gate(result: DriftResult, max_drift: float) -> None:
    """Stop when any feature moved more than ``max_drift`` (0 = off).

    Raises:
        DriftError: one line naming the features, their divergence and how to accept the new data.
    """
    over = result.over(max_drift)
    if not over:
        return
    named = ", ".join(f"{f.feature} {f.divergence:.3f}" for f in over)
    accept = math.ceil(result.largest * 1000) / 1000
    raise DriftError(
        f"the training data moved away from what deployed version {result.reference_version or '?'} learned from: {named} "
        f"(Jensen-Shannon divergence above --max-drift {max_drift:g}); training stopped. If the new data is right, "
        f"accept it by running again with --max-drift {accept:g} or higher (0 turns the gate off)"
    )


def check_max_drift(value: Any) -> float:
    """``max_drift`` as a float: 0 (off) or a divergence in (0, 1].

    Raises:
        InputError: for a value that is not a number, negative or above 1.
    """
    from trainer.errors import InputError

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


def check(
    train_metadata: dict[str, Any],
    *,
    serving_root: str = "",
    model_name: str = "",
    deployed_stats_uri: str = "",
    max_drift: float = 0.0,
) -> DriftResult | None:
    """The work of the ``check_drift`` step: compare, print the step line, stop above ``max_drift``.

    Args:
        train_metadata: the staged train split's artifact metadata.
        serving_root: local deployments (``<serving_root>/<model_name>/<version>/`` :data:`STATS_FILE`).
        model_name: the served model under ``serving_root``.
        deployed_stats_uri: on Vertex, the deployed model's artifact folder (its :data:`STATS_FILE`);
            empty locally.
        max_drift: the largest divergence allowed for any feature; 0 = report only.

    Returns:
        The comparison, or ``None`` when there is nothing deployed (or it kept no statistics).

    Raises:
        DriftError: above ``max_drift``.
    """
    from components.common import summary

    max_drift = check_max_drift(max_drift)
    version, reference = reference_stats(serving_root=serving_root, model_name=model_name, deployed_stats_uri=deployed_stats_uri)
    if reference is None:
        why = f"deployed version {version} kept no training statistics" if version else "nothing deployed yet"
        summary("check_drift", f"no comparison: {why}", compared=0)
        return None
    result = compare(train_metadata, reference, reference_version=version)
    over = result.over(max_drift)
    summary(
        "check_drift",
        result.line() + (f"; {len(over)} above --max-drift {max_drift:g}" if over else ""),
        compared=len(result.features),
        largest=round(result.largest, 6),
        **{f"drift_{f.feature}": round(f.divergence, 6) for f in result.ranked()[:TOP]},
    )
    gate(result, max_drift)
    return result


def reference_stats(*, serving_root: str = "", model_name: str = "", deployed_stats_uri: str = "") -> tuple[str, dict[str, Any] | None]:
    """The deployed version's training statistics, locally (``serving_root``) or on Vertex (its artifact folder)."""
    from components.common import local_path

    if deployed_stats_uri:
        version = deployed_stats_uri.rstrip("/").rsplit("/", 1)[-1]
        return version, read_stats(os.path.join(local_path(deployed_stats_uri.rstrip("/")), STATS_FILE))
    return read_deployed_stats(serving_root, model_name)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def largest_change(row: dict[str, Any]) -> tuple[int, float, float]:
    """The bin whose share moved most: ``(index, deployed share, share now)``."""
    pairs = list(zip(row["share_deployed"], row["share_now"], strict=True))
    i = max(range(len(pairs)), key=lambda k: (abs(pairs[k][1] - pairs[k][0]), -k))
    return i, pairs[i][0], pairs[i][1]


def _bars_svg(row: dict[str, Any], width: int = 360, height: int = 120) -> str:
    """Both distributions of one feature as paired bars over the shared bins, with axes (inline SVG, no plotting library).

    The y axis gives the largest share, the x axis the first, middle and last bin edges, so the
    values read without hovering (a phone cannot hover); each bar also has its exact share as
    a tooltip.
    """
    left, bottom, top_pad = 40.0, 18.0, 8.0
    plot_w, plot_h = width - left - 4, height - bottom - top_pad
    n = len(row["share_now"])
    top = max([*row["share_now"], *row["share_deployed"], 1e-9])
    slot = plot_w / n
    parts = [
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - 4}" y2="{top_pad + plot_h}" stroke="#57606a"/>',
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="#57606a"/>',
        f'<text x="{left - 4}" y="{top_pad + 8}" text-anchor="end" font-size="10">{top:.0%}</text>',
        f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end" font-size="10">0%</text>',
    ]
    edges = row["edges"]
    for k, anchor in ((0, "start"), (n // 2, "middle"), (n, "end")):
        parts.append(f'<text x="{left + k * slot:.1f}" y="{height - 4}" text-anchor="{anchor}" font-size="10">{_number(edges[k])}</text>')
    for i, (now, then) in enumerate(zip(row["share_now"], row["share_deployed"], strict=True)):
        for j, (share, colour) in enumerate(((then, "#9aa5b1"), (now, "#d9480f"))):
            h = share / top * plot_h
            parts.append(
                f'<rect x="{left + i * slot + j * slot / 2:.1f}" y="{top_pad + plot_h - h:.1f}" '
                f'width="{max(slot / 2 - 0.5, 0.5):.1f}" height="{h:.1f}" fill="{colour}"><title>bin {edges[i]:g}..{edges[i + 1]:g}: '
                f"{'deployed' if j == 0 else 'now'} {share:.1%}</title></rect>"
            )
    label = f"{row['feature']}: deployed (grey) vs now (orange)"
    return (
        f'<svg viewBox="0 0 {width} {height}" style="width:100%;max-width:{width}px;height:auto;display:block" role="img" '
        f'aria-label="{label}">{"".join(parts)}</svg>'
    )


def _feature_rows(r: dict[str, Any], max_drift: float) -> str:
    """A feature's figures on one row, its distributions (with the bin that moved most, in words) on the next."""
    import html

    above = " (above max_drift)" if max_drift > 0 and r["divergence"] > max_drift else ""
    i, then, now = largest_change(r)
    moved = (
        f"Largest change: {_number(r['edges'][i])} to {_number(r['edges'][i + 1])}, {then:.1%} of the deployed model's rows, {now:.1%} now."
    )
    return (
        f"<tr><td>{html.escape(r['feature'])}</td><td>{r['divergence']:.3f}{above}</td>"
        f"<td>{_number(r['mean_deployed'])} → {_number(r['mean_now'])}</td>"
        f"<td>{_number(r['median_deployed'])} → {_number(r['median_now'])}</td></tr>"
        f'<tr class="dist"><td colspan="4">{_bars_svg(r)}<small>{html.escape(moved)}</small></td></tr>'
    )


def report_html(result: DriftResult | None, max_drift: float = 0.0) -> str:
    """The report's drift section: a table (largest first) with both distributions per feature, or a line saying why none.

    Four narrow columns, and each feature's distributions on a row of their own across the
    table, so it reads at 390 px without a sideways scroll.
    """
    import html

    if result is None:
        why = "No comparison: nothing deployed, or the deployed version kept no training statistics."
        return f"<section id='drift'><h2>Data drift</h2><p>{why}</p></section>"
    body = "".join(_feature_rows(r, max_drift) for r in report_rows(result))
    note = (
        "Jensen-Shannon divergence (base 2; 0 = same distribution, 1 = no overlap) of this run's training split "
        f"against the training data of deployed version {html.escape(result.reference_version or '?')}, over bins fixed by the schema. "
        "Grey: deployed; orange: now; the axis gives the share of rows. If the new data is right, accept it by running again "
        "with a higher --max-drift (or 0)."
    )
    return (
        f"<section id='drift'><style>{_DRIFT_CSS}</style><h2>Data drift</h2><p class='note'>{note}</p><div class='scroll'>"
        "<table id='drift-table'><colgroup><col style='width:27%'><col style='width:23%'><col><col></colgroup>"
        f"<tr><th>feature</th><th>divergence</th><th>mean: deployed → now</th><th>median: deployed → now</th></tr>{body}"
        "</table></div></section>"
    )


#: The drift table: fixed columns that share the width (its values wrap), each feature's distributions across them.
_DRIFT_CSS = (
    "#drift-table{table-layout:fixed;width:100%}#drift-table td,#drift-table th{overflow-wrap:anywhere}"
    "#drift-table tr.dist td{border-top:0}#drift-table tr.dist small{display:block;color:#57606a;white-space:normal}"
)


def report_section(
    train_metadata: dict[str, Any], *, serving_root: str = "", model_name: str = "", deployed_stats_uri: str = "", max_drift: float = 0.0
) -> str:
    """The drift section of the verification report, in one call (never raises for a missing reference)."""
    version, reference = reference_stats(serving_root=serving_root, model_name=model_name, deployed_stats_uri=deployed_stats_uri)
    if reference is None:
        return report_html(None)
    return report_html(compare(train_metadata, reference, reference_version=version), max_drift)


def with_section(page: str, section: str) -> str:
    """``page`` (an HTML document) with ``section`` added at the end of its body."""
    at = page.rfind("</body>")
    return page[:at] + section + page[at:] if at >= 0 else page + section
