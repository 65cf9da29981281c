"""Great-circle distance, written once for numpy arrays and TensorFlow tensors alike (no import here)."""

from __future__ import annotations

import math
from typing import Any

EARTH_RADIUS_KM = 6371.0


def haversine_km(lon1: Any, lat1: Any, lon2: Any, lat2: Any, xp: Any) -> Any:
    """Great-circle distance in km between points given in degrees.

    Args:
        lon1: longitude of the first points.
        lat1: latitude of the first points.
        lon2: longitude of the second points.
        lat2: latitude of the second points.
        xp: the array namespace: ``numpy`` or ``tf.math`` (anything with ``sin``, ``cos``,
            ``asin``, ``sqrt`` and ``minimum``).
    """
    rad = math.pi / 180.0
    h = xp.sin((lat2 - lat1) * rad / 2) ** 2 + xp.cos(lat1 * rad) * xp.cos(lat2 * rad) * xp.sin((lon2 - lon1) * rad / 2) ** 2
    return 2 * EARTH_RADIUS_KM * xp.asin(xp.sqrt(xp.minimum(h, 1.0)))
