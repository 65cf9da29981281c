"""Benchmark: a default local pipeline run beside the bare trainer on the same data, and where the difference goes.

In one run, both cold (fresh processes, an empty step cache, TensorFlow's files in the OS
page cache for both: one ``import tensorflow`` first):

1. ``taxifare run`` with the defaults (a subprocess, as typed: ``python -m pipeline.cli run``,
   in a fresh pipeline root), its wall time, and each step's seconds from the run record
   (``taxifare-run.json``);
2. the **bare trainer**, ``python -m trainer.task``, on the data that run staged
   (``stage-data/train_data`` and ``eval_data``), with the same steps, batch size, hidden
   units, learning rate and seed (the trainer's defaults otherwise, as a user runs it);

and reports the ratio of the two wall times, and where the pipeline's extra time goes: each
step beside the bare trainer's time, full_train's own excess over the bare trainer, and the
orchestration (the run's wall time less its steps' seconds). As a reference, the cost of
starting a process that imports TensorFlow (what every step that imports it pays).

``--cached`` adds a second ``taxifare run`` in the same root (kfp.local's cache on: stage_data,
smoke_train and full_train come from it).

Usage: .venv/bin/python bench/bench_pipeline.py [--rows N] [--steps N] [--cached] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "NO_GCE_CHECK": "True"}


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?"
    )
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0")
    return f"{os.cpu_count()} cores {cpu}, {int(mem) / 1e6:.0f} GB, Python {platform.python_version()}"


def import_cost() -> float:
    """Seconds to start a Python process that imports TensorFlow (what every TF step pays)."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import tensorflow"], check=True, capture_output=True, env={**ENV, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.monotonic() - t0


def pipeline_run(root: Path, serving: Path, rows: int, steps: int, log: Path) -> dict[str, Any]:
    """``taxifare run`` (defaults but ``--synthetic-rows``/``--train-steps``) as a subprocess: wall time and the run record."""
    before = {p.name for p in root.glob("taxifare-*")} if root.exists() else set()
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--pipeline-root", str(root), "--serving-root", str(serving)]
    cmd += ["--synthetic-rows", str(rows), "--train-steps", str(steps)]
    t0 = time.monotonic()
    with open(log, "ab") as fh:
        done = subprocess.run(cmd, cwd=str(ROOT), env=ENV, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.monotonic() - t0
    if done.returncode:
        raise SystemExit(f"taxifare run failed ({done.returncode}); see {log}")
    (run_dir,) = [p for p in root.glob("taxifare-*") if p.is_dir() and p.name not in before]
    record = json.loads((run_dir / "taxifare-run.json").read_text())
    steps_s = {name: (s["status"], float(s["seconds"])) for name, s in record["steps"].items()}
    own = sum(sec for status, sec in steps_s.values() if status == "succeeded")
    return {"wall": wall, "run_dir": str(run_dir), "steps": steps_s, "steps_total": own, "orchestration": wall - own}


def bare_trainer(run_dir: Path, out: Path, steps: int, args: dict[str, Any], log: Path) -> float:
    """Wall seconds of ``python -m trainer.task`` on ``run_dir``'s staged data with the run's hyperparameters."""
    staged = run_dir / "stage-data"
    cmd = [sys.executable, "-m", "trainer.task"]
    cmd += ["--train_data_paths", str(staged / "train_data" / "*.csv"), "--eval_data_paths", str(staged / "eval_data" / "*.csv")]
    cmd += ["--output_dir", str(out), "--train_steps", str(steps), "--train_batch_size", str(args["batch_size"])]
    cmd += [
        "--hidden_units",
        *str(args["hidden_units"]).split(","),
        "--learning_rate",
        str(args["learning_rate"]),
        "--seed",
        str(args["seed"]),
    ]
    t0 = time.monotonic()
    with open(log, "ab") as fh:
        done = subprocess.run(cmd, cwd=str(ROOT), env=ENV, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"the bare trainer failed ({done.returncode}); see {log}")
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000, help="synthetic rows (default %(default)s, the pipeline's default)")
    parser.add_argument("--steps", type=int, default=2000, help="full training steps (default %(default)s, the pipeline's default)")
    parser.add_argument("--cached", action="store_true", help="also a second run with the step cache on")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    from pipeline import parameters

    hyper = parameters.defaults(parameters.LOCAL)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    log = work / "bench.log"
    load0 = os.getloadavg()
    import_cost()  # TensorFlow's files into the page cache, for both sides alike
    cold = pipeline_run(work / "root", work / "serving", args.rows, args.steps, log)
    bare = bare_trainer(Path(cold["run_dir"]), work / "bare", args.steps, hyper, log)
    cached = pipeline_run(work / "root", work / "serving", args.rows, args.steps, log) if args.cached else None
    tf_start = min(import_cost() for _ in range(3))
    load1 = os.getloadavg()

    print(f"\nLocal pipeline run vs the bare trainer ({args.rows:,} synthetic rows, {args.steps:,} training steps)")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; load average {load0[0]:.2f} before, {load1[0]:.2f} after\n")
    print("| step | `taxifare run` (cold) s |" + (" second run (cache on) s |" if cached else ""))
    print("|---|---:|" + ("---:|" if cached else ""))
    for name, (status, sec) in cold["steps"].items():
        cell = f"{sec:.1f}" if status == "succeeded" else status
        extra = ""
        if cached:
            st2, sec2 = cached["steps"].get(name, ("-", 0.0))
            extra = f" {sec2:.1f} |" if st2 == "succeeded" else f" {st2} |"
        print(f"| {name} | {cell} |{extra}")
    for key, title in (("steps_total", "steps' seconds"), ("orchestration", "orchestration (wall - steps)"), ("wall", "**wall**")):
        print(f"| {title} | {cold[key]:.1f} |" + (f" {cached[key]:.1f} |" if cached else ""))
    full = cold["steps"].get("full_train", ("-", 0.0))[1]
    print(f"\nbare trainer (`python -m trainer.task`, same data, steps and hyperparameters): {bare:.1f} s")
    print(f"**pipeline / bare trainer = {cold['wall'] / bare:.2f}** ({cold['wall']:.1f} s / {bare:.1f} s)")
    extra = cold["wall"] - bare
    print(f"the pipeline's extra {extra:.1f} s: full_train over the bare trainer {full - bare:+.1f} s, ", end="")
    others = {n: s for n, (st, s) in cold["steps"].items() if n != "full_train" and st == "succeeded"}
    print(
        ", ".join(f"{n} {s:.1f} s" for n, s in sorted(others.items(), key=lambda kv: -kv[1]))
        + f", orchestration {cold['orchestration']:.1f} s"
    )
    print(f"reference: starting a process that imports TensorFlow costs {tf_start:.1f} s (best of 3)")
    if args.json:
        out = {"machine": machine(), "rows": args.rows, "steps": args.steps, "cold": cold, "cached": cached, "bare": bare}
        Path(args.json).write_text(json.dumps({**out, "tf_start": tf_start, "load": [load0, load1]}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
