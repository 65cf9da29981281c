"""Trainer benchmark: training throughput against a naive Keras baseline and the CSV parse limit.

In one run, on the same generated ``train.csv`` (``--rows``, 1M by default):

* **trainer**: the real training loop, ``trainer.model.train_and_evaluate`` with
  ``validate_data=False`` (the validation pass, ``trainer.validation.scan``, is timed
  separately). Reported as the steady-state rate (the per-loop rates of the progress lines
  after ``--warmup-steps``, which drops tf.function tracing and the shuffle-buffer fill) and
  as the ``examples_per_second`` the trainer writes to ``metrics.json`` (whole loop,
  tracing, checkpoints and periodic evaluations included);
* **naive**: the same model (``trainer.model.build_model``) compiled with Adam/MSE and
  trained by ``model.fit`` on ``tf.data.experimental.make_csv_dataset`` with its defaults,
  for the same number of steps, timed per batch after the same warm-up;
* **parse limit**: ``pyarrow.csv.read_csv`` of the same file (best of 3), rows/s.

Then peak memory: ``python -m trainer.task`` in a fresh process on ``--memory-rows`` (10M)
training rows, with the validation pass and enough steps to see every row once; the peak
RSS of that process must stay under 1.5 GB.

Run: ``.venv/bin/python bench/bench_trainer.py`` (``make bench``); ``--help`` lists the flags.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer import schema, synthetic
from trainer.schema import Variant

BATCH = 512
#: Share of generated rows that go to train.csv; the rest to valid.csv (the trainer needs
#: evaluation data); test.csv gets none.
TRAIN_SHARE = 0.98
MEMORY_LIMIT_BYTES = 1_500_000_000  # 1.5 GB (decimal: the stricter reading)
_STEP_LINE = re.compile(r"^step (\d+)/\d+ .* ([\d,]+) examples/s$")
_T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def _throttled(fn: Callable[[str], None], seconds: float) -> Callable[[str], None]:
    """``fn``, called at most every ``seconds`` (and for lines reporting 100%)."""
    last = [-math.inf]

    def call(line: str) -> None:
        if time.monotonic() - last[0] >= seconds or "(100%" in line:
            last[0] = time.monotonic()
            fn(line)

    return call


def ensure_data(out_dir: str, train_rows: int, seed: int) -> dict[str, Any]:
    """Generate about ``train_rows`` training rows (plus a small valid.csv) in ``out_dir``, or reuse them."""
    meta_path = os.path.join(out_dir, "bench-data.json")
    wanted = {"train_rows_requested": train_rows, "seed": seed, "train_share": TRAIN_SHARE}
    if os.path.exists(meta_path):
        with open(meta_path) as fh:
            meta = json.load(fh)
        if {k: meta.get(k) for k in wanted} == wanted and all(os.path.exists(p) for p in meta["paths"].values()):
            say(f"reusing {meta['rows']['train']:,} training rows in {out_dir} (seed {seed})")
            return meta
    total = math.ceil(train_rows / TRAIN_SHARE)
    say(f"generating {total:,} rows into {out_dir} (seed {seed}) ...")
    gen = synthetic.generate(
        total, out_dir, seed=seed, fractions=(TRAIN_SHARE, 1 - TRAIN_SHARE, 0.0), chunk_rows=250_000, progress=_throttled(say, 10.0)
    )
    os.unlink(gen.paths.pop("test"))  # empty: not needed
    meta = {
        **wanted,
        "paths": gen.paths,
        "rows": {k: gen.rows[k] for k in gen.paths},
        "bytes": {k: os.path.getsize(p) for k, p in gen.paths.items()},
        "seconds": gen.seconds,
    }
    with open(meta_path, "w") as fh:
        json.dump(meta, fh, indent=2)
    say(f"generated in {gen.seconds:.0f}s: train.csv {meta['rows']['train']:,} rows ({meta['bytes']['train'] / 1e6:.0f} MB)")
    return meta


# --------------------------------------------------------------------------- measurements


def measure_parse(path: str, repeats: int = 3) -> dict[str, Any]:
    """pyarrow.csv.read_csv of the whole file: the parse-only limit (best of ``repeats``)."""
    import pyarrow.csv as pacsv

    best, rows = math.inf, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=list(Variant.LAB.columns)))
        best = min(best, time.perf_counter() - t0)
        rows = table.num_rows
        del table
    say(f"parse limit: pyarrow read_csv {rows:,} rows in {best:.2f}s = {rows / best:,.0f} rows/s")
    return {"rows": rows, "seconds": best, "rows_per_second": rows / best}


def measure_validation(path: str) -> dict[str, Any]:
    """The trainer's validation pass (trainer.validation.scan) over the file."""
    from trainer import validation

    t0 = time.perf_counter()
    report = validation.scan([path], what="training data", max_bad_fraction=None, variant=Variant.LAB)
    dt = time.perf_counter() - t0
    say(f"validation pass: {report.rows:,} rows ({report.bad:,} bad) in {dt:.2f}s = {report.rows / dt:,.0f} rows/s")
    return {"rows": report.rows, "bad": report.bad, "seconds": dt, "rows_per_second": report.rows / dt}


def _steady_rate(rates: list[float]) -> float:
    """Mean rate over loops of equal example counts (harmonic mean of the per-loop rates)."""
    return len(rates) / sum(1.0 / r for r in rates) if rates else math.nan


def measure_trainer(data: dict[str, Any], steps: int, warmup: int, seed: int, workdir: str) -> dict[str, Any]:
    """The real training loop (train_and_evaluate, validate_data=False)."""
    from trainer.model import TrainConfig, train_and_evaluate

    out = tempfile.mkdtemp(prefix="trainer-run-", dir=workdir)
    loops: list[tuple[int, float]] = []

    def progress(line: str) -> None:
        m = _STEP_LINE.match(line)
        if m:
            loops.append((int(m.group(1)), float(m.group(2).replace(",", ""))))
            if len(loops) % 10 == 0:
                say(f"  trainer: {line}")
        else:
            say(f"  trainer: {line}")

    config = TrainConfig(
        train_data_paths=data["paths"]["train"],
        eval_data_paths=data["paths"]["valid"],
        output_dir=out,
        train_steps=steps,
        batch_size=BATCH,
        seed=seed,
        validate_data=False,
    )
    say(f"trainer: {steps} steps of {BATCH} (steps_per_loop {config.steps_per_loop}) ...")
    t0 = time.perf_counter()
    result = train_and_evaluate(config, progress=progress)
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    # A loop whose first step comes after the warm-up (rates are per loop of steps_per_loop steps).
    steady = [rate for step, rate in loops if step - config.steps_per_loop >= warmup]
    m = result.metrics
    res = {
        "steps": m["steps"],
        "examples": m["train_examples_this_run"],
        "train_seconds": m["train_seconds"],
        "metrics_examples_per_second": m["examples_per_second"],
        "steady_examples_per_second": _steady_rate(steady),
        "steady_loops": len(steady),
        "first_loop_examples_per_second": loops[0][1] if loops else math.nan,
        "wall_seconds_incl_startup_eval_export": wall,
        "eval_rmse": m["rmse"],
    }
    say(
        f"trainer: steady {res['steady_examples_per_second']:,.0f} ex/s over {len(steady)} loops; "
        f"metrics.json {m['examples_per_second']:,.0f} ex/s over {m['train_seconds']:.1f}s; eval RMSE {m['rmse']:.2f}"
    )
    return res


def measure_naive(data: dict[str, Any], steps: int, warmup: int, seed: int) -> dict[str, Any]:
    """The same model trained by model.fit on make_csv_dataset (library defaults)."""
    import keras
    import tensorflow as tf

    from trainer.model import TrainConfig, build_model

    keras.utils.set_random_seed(seed)
    model = build_model(Variant.LAB, TrainConfig(train_data_paths="", eval_data_paths="", output_dir="unused"))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.003), loss="mse")
    ds = tf.data.experimental.make_csv_dataset(
        data["paths"]["train"],
        batch_size=BATCH,
        column_names=list(Variant.LAB.columns),
        label_name=schema.LABEL,
        select_columns=[schema.LABEL, *schema.NUMERIC_FEATURES],  # drops `key`
        header=False,
        num_epochs=None,
        shuffle=True,
        shuffle_seed=seed,
    )
    ds = ds.map(lambda x, y: ({k: tf.cast(v, tf.float32) for k, v in x.items()}, tf.cast(y, tf.float32)))

    class BatchTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.ends.append(time.perf_counter())
            if len(self.ends) % 1000 == 0:
                say(f"  naive: batch {len(self.ends)}/{steps}")

    timer = BatchTimer()
    say(f"naive: model.fit on make_csv_dataset, {steps} steps of {BATCH} ...")
    t0 = time.perf_counter()
    hist = model.fit(ds, epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    wall = time.perf_counter() - t0
    ends = timer.ends
    w = min(warmup, len(ends) - 2)
    steady = (len(ends) - 1 - w) * BATCH / (ends[-1] - ends[w])
    res = {
        "steps": len(ends),
        "steady_examples_per_second": steady,
        "whole_fit_examples_per_second": len(ends) * BATCH / wall,
        "wall_seconds": wall,
        "final_loss": float(hist.history["loss"][-1]),
    }
    say(f"naive: steady {steady:,.0f} ex/s; whole fit {res['whole_fit_examples_per_second']:,.0f} ex/s ({wall:.1f}s)")
    del model, ds
    return res


def _vm_hwm(pid: int) -> int:
    """The kernel's peak RSS (VmHWM) of ``pid``'s current address space, in bytes (0 when gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:")), 0)
    except OSError:
        return 0


def measure_memory(data: dict[str, Any], min_rows: int, seed: int, workdir: str) -> dict[str, Any]:
    """Peak RSS of ``python -m trainer.task`` (validation pass + one pass over every row) in a fresh process.

    The peak is the child's VmHWM from /proc, polled until it exits: the kernel keeps it, so
    short spikes between polls are not missed. ``ru_maxrss`` from ``wait4`` is NOT used: Linux
    carries the pre-exec high-water mark across fork/exec, so it reports this (large) parent's
    RSS instead of the trainer's.
    """
    import psutil

    rows = data["rows"]["train"]
    steps = math.ceil(max(rows, min_rows) / BATCH)
    out = tempfile.mkdtemp(prefix="trainer-mem-", dir=workdir)
    cmd = [
        sys.executable,
        "-m",
        "trainer.task",
        "--train_data_paths",
        data["paths"]["train"],
        "--eval_data_paths",
        data["paths"]["valid"],
        "--output_dir",
        out,
        "--train_steps",
        str(steps),
        "--seed",
        str(seed),
    ]
    say(f"memory: {' '.join(cmd)}")
    log_path = os.path.join(workdir, "memory-run.log")
    hwm = rss = 0
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        last = 0.0
        while proc.poll() is None:
            hwm = max(hwm, _vm_hwm(proc.pid))
            with contextlib.suppress(psutil.Error):
                rss = max(rss, ps.memory_info().rss)
            if time.perf_counter() - last > 30:
                last = time.perf_counter()
                say(f"  memory run: {last - t0:.0f}s, peak RSS so far {hwm / 2**20:,.0f} MiB; {_last_line(log_path)}")
            time.sleep(0.1)
    wall = time.perf_counter() - t0
    with open(log_path) as fh:
        text = fh.read()
    if proc.returncode != 0:
        raise RuntimeError(f"the memory run failed (exit {proc.returncode}); see {log_path}:\n{text[-3000:]}")
    ex_s = re.search(r"([\d,]+) examples/s\)", text)
    checked = re.search(r"data checked in ([\d.]+)s", text)
    shutil.rmtree(out, ignore_errors=True)
    res = {
        "train_rows": rows,
        "steps": steps,
        "examples_seen": steps * BATCH,
        "peak_rss_bytes": hwm,
        "max_polled_rss_bytes": rss,
        "limit_bytes": MEMORY_LIMIT_BYTES,
        "ok": 0 < hwm < MEMORY_LIMIT_BYTES,
        "wall_seconds": wall,
        "validation_seconds": float(checked.group(1)) if checked else None,
        "examples_per_second": float(ex_s.group(1).replace(",", "")) if ex_s else None,
        "command": " ".join(cmd),
    }
    say(f"memory: peak RSS (VmHWM) {hwm / 2**20:,.0f} MiB (max polled RSS {rss / 2**20:,.0f} MiB) over {rows:,} rows in {wall:.0f}s")
    return res


def _last_line(path: str) -> str:
    with open(path, "rb") as fh:
        lines = fh.read().decode(errors="replace").strip().splitlines()
    return lines[-1][:120] if lines else ""


# --------------------------------------------------------------------------- machine and report


def machine() -> dict[str, Any]:
    import keras
    import pyarrow
    import tensorflow as tf

    cpu = "unknown"
    mem = 0
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
        with open("/proc/meminfo") as fh:
            mem = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemTotal"))
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gb": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "pyarrow": pyarrow.__version__,
        "platform": platform.platform(),
    }


def report(results: dict[str, Any]) -> str:
    t, n, p = results["trainer"], results["naive"], results["parse"]
    v, mach = results["validation"], results["machine"]
    lines = [
        "",
        f"Trainer benchmark, {results['date']}, train.csv {results['data']['rows']['train']:,} rows "
        f"({results['data']['bytes']['train'] / 1e6:.0f} MB), batch {BATCH}, {t['steps']} steps, warm-up {results['warmup_steps']} steps",
        "",
        f"| {'measure':<64} | {'examples/s':>12} | {'trainer / this':>14} |",
        f"|{'-' * 66}|{'-' * 14}:|{'-' * 15}:|",
    ]

    def row(name: str, rate: float) -> None:
        lines.append(f"| {name:<64} | {rate:>12,.0f} | {t['steady_examples_per_second'] / rate:>13.2f}x |")

    row("trainer, steady state (train_and_evaluate, validate_data=False)", t["steady_examples_per_second"])
    row("trainer, metrics.json examples_per_second (whole loop)", t["metrics_examples_per_second"])
    row("naive: make_csv_dataset + model.fit, steady state", n["steady_examples_per_second"])
    row("naive: whole model.fit (incl. tracing)", n["whole_fit_examples_per_second"])
    row("parse limit: pyarrow.csv.read_csv (rows/s)", p["rows_per_second"])
    row("validation pass: trainer.validation.scan (rows/s)", v["rows_per_second"])
    ratio = t["steady_examples_per_second"] / n["steady_examples_per_second"]
    lines += [
        "",
        f"trainer / naive = {ratio:.2f}x (target >= 3x: {'met' if ratio >= 3 else 'NOT met'}); "
        f"trainer / parse limit = {t['steady_examples_per_second'] / p['rows_per_second']:.1%}",
        f"validation pass: {v['seconds']:.1f}s for {v['rows']:,} rows (before training when validate_data is on)",
    ]
    mem = results.get("memory")
    if mem:
        lines.append(
            f"peak memory, python -m trainer.task on {mem['train_rows']:,} rows ({mem['steps']} steps = {mem['examples_seen']:,} examples, "
            "validation pass on): "
            f"{mem['peak_rss_bytes'] / 1e9:.2f} GB = {mem['peak_rss_bytes'] / 2**20:,.0f} MiB "
            f"(limit {mem['limit_bytes'] / 1e9:.1f} GB: {'OK' if mem['ok'] else 'OVER'}); "
            f"run {mem['wall_seconds']:.0f}s, {mem['examples_per_second'] or 0:,.0f} examples/s"
        )
    else:
        lines.append("peak memory: skipped (--skip-memory)")
    lines.append(
        f"machine: {mach['nproc']} cores ({mach['affinity']} usable) {mach['cpu']}, {mach['memory_gb']} GB; "
        f"Python {mach['python']}, TensorFlow {mach['tensorflow']}, Keras {mach['keras']}, pyarrow {mach['pyarrow']}; "
        f"load average at start {results['load_start']}, at end {results['load_end']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=(
            "Measure, in one run on the same generated CSV, the trainer's training throughput, a naive Keras baseline "
            "(make_csv_dataset + model.fit) on the same model and the pyarrow parse-only limit, print the ratios, "
            "then the trainer's peak memory over --memory-rows rows in a fresh process."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--rows", type=int, default=1_000_000, help="training rows for the throughput comparison")
    p.add_argument("--steps", type=int, default=10_000, help=f"training steps (batch {BATCH}) for the trainer and the naive baseline each")
    p.add_argument("--warmup-steps", type=int, default=300, help="steps left out of the steady-state rates (tracing, shuffle-buffer fill)")
    p.add_argument("--memory-rows", type=int, default=10_000_000, help="training rows for the peak-memory run (one pass over them)")
    p.add_argument("--skip-memory", action="store_true", help="skip the peak-memory run (and its ~600 MB of data)")
    p.add_argument("--keep-memory-data", action="store_true", help="keep the peak-memory run's data instead of deleting it afterwards")
    p.add_argument(
        "--workdir",
        default=None,
        help="data and scratch runs go here (--rows data is reused if present with the same seed); default: a temp dir, removed after",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the data generator, shuffling and initialisation")
    p.add_argument("--json", default=None, help="also write all the figures to this JSON file")
    args = p.parse_args(argv)
    if args.rows < 10 * BATCH or args.steps <= args.warmup_steps + 200:
        p.error("--rows must be at least 5120 and --steps at least --warmup-steps + 200")

    own_workdir = args.workdir is None
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-trainer-")
    os.makedirs(workdir, exist_ok=True)
    try:
        results: dict[str, Any] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
            "load_start": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
            "warmup_steps": args.warmup_steps,
            "machine": machine(),
        }
        data = ensure_data(os.path.join(workdir, f"data-{args.rows}"), args.rows, args.seed)
        results["data"] = data
        results["parse"] = measure_parse(data["paths"]["train"])
        results["validation"] = measure_validation(data["paths"]["train"])
        results["trainer"] = measure_trainer(data, args.steps, args.warmup_steps, args.seed, workdir)
        gc.collect()
        results["naive"] = measure_naive(data, args.steps, args.warmup_steps, args.seed)
        gc.collect()
        if not args.skip_memory:
            mem_dir = os.path.join(workdir, f"data-{args.memory_rows}")
            mem_data = ensure_data(mem_dir, args.memory_rows, args.seed)
            try:
                results["memory"] = measure_memory(mem_data, args.memory_rows, args.seed, workdir)
            finally:
                if not args.keep_memory_data:
                    shutil.rmtree(mem_dir, ignore_errors=True)
        results["load_end"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        print(report(results), flush=True)
        print(f"\ncommand: {results['command']}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=2, default=str)
        mem = results.get("memory")
        return 0 if mem is None or mem["ok"] else 1
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
