"""What evaluating often costs: a default pipeline training run with evaluations every 100 vs every 1,000 steps.

A default ``taxifare run`` trains 2,000 steps (batch 512) on the staged split of 50,000
generated rows (about 40k train, 5k eval rows). Evaluating every 100 steps gives the eval
curve 20 points (every 1,000 steps: 2) and feeds the best checkpoint and early stopping; each
evaluation reads the whole eval split, and each new best writes a checkpoint.

This script generates that data once, then runs ``trainer.model.train_and_evaluate`` with
``eval_every_steps`` = 1000 (the baseline, the old default) and 100 (the new default),
alternating, ``--repeats`` times each, with the same seed. It reports, per setting, the median
of the training loop's time (``train_seconds + eval_seconds`` of ``metrics.json``: training
steps, evaluations and best-checkpoint writes; tracing and the export are left out, being the
same for both), of the whole call and of the process's CPU time for the whole call (less
sensitive than wall time to other load on the machine), and the ratios new / baseline. The
aim: at most 1.10.

Run: ``.venv/bin/python bench/bench_eval_every.py [--repeats 3]`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer import synthetic


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def one_run(data: synthetic.Generated, out: str, every: int, steps: int) -> tuple[float, float, float]:
    """``(loop seconds, whole-call seconds, whole-call CPU seconds)`` of one training run."""
    from trainer.model import TrainConfig, train_and_evaluate

    config = TrainConfig(
        data.paths["train"],
        data.paths["valid"],
        out,
        train_steps=steps,
        eval_every_steps=every,
        seed=1,
        validate_data=False,  # as in the pipeline: stage_data validated the rows
    )
    t0, cpu0 = time.monotonic(), _cpu()
    result = train_and_evaluate(config, progress=lambda line: None)
    whole, cpu = time.monotonic() - t0, _cpu() - cpu0
    return result.metrics["train_seconds"] + result.metrics["eval_seconds"], whole, cpu


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    """Run the comparison and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=50_000, help="generated rows (default: the pipeline's 50,000)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default: the pipeline's 2,000)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each setting, alternating (default 3)")
    args = p.parse_args()
    settings = (1000, 100)
    with tempfile.TemporaryDirectory(prefix="bench-eval-every-") as work:
        data = synthetic.generate(args.rows, os.path.join(work, "data"), seed=42)
        print(f"data: {data.rows['train']:,} train / {data.rows['valid']:,} eval rows; {args.steps} steps, batch 512", flush=True)
        loops: dict[int, list[float]] = {s: [] for s in settings}
        wholes: dict[int, list[float]] = {s: [] for s in settings}
        cpus: dict[int, list[float]] = {s: [] for s in settings}
        one_run(data, os.path.join(work, "warm"), 1000, 200)  # imports and first tracing out of the way
        for i in range(args.repeats):
            for every in settings:
                loop, whole, cpu = one_run(data, os.path.join(work, f"run-{every}-{i}"), every, args.steps)
                loops[every].append(loop)
                wholes[every].append(whole)
                cpus[every].append(cpu)
                print(f"  eval every {every:>4}: loop {loop:6.2f}s, whole call {whole:6.2f}s, CPU {cpu:6.2f}s", flush=True)
    load = os.getloadavg()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"\nmachine: nproc {nproc}, {cpu_model()}; load average {load[0]:.1f} at the end")
    print("| eval every | eval points | loop s (median) | whole call s (median) | CPU s (median) | loop / baseline | CPU / baseline |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    base, base_cpu = statistics.median(loops[settings[0]]), statistics.median(cpus[settings[0]])
    for every in settings:
        loop, whole, cpu = (statistics.median(x[every]) for x in (loops, wholes, cpus))
        print(f"| {every} | {args.steps // every} | {loop:.2f} | {whole:.2f} | {cpu:.2f} | {loop / base:.3f} | {cpu / base_cpu:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
