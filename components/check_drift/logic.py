"""Data drift: per-feature statistics of a split, and how far a new training split moved from the deployed model's.

``stage_data`` adds :func:`trainer.statistics.describe` to each split's ``columns``
metadata: per feature the count, quantiles and a histogram over **fixed bin edges**
(derived from :mod:`trainer.schema`'s ranges and location grid), so any two data sets share
their bins and can be compared without the rows. The deployed version keeps its training split's statistics
(:data:`base.layout.TRAIN_STATS_FILE`, written by deploy from :func:`stats_document`), and the ``check_drift``
step compares a new run's training split with them (:func:`trainer.divergence.compare`):

* per feature, the Jensen-Shannon divergence (base 2, so 0 = the same distribution, 1 = no
  overlap) between the two normalised histograms; numeric features and the label alike;
* the step line names the features that moved most; above ``max_drift`` (off when 0) the run
  stops before training with one line naming them and how to accept the new data.

TF-free: numpy and pyarrow only; no kfp.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from base import atomic, layout
from base import html as h
from trainer import divergence

#: Version of the statistics document.
STATS_FORMAT = 1


class DriftError(ValueError):
    """The training data moved further from the deployed model's than ``max_drift`` allows."""


def stats_document(metadata: dict[str, Any]) -> dict[str, Any]:
    """The statistics kept with a deployed version (:data:`base.layout.TRAIN_STATS_FILE`), from the train split's artifact metadata."""
    return {
        "format": STATS_FORMAT,
        "rows": metadata.get("rows"),
        "variant": metadata.get("variant"),
        "content_hash": metadata.get("content_hash", ""),
        "columns": metadata.get("columns", {}),
    }


def write_stats(metadata: dict[str, Any], directory: str) -> str:
    """Write :func:`stats_document` of ``metadata`` as ``directory/`` :data:`base.layout.TRAIN_STATS_FILE` (through a temporary name)."""
    path = os.path.join(directory, layout.TRAIN_STATS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic.write_text(path, json.dumps(stats_document(metadata), indent=1))
    return path


def read_deployed_stats(serving_root: str, model_name: str) -> tuple[str, dict[str, Any] | None]:
    """The served version's training statistics: ``(version, document or None)``; ``("", None)`` when nothing is deployed.

    Uses the model base path's layout (``base.layout.served_version_dir`` and
    ``deployed_train_stats``: the version the default route serves).
    """
    if not serving_root:
        return "", None
    model_dir = os.path.join(serving_root, model_name)
    served = layout.served_version_dir(model_dir)
    return (os.path.basename(served), layout.deployed_train_stats(model_dir)) if served else ("", None)


def gate(result: divergence.DriftResult, max_drift: float) -> None:
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


def check(
    train_metadata: dict[str, Any],
    *,
    serving_root: str = "",
    model_name: str = "",
    deployed_stats_uri: str = "",
    max_drift: float,
) -> divergence.DriftResult | None:
    """The work of the ``check_drift`` step: compare, print the step line, stop above ``max_drift``.

    Args:
        train_metadata: the staged train split's artifact metadata.
        serving_root: local deployments (``<serving_root>/<model_name>/<version>/`` :data:`base.layout.TRAIN_STATS_FILE`).
        model_name: the served model under ``serving_root``.
        deployed_stats_uri: on Vertex, the deployed model's artifact folder (its :data:`base.layout.TRAIN_STATS_FILE`);
            empty locally.
        max_drift: the largest divergence allowed for any feature; 0 = report only.

    Returns:
        The comparison, or ``None`` when there is nothing deployed (or it kept no statistics).

    Raises:
        DriftError: above ``max_drift``.
    """
    from components.common import summary

    max_drift = divergence.check_max_drift(max_drift)
    version, reference = reference_stats(serving_root=serving_root, model_name=model_name, deployed_stats_uri=deployed_stats_uri)
    if reference is None:
        why = f"deployed version {version} kept no training statistics" if version else "nothing deployed yet"
        summary("check_drift", f"no comparison: {why}", compared=0)
        return None
    result = divergence.compare(train_metadata, reference, reference_version=version)
    over = result.over(max_drift)
    summary(
        "check_drift",
        result.line() + (f"; {len(over)} above --max-drift {max_drift:g}" if over else ""),
        compared=len(result.features),
        largest=round(result.largest, 6),
        **{f"drift_{f.feature}": round(f.divergence, 6) for f in result.ranked()[: divergence.TOP]},
    )
    gate(result, max_drift)
    return result


def reference_stats(*, serving_root: str = "", model_name: str = "", deployed_stats_uri: str = "") -> tuple[str, dict[str, Any] | None]:
    """The deployed version's training statistics, locally (``serving_root``) or on Vertex (its artifact folder)."""
    from components.common import local_path

    if deployed_stats_uri:
        version = deployed_stats_uri.rstrip("/").rsplit("/", 1)[-1]
        return version, divergence.read_stats(os.path.join(local_path(deployed_stats_uri.rstrip("/")), layout.TRAIN_STATS_FILE))
    return read_deployed_stats(serving_root, model_name)


def largest_change(row: dict[str, Any]) -> tuple[int, float, float]:
    """The bin whose share moved most: ``(index, deployed share, share now)``."""
    pairs = list(zip(row["share_deployed"], row["share_now"], strict=True))
    i = max(range(len(pairs)), key=lambda k: (abs(pairs[k][1] - pairs[k][0]), -k))
    return i, pairs[i][0], pairs[i][1]


def _feature_rows(r: dict[str, Any], max_drift: float) -> str:
    """A feature's figures on one row, its distributions (with the bin that moved most, in words) on the next."""
    above = " (above max_drift)" if max_drift > 0 and r["divergence"] > max_drift else ""
    i, then, now = largest_change(r)
    edges = r["edges"]
    moved = (
        f"Largest change: {h.number(edges[i], '.4g')} to {h.number(edges[i + 1], '.4g')}, "
        f"{then:.1%} of the deployed model's rows, {now:.1%} now."
    )
    plot = h.bars_svg(
        edges, r["share_deployed"], r["share_now"], names=("deployed", "now"), label=f"{r['feature']}: deployed (grey) vs now (orange)"
    )
    means = [f"{h.number(r[f'{stat}_deployed'], '.4g')} → {h.number(r[f'{stat}_now'], '.4g')}" for stat in ("mean", "median")]
    return h.tr([h.td(h.esc(r["feature"])), h.td(f"{r['divergence']:.3f}{above}"), *(h.td(m) for m in means)]) + h.tr(
        [h.td(f"{plot}<small>{h.esc(moved)}</small>", colspan=4)], "dist"
    )


def report_html(result: divergence.DriftResult | None, max_drift: float = 0.0) -> str:
    """The report's drift section: a table (largest first) with both distributions per feature, or a line saying why none.

    Four narrow columns, and each feature's distributions on a row of their own across the
    table, so it reads at 390 px without a sideways scroll (its style is :data:`base.html.PAGE_CSS`'s ``#drift-table``).
    """
    if result is None:
        why = "No comparison: nothing deployed, or the deployed version kept no training statistics."
        return f'<section id="drift"><h2>Data drift</h2><p>{why}</p></section>'
    rows = [_feature_rows(r, max_drift) for r in divergence.report_rows(result)]
    note = (
        "Jensen-Shannon divergence (base 2; 0 = same distribution, 1 = no overlap) of this run's training split "
        f"against the training data of deployed version {h.esc(result.reference_version or '?')}, over bins fixed by the schema. "
        "Grey: deployed; orange: now; the axis gives the share of rows. If the new data is right, accept it by running again "
        "with a higher --max-drift (or 0)."
    )
    head = [h.th(c) for c in ("feature", "divergence", "mean: deployed → now", "median: deployed → now")]
    colgroup = '<colgroup><col style="width:27%"><col style="width:23%"><col><col></colgroup>'
    drift_table = h.table("drift-table", head, rows, colgroup=colgroup)
    return f'<section id="drift"><h2>Data drift</h2><p class="note">{note}</p>{drift_table}</section>'


def report_section(
    train_metadata: dict[str, Any], *, serving_root: str = "", model_name: str = "", deployed_stats_uri: str = "", max_drift: float = 0.0
) -> str:
    """The drift section of the verification report, in one call (never raises for a missing reference)."""
    version, reference = reference_stats(serving_root=serving_root, model_name=model_name, deployed_stats_uri=deployed_stats_uri)
    if reference is None:
        return report_html(None)
    return report_html(divergence.compare(train_metadata, reference, reference_version=version), max_drift)


def with_section(page: str, section: str) -> str:
    """``page`` (an HTML document) with ``section`` added at the end of its body."""
    at = page.rfind("</body>")
    return page[:at] + section + page[at:] if at >= 0 else page + section
