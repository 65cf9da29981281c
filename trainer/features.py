"""Feature engineering that lives inside the exported model.

Serving receives the raw features of the lab's ``test.json``; everything derived from them
(trip distance, deltas, location buckets and their crosses, hour of day and day of week) is
computed here, in the graph, so training and serving can never disagree. Coordinates are
clipped to ``schema.CLIP_LON``/``CLIP_LAT`` and distances capped at ``schema.MAX_TRIP_KM``
first, so the network does not extrapolate to points no trip it learned from came near.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from trainer import geo, schema
from trainer.schema import Variant

_KM_PER_DEG_LAT = 111.2
AIRPORTS = schema.AIRPORTS
N_LON_BUCKETS, N_LAT_BUCKETS, N_CELLS = schema.N_LON_BUCKETS, schema.N_LAT_BUCKETS, schema.N_CELLS
N_CROSS_BINS, N_HOURS, N_DAYS = schema.N_CROSS_BINS, schema.N_HOURS, schema.N_DAYS


def haversine_km(lon1: tf.Tensor, lat1: tf.Tensor, lon2: tf.Tensor, lat2: tf.Tensor) -> tf.Tensor:
    """Great-circle distance in km between two points given in degrees (see :mod:`trainer.geo`)."""
    return geo.haversine_km(lon1, lat1, lon2, lat2, tf.math)


def parse_hour_and_weekday(text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Hour of day (0-23) and day of week (Monday = 0) of ``YYYY-MM-DD HH:MM:SS[ UTC]`` strings.

    Malformed strings give hour 0 and Monday rather than failing the batch (the validator
    has dropped such rows before training; serving validates its input).
    """
    ok = tf.strings.regex_full_match(text, schema.DATETIME_REGEX)
    safe = tf.where(ok, text, "2000-01-03 00:00:00")

    def field(pos: int, length: int) -> tf.Tensor:
        return tf.strings.to_number(tf.strings.substr(safe, pos, length), tf.int32)

    year, month, day, hour = field(0, 4), field(5, 2), field(8, 2), field(11, 2)
    # Days since 1970-01-01 (Howard Hinnant's days_from_civil), then the weekday.
    y = year - tf.cast(month <= 2, tf.int32)
    era = tf.math.floordiv(y, 400)
    yoe = y - era * 400
    mp = tf.math.floormod(month + 9, 12)
    doy = tf.math.floordiv(153 * mp + 2, 5) + day - 1
    doe = yoe * 365 + tf.math.floordiv(yoe, 4) - tf.math.floordiv(yoe, 100) + doy
    days = era * 146097 + doe - 719468
    weekday = tf.math.floormod(days + 3, 7)  # 1970-01-01 was a Thursday
    return tf.clip_by_value(hour, 0, 23), weekday


@keras.saving.register_keras_serializable(package="taxifare")
class TaxiFeatures(keras.layers.Layer):
    """Raw trip features -> engineered features.

    Output: a dict with ``numeric`` (float32, [batch, k]) and integer ids for the embedded
    categorical features: ``pickup_cell``, ``dropoff_cell``, ``cell_cross`` and, for the
    datetime variant, ``hour``, ``weekday`` and ``hour_weekday``.
    """

    def __init__(self, variant: str = Variant.LAB.value, **kwargs: Any) -> None:
        """Create the layer for the given data variant (``lab`` or ``datetime``)."""
        super().__init__(**kwargs)
        self.variant = Variant(variant)

    def get_config(self) -> dict[str, Any]:
        """Keras config (for saving)."""
        return {**super().get_config(), "variant": self.variant.value}

    def call(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Compute the features of a batch."""
        lon_box, lat_box = schema.CLIP_LON, schema.CLIP_LAT
        plon = tf.clip_by_value(tf.cast(inputs["pickuplon"], tf.float32), lon_box.low, lon_box.high)
        plat = tf.clip_by_value(tf.cast(inputs["pickuplat"], tf.float32), lat_box.low, lat_box.high)
        dlon = tf.clip_by_value(tf.cast(inputs["dropofflon"], tf.float32), lon_box.low, lon_box.high)
        dlat = tf.clip_by_value(tf.cast(inputs["dropofflat"], tf.float32), lat_box.low, lat_box.high)
        passengers = tf.cast(inputs[schema.PASSENGERS], tf.float32)

        cap = schema.MAX_TRIP_KM  # no extrapolation past the farthest trips (schema.MAX_TRIP_KM)
        km = tf.minimum(haversine_km(plon, plat, dlon, dlat), cap)
        cos_lat = math.cos(math.radians(schema.NYC_CENTER_LAT))
        dx = tf.clip_by_value((dlon - plon) * _KM_PER_DEG_LAT * cos_lat, -cap, cap)
        dy = tf.clip_by_value((dlat - plat) * _KM_PER_DEG_LAT, -cap, cap)
        numeric = [
            km / 10.0,
            tf.math.log1p(km),
            dx / 10.0,
            dy / 10.0,
            tf.abs(dx) / 10.0 + tf.abs(dy) / 10.0,  # Manhattan distance
            (plon - schema.NYC_CENTER_LON) * 10.0,
            (plat - schema.NYC_CENTER_LAT) * 10.0,
            (dlon - schema.NYC_CENTER_LON) * 10.0,
            (dlat - schema.NYC_CENTER_LAT) * 10.0,
            (passengers - 1.0) / 5.0,
        ]
        for lon, lat in AIRPORTS.values():
            for px, py in ((plon, plat), (dlon, dlat)):
                numeric.append(tf.exp(-haversine_km(px, py, tf.fill(tf.shape(px), lon), tf.fill(tf.shape(py), lat)) / 2.0))

        def cell(lon: tf.Tensor, lat: tf.Tensor) -> tf.Tensor:
            bx = tf.raw_ops.Bucketize(input=lon, boundaries=list(schema.GRID_LON))
            by = tf.raw_ops.Bucketize(input=lat, boundaries=list(schema.GRID_LAT))
            return bx * N_LAT_BUCKETS + by

        pickup, dropoff = cell(plon, plat), cell(dlon, dlat)
        out = {
            "pickup_cell": pickup,
            "dropoff_cell": dropoff,
            "cell_cross": tf.math.floormod(pickup * N_CELLS + dropoff, N_CROSS_BINS),
        }
        if self.variant is Variant.DATETIME:
            hour, weekday = parse_hour_and_weekday(inputs[schema.DATETIME])
            out["hour"] = hour
            out["weekday"] = weekday
            out["hour_weekday"] = hour * N_DAYS + weekday
        out["numeric"] = tf.stack(numeric, axis=1)
        return out
