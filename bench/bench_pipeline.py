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

Loads on a shared machine vary: ``--repeat N`` runs N such pairs (each cold, in a fresh root)
and reports each pair's ratio and their median, and the CPU seconds of both sides (every
process each started; less sensitive to other work than the wall time).

``--cached`` adds a second ``taxifare run`` in the first pair's root (kfp.local's cache on:
stage_data, smoke_train and full_train come from it).

Usage: .venv/bin/python bench/bench_pipeline.py [--rows N] [--steps N] [--repeat N] [--cached] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
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


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children and their descendants so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_cost(how: str = "import tensorflow") -> float:
    """Seconds to start a Python process that imports TensorFlow (what every TF step pays)."""
    t0 = time.monotonic()
    env = {**ENV, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", how], check=True, capture_output=True, env=env, cwd=str(ROOT))
    return time.monotonic() - t0


def pipeline_run(root: Path, serving: Path, rows: int, steps: int, log: Path) -> dict[str, Any]:
    """``taxifare run`` (defaults but ``--synthetic-rows``/``--train-steps``) as a subprocess: wall time and the run record."""
    before = {p.name for p in root.glob("taxifare-*")} if root.exists() else set()
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--pipeline-root", str(root), "--serving-root", str(serving)]
    cmd += ["--synthetic-rows", str(rows), "--train-steps", str(steps)]
    t0, cpu0 = time.monotonic(), children_cpu()
    with open(log, "ab") as fh:
        done = subprocess.run(cmd, cwd=str(ROOT), env=ENV, stdout=fh, stderr=subprocess.STDOUT)
    wall, cpu = time.monotonic() - t0, children_cpu() - cpu0
    if done.returncode:
        raise SystemExit(f"taxifare run failed ({done.returncode}); see {log}")
    (run_dir,) = [p for p in root.glob("taxifare-*") if p.is_dir() and p.name not in before]
    record = json.loads((run_dir / "taxifare-run.json").read_text())
    steps_s = {name: (s["status"], float(s["seconds"])) for name, s in record["steps"].items()}
    own = sum(sec for status, sec in steps_s.values() if status == "succeeded")
    return {"wall": wall, "cpu": cpu, "run_dir": str(run_dir), "steps": steps_s, "steps_total": own, "orchestration": wall - own}


def bare_trainer(run_dir: Path, out: Path, steps: int, args: dict[str, Any], log: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``python -m trainer.task`` on ``run_dir``'s staged data with the run's hyperparameters."""
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
    t0, cpu0 = time.monotonic(), children_cpu()
    with open(log, "ab") as fh:
        done = subprocess.run(cmd, cwd=str(ROOT), env=ENV, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"the bare trainer failed ({done.returncode}); see {log}")
    shutil.rmtree(out, ignore_errors=True)
    return time.monotonic() - t0, children_cpu() - cpu0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000, help="synthetic rows (default %(default)s, the pipeline's default)")
    parser.add_argument("--steps", type=int, default=2000, help="full training steps (default %(default)s, the pipeline's default)")
    parser.add_argument("--repeat", type=int, default=1, help="pairs (pipeline, then bare trainer) to run, each cold (default %(default)s)")
    parser.add_argument("--cached", action="store_true", help="also a second run with the step cache on (after the first pair)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    from pipeline import parameters

    hyper = parameters.defaults(parameters.LOCAL)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    log = work / "bench.log"
    load0 = os.getloadavg()
    import_cost()  # TensorFlow's files into the page cache, for both sides alike
    pairs = []
    cached = None
    for i in range(max(1, args.repeat)):
        cold = pipeline_run(work / f"root{i}", work / f"serving{i}", args.rows, args.steps, log)
        cold["bare"], cold["bare_cpu"] = bare_trainer(Path(cold["run_dir"]), work / "bare", args.steps, hyper, log)
        pairs.append(cold)
        if args.cached and cached is None:
            cached = pipeline_run(work / "root0", work / "serving0", args.rows, args.steps, log)
    tf_start = min(import_cost() for _ in range(3))
    tf_quiet = min(import_cost("from trainer.quiet import import_tensorflow; import_tensorflow()") for _ in range(3))
    load1 = os.getloadavg()
    report(args, pairs, cached, tf_start, tf_quiet, (load0, load1))
    if args.json:
        out = {"machine": machine(), "rows": args.rows, "steps": args.steps, "pairs": pairs, "cached": cached}
        Path(args.json).write_text(json.dumps({**out, "tf_start": tf_start, "tf_quiet": tf_quiet, "load": [load0, load1]}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(args: Any, pairs: list[dict[str, Any]], cached: dict[str, Any] | None, tf_start: float, tf_quiet: float, load: Any) -> None:
    """The Markdown table and lines of docs/benchmarks.md: a column per pair, their median, and the ratios."""
    med = len(pairs) > 1
    heads = [f"run {i + 1}" for i in range(len(pairs))] + (["median"] if med else []) + (["cached"] if cached else [])
    print(f"\nLocal pipeline run vs the bare trainer ({args.rows:,} synthetic rows, {args.steps:,} steps, cold, {len(pairs)} pair(s))")
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; load average {load[0][0]:.2f} before, {load[1][0]:.2f} after\n"
    )
    print("| `taxifare run` step, s | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(heads))

    def row(title: str, values: list[float], cached_value: str = "", digits: int = 1) -> None:
        cells = [f"{v:.{digits}f}" for v in values] + ([f"{statistics.median(values):.{digits}f}"] if med else [])
        print(f"| {title} | " + " | ".join(cells + ([cached_value] if cached else [])) + " |")

    for name in pairs[0]["steps"]:
        secs = [p["steps"].get(name, ("-", 0.0))[1] for p in pairs]
        c = cached["steps"].get(name, ("-", 0.0)) if cached else ("", 0.0)
        row(name, secs, f"{c[1]:.1f}" if c[0] == "succeeded" else c[0])
    row("orchestration (wall - steps)", [p["orchestration"] for p in pairs], f"{cached['orchestration']:.1f}" if cached else "")
    row("**pipeline wall**", [p["wall"] for p in pairs], f"{cached['wall']:.1f}" if cached else "")
    row("**bare trainer wall**", [p["bare"] for p in pairs], "")
    row("**pipeline / bare trainer**", [p["wall"] / p["bare"] for p in pairs], "", 2)
    row("pipeline CPU s (all its processes)", [p["cpu"] for p in pairs], f"{cached['cpu']:.1f}" if cached else "")
    row("bare trainer CPU s", [p["bare_cpu"] for p in pairs], "")
    row("CPU ratio", [p["cpu"] / p["bare_cpu"] for p in pairs], "", 2)
    ratio = statistics.median(p["wall"] / p["bare"] for p in pairs)
    print(f"\n**pipeline / bare trainer = {ratio:.2f}** (median of {len(pairs)})")
    for p in pairs:
        full = p["steps"].get("full_train", ("-", 0.0))[1]
        others = {n: s for n, (st, s) in p["steps"].items() if n != "full_train" and st == "succeeded"}
        print(
            f"extra {p['wall'] - p['bare']:.1f} s: full_train over the bare trainer {full - p['bare']:+.1f} s, "
            + ", ".join(f"{n} {s:.1f} s" for n, s in sorted(others.items(), key=lambda kv: -kv[1]))
            + f", orchestration {p['orchestration']:.1f} s"
        )
    print(
        f"reference: a process running `import tensorflow` takes {tf_start:.1f} s, quiet.import_tensorflow() {tf_quiet:.1f} s (best of 3)"
    )


if __name__ == "__main__":
    sys.exit(main())
