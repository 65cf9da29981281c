"""``taxifare runs``, ``runs show`` and ``runs compare`` as text that fits an 80-column terminal.

Words wrap at 80 columns; a path or a command holding one stands on a line of its own (shown
relative to the current folder when it is under it), so it can be copied whole.
Standard library only, like :mod:`pipeline.runs`.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Sequence
from typing import Any

from pipeline.runs import METRICS, PLACES, Run, RunResult, StepRecord, defaults, fmt_money, fmt_params, fmt_seconds

#: The terminal width the text is made for.
WIDTH = 80
#: Shorter labels of :data:`pipeline.runs.METRICS` for the compare table.
_SHORT = {
    "test_rmse": "test RMSE",
    "distance_rule_rmse": "distance rule RMSE",
    "mean_predictor_rmse": "training-mean RMSE",
    "gbt_baseline_rmse": "boosted trees RMSE",
    "deployed_rmse": "deployed RMSE before",
    "test_json_fare": "fare of test.json",
    "test_examples": "test trips",
}
#: The widest value cell of the compare table (longer values are cut in the middle).
_CELL = 16


def shown_path(path: str) -> str:
    """``path`` relative to the current folder when it lies under it, else as it is."""
    if not path:
        return "-"
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False) or [first.rstrip()]


def _fmt_metric(key: str, value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if key == "test_examples":
        return f"{int(value):,}"
    return f"${value:,.4f}" if math.isfinite(value) else str(value)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def outcome(run: Run) -> str:
    """What became of a run, in a few words: the verdict, or where it failed."""
    if run.status == "failed":
        return f"failed at {run.failed_step}" if run.failed_step else "failed"
    if run.status == "succeeded":
        return run.verdict if run.blessed is not None else "succeeded"
    return run.status


def format_list(runs: Sequence[Run]) -> str:
    """``taxifare runs``: two lines per run, newest first (figures, then source and what differs from the defaults)."""
    if not runs:
        return "no runs yet: start one with `taxifare run`"
    base = defaults()
    rows = [["", "STARTED", "TEST RMSE", "DEPLOYED", "TOOK", "OUTCOME"]]
    for i, run in enumerate(runs, 1):
        deployed = str(run.deployed_version) if run.deployed_version is not None else "-"
        started = run.started.replace("T", " ")[:16]
        rows.append([f"-{i}", started, fmt_money(run.test_rmse), deployed, fmt_seconds(run.seconds), outcome(run)])
    table = _table(rows)
    lines = [table[0]]
    for run, line in zip(runs, table[1:], strict=True):
        lines.append(line)
        if run.arguments:
            params = fmt_params({k: v for k, v in run.differences(base).items() if k != "source"})
            lines += _wrap(f"{run.arguments.get('source', '-')}; {params}", "    ", "      ")
    lines += ["", "`taxifare runs show -N`: one run (its folder, steps, report, logs)."]
    return "\n".join(lines)


def _step_lines(name: str, step: dict[str, Any]) -> list[str]:
    text = step.get("error") or step.get("summary", "")
    if step.get("cached_from"):
        text = f"{text} (made by {step['cached_from']})"
    first = f"  {name:<14} {step['status']:<9} {step['seconds']:6.1f}s  "
    return _wrap(text, first, " " * 6) if text else [first.rstrip()]


def format_show(run: Run) -> str:
    """``taxifare runs show RUN``: everything about one run."""
    base = defaults()
    lines = [f"run       {run.name}", f"started   {run.started.replace('T', ' ')}   took {fmt_seconds(run.seconds)}"]
    lines += _wrap(f"{run.status} at {run.failed_step}: {run.error}" if run.failed_step else run.status, "status    ", " " * 10)
    lines.append(f"verdict   {run.verdict}" + (f"   deployed version {run.deployed_version}" if run.deployed_version is not None else ""))
    lines += ["", "parameters (* = not the default)"]
    diffs = run.differences(base)
    for name, value in run.arguments.items():
        lines += _wrap(repr(value), f"  {'*' if name in diffs else ' '} {name:<18} ", " " * 23)
    if run.steps:
        lines += ["", "steps"]
        for name, step in run.steps.items():
            lines += _step_lines(name, step)
    if run.metrics:
        lines += ["", "metrics"]
        lines += [f"  {label:<30} {_fmt_metric(key, run.metrics[key])}" for key, label in METRICS.items() if key in run.metrics]
    places = [("folder", run.path), ("report", run.report), ("run summary", run.summary_file if run.status == "failed" else "")]
    places.append(("log", run.log))
    lines.append("")
    for label, path in places:
        if path:
            lines += [f"{label}:", f"  {shown_path(path)}"]
    lines += ["loss curves:", f"  tensorboard --logdir {shown_path(run.tensorboard)}"] if run.tensorboard else ["loss curves: -"]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _CELL else text[: _CELL // 2 - 1] + "..." + text[-(_CELL - _CELL // 2 - 2) :]


def _versus(first: Run, other: Run) -> str:
    """``other``'s test RMSE minus ``first``'s, only when both were measured on the same test rows."""
    a, b = first.test_rmse, other.test_rmse
    if a is None or b is None or not a:
        return "-"
    if first.test_rows_id != other.test_rows_id or not first.test_rows_id:
        return "other rows"  # figures from different test sets are not compared
    return f"{b - a:+.2f} ({(b - a) / a:+.1%})"


def format_compare(runs: Sequence[Run]) -> str:
    """``taxifare runs compare A B...``: parameters and metrics side by side, the RMSE difference, links."""
    base = defaults()
    head = ["", *[r.started.replace("T", " ")[5:16] for r in runs]]
    rows = [head, ["status", *[r.status for r in runs]], ["verdict", *[r.verdict for r in runs]]]
    rows.append(["deployed", *[str(r.deployed_version) if r.deployed_version is not None else "-" for r in runs]])
    rows.append(["took", *[fmt_seconds(r.seconds) for r in runs]])
    names = [n for n in base if n not in PLACES]
    differing = [n for n in names if len({json.dumps(r.arguments.get(n, base[n]), sort_keys=True) for r in runs}) > 1]
    for name in names:
        if name in differing or any(name in r.differences(base) for r in runs):
            rows.append([f"{'*' if name in differing else ' '} {name}", *[_cell(r.arguments.get(name, "-")) for r in runs]])
    for key, label in _SHORT.items():
        if any(key in r.metrics for r in runs):
            rows.append([label, *[_fmt_metric(key, r.metrics.get(key)) for r in runs]])
    rows.append(["test rows (id)", *[r.test_rows_id or "-" for r in runs]])
    rows.append(["RMSE vs the first", "", *[_versus(runs[0], r) for r in runs[1:]]])
    text = [*_table(rows), "", "(* = differs between these runs)"]
    for run in runs:
        text += ["", f"{run.name}:"]
        text += ["  report:", f"    {shown_path(run.report)}"] if run.report else ["  report: -"]
        text += ["  loss curves:", f"    tensorboard --logdir {shown_path(run.tensorboard)}"] if run.tensorboard else ["  loss curves: -"]
    if all(r.tensorboard for r in runs):
        spec = ",".join(f"{r.name.removeprefix('taxifare-')}:{shown_path(r.tensorboard)}" for r in runs)
        text += ["", "All curves in one TensorBoard:", f"  tensorboard --logdir_spec {spec}"]
    return "\n".join(text)


# -- the end of `taxifare run` ------------------------------------------------------------------------
def summarize(result: RunResult, serving_root: str, model_name: str) -> str:
    """The end-of-run summary: what happened and what to do next."""
    lines = [""]
    if not result.ok:
        return "\n".join([*lines, *failure_lines(result)])
    verify = result.steps.get("verify_export")
    figures = verify.figures if verify else {}
    lines.append(f"Pipeline finished in {result.seconds:.0f}s.")
    if figures:
        named = {"distance rule": "distance_rule", "mean predictor": "mean_predictor", "gradient-boosted trees": "gbt_baseline"}
        others = [f"{name} ${figures[key + '_rmse']:.2f}" for name, key in named.items() if key + "_rmse" in figures]
        others += [f"deployed ${figures['deployed_rmse']:.2f} on the same rows"] if "deployed_rmse" in figures else []
        lines.append(f"Test RMSE ${figures['test_rmse']:.2f}  ({', '.join(others)})")
        lines.append(("Blessed: " if figures.get("blessed") else "Not blessed: ") + verify.summary.split(": ", 1)[-1] if verify else "")
    deploy = result.steps.get("deploy")
    if deploy and deploy.status == "succeeded" and deploy.figures.get("version") is None:  # compare-and-publish found a better one
        lines.append("Nothing deployed: " + deploy.summary.split(": ", 1)[-1])
    elif deploy and deploy.status == "succeeded":
        lines.append(f"Deployed version {deploy.figures['version']} at {deploy.figures['path']}")
        lines.append(f"Serve it:  taxifare serve --model-base-path {os.path.join(serving_root, model_name)} --model-name {model_name}")
    else:
        lines.append("Nothing deployed.")
    batch = result.steps.get("batch_predict")
    if batch and batch.status == "succeeded":
        lines.append(f"Batch predictions: {batch.summary}")
    train_dir = _recorded_tensorboard(result)
    if train_dir:
        lines.append(f"Loss curves:  tensorboard --logdir {train_dir}")
    report = os.path.join(result.run_dir, "verify-export", "report.html") if result.run_dir else ""
    if report and os.path.exists(report):
        lines.append(f"Verification report (HTML): {report}")
    if result.index:
        lines.append(f"All runs:  {result.index}  (or `taxifare runs`)")
    lines.append(f"Step log: {result.log_path}")
    return "\n".join(lines)


def failure_lines(result: RunResult) -> list[str]:
    """The last lines of a failed run: the step, the reason, the log file, where the run's summary is, what to do.

    The reason is the failed step's own error line (``StepRecord.error``, from the record its process wrote).
    """
    rec = result.steps.get(result.failed_step, StepRecord(result.failed_step))
    lines = [f"FAILED at {result.failed_step}: {rec.error or 'the step failed without an error line; see the log'}"]
    lines.append(f"Log file: {result.log_path}")
    summary_file = os.path.join(result.run_dir, "run-summary", "summary") if result.run_dir else ""
    if summary_file and os.path.exists(summary_file):
        lines.append(f"Run summary: {summary_file}")
    lines.append("Fix the cause and run the same command again: completed steps are reused from the cache.")
    if any(r.status == "cached" for r in result.steps.values()):
        lines.append("Some steps came from the cache: if one of their outputs is damaged, run with --no-cache to redo them all.")
    return lines


def _recorded_tensorboard(result: RunResult) -> str:
    """The TensorBoard logdir of this run's full_train, as its record names it (a cached step's: the run that made it).

    The trainer writes its runs ``train`` and ``eval`` under ``tensorboard/`` of the artifact.
    """
    from pipeline import runs

    if not result.run_dir:
        return ""
    logdir = runs.load_run(result.pipeline_root, os.path.basename(result.run_dir)).tensorboard
    inner = os.path.join(logdir, "tensorboard")
    return inner if logdir and os.path.isdir(inner) else logdir
