"""Benchmark: the data fingerprint that keys stage_data's cache, against hashing the data's bytes.

The fingerprint (components/stage_data/fingerprint.py) stats each file (size, modification time);
the baseline reads every byte through SHA-256 (what keying the cache on content would cost,
as stage_data's own ``content_hash`` does after staging). Both run over the same files:
N copies of a CSV of R generated rows, in a temporary directory.

Usage: .venv/bin/python bench/bench_fingerprint.py [--files N] [--rows R] [--repeat K]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_of(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)  # type: ignore[return-value]


def main() -> None:
    """Print the figures."""
    from bench.bench_pipeline import machine
    from components.stage_data.fingerprint import data_fingerprint
    from trainer import synthetic, validation

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = synthetic.generate(args.rows, os.path.join(tmp, "gen"), seed=1, fractions=(1.0, 0.0, 0.0)).paths["train"]
        data = Path(tmp, "data")
        data.mkdir()
        body = Path(source).read_bytes()
        for i in range(args.files):
            (data / f"part-{i:03d}.csv").write_bytes(body)
        pattern = str(data / "*.csv")
        files = sorted(str(f) for f in data.glob("*.csv"))
        fp_best, fp_median = best_of(lambda: data_fingerprint({"source": pattern}), args.repeat)
        hash_best, hash_median = best_of(lambda: validation.content_hash(files), args.repeat)
        size = sum(os.path.getsize(f) for f in files) / 1e6
    print(f"machine: {machine()}")
    print(f"{args.files} files, {size:.0f} MB ({args.rows:,} rows each), best of {args.repeat}")
    print(f"fingerprint (stat per file): {fp_best * 1e3:8.2f} ms  (median {fp_median * 1e3:.2f} ms)")
    print(f"SHA-256 of the bytes:        {hash_best * 1e3:8.2f} ms  (median {hash_median * 1e3:.2f} ms)")
    print(f"ratio: the fingerprint costs 1/{hash_best / fp_best:,.0f} of hashing the data")


if __name__ == "__main__":
    main()
