import datetime as dt
import math

import numpy as np
import pytest
import tensorflow as tf

from trainer import features, schema
from trainer.schema import TEST_INSTANCE, Variant


def test_haversine_matches_a_known_distance():
    # JFK to LaGuardia is about 17.3 km as the crow flies.
    jfk, lga = features.AIRPORTS["jfk"], features.AIRPORTS["lga"]
    km = features.haversine_km(*(tf.constant([v], tf.float32) for v in (*jfk, *lga)))
    assert abs(float(km[0]) - 17.3) < 0.3


def test_hour_and_weekday_match_python():
    rng = np.random.default_rng(0)
    stamps = [dt.datetime(2009, 1, 1) + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 400_000_000, 200)]
    stamps += [dt.datetime(2012, 2, 29, 23, 59, 59), dt.datetime(2000, 3, 1), dt.datetime(2015, 12, 31, 0, 0, 1)]
    text = tf.constant([s.strftime("%Y-%m-%d %H:%M:%S UTC") for s in stamps])
    hour, weekday = features.parse_hour_and_weekday(text)
    assert hour.numpy().tolist() == [s.hour for s in stamps]
    assert weekday.numpy().tolist() == [s.weekday() for s in stamps]


def test_layer_outputs_for_the_lab_instance():
    layer = features.TaxiFeatures(Variant.LAB.value)
    out = layer({k: tf.constant([float(v)]) for k, v in TEST_INSTANCE.items()})
    assert set(out) == {"numeric", "pickup_cell", "dropoff_cell", "cell_cross"}
    numeric = out["numeric"].numpy()
    assert numeric.shape == (1, 16) and np.all(np.isfinite(numeric))
    lon1, lat1, lon2, lat2 = (math.radians(TEST_INSTANCE[k]) for k in ("pickuplon", "pickuplat", "dropofflon", "dropofflat"))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    expected_km = 2 * 6371.0 * math.asin(math.sqrt(h))  # about 9.7 km, Astoria to the East Village
    assert math.isclose(numeric[0, 0] * 10, expected_km, rel_tol=1e-4)
    assert 0 <= int(out["pickup_cell"][0]) < features.N_CELLS
    assert 0 <= int(out["cell_cross"][0]) < features.N_CROSS_BINS


def test_datetime_layer_adds_time_features():
    layer = features.TaxiFeatures(Variant.DATETIME.value)
    inputs = {k: tf.constant([float(v)]) for k, v in TEST_INSTANCE.items()}
    inputs["pickup_datetime"] = tf.constant(["2013-01-03 14:21:00 UTC"])
    out = layer(inputs)
    assert int(out["hour"][0]) == 14 and int(out["weekday"][0]) == 3  # a Thursday
    assert int(out["hour_weekday"][0]) == 14 * 7 + 3


def test_points_outside_the_box_are_clipped_and_distances_capped():
    # taxi-train.csv's GPS glitch: a 97 km, $12.90 trip to 41.37 N, -73.14 W. The model sees the
    # box's corner and a trip of at most MAX_TRIP_KM, not a point 8 units out on its coordinate scale.
    layer = features.TaxiFeatures(Variant.LAB.value)

    def numeric(dlon: float, dlat: float) -> np.ndarray:
        trip = {"pickuplon": -73.972443, "pickuplat": 40.762541, "dropofflon": dlon, "dropofflat": dlat, "passengers": 1.0}
        return layer({k: tf.constant([v]) for k, v in trip.items()})["numeric"].numpy()[0]

    glitch, corner = numeric(-73.137393, 41.366138), numeric(schema.CLIP_LON.high, schema.CLIP_LAT.high)
    np.testing.assert_array_equal(glitch, corner)
    assert glitch[0] * 10 == pytest.approx(schema.MAX_TRIP_KM)  # haversine, capped
    assert abs(glitch[3] * 10) <= schema.MAX_TRIP_KM  # north-south offset, capped
    inside = numeric(-73.85, 41.00)  # a Westchester trip inside the box (about 28 km) is left alone
    assert inside[0] * 10 < schema.MAX_TRIP_KM and not np.array_equal(inside, corner)
