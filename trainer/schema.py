"""The data schema, defined once: columns, defaults, valid ranges and the serving contract.

The trainer, the ``stage_data`` step, the data generator and the server all import this
module, so what counts as a valid trip and what the model receives can never disagree.

Two CSV layouts (no header) are accepted:

* ``lab``: ``fare_amount, pickuplon, pickuplat, dropofflon, dropofflat, passengers, key``
  (the original Cloud ML Engine lab);
* ``datetime``: the later course variant, with ``pickup_datetime`` (``2011-01-28 20:42:59
  UTC``) as the second column.

The layout of a file is detected from the column count (7 or 8) of most of its first rows.
"""

from __future__ import annotations

import dataclasses
import enum

LABEL = "fare_amount"
KEY = "key"
DATETIME = "pickup_datetime"
COORDINATES = ("pickuplon", "pickuplat", "dropofflon", "dropofflat")
PASSENGERS = "passengers"
NUMERIC_FEATURES = (*COORDINATES, PASSENGERS)

#: ``pickup_datetime`` as written by BigQuery exports of the NYC trips table.
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
#: The same format as a regular expression (used by the in-graph parser and the validator).
DATETIME_REGEX = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}( UTC)?$"


class Variant(enum.StrEnum):
    """The two CSV layouts of the course."""

    LAB = "lab"
    DATETIME = "datetime"

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names in file order."""
        if self is Variant.DATETIME:
            return (LABEL, DATETIME, *NUMERIC_FEATURES, KEY)
        return (LABEL, *NUMERIC_FEATURES, KEY)

    @property
    def features(self) -> tuple[str, ...]:
        """Raw features the model (and the serving signature) receives."""
        if self is Variant.DATETIME:
            return (*NUMERIC_FEATURES, DATETIME)
        return NUMERIC_FEATURES

    @classmethod
    def from_column_count(cls, count: int) -> Variant:
        """The variant with ``count`` columns.

        Raises:
            ValueError: when no variant has that many columns.
        """
        for variant in cls:
            if len(variant.columns) == count:
                return variant
        raise ValueError(
            f"a taxi CSV row has {len(Variant.LAB.columns)} columns ({', '.join(Variant.LAB.columns)}) "
            f"or {len(Variant.DATETIME.columns)} (with {DATETIME} second), not {count}"
        )


#: Defaults per column, as ``tf.io.decode_csv`` record defaults expect them.
DEFAULTS: dict[str, float | str] = {
    LABEL: 0.0,
    DATETIME: "",
    "pickuplon": -74.0,
    "pickuplat": 40.7,
    "dropofflon": -74.0,
    "dropofflat": 40.7,
    PASSENGERS: 1.0,
    KEY: "",
}


@dataclasses.dataclass(frozen=True)
class Range:
    """A closed interval of valid values."""

    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        """Whether ``value`` lies in the interval."""
        return self.low <= value <= self.high


#: The course's own filters on the public trips table (longitude -78..-70, latitude 37..45):
#: anything outside is "far outside New York", typically the 0,0 of a broken GPS.
LON_RANGE = Range(-78.0, -70.0)
LAT_RANGE = Range(37.0, 45.0)
#: Yellow cabs seat at most 6 passengers (the real samples have 1..6); 0 is a data error.
PASSENGER_RANGE = Range(1.0, 9.0)
#: The flag-drop fare; anything lower is not a real trip.
MIN_FARE = 2.5
#: Fares above this are data errors (the real samples stop below 200).
MAX_FARE = 500.0

RANGES: dict[str, Range] = {
    "pickuplon": LON_RANGE,
    "pickuplat": LAT_RANGE,
    "dropofflon": LON_RANGE,
    "dropofflat": LAT_RANGE,
    PASSENGERS: PASSENGER_RANGE,
    LABEL: Range(MIN_FARE, MAX_FARE),
}


class Reason(enum.StrEnum):
    """Why a row was dropped. The order is the order in which rows are checked."""

    LINE_TOO_LONG = "line_too_long"
    NOT_UTF8 = "not_utf8"
    COLUMNS = "wrong_column_count"
    NOT_A_NUMBER = "not_a_number"
    BAD_DATETIME = "bad_datetime"
    OUTSIDE_NYC = "outside_nyc"
    BAD_PASSENGERS = "bad_passengers"
    FARE_TOO_LOW = "fare_below_minimum"
    FARE_TOO_HIGH = "fare_above_maximum"


#: Fixed normalisation of coordinates inside the model (NYC centre and a ~1 degree scale),
#: so the model needs no statistics pass over the data and training and serving agree.
NYC_CENTER_LON = -73.97
NYC_CENTER_LAT = 40.75
#: The model sees coordinates clipped to this box (lon, lat) and trip offsets and distances capped
#: at MAX_TRIP_KM, so a point far outside the trips it learned from (a GPS glitch such as the
#: 97 km, $12.90 trip to 41.37 N, -73.14 W in taxi-train.csv) gets the fare of the farthest trips
#: seen rather than a linear extrapolation: $4.23 -> $4.17 mean cross-validated RMSE (seed 1,
#: docs/quality.md). The box holds every plausible trip of the samples (Westchester up to 41.2 N,
#: Newark) and reaches past the location grid below, whose outside buckets keep their meaning.
CLIP_LON = Range(-74.3, -73.6)
CLIP_LAT = Range(40.45, 41.2)
MAX_TRIP_KM = 40.0
#: Bucket edges for the embedded pickup/dropoff location grid (about 2.5 km cells over
#: the five boroughs, plus one bucket on each side for the airports and beyond).
GRID_LON = tuple(round(-74.26 + 0.03 * i, 4) for i in range(18))
GRID_LAT = tuple(round(40.49 + 0.03 * i, 4) for i in range(15))
#: Location grid: one bucket per cell, plus the outside buckets on each side.
N_LON_BUCKETS = len(GRID_LON) + 1
N_LAT_BUCKETS = len(GRID_LAT) + 1
N_CELLS = N_LON_BUCKETS * N_LAT_BUCKETS
#: Pickup x dropoff cell pairs are hashed into this many bins.
N_CROSS_BINS = 20_011
N_HOURS = 24
N_DAYS = 7
#: The three airports (lon, lat): airport proximity features, the generator's airport trips.
AIRPORTS: dict[str, tuple[float, float]] = {"jfk": (-73.7781, 40.6413), "lga": (-73.8740, 40.7769), "ewr": (-74.1745, 40.6895)}
#: Midtown Manhattan (lon, lat): the generator's JFK flat-fare zone is measured from here.
MIDTOWN = (-73.98, 40.755)

#: The lab's ``test.json`` instance.
TEST_INSTANCE: dict[str, float] = {
    "pickuplon": -73.885262,
    "pickuplat": 40.773008,
    "dropofflon": -73.987232,
    "dropofflat": 40.732403,
    "passengers": 2,
}
#: The datetime variant of the same instance.
TEST_INSTANCE_DATETIME: dict[str, float | str] = {**TEST_INSTANCE, DATETIME: "2013-01-03 14:21:00 UTC"}
