"""Model quality by repeated k-fold cross-validation on the real samples, the same folds for every model.

The rows of ``--data`` (by default the real samples ``taxi-train.csv`` and ``taxi-valid.csv``,
9,435 trips, found in ``../shared/data/taxifare`` beside the checkout or ``$TAXIFARE_SAMPLES``)
are shuffled with each seed and cut into ``--folds`` folds; every model is trained on all folds
but one and scored on the held-out fold, for every fold and every seed, so all models see the
very same training and test rows. Models (``--models``):

* ``net``: the project's model with the trainer's defaults (``trainer.model.train_and_evaluate``
  with ``TrainConfig`` defaults, as the pipeline trains it), scored through its exported
  SavedModel's ``serving_default`` signature. The held-out fold is its evaluation data, but it
  is evaluated only once, at the last step (``eval_every_steps = train_steps``), so the
  exported model is the last step's and the held-out rows choose nothing.
  ``--net NAME:key=value,...`` adds variants with ``TrainConfig`` fields changed
  (``--net wide:hidden_units=128/64,train_steps=8000``);
* ``gbt``: the gradient-boosted baseline (``components/verify_export/baseline.py``, scikit-learn's
  ``HistGradientBoostingRegressor`` on 15 plain features), the one verify_export reports;
* ``linear``: least squares of the fare on the haversine distance (the samples' README baseline);
* ``rule``: the course's rule, 2.616 $/km x haversine distance;
* ``mean``: the training folds' mean fare.

Per fold: RMSE, MAE and the trimmed RMSE, the RMSE without the largest 0.5% absolute errors of
that model on that fold (``--trim``; 8 of ~1,900 rows with 5 folds), which shows the bulk of the
trips without the few trips whose fares no feature explains. The table gives the mean and the
standard deviation over all folds x seeds, and each model's paired difference in RMSE against
``gbt`` over the same folds (mean, standard deviation and folds won).

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/bench_quality.py`` (``--quick`` for a smoke run);
``--help`` lists the flags. Figures go to docs/quality.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("TAXIFARE_SAMPLES", ROOT.parent / "shared" / "data" / "taxifare"))
DEFAULT_DATA = ("taxi-train.csv", "taxi-valid.csv")
ALL_MODELS = ("net", "gbt", "linear", "rule", "mean")
DEFAULT_MODELS = ("net", "gbt", "linear", "rule")
REFERENCE = "gbt"
_T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class Rows:
    """The raw CSV lines of every data file, in one list, and the layout they share."""

    lines: list[str]
    variant: Any


def load_rows(paths: Sequence[Path]) -> Rows:
    from trainer import validation

    lines: list[str] = []
    variant = None
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"bench_quality: data file {path} is missing: pass --data FILE..., or set TAXIFARE_SAMPLES")
        file_variant = validation.detect_variant(str(path))
        if variant is not None and file_variant is not variant:
            raise SystemExit(f"bench_quality: {path} is in the {file_variant.value} layout, the others in {variant.value}: use one layout")
        variant = file_variant
        lines += [line for line in path.read_text().splitlines() if line.strip()]
    return Rows(lines, variant)


def folds_of(n: int, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint index arrays covering ``range(n)``, shuffled with ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


@dataclasses.dataclass
class Split:
    """One fold: its files on disk (for the trainer) and its columns (for the other models)."""

    train_csv: str
    test_csv: str
    train_feats: dict[str, Any]
    train_label: np.ndarray
    test_feats: dict[str, Any]
    test_label: np.ndarray


def make_split(rows: Rows, test_idx: np.ndarray, work: str) -> Split:
    from components.verify_export.evaluation import load_split

    mask = np.zeros(len(rows.lines), dtype=bool)
    mask[test_idx] = True
    dirs = {}
    for name, keep in (("train", ~mask), ("test", mask)):
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "part.csv"), "w") as fh:
            fh.writelines(line + "\n" for line, k in zip(rows.lines, keep, strict=True) if k)
        dirs[name] = d
    _, train_feats, train_label = load_split(dirs["train"])
    _, test_feats, test_label = load_split(dirs["test"])
    return Split(
        os.path.join(dirs["train"], "part.csv"), os.path.join(dirs["test"], "part.csv"), train_feats, train_label, test_feats, test_label
    )


# --------------------------------------------------------------------------- models


def parse_net(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME:key=value,key=value`` -> (name, TrainConfig overrides); ``128/64`` is a tuple of ints."""
    from trainer.config import TrainConfig

    name, _, rest = spec.partition(":")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(
                f"bench_quality: --net {spec}: {item!r} is not key=value with a TrainConfig field ({', '.join(sorted(fields))})"
            )
        value: Any
        if "/" in raw:
            value = tuple(int(v) for v in raw.split("/"))
        else:
            try:
                value = int(raw)
            except ValueError:
                value = float(raw)
        overrides[key] = value
    if not name or name in ALL_MODELS:
        raise SystemExit(f"bench_quality: --net {spec}: give the variant a name other than {', '.join(ALL_MODELS)} (NAME:key=value,...)")
    return name, overrides


def train_net(split: Split, work: str, seed: int, overrides: dict[str, Any]) -> np.ndarray:
    """Train with the project's trainer (defaults + ``overrides``) and predict through the export."""
    import tensorflow as tf

    from trainer.config import TrainConfig
    from trainer.model import train_and_evaluate

    config = TrainConfig(train_data_paths=split.train_csv, eval_data_paths=split.test_csv, output_dir=work, seed=seed, **overrides)
    config.eval_every_steps = config.train_steps  # one evaluation, at the end: the held-out fold chooses nothing
    config.early_stopping_patience = 0
    config.validate_data = False  # the samples are clean; the validation pass would only cost time
    result = train_and_evaluate(config, progress=lambda _line: None)
    if result.metrics["exported_step"] != config.train_steps:
        raise SystemExit(f"bench_quality: the trainer exported step {result.metrics['exported_step']}, not the last one")
    fn = tf.saved_model.load(result.export_dir).signatures["serving_default"]
    inputs = {
        name: tf.constant(col.astype(str) if col.dtype == object else col, dtype=tf.string if col.dtype == object else tf.float32)
        for name, col in split.test_feats.items()
    }
    return fn(**inputs)["fare_amount"].numpy().astype(np.float64).reshape(-1)


def predict(model: str, split: Split, work: str, seed: int, nets: dict[str, dict[str, Any]]) -> np.ndarray:
    from components.verify_export import baseline
    from components.verify_export.evaluation import distance_rule
    from trainer import geo

    if model in nets:
        return train_net(split, work, seed, nets[model])
    if model == "gbt":
        return baseline.fit_predict(split.train_feats, split.train_label, split.test_feats, seed=seed)
    if model == "linear":

        def km(f: dict[str, Any]) -> np.ndarray:
            return geo.haversine_km(*(f[c].astype(np.float64) for c in ("pickuplon", "pickuplat", "dropofflon", "dropofflat")), np)

        a = np.stack([np.ones(len(split.train_label)), km(split.train_feats)], axis=1)
        coef, *_ = np.linalg.lstsq(a, split.train_label, rcond=None)
        return coef[0] + coef[1] * km(split.test_feats)
    if model == "rule":
        return np.asarray(distance_rule(split.test_feats), dtype=np.float64)
    if model == "mean":
        return np.full(len(split.test_label), float(np.mean(split.train_label)))
    raise SystemExit(f"bench_quality: unknown model {model!r}: choose from {', '.join(ALL_MODELS)} or a --net variant")


# --------------------------------------------------------------------------- scores


def scores(pred: np.ndarray, label: np.ndarray, trim: float) -> dict[str, float]:
    err = pred - label
    kept = np.sort(np.abs(err))[: len(err) - math.ceil(trim * len(err))] if trim else np.abs(err)
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "trimmed_rmse": float(np.sqrt(np.mean(kept**2))),
    }


def mean_sd(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def table(results: dict[str, list[dict[str, float]]], trim: float) -> list[str]:
    out = [
        f"| model | RMSE | MAE | RMSE without the largest {trim:.1%} errors | RMSE - {REFERENCE}'s (paired) "
        f"| folds better than {REFERENCE} | seconds per fold |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ref = results.get(REFERENCE)
    for model, folds in results.items():
        rmse = [f["rmse"] for f in folds]
        if ref and model != REFERENCE:
            diff = [a - b["rmse"] for a, b in zip(rmse, ref, strict=True)]
            paired, won = mean_sd(diff), f"{sum(d < 0 for d in diff)}/{len(diff)}"
        else:
            paired, won = "", ""
        row = [mean_sd(rmse), mean_sd([f["mae"] for f in folds]), mean_sd([f["trimmed_rmse"] for f in folds]), paired, won]
        out.append(f"| {model} | " + " | ".join(row) + f" | {statistics.fmean(f['seconds'] for f in folds):.1f} |")
    return out


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), platform.processor())
    except OSError:
        return platform.processor() or "unknown CPU"


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="See the module docstring (and docs/quality.md) for the protocol."
    )
    p.add_argument(
        "--data",
        nargs="+",
        type=Path,
        help="CSV files whose rows are pooled and cross-validated, one layout (default: taxi-train.csv and taxi-valid.csv "
        "from ../shared/data/taxifare beside the checkout, or $TAXIFARE_SAMPLES)",
    )
    p.add_argument("--folds", type=int, default=5, help="folds per seed (default 5: each model trains on 80%% of the rows)")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2, 3], help="one shuffle of the folds per seed; the models use it too (default 1 2 3)"
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"models to score, in table order: {', '.join(ALL_MODELS)} and --net variants' names "
        f"(default: {' '.join(DEFAULT_MODELS)} and every --net variant)",
    )
    p.add_argument(
        "--net",
        action="append",
        default=[],
        metavar="NAME:key=value,...",
        help="a variant of the network with TrainConfig fields changed, e.g. big:hidden_units=128/64,train_steps=8000 (repeatable)",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="training steps of every network (default: the trainer's default, TrainConfig.train_steps)"
    )
    p.add_argument(
        "--trim",
        type=float,
        default=0.005,
        help="share of each fold's largest absolute errors left out of the trimmed RMSE (default 0.005)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 2 folds, seed 1, 300 network steps (seconds; the figures mean nothing)")
    p.add_argument("--json", type=Path, default=None, help="also write every fold's scores to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.folds, args.seeds, args.steps = 2, [1], args.steps or 300
    if args.folds < 2:
        p.error(f"--folds must be 2 or more (got {args.folds})")
    if not 0 <= args.trim < 0.5:
        p.error(f"--trim must be in [0, 0.5) (got {args.trim})")
    if args.steps is not None and args.steps <= 0:
        p.error(f"--steps must be positive (got {args.steps})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    nets: dict[str, dict[str, Any]] = {"net": {}}
    for spec in args.net:
        name, overrides = parse_net(spec)
        nets[name] = overrides
    for overrides in nets.values():
        if args.steps is not None:
            overrides.setdefault("train_steps", args.steps)
    models = args.models or [*DEFAULT_MODELS, *(n for n in nets if n != "net")]
    unknown = [m for m in models if m not in ALL_MODELS and m not in nets]
    if unknown:
        raise SystemExit(
            f"bench_quality: unknown model {', '.join(unknown)}: choose from {', '.join(ALL_MODELS)} or a --net variant's name"
        )
    rows = load_rows(args.data or [SAMPLES / name for name in DEFAULT_DATA])
    say(f"{len(rows.lines):,} rows ({rows.variant.value} layout); {args.folds} folds x seeds {args.seeds}; models {', '.join(models)}")
    for name, overrides in nets.items():
        if name in models:
            say(f"  {name}: TrainConfig defaults" + (f" with {overrides}" if overrides else ""))
    results: dict[str, list[dict[str, float]]] = {m: [] for m in models}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as work:
        for seed in args.seeds:
            for k, test_idx in enumerate(folds_of(len(rows.lines), args.folds, seed)):
                split = make_split(rows, test_idx, os.path.join(work, f"s{seed}-f{k}"))
                for model in models:
                    t0 = time.monotonic()
                    pred = predict(model, split, os.path.join(work, f"s{seed}-f{k}-{model}"), seed, nets)
                    s = {**scores(pred, split.test_label, args.trim), "seconds": time.monotonic() - t0, "seed": seed, "fold": k}
                    results[model].append(s)
                    say(
                        f"seed {seed} fold {k + 1}/{args.folds} {model:>8}: RMSE {s['rmse']:.3f}  MAE {s['mae']:.3f}  "
                        f"trimmed {s['trimmed_rmse']:.3f}  ({s['seconds']:.1f}s)"
                    )
    print(
        f"\n{len(rows.lines):,} rows, {args.folds} folds x seeds {' '.join(map(str, args.seeds))} "
        f"({args.folds * len(args.seeds)} folds per model, the same for every model); mean ± standard deviation over folds"
    )
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, {cpu_model()}; load average {os.getloadavg()[0]:.1f} at the end\n"
    )
    print("\n".join(table(results, args.trim)))
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "nets": nets, "folds": results}, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # After a dozen training runs in one process the interpreter's exit once waited forever on
    # TensorFlow's threads (all in futex waits); everything is printed and written by now, so leave
    # without the interpreter's teardown, as trainer/task.py's run() does for the same reason.
    os._exit(code)
