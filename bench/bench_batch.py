"""Benchmark: `taxifare batch-predict` against the in-process session call on the same batches, and its peak memory.

Throughput: R generated rows (trainer/synthetic.py, the lab's CSV layout) scored by the local
job (serving/batch.py: reading, checking, scoring, writing predictions_*.jsonl), against the
version's session call alone (serving/servable.py's ``Servable.predict``) on the same batches
of ``--batch-size`` rows, already in memory as columns: what the model costs with no input or
output at all. Both in one run, alternated, best of ``--repeat``; the job's time includes
loading the version (reported apart too).

Memory: the job run as a command (``python -m pipeline.cli batch-predict``) on M rows; the peak
resident memory of its process tree (workers included), sampled every 50 ms with psutil.

Usage: .venv/bin/python bench/bench_batch.py [--rows 1000000] [--memory-rows 10000000] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def export_model(out: str) -> str:
    """A SavedModel with the project's signature (seeded random weights: the speed does not depend on them)."""
    import keras

    from trainer.model import TrainConfig, build_model, export_model
    from trainer.schema import Variant

    keras.utils.set_random_seed(1)
    return export_model(build_model(Variant.LAB, TrainConfig("unused", "unused", "unused")), Variant.LAB, out, {})


def columns_of(path: str, servable, batch_size: int) -> list[dict]:  # type: ignore[no-untyped-def]
    """The file's rows as model columns, in batches (the same batches the job scores)."""
    from serving.batch_input import CsvChecker, pieces
    from trainer import validation

    checker = CsvChecker(validation.detect_variant(path), servable.features, check_ranges=True, output="jsonl")
    batches = []
    for piece in pieces([path], 1 << 62):
        cols = checker.check(piece).columns
        n = len(next(iter(cols.values())))
        batches += [{k: v[i : i + batch_size] for k, v in cols.items()} for i in range(0, n, batch_size)]
    return batches


def session_call(servable, batches: list[dict]) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for batch in batches:
        servable.predict(batch)
    return time.perf_counter() - t0


def job(path: str, model_dir: str, out: str, workers: int, batch_size: int) -> float:
    from serving import batch

    settings = batch.BatchSettings(inputs=path, output_dir=out, model_dir=model_dir, workers=workers, batch_size=batch_size)
    t0 = time.perf_counter()
    batch.run(settings)
    return time.perf_counter() - t0


def peak_memory(path: str, model_dir: str, out: str, workers: int) -> tuple[float, float]:
    """Peak RSS (bytes) of the command's process tree, and its wall time."""
    import psutil

    cmd = [sys.executable, "-m", "pipeline.cli", "batch-predict", "--quiet", "--input", path, "--output", out]
    cmd += ["--model-dir", model_dir, "--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    peak = 0
    top = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [top, *top.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"batch-predict failed with exit code {proc.returncode}")
    return peak, time.perf_counter() - t0


def main() -> None:
    """Print the figures."""
    import shutil

    from bench.bench_pipeline import machine
    from serving.servable import Servable
    from trainer import synthetic

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the throughput run (default %(default)s)")
    p.add_argument("--memory-rows", type=int, default=10_000_000, help="rows of the memory run; 0 skips it (default %(default)s)")
    p.add_argument("--workers", default="1,2", help="worker counts of the job, separated by commas (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=8192, help="rows per model call (default %(default)s)")
    p.add_argument("--repeat", type=int, default=2, help="alternated runs of each, best kept (default %(default)s)")
    args = p.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    print(f"{machine()}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = export_model(os.path.join(tmp, "model"))
        data = synthetic.generate(args.rows, os.path.join(tmp, "data"), seed=1, fractions=(1.0, 0.0, 0.0)).paths["train"]
        servable = Servable(model_dir, 1)
        batches = columns_of(data, servable, args.batch_size)
        rows = sum(len(next(iter(b.values()))) for b in batches)
        best: dict[str, float] = {}
        for attempt in range(args.repeat):
            best["session"] = min(best.get("session", 1e9), session_call(servable, batches))
            for w in workers:
                out = os.path.join(tmp, f"out-{w}-{attempt}")
                best[f"job{w}"] = min(best.get(f"job{w}", 1e9), job(data, model_dir, out, w, args.batch_size))
                shutil.rmtree(out)
        print(f"{rows:,} rows, batches of {args.batch_size:,}; loading the version: {servable.load_seconds:.2f} s")
        print("| what | time | rows/s | of the session call |\n|---|---:|---:|---:|")
        base = rows / best["session"]
        print(f"| session call alone (columns in memory) | {best['session']:.2f} s | {base:,.0f} | 100% |")
        for w in workers:
            rate = rows / best[f"job{w}"]
            print(f"| batch-predict, {w} worker(s), CSV in, JSONL out | {best[f'job{w}']:.2f} s | {rate:,.0f} | {rate / base:.0%} |")
        del batches
        if args.memory_rows:
            os.remove(data)
            big = synthetic.generate(args.memory_rows, os.path.join(tmp, "big"), seed=2, fractions=(1.0, 0.0, 0.0)).paths["train"]
            size = os.path.getsize(big)
            for w in workers:
                out = os.path.join(tmp, f"mem-{w}")
                peak, wall = peak_memory(big, model_dir, out, w)
                print(f"memory: {args.memory_rows:,} rows ({size / 1e9:.2f} GB of CSV), {w} worker(s): peak RSS {peak / 2**20:,.0f} MiB, "
                      f"{wall:.1f} s ({args.memory_rows / wall:,.0f} rows/s with start-up)")  # fmt: skip
                shutil.rmtree(out)


if __name__ == "__main__":
    main()
