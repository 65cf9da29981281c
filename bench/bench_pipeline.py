"""Benchmark: the local end-to-end pipeline run, per step, and kfp.local's orchestration overhead.

Runs the pipeline twice with the same parameters in fresh directories (the second run hits
kfp.local's cache for stage_data, smoke_train and full_train), and reports for each run:

* each step's wall time (from kfp.local's start and end lines), its status;
* the steps' own time (sum of step wall times) and the orchestration overhead
  (total wall time minus the steps' time) as a share of the total;
* as a reference, the cost of starting a step process that imports TensorFlow.

Usage: .venv/bin/python bench/bench_pipeline.py [--rows N] [--steps N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?"
    )
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0")
    return f"{os.cpu_count()} cores {cpu}, {int(mem) / 1e6:.0f} GB, Python {platform.python_version()}"


def import_cost() -> float:
    """Seconds to start a Python process that imports TensorFlow (what every TF step pays)."""
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import tensorflow"], check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000, help="synthetic rows (default %(default)s, the pipeline's default)")
    parser.add_argument("--steps", type=int, default=2000, help="full training steps (default %(default)s, the pipeline's default)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    from pipeline.local_run import run_local

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    arguments = {"synthetic_rows": args.rows, "train_steps": args.steps, "serving_root": str(work / "serving")}
    runs = {}
    for label in ("first run (cold cache)", "second run (cache on)"):
        t0 = time.monotonic()
        result = run_local(arguments, pipeline_root=str(work / "root"), log_path=str(work / "run.log"), console=lambda line: None)
        wall = time.monotonic() - t0
        if not result.ok:
            print(f"{label}: failed at {result.failed_step}; log {result.log_path}", file=sys.stderr)
            return 1
        steps = {name: (rec.status, rec.seconds) for name, rec in result.steps.items()}
        own = sum(seconds for status, seconds in steps.values() if status == "succeeded")
        runs[label] = {"wall": wall, "steps": steps, "steps_total": own, "overhead": wall - own}
    tf_start = min(import_cost() for _ in range(3))

    print(f"\nLocal pipeline run ({args.rows:,} synthetic rows, {args.steps:,} training steps) on {machine()}\n")
    names = list(next(iter(runs.values()))["steps"])
    header = f"{'step':<16}" + "".join(f"{label:>28}" for label in runs)
    print(header)
    print("-" * len(header))
    for name in names:
        cells = []
        for run in runs.values():
            status, seconds = run["steps"].get(name, ("-", 0.0))
            cells.append(f"{seconds:6.1f}s {status:>12}" if status == "succeeded" else f"{status:>20}")
        print(f"{name:<16}" + "".join(f"{c:>28}" for c in cells))
    for key, title in (("steps_total", "steps' time"), ("overhead", "orchestration"), ("wall", "total wall")):
        print(f"{title:<16}" + "".join(f"{run[key]:>27.1f}s" for run in runs.values()))
    for label, run in runs.items():
        print(f"{label}: overhead {run['overhead']:.1f}s = {run['overhead'] / run['wall']:.1%} of {run['wall']:.1f}s")
    print(f"reference: starting a step process that imports TensorFlow costs {tf_start:.1f}s (best of 3)")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(), "rows": args.rows, "steps": args.steps, "runs": runs, "tf_start": tf_start}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
