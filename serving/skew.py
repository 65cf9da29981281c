"""Training-serving skew: how far what a served version is asked has moved from what it learned.

The measure is the drift gate's (:mod:`trainer.divergence`): per feature, the
Jensen-Shannon divergence between the normalised histograms, over the fixed, schema-derived
bins of :func:`trainer.statistics.bin_edges`, of the served version's training split
(``assets.extra/taxifare_train_stats.json`` in its folder, :data:`base.layout.TRAIN_STATS_FILE`)
and of the instances it was asked. The server (with a request log) keeps the last
:data:`WINDOW` logged instances of each version and exports the result as Prometheus gauges
(:class:`SkewGauges`); ``taxifare monitor`` computes the same from the log's segments.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from base import layout
from trainer import divergence, schema, statistics

log = logging.getLogger("serving")

#: Logged instances per version the server's gauges are computed over (the most recent ones).
WINDOW = 10_000


def edges() -> dict[str, np.ndarray]:
    """The fixed bins of each compared input feature (the label is not asked, so it is not compared)."""
    return {name: np.asarray(statistics.bin_edges(name)) for name in schema.NUMERIC_FEATURES}


def describe(counts: Mapping[str, np.ndarray], sums: Mapping[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """A ``columns`` document (as :func:`trainer.statistics.describe` writes it) from histogram counts per feature."""
    bins = edges()
    out: dict[str, dict[str, Any]] = {}
    for name, found in counts.items():
        total = int(np.sum(found))
        out[name] = {"count": total, "histogram": {"edges": [float(e) for e in bins[name]], "counts": [int(c) for c in found]}}
        if sums is not None and total:
            out[name]["mean"] = sums[name] / total
    return out


def histograms(columns: Iterable[Mapping[str, Any]]) -> tuple[dict[str, np.ndarray], dict[str, float], int]:
    """Counts and sums per feature, and the instances, of logged ``inputs`` (columnar) bodies (one histogram per feature for all)."""
    bodies = list(columns)
    bins = edges()
    counts, sums = {}, {}
    for name, e in bins.items():
        parts = [body[name] for body in bodies if name in body]
        values = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
        counts[name] = statistics.counts(values, e) if len(values) else np.zeros(len(e) - 1, np.int64)
        sums[name] = float(values.sum())
    n = sum(len(next(iter(body.values()), [])) for body in bodies)
    return counts, sums, n


def reference(version_dir: str) -> dict[str, Any] | None:
    """A version's training statistics (``None`` when it kept none)."""
    return divergence.read_stats(os.path.join(version_dir, layout.TRAIN_STATS_FILE))


def compare(
    counts: Mapping[str, np.ndarray], ref: dict[str, Any], version: int | str, sums: Mapping[str, float] | None = None
) -> divergence.DriftResult:
    """The drift gate's comparison of these counts (and the means, when ``sums`` are given) with a version's training statistics."""
    return divergence.compare(describe(counts, sums), ref, reference_version=str(version))


class _Window:
    """The last :data:`WINDOW` logged instances of one version, as histogram counts."""

    def __init__(self, ref: dict[str, Any] | None) -> None:
        self.ref = ref
        self.parts: collections.deque[tuple[int, dict[str, np.ndarray]]] = collections.deque()
        self.counts = {name: np.zeros(len(e) - 1, np.int64) for name, e in edges().items()}
        self.instances = 0

    def add(self, columns: list[Mapping[str, Any]]) -> None:
        part, _sums, n = histograms(columns)
        self.parts.append((n, part))
        for name, c in part.items():
            self.counts[name] += c
        self.instances += n
        while self.parts and self.instances - self.parts[0][0] >= WINDOW:
            old_n, old = self.parts.popleft()
            for name, c in old.items():
                self.counts[name] -= c
            self.instances -= old_n


class SkewGauges:
    """Per version, the skew of its recent logged instances, exported as ``:taxifare:feature_skew{feature,version}``.

    Fed from the request log's writer thread (:meth:`add`), never from the request path.

    Args:
        metrics: the server's :class:`serving.metrics.ServingMetrics` (its skew gauges).
    """

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self._windows: dict[int, _Window] = {}
        self._lock = threading.Lock()

    def add(self, entries: Iterable[Any]) -> None:
        """Add logged entries (:class:`serving.request_log.Entry`) and update the gauges of their versions."""
        by_version: dict[int, list[Any]] = {}
        for entry in entries:
            by_version.setdefault(entry.version, []).append(entry)
        with self._lock:
            for version, mine in by_version.items():
                window = self._windows.get(version)
                if window is None:
                    ref = reference(mine[0].path)
                    if ref is None:
                        log.warning("version %d kept no training statistics (%s): no skew gauge for it", version, layout.TRAIN_STATS_FILE)
                    window = self._windows[version] = _Window(ref)
                window.add([e.columns for e in mine])  # one histogram per feature for all of them
                self._publish(version, window)

    def _publish(self, version: int, window: _Window) -> None:
        self.metrics.skew_instances.labels(str(version)).set(window.instances)
        if window.ref is None:
            return
        for f in compare(window.counts, window.ref, version).features:
            self.metrics.feature_skew.labels(f.feature, str(version)).set(round(f.divergence, 6))

    def latest(self, version: int) -> dict[str, float]:
        """The skew per feature of ``version`` now (tests)."""
        with self._lock:
            window = self._windows.get(version)
            if window is None or window.ref is None:
                return {}
            return {f.feature: f.divergence for f in compare(window.counts, window.ref, version).features}
