"""The champion: the model a candidate must beat, found and scored on the candidate's own test rows.

Locally the champion is the version the default route of ``serving_root/model_name`` serves
(:func:`base.layout.comparison_order`: ``stable``, else the newest complete version); when
that one cannot be loaded, the next newest that can. On Vertex it is the model taking the
largest share of the endpoint's traffic (its SavedModel read through the ``/gcs/`` mount), or
only its RMSE recorded at deploy when the SavedModel cannot be read.

A version that cannot be loaded or run is **broken** (skipped and named). A version whose
signature differs from the candidate's is not broken: it is the champion with another
contract (:mod:`components.verify_export.gate`); it is scored on the same rows when the test split has
every input it needs.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from base import layout
from components.common import local_path


@dataclasses.dataclass
class Champion:
    """The model the candidate is compared with (``name`` '' when there is none)."""

    name: str = ""
    #: Its version number locally (``None`` on Vertex or when there is none).
    version: int | None = None
    #: Its serving signature (``None`` when unknown).
    signature: dict[str, Any] | None = None
    #: Its predictions of the candidate's test rows (``None`` when it could not predict them).
    pred: Any = None
    rmse: float | None = None
    #: ``rmse`` is the figure recorded at deploy (other rows), not a score on these rows.
    recorded: bool = False
    #: Why it has no predictions of these rows, when it has none ("it needs input pickup_datetime ...").
    not_scored: str = ""
    #: Versions skipped because they cannot be loaded or run: ``"version 3: cannot be loaded (...)"``.
    broken: list[str] = dataclasses.field(default_factory=list)
    #: Where it serves, in words (for the contract's verdict).
    route: str = "served by the default route"

    @property
    def found(self) -> bool:
        """Whether there is a champion at all."""
        return bool(self.name) or self.recorded


def _load(path: str) -> Any:
    import tensorflow as tf

    try:
        return tf.saved_model.load(path).signatures["serving_default"]
    except (OSError, ValueError, KeyError, tf.errors.OpError) as exc:
        raise ValueError(f"cannot be loaded ({type(exc).__name__}: {str(exc)[:200]})") from None


def score(path: str, feats: dict[str, Any], label: Any, name: str) -> Champion:
    """Load the SavedModel at ``path`` and predict the test rows with the inputs it declares.

    Raises:
        ValueError: when it is broken (cannot be loaded, cannot predict, a non-finite RMSE).
    """
    import tensorflow as tf

    from components.verify_export.evaluation import predict, rmse
    from components.verify_export.gate import read_signature

    fn = _load(path)
    try:
        signature = read_signature(path)
    except ValueError as exc:
        raise ValueError(f"cannot be loaded ({exc})") from None
    champ = Champion(name, signature=signature)
    missing = sorted(set(signature["inputs"]) - set(feats))
    if missing:
        champ.not_scored = f"it needs input {', '.join(missing)}, which this test split lacks: its RMSE is not comparable"
        return champ
    try:
        champ.pred = predict(fn, {k: feats[k] for k in signature["inputs"]})
    except (ValueError, TypeError, tf.errors.OpError) as exc:
        raise ValueError(f"cannot predict ({type(exc).__name__}: {str(exc)[:200]})") from None
    champ.rmse = rmse(champ.pred, label)
    if not math.isfinite(champ.rmse):
        raise ValueError("scores a non-finite RMSE")
    return champ


def find(feats: dict[str, Any], label: Any, *, serving_root: str, model_name: str, uri: str = "", recorded_rmse: float = -1.0) -> Champion:
    """The champion and its predictions of the test rows (see the module doc)."""
    broken: list[str] = []
    if uri:
        path = local_path(uri)
        name = "the endpoint's model"
        if os.path.exists(os.path.join(path, layout.SAVED_MODEL)):
            try:
                champ = score(path, feats, label, name)
                champ.route = f"taking the endpoint's traffic, from {uri}"
                return champ
            except ValueError as exc:
                broken.append(f"{name} ({uri}): {exc}")
        if recorded_rmse >= 0:
            return Champion("the deployed model", rmse=recorded_rmse, recorded=True, broken=broken)
        return Champion(broken=broken)
    if not serving_root:
        return Champion()
    model_dir = os.path.join(serving_root, model_name)
    found = layout.scan(model_dir)
    try:
        labels = layout.read_labels(model_dir)
    except layout.LayoutError:
        labels = {}
    broken += [f"version {v.version}: {v.problem}" for v in found if not v.complete]
    for info in layout.comparison_order(found, labels):
        try:
            champ = score(info.path, feats, label, f"version {info.version}")
        except ValueError as exc:
            broken.append(f"version {info.version}: {exc}")
            continue
        champ.version, champ.broken = info.version, broken
        return champ
    return Champion(broken=broken)
