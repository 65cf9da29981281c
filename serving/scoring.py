"""``taxifare versions --score FILE``: every version of a model scored on the same rows, side by side.

The RMSE each version recorded at deploy was measured on the test split of *its* run; two
such figures come from different rows and are not comparable. Scoring every version on one
file (the lab's CSV layouts) puts them on the same rows. Each version predicts with the
inputs its signature declares, so versions with other contracts are scored too when the file
has their columns (a datetime-layout file scores lab-layout versions as well).
"""

from __future__ import annotations

import dataclasses
import math
import os

from base import layout


@dataclasses.dataclass
class Score:
    """One version's errors on the file (``problem`` says why there are none)."""

    version: int
    routes: list[str]
    rmse: float = math.nan
    mae: float = math.nan
    bias: float = math.nan
    problem: str = ""


def score_versions(model_dir: str, pattern: str) -> tuple[int, list[Score]]:
    """``(rows, scores)``: every complete version under ``model_dir`` on the rows of ``pattern`` (newest first).

    Raises:
        InputError: the file is missing, empty or in no lab layout.
        LayoutError: the base path is not a directory or its labels file is unreadable.
    """
    import numpy as np
    import tensorflow as tf

    from base import storage
    from trainer.arrays import read_arrays

    files = storage.expand(pattern, what="--score data")
    _, feats, label = read_arrays(files)
    labels = layout.read_labels(model_dir)
    found = [v for v in layout.scan(model_dir) if v.complete]
    default = layout.default_version([v.version for v in found], labels)
    out = []
    for info in reversed(found):
        routes = (["default"] if info.version == default else []) + sorted(n for n, v in labels.items() if v == info.version)
        score = Score(info.version, routes)
        try:
            fn = tf.saved_model.load(info.path).signatures["serving_default"]
        except (OSError, ValueError, KeyError, tf.errors.OpError) as exc:
            score.problem = f"cannot be loaded ({type(exc).__name__})"
            out.append(score)
            continue
        needs = sorted(fn.structured_input_signature[1])
        missing = [name for name in needs if name not in feats]
        if missing:
            score.problem = f"needs {', '.join(missing)}, which the file lacks"
        else:
            pred = fn(**{k: tf.constant(feats[k]) for k in needs})["fare_amount"].numpy().astype(np.float64)
            err = pred - label
            score.rmse, score.mae, score.bias = (float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err))), float(np.mean(err)))
        out.append(score)
    return len(label), out


def format_scores(pattern: str, rows: int, scores: list[Score]) -> str:
    """The table of ``taxifare versions --score``."""
    if not scores:
        return "no versions to score (directories named 1, 2, ... holding saved_model.pb)"
    lines = [f"every version on the same {rows:,} rows of {os.path.basename(pattern) or pattern}:"]
    lines.append(f"{'VERSION':>7}  {'ROUTES':<16} {'RMSE':>8} {'MAE':>8} {'BIAS':>8}  PROBLEM")
    for s in scores:
        figures = " ".join(f"{'$' + format(v, '.3f') if math.isfinite(v) else '-':>8}" for v in (s.rmse, s.mae, s.bias))
        lines.append(f"{s.version:>7}  {','.join(s.routes) or '-':<16} {figures}  {s.problem}".rstrip())
    lines.append("BIAS: mean of predicted minus actual fare (positive: the version asks too much).")
    return "\n".join(lines)
