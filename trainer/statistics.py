"""Per-feature statistics of a staged split over fixed, schema-derived bins (for the drift check).

:func:`describe` reads a staged, headerless CSV split block by block and returns, per feature
(the fare and the five numeric features), the count, quantiles and a histogram over the
fixed edges of :func:`bin_edges`, so two data sets share their bins and can be compared by
:mod:`components.check_drift.logic` without their rows. numpy and pyarrow, imported inside; no kfp.
"""

from __future__ import annotations

import math
from typing import Any

#: Quantiles kept per feature.
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: Rows kept (a uniform sample) to compute quantiles: exact up to this many rows.
QUANTILE_SAMPLE = 100_000


def bin_edges(feature: str) -> list[float]:
    """The fixed histogram edges of ``feature``, from :mod:`trainer.schema` (shared by every data set).

    Coordinates: the model's location grid (about 2.5 km cells over New York) plus one bin on
    each side out to the valid range; passengers: one bin per count; the fare: 24 bins evenly
    spaced on a log scale over its valid range (a $1 step matters at $5, not at $150).
    """
    import numpy as np

    from trainer import schema

    r = schema.RANGES[feature]
    if feature in ("pickuplon", "dropofflon"):
        return [r.low, *schema.GRID_LON, r.high]
    if feature in ("pickuplat", "dropofflat"):
        return [r.low, *schema.GRID_LAT, r.high]
    if feature == schema.PASSENGERS:
        return [v + 0.5 for v in range(int(r.low) - 1, int(r.high) + 1)]
    return [round(float(v), 4) for v in np.geomspace(r.low, r.high, 25)]


def features() -> tuple[str, ...]:
    """The columns described and compared: the label and the numeric features."""
    from trainer import schema

    return (schema.LABEL, *schema.NUMERIC_FEATURES)


def counts(values: Any, edges: Any) -> Any:
    """The histogram of ``values`` over ``edges`` (values beyond the edges count in the first or last bin), as int64."""
    import numpy as np

    edges = np.asarray(edges, dtype=np.float64)
    found, _ = np.histogram(np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1]), bins=edges)
    return found.astype(np.int64)


class _Accumulator:
    """Streaming histogram counts and a bounded uniform sample (bottom-k by random priority) of one column."""

    def __init__(self, edges: list[float], seed: int) -> None:
        import numpy as np

        self.edges = np.asarray(edges, dtype=np.float64)
        self.counts = np.zeros(len(edges) - 1, dtype=np.int64)
        self.rng = np.random.default_rng(seed)
        self.sample = np.empty(0, dtype=np.float64)
        self.priority = np.empty(0, dtype=np.float64)

    def add(self, values: Any) -> None:
        import numpy as np

        self.counts += counts(values, self.edges)
        self.sample = np.concatenate([self.sample, values])
        self.priority = np.concatenate([self.priority, self.rng.random(len(values))])
        if len(self.sample) > QUANTILE_SAMPLE:
            keep = np.argpartition(self.priority, QUANTILE_SAMPLE)[:QUANTILE_SAMPLE]
            self.sample, self.priority = self.sample[keep], self.priority[keep]

    def as_dict(self) -> dict[str, Any]:
        import numpy as np

        quantiles = np.quantile(self.sample, QUANTILES) if len(self.sample) else [math.nan] * len(QUANTILES)
        return {
            "count": int(self.counts.sum()),
            "quantiles": {f"p{round(q * 100):02d}": round(float(v), 6) for q, v in zip(QUANTILES, quantiles, strict=True)},
            "histogram": {"edges": [float(e) for e in self.edges], "counts": [int(c) for c in self.counts]},
        }


def describe(path: str, columns: tuple[str, ...], *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Count, quantiles and fixed-bin histogram of each feature of a staged, headerless CSV split.

    Args:
        path: a staged split's CSV file (valid rows only, columns in ``columns`` order).
        columns: the file's column names (the layout's :attr:`~trainer.schema.Variant.columns`).
        seed: seed of the quantile sample (quantiles are exact up to :data:`QUANTILE_SAMPLE` rows).

    Returns:
        ``{feature: {"count", "quantiles": {"p01"...}, "histogram": {"edges", "counts"}}}``.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    wanted = features()
    acc = {name: _Accumulator(bin_edges(name), seed + i) for i, name in enumerate(wanted)}
    read = pacsv.ReadOptions(column_names=list(columns), block_size=4 << 20)
    convert = pacsv.ConvertOptions(include_columns=list(wanted), column_types={name: pa.float64() for name in wanted})
    with pacsv.open_csv(path, read_options=read, convert_options=convert) as reader:
        for batch in reader:
            for name in wanted:
                acc[name].add(batch.column(name).to_numpy(zero_copy_only=False))
    return {name: a.as_dict() for name, a in acc.items()}


def merge_columns(base: dict[str, dict[str, Any]], extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``base`` (min/mean/max per column) with ``extra``'s keys added per column."""
    return {name: {**base.get(name, {}), **extra.get(name, {})} for name in {**base, **extra}}
