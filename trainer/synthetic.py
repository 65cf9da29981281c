"""Seeded synthetic NYC taxi trips in the lab's CSV layout (the embedded default's data).

Distributions are calibrated against the real samples in ``shared/data/taxifare``: about
94% of pickups in Manhattan around a few hot spots, 2-3% at LaGuardia and JFK, the rest in
Brooklyn and Queens; trip lengths log-normal with a 2.1 km median; passengers 1-6 with the
samples' shares; metered fares (flag drop plus a per-km rate that rose in September 2012,
traffic noise, night and rush-hour surcharges, bridge tolls) and the flat JFK fare.

The same seed always gives the same bytes, whatever the chunking.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from base import atomic
from base.errors import InputError
from trainer import schema
from trainer.geo import haversine_km
from trainer.schema import Variant

# (lon, lat, spread in degrees, weight) of pickup hot spots.
_MANHATTAN = [
    (-73.985, 40.755, 0.012, 0.36),  # Midtown
    (-74.003, 40.728, 0.012, 0.22),  # Village / SoHo
    (-74.010, 40.710, 0.006, 0.07),  # Financial District
    (-73.960, 40.775, 0.010, 0.14),  # Upper East Side
    (-73.978, 40.785, 0.010, 0.10),  # Upper West Side
    (-73.945, 40.805, 0.010, 0.03),  # Harlem
]
_OUTER = [
    (-73.955, 40.690, 0.025, 0.025),  # Brooklyn
    (-73.920, 40.745, 0.020, 0.015),  # Queens
]
JFK, LGA, EWR = schema.AIRPORTS["jfk"], schema.AIRPORTS["lga"], schema.AIRPORTS["ewr"]
_PASSENGER_SHARES = np.array([0.685, 0.146, 0.046, 0.024, 0.074, 0.025])
#: 2012-09-04: the TLC raised the metered rate and the JFK flat fare.
_RATE_HIKE = np.datetime64("2012-09-04")
_START = np.datetime64("2009-01-01")
_END = np.datetime64("2015-07-01")


def _haversine_km(lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray | float, lat2: np.ndarray | float) -> np.ndarray:
    return np.asarray(haversine_km(lon1, lat1, lon2, lat2, np))


def _spots(rng: np.random.Generator, spots: list[tuple[float, float, float, float]], n: int) -> tuple[np.ndarray, np.ndarray]:
    w = np.array([s[3] for s in spots])
    idx = rng.choice(len(spots), size=n, p=w / w.sum())
    centre = np.array([(s[0], s[1]) for s in spots])[idx]
    spread = np.array([s[2] for s in spots])[idx]
    return centre[:, 0] + rng.normal(0, 1, n) * spread, centre[:, 1] + rng.normal(0, 1, n) * spread


def generate_chunk(rng: np.random.Generator, n: int, first_key: int) -> dict[str, np.ndarray]:
    """``n`` trips as columns (datetime included), keys from ``first_key``."""
    plon, plat = _spots(rng, _MANHATTAN + _OUTER, n)
    # Airport pickups.
    kind = rng.random(n)
    at_jfk, at_lga = kind < 0.014, (kind >= 0.014) & (kind < 0.035)
    plon[at_jfk], plat[at_jfk] = JFK[0] + rng.normal(0, 0.003, at_jfk.sum()), JFK[1] + rng.normal(0, 0.003, at_jfk.sum())
    plon[at_lga], plat[at_lga] = LGA[0] + rng.normal(0, 0.002, at_lga.sum()), LGA[1] + rng.normal(0, 0.002, at_lga.sum())

    # Ordinary trips: a log-normal length along a bearing biased to Manhattan's avenues.
    dist = np.exp(rng.normal(math.log(2.1), 0.85, n))
    avenue = math.radians(29.0)
    bearing = np.where(rng.random(n) < 0.6, avenue + rng.normal(0, 0.35, n) + np.pi * (rng.random(n) < 0.5), rng.uniform(0, 2 * np.pi, n))
    dlat = dist * np.cos(bearing) / 111.0
    dlon = dist * np.sin(bearing) / (111.0 * math.cos(math.radians(40.75)))
    dlon_, dlat_ = plon + dlon, plat + dlat
    # Trips to the airports, and from the airports into Manhattan.
    dest = rng.random(n)
    to_jfk, to_lga, to_ewr = dest < 0.006, (dest >= 0.006) & (dest < 0.020), (dest >= 0.020) & (dest < 0.021)
    from_airport = at_jfk | at_lga
    mlon, mlat = _spots(rng, _MANHATTAN, n)
    dlon_[from_airport], dlat_[from_airport] = mlon[from_airport], mlat[from_airport]
    for mask, (lon, lat) in ((to_jfk, JFK), (to_lga, LGA), (to_ewr, EWR)):
        mask &= ~from_airport
        dlon_[mask], dlat_[mask] = lon + rng.normal(0, 0.003, mask.sum()), lat + rng.normal(0, 0.003, mask.sum())
    # About 1% of trips report no movement at all (meter run, GPS stuck).
    stuck = rng.random(n) < 0.011
    dlon_[stuck], dlat_[stuck] = plon[stuck], plat[stuck]

    # When: uniform over the years of the public table; hours follow the city's day.
    days = rng.integers(0, int((_END - _START).astype(int)), n)
    hour_w = np.array([3, 2, 1.5, 1, 0.8, 0.8, 1.5, 3, 4, 4, 4, 4, 4.5, 4.5, 4.5, 4.5, 4, 4.5, 5.5, 6, 5.5, 5, 5, 4.5])
    hours = rng.choice(24, size=n, p=hour_w / hour_w.sum())
    seconds = rng.integers(0, 3600, n)
    when = _START + days.astype("timedelta64[D]") + hours.astype("timedelta64[h]") + seconds.astype("timedelta64[s]")
    weekday = (days + 3) % 7  # 2009-01-01 was a Thursday (Monday = 0)
    after_hike = when >= _RATE_HIKE

    # The fare: flag drop, per-km rate, traffic, surcharges, tolls; flat fare for JFK-Manhattan.
    km = _haversine_km(plon, plat, dlon_, dlat_)
    rate = np.where(after_hike, 2.0, 1.75)
    rush = (weekday < 5) & (hours >= 16) & (hours < 20)
    traffic = np.exp(rng.normal(0.0, 0.25, n)) * np.where(rush, 1.12, 1.0) * np.where((hours >= 8) & (hours < 19), 1.08, 1.0)
    fare = 2.5 + rate * km * 1.0 * traffic + rng.exponential(0.8, n) + 0.5 * ((hours >= 20) | (hours < 6)) + 1.0 * rush * after_hike
    fare += np.where(rng.random(n) < 0.04, rng.exponential(4.0, n), 0.0)  # waiting in traffic
    tolls = (km > 12) & (rng.random(n) < 0.45)
    fare += tolls * np.where(after_hike, 5.33, 4.80)
    jfk_flat = (at_jfk | to_jfk) & (np.minimum(_haversine_km(plon, plat, *JFK), _haversine_km(dlon_, dlat_, *JFK)) < 3)
    jfk_flat &= (
        _haversine_km(
            np.where(at_jfk, dlon_, plon), np.where(at_jfk, dlat_, plat), np.full(n, schema.MIDTOWN[0]), np.full(n, schema.MIDTOWN[1])
        )
        < 12
    )
    fare[jfk_flat] = np.where(after_hike[jfk_flat], 52.0, 45.0) + 5.33 * (rng.random(jfk_flat.sum()) < 0.6)
    fare[to_ewr] += 17.5
    fare[stuck] = 2.5 + rng.exponential(6.0, stuck.sum())
    fare = np.maximum(np.round(fare * 10) / 10, schema.MIN_FARE)
    if not np.all(np.isfinite(fare)):  # pragma: no cover - the formula above cannot produce these
        raise AssertionError("non-finite fare generated")

    passengers = rng.choice(6, size=n, p=_PASSENGER_SHARES / _PASSENGER_SHARES.sum()) + 1
    return {
        schema.LABEL: fare,
        schema.DATETIME: when,
        "pickuplon": np.round(plon, 6),
        "pickuplat": np.round(plat, 6),
        "dropofflon": np.round(dlon_, 6),
        "dropofflat": np.round(dlat_, 6),
        schema.PASSENGERS: passengers,
        schema.KEY: np.arange(first_key, first_key + n),
    }


def _to_csv_lines(cols: dict[str, np.ndarray], variant: Variant) -> str:
    out: list[np.ndarray] = []
    for name in variant.columns:
        col = cols[name]
        if name == schema.DATETIME:
            text = np.char.replace(np.datetime_as_string(col, unit="s").astype(str), "T", " ")
            out.append(np.char.add(text, " UTC"))
        elif name in (schema.PASSENGERS, schema.KEY):
            out.append(col.astype(np.int64).astype(str))
        elif name == schema.LABEL:
            out.append(np.char.mod("%.2f", col))
        else:
            out.append(np.char.mod("%.6f", col))
    lines = out[0]
    for col_text in out[1:]:
        lines = np.char.add(np.char.add(lines, ","), col_text)
    return "\n".join(lines.tolist()) + "\n"


@dataclasses.dataclass
class Generated:
    """Where :func:`generate` wrote its splits and how many rows each holds."""

    paths: dict[str, str]
    rows: dict[str, int]
    seconds: float


SPLITS = ("train", "valid", "test")


def generate(
    rows: int,
    out_dir: str,
    *,
    seed: int,
    variant: Variant = Variant.LAB,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    chunk_rows: int = 200_000,
    progress: Callable[[str], None] | None = None,
) -> Generated:
    """Write ``rows`` synthetic trips as ``train.csv``, ``valid.csv``, ``test.csv`` in ``out_dir``.

    Each row goes to a split by a seeded draw, so the splits hold about ``fractions`` of
    the rows. Files are written beside their final names and renamed into place when
    complete: a crash leaves no partial CSV under a final name.

    Args:
        rows: total number of trips (at least 10).
        out_dir: directory to create or reuse.
        seed: random seed; the same seed gives the same files.
        variant: ``lab`` (7 columns) or ``datetime`` (with ``pickup_datetime``).
        fractions: shares of train, valid and test.
        chunk_rows: rows generated at a time (bounds memory).
        progress: called with a progress line every chunk, when given.

    Raises:
        ValueError: for fewer than 10 rows or fractions that do not sum to 1.
        InputError: ``out_dir`` cannot be created, or a ``<split>.csv`` in it is a directory.
    """
    if rows < 10:
        raise ValueError(f"--rows must be at least 10 (got {rows})")
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative shares summing to 1 (got {fractions})")
    for split in SPLITS:
        if os.path.isdir(os.path.join(out_dir, f"{split}.csv")):
            raise InputError(f"{os.path.join(out_dir, split + '.csv')} is a directory: move it away or write elsewhere")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {out_dir} ({exc.strerror}): pass a directory you can write to") from None
    start = time.monotonic()
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(SPLITS, 0)
    with contextlib.ExitStack() as stack:
        tmp = {s: stack.enter_context(open(atomic.temp_path(os.path.join(out_dir, f"{s}.csv")), "w")) for s in SPLITS}

        def remove_leftovers() -> None:  # after a crash, or the renamed files are already gone
            for fh in tmp.values():
                if os.path.exists(fh.name):
                    os.unlink(fh.name)

        stack.callback(remove_leftovers)
        done = 0
        while done < rows:
            n = min(chunk_rows, rows - done)
            cols = generate_chunk(rng, n, done)
            which = np.searchsorted(np.cumsum(fractions), rng.random(n), side="right").clip(0, 2)
            for i, split in enumerate(SPLITS):
                mask = which == i
                if mask.any():
                    tmp[split].write(_to_csv_lines({k: v[mask] for k, v in cols.items()}, variant))
                    counts[split] += int(mask.sum())
            done += n
            if progress:
                progress(f"generated {done:,}/{rows:,} rows ({done / rows:.0%}, {time.monotonic() - start:.1f}s)")
        paths = {}
        for split, fh in tmp.items():
            fh.close()
            paths[split] = os.path.join(out_dir, f"{split}.csv")
            atomic.publish(fh.name, paths[split])
    return Generated(paths=paths, rows=counts, seconds=time.monotonic() - start)


def main_progress(line: str) -> None:
    """Print a progress line to stderr (the CLI's progress callback)."""
    print(line, file=sys.stderr, flush=True)
