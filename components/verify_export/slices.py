"""Kinds of trip, and candidate against champion on the same rows: per-slice errors and a paired bootstrap.

A **slice** is a named subset of the test split: trip-distance bands, airport trips (JFK,
LaGuardia, Newark, any airport), passenger counts, and, when the data has
``pickup_datetime``, hour-of-day bands and days of the week. :func:`compare` scores two
models' predictions of the *same* rows, overall and per slice: RMSE, MAE, mean error (bias)
and the number of trips, and a 95% interval for the candidate's RMSE minus the champion's
from a paired bootstrap over the rows (each resample draws rows, and both models are scored
on the drawn rows, so the interval reflects how much the difference depends on which trips
were drawn; TFMA's confidence intervals do the same with a Poisson bootstrap).

NumPy only (no TensorFlow, no kfp): verify_export, deploy and ``taxifare versions --score``
call it, and the report draws its table.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

from trainer.schema import AIRPORTS, DATETIME

#: Trip-distance bands, in km (the last one is open).
DISTANCE_BANDS_KM = (0.0, 2.0, 5.0, 10.0, 20.0)
#: A trip is an airport trip when its pickup or dropoff lies within this distance of one.
AIRPORT_RADIUS_KM = 2.0
#: How slices name the airports of :data:`trainer.schema.AIRPORTS`.
AIRPORT_NAMES = {"jfk": "JFK", "lga": "LaGuardia", "ewr": "Newark"}
#: Hour-of-day bands ``[start, end)`` of the pickup time (UTC, as the data records it).
HOUR_BANDS = ((0, 6), (6, 10), (10, 16), (16, 20), (20, 24))
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: Bootstrap resamples and the interval's coverage.
BOOTSTRAP_SAMPLES = 1000
CONFIDENCE = 0.95
#: Rows drawn per chunk of resamples (bounds the memory of the bootstrap on large test splits).
_CHUNK_CELLS = 4_000_000


def trip_km(feats: dict[str, Any]) -> Any:
    """The haversine length of each trip."""
    import numpy as np

    from trainer.geo import haversine_km

    plon, plat, dlon, dlat = (np.asarray(feats[k], dtype=np.float64) for k in ("pickuplon", "pickuplat", "dropofflon", "dropofflat"))
    return haversine_km(plon, plat, dlon, dlat, np)


def airport_of(feats: dict[str, Any]) -> Any:
    """The airport each trip starts or ends at ('' for none), as a numpy array of names."""
    import numpy as np

    from trainer.geo import haversine_km

    plon, plat, dlon, dlat = (np.asarray(feats[k], dtype=np.float64) for k in ("pickuplon", "pickuplat", "dropofflon", "dropofflat"))
    out = np.full(len(plon), "", dtype=object)
    for key, (lon, lat) in AIRPORTS.items():
        name = AIRPORT_NAMES.get(key, key.upper())
        near = (haversine_km(plon, plat, lon, lat, np) <= AIRPORT_RADIUS_KM) | (haversine_km(dlon, dlat, lon, lat, np) <= AIRPORT_RADIUS_KM)
        out[near & (out == "")] = name
    return out


def distance_and_airport_slices(feats: dict[str, Any]) -> list[tuple[str, Any]]:
    """``[(name, boolean mask)]``: the distance bands, then airport trips (each airport, then all) and the rest."""
    km = trip_km(feats)
    out: list[tuple[str, Any]] = []
    for lo, hi in itertools.pairwise((*DISTANCE_BANDS_KM, math.inf)):
        name = f"{lo:g}-{hi:g} km" if math.isfinite(hi) else f"over {lo:g} km"
        out.append((name, (km >= lo) & (km < hi)))
    airport = airport_of(feats)
    for name in AIRPORT_NAMES.values():
        out.append((name, airport == name))
    out.append(("airport trips", airport != ""))
    out.append(("no airport", airport == ""))
    return out


def _pickup_times(values: Any) -> tuple[Any, Any]:
    """``(hour, weekday 0=Mon)`` of ``pickup_datetime`` strings (``-1`` where a value does not parse)."""
    import numpy as np

    text = np.asarray([str(v)[:19] for v in values])
    stamps = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[s]")
    for i, value in enumerate(text):
        try:
            stamps[i] = np.datetime64(value.replace(" ", "T"), "s")
        except ValueError:
            continue
    ok = ~np.isnat(stamps)
    seconds = np.where(ok, stamps.astype("int64"), 0)
    hour = np.where(ok, (seconds // 3600) % 24, -1)
    weekday = np.where(ok, ((seconds // 86400) + 3) % 7, -1)  # 1970-01-01 was a Thursday
    return hour, weekday


def slices(feats: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every slice of the test split: distance, airports, passengers, and pickup hour and weekday when known."""
    import numpy as np

    out = distance_and_airport_slices(feats)
    passengers = np.asarray(feats["passengers"], dtype=np.float64)
    out += [("1 passenger", passengers <= 1), ("2 passengers", passengers == 2), ("3+ passengers", passengers >= 3)]
    if DATETIME in feats:
        hour, weekday = _pickup_times(feats[DATETIME])
        out += [(f"{lo:02d}-{hi:02d} h", (hour >= lo) & (hour < hi)) for lo, hi in HOUR_BANDS]
        out += [(name, weekday == i) for i, name in enumerate(WEEKDAYS)]
    return out


@dataclasses.dataclass
class Errors:
    """One model's errors on a set of rows."""

    rmse: float
    mae: float
    bias: float

    @classmethod
    def of(cls, pred: Any, label: Any) -> Errors:
        """The errors of ``pred`` against ``label`` (NaN when there are no rows)."""
        import numpy as np

        if not len(label):
            return cls(math.nan, math.nan, math.nan)
        err = np.asarray(pred, dtype=np.float64) - np.asarray(label, dtype=np.float64)
        return cls(float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err))), float(np.mean(err)))


@dataclasses.dataclass
class SliceResult:
    """Candidate (and champion, when there is one) on one slice of the same rows."""

    name: str
    count: int
    candidate: Errors
    champion: Errors | None = None
    #: The 95% interval of candidate RMSE minus champion RMSE (negative: the candidate is better).
    interval: tuple[float, float] | None = None

    @property
    def difference(self) -> float:
        """Candidate RMSE minus champion RMSE (NaN without a champion)."""
        return self.candidate.rmse - self.champion.rmse if self.champion else math.nan

    @property
    def relative_change(self) -> float:
        """``difference`` as a fraction of the champion's RMSE (positive: the candidate is worse)."""
        if not self.champion or not self.champion.rmse:
            return math.nan
        return self.difference / self.champion.rmse

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (for the deploy record and the step's figures)."""
        out: dict[str, Any] = {"slice": self.name, "count": self.count, "candidate": dataclasses.asdict(self.candidate)}
        if self.champion is not None:
            out["champion"] = dataclasses.asdict(self.champion)
            out["difference"] = self.difference
        if self.interval is not None:
            out["interval"] = list(self.interval)
        return out


def paired_bootstrap(label: Any, candidate: Any, champion: Any, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """The ``CONFIDENCE`` interval of RMSE(candidate) - RMSE(champion), resampling rows with both models paired."""
    import numpy as np

    n = len(label)
    if n == 0:
        return math.nan, math.nan
    label = np.asarray(label, dtype=np.float64)
    sq_c = (np.asarray(candidate, dtype=np.float64) - label) ** 2
    sq_h = (np.asarray(champion, dtype=np.float64) - label) ** 2
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n)
    diffs = []
    for start in range(0, samples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, samples - start), n))
        diffs.append(np.sqrt(sq_c[idx].mean(axis=1)) - np.sqrt(sq_h[idx].mean(axis=1)))
    values = np.concatenate(diffs)
    tail = (1 - CONFIDENCE) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def compare(feats: dict[str, Any], label: Any, candidate: Any, champion: Any = None, *, seed: int = 0) -> list[SliceResult]:
    """Overall (first, named ``all trips``) and per slice: the candidate's errors, beside the champion's when given.

    Args:
        feats: the test split's features by name.
        label: the true fares.
        candidate: the candidate's predictions of those rows.
        champion: the champion's predictions of the *same* rows, or ``None``.
        seed: the bootstrap's seed (the interval is reproducible).
    """
    import numpy as np

    label = np.asarray(label, dtype=np.float64)
    out = []
    for name, mask in [("all trips", np.ones(len(label), dtype=bool)), *slices(feats)]:
        rows = np.flatnonzero(mask)
        result = SliceResult(name, len(rows), Errors.of(candidate[rows], label[rows]))
        if champion is not None:
            result.champion = Errors.of(champion[rows], label[rows])
            if len(rows):
                result.interval = paired_bootstrap(label[rows], candidate[rows], champion[rows], seed=seed)
        out.append(result)
    return out
