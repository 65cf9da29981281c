"""The gradient-boosted baseline: what a data scientist would try before a neural network.

scikit-learn's ``HistGradientBoostingRegressor`` on plain features computed with numpy from the
raw trip columns (the same columns the exported model takes). verify_export trains it on the
run's training split and reports its test RMSE beside the model's; ``bench/bench_quality.py``
cross-validates it against the network with this same definition. Heavy imports (numpy,
scikit-learn) happen inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

#: The settings measured on the real samples (docs/quality.md): 400 iterations at 0.05, with
#: scikit-learn's defaults otherwise (31 leaves, min 20 rows per leaf). No early stopping: it
#: would carve its own validation split out of the training rows and make the fit depend on it.
MAX_ITER = 400
LEARNING_RATE = 0.05
_KM_PER_DEG_LAT = 111.2

#: The plain features, in column order (hour and weekday follow when pickup_datetime is given).
PLAIN_FEATURES = (
    "pickuplon",
    "pickuplat",
    "dropofflon",
    "dropofflat",
    "passengers",
    "east_west_km",
    "north_south_km",
    "haversine_km",
    "manhattan_km",
    *(f"{end}_{airport}_km" for airport in ("jfk", "lga", "ewr") for end in ("pickup", "dropoff")),
)
DATETIME_FEATURES = ("hour", "weekday")


def plain_features(feats: dict[str, Any]) -> Any:
    """The baseline's feature matrix from raw trip columns.

    Args:
        feats: float arrays by column name (``pickuplon``, ``pickuplat``, ``dropofflon``,
            ``dropofflat``, ``passengers``), as ``evaluation.load_split`` returns them; when
            ``pickup_datetime`` is there (strings ``YYYY-MM-DD HH:MM:SS[ UTC]``), the hour of day
            and day of week (Monday = 0) are added as two more columns.

    Returns:
        A float64 array ``[rows, 15]`` (``[rows, 17]`` with the datetime), columns in the order
        of :data:`PLAIN_FEATURES` (then :data:`DATETIME_FEATURES`): the four coordinates,
        passengers, the east-west and north-south offsets in km, the straight-line (haversine)
        and Manhattan distances, and the pickup's and dropoff's distances to JFK, LaGuardia
        and Newark.
    """
    import numpy as np

    from trainer import geo, schema

    plon, plat, dlon, dlat = (np.asarray(feats[name], dtype=np.float64) for name in schema.COORDINATES)
    passengers = np.asarray(feats[schema.PASSENGERS], dtype=np.float64)
    cos_lat = math.cos(math.radians(schema.NYC_CENTER_LAT))
    dx = (dlon - plon) * _KM_PER_DEG_LAT * cos_lat
    dy = (dlat - plat) * _KM_PER_DEG_LAT
    cols = [plon, plat, dlon, dlat, passengers, dx, dy, geo.haversine_km(plon, plat, dlon, dlat, np), np.abs(dx) + np.abs(dy)]
    for lon, lat in schema.AIRPORTS.values():
        cols += [geo.haversine_km(plon, plat, lon, lat, np), geo.haversine_km(dlon, dlat, lon, lat, np)]
    if feats.get(schema.DATETIME) is not None:
        cols += list(_hour_and_weekday(feats[schema.DATETIME]))
    return np.stack(cols, axis=1)


def _hour_and_weekday(texts: Any) -> tuple[Any, Any]:
    """Hour of day and weekday (Monday = 0) of datetime strings; unparsable ones give hour 0, Monday."""
    import numpy as np

    hours, days = np.zeros(len(texts)), np.zeros(len(texts))
    for i, text in enumerate(texts):
        raw = text.decode() if isinstance(text, bytes) else str(text)
        try:
            when = dt.datetime.strptime(raw[:19], "%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
        hours[i], days[i] = when.hour, when.weekday()
    return hours, days


def fit_predict(train_feats: dict[str, Any], train_label: Any, test_feats: dict[str, Any], *, seed: int) -> Any:
    """Fit the gradient-boosted trees on the training rows; their fares for the test rows.

    Args:
        train_feats: raw training columns by name (see :func:`plain_features`).
        train_label: the training fares.
        test_feats: raw test columns by name, the same columns as ``train_feats``.
        seed: the trees' random state (only ties in the split search use it; the same seed
            and rows give the same predictions).

    Returns:
        The predicted fares, float64, one per test row.

    Raises:
        ValueError: when the training split holds no row.
    """
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingRegressor

    x_train = plain_features(train_feats)
    y_train = np.asarray(train_label, dtype=np.float64)
    if not len(y_train):
        raise ValueError("the gradient-boosted baseline needs training rows: the training split is empty")
    from threadpoolctl import threadpool_limits

    model = HistGradientBoostingRegressor(max_iter=MAX_ITER, learning_rate=LEARNING_RATE, early_stopping=False, random_state=seed)
    # One OpenMP thread: on a shared 2-core machine two spinning threads took 4-18 s where one takes 0.7 s (7,770 rows).
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(x_train, y_train)
        return model.predict(plain_features(test_feats)).astype(np.float64)
