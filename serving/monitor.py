"""``taxifare monitor``: training-serving skew and prediction drift from a request log.

For the logged requests of the last ``--window`` seconds (ending at the newest logged
request), per served version found in them:

* **skew**, per input feature: the drift gate's Jensen-Shannon divergence
  (:func:`trainer.divergence.compare`, over :mod:`trainer.statistics`' fixed bins)
  between the instances that version was asked and its training split, whose statistics it
  keeps in ``assets.extra/taxifare_train_stats.json``; a feature whose divergence is above the
  threshold (``--max-skew``; by default the ``max_drift`` of the run that produced the version
  when it set one, else :data:`DEFAULT_MAX_SKEW`) has moved: ``result.over(threshold)``, the gate's own rule;
* **prediction drift**: the divergence between the version's predictions in this window and in
  the window before it, over the fare's bins.

It prints a table, writes an HTML page (:mod:`serving.monitor_page`), optionally posts the
verdict to a webhook (:func:`base.webhook.post_webhook`) and, with ``--retrain``,
starts ``taxifare run`` with the recorded parameters of the run that produced the served
version when something moved. Exit status: 0 when nothing moved, 1 when something did.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from typing import Any

from base import layout
from serving import request_log, skew
from trainer import divergence, schema, statistics

#: The threshold when neither ``--max-skew`` nor the version's run (its ``max_drift``) gives one.
DEFAULT_MAX_SKEW = 0.1
#: Fewer logged instances than this in a window: no verdict for it (divergences of tiny samples are noise).
DEFAULT_MIN_INSTANCES = 200
PREDICTION = "prediction"


@dataclasses.dataclass
class Row:
    """One line of the table: a feature (or the predictions) of a version."""

    version: int
    feature: str
    distance: float
    threshold: float
    verdict: str  # "ok", "moved", or why there is none
    instances: int
    kind: str = "skew"  # or "drift" (predictions, window against the window before)

    @property
    def moved(self) -> bool:
        """Whether this row is past its threshold."""
        return self.verdict == "moved"


@dataclasses.dataclass
class Report:
    """What ``taxifare monitor`` found."""

    rows: list[Row]
    window: tuple[float, float]
    results: dict[int, divergence.DriftResult] = dataclasses.field(default_factory=dict)
    predictions: dict[int, tuple[list[float], list[float]]] = dataclasses.field(default_factory=dict)

    @property
    def moved(self) -> list[Row]:
        """The rows past their threshold."""
        return [r for r in self.rows if r.moved]

    def table(self) -> str:
        """The rows as a fixed-width table."""
        head = ["version", "feature", "distance", "threshold", "verdict", "instances"]
        body = [
            [
                str(r.version),
                r.feature,
                "-" if math.isnan(r.distance) else f"{r.distance:.3f}",
                f"{r.threshold:g}",
                r.verdict,
                str(r.instances),
            ]
            for r in self.rows
        ]
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body])

    def verdict(self) -> str:
        """One line: what moved, or that nothing did."""
        span = f"{_utc(self.window[0])}..{_utc(self.window[1])}"
        if not self.moved:
            return f"taxifare monitor: no skew or drift above the thresholds in the requests logged {span}"
        named = ", ".join(f"{r.feature} {r.distance:.3f} > {r.threshold:g} (version {r.version})" for r in self.moved)
        return f"taxifare monitor: the live requests moved away from what the served model learned, {span}: {named}"

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body (``text`` for Slack / Google Chat style hooks, and the rows)."""
        return {"text": self.verdict(), "moved": bool(self.moved), "rows": [dataclasses.asdict(r) for r in self.rows]}


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def run_record(version_dir: str) -> dict[str, Any] | None:
    """The ``taxifare-run.json`` of the local run that deployed a version (``None`` when unknown).

    The deploy record names the run (``run``) and the model's folder (``model_uri``,
    ``<pipeline root>/<run>/full-train/model``, possibly an earlier run's when full_train came from
    the cache): the named run's record under that pipeline root first, else the model's run's.
    """
    try:
        with open(os.path.join(version_dir, layout.DEPLOY_FILE), encoding="utf-8") as fh:
            deployed = json.load(fh)
        model_run = os.path.dirname(os.path.dirname(str(deployed.get("model_uri", ""))))
    except (OSError, ValueError, AttributeError):
        return None
    for run_dir in (os.path.join(os.path.dirname(model_run), str(deployed.get("run", ""))), model_run):
        try:
            with open(os.path.join(run_dir, "taxifare-run.json"), encoding="utf-8") as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            return record
    return None


def threshold_for(version_dir: str, max_skew: float | None) -> float:
    """``--max-skew`` when given, else the ``max_drift`` of the version's run when it set one, else :data:`DEFAULT_MAX_SKEW`."""
    if max_skew is not None:
        return divergence.check_max_drift(max_skew)
    recorded = ((run_record(version_dir) or {}).get("arguments") or {}).get("max_drift")
    try:
        value = divergence.check_max_drift(recorded)
    except ValueError:
        value = 0.0
    return value if value > 0 else DEFAULT_MAX_SKEW


def _prediction_row(version: int, now: list[float], before: list[float], threshold: float, min_instances: int) -> Row:
    edges = statistics.bin_edges(schema.LABEL)
    if len(before) < min_instances or len(now) < min_instances:
        return Row(version, PREDICTION, math.nan, threshold, f"too few (< {min_instances} a window)", len(now), "drift")
    distance = divergence.js_divergence(list(statistics.counts(now, edges)), list(statistics.counts(before, edges)))
    return Row(version, PREDICTION, distance, threshold, "moved" if distance > threshold else "ok", len(now), "drift")


def _version_rows(
    report: Report, version: int, records: list[dict[str, Any]], base: str, max_skew: float | None, min_instances: int
) -> None:
    version_dir = os.path.join(base, str(version))
    threshold = threshold_for(version_dir, max_skew)
    counts, sums, n = skew.histograms(r["inputs"] for r in records)
    ref = skew.reference(version_dir)
    if ref is None:
        why = "no training statistics" if os.path.isdir(version_dir) else "version not in --model-base-path"
        report.rows.append(Row(version, "*", math.nan, threshold, why, n))
        return
    result = skew.compare(counts, ref, version, sums)
    report.results[version] = result
    over = {f.feature for f in result.over(threshold)}
    for f in result.ranked():
        verdict = f"too few (< {min_instances})" if n < min_instances else ("moved" if f.feature in over else "ok")
        report.rows.append(Row(version, f.feature, f.divergence, threshold, verdict, n))


def analyse(
    log_dir: str, model_base_path: str, *, window: float = 3600.0, max_skew: float | None = None, min_instances: int = DEFAULT_MIN_INSTANCES
) -> Report:
    """Skew per version and feature, and prediction drift, of the requests logged in the last ``window`` seconds.

    Raises:
        ValueError: when the log holds no complete segment (one line naming the fix).
    """
    records = request_log.read_recent(log_dir, 2 * window)
    if not records:
        raise ValueError(
            f"--request-log {log_dir} holds no complete segment: serve with `taxifare serve --request-log {log_dir}` "
            "(a segment is published every --request-log-segment-seconds and when the server stops)"
        )
    end = max(float(r["time"]) for r in records)
    now = [r for r in records if float(r["time"]) > end - window]
    before = [r for r in records if end - 2 * window < float(r["time"]) <= end - window]
    report = Report(rows=[], window=(min(float(r["time"]) for r in now), end))
    for version in sorted({int(r["version"]) for r in now}):
        mine = [r for r in now if int(r["version"]) == version]
        _version_rows(report, version, mine, model_base_path, max_skew, min_instances)
        outputs_now = [float(v) for r in mine for v in r.get("outputs", [])]
        outputs_before = [float(v) for r in before if int(r["version"]) == version for v in r.get("outputs", [])]
        report.predictions[version] = (outputs_now, outputs_before)
        threshold = threshold_for(os.path.join(model_base_path, str(version)), max_skew)
        report.rows.append(_prediction_row(version, outputs_now, outputs_before, threshold, min_instances))
    return report


def retrain_command(version_dir: str) -> list[str]:
    """``taxifare run`` with the recorded parameters of the run that produced ``version_dir`` (its data source read afresh).

    Raises:
        ValueError: when the version has no run record to repeat.
    """
    from pipeline import parameters

    record = run_record(version_dir)
    if record is None or not isinstance(record.get("arguments"), dict):
        raise ValueError(
            f"version {os.path.basename(version_dir)} has no record of the run that produced it "
            f"({layout.DEPLOY_FILE} -> taxifare-run.json): "
            "start `taxifare run` with the parameters you want instead"
        )
    arguments = record["arguments"]
    cmd = ["taxifare", "run", "--pipeline-root", os.path.dirname(record.get("path") or ".")]
    if arguments.get("serving_root"):
        cmd += ["--serving-root", str(arguments["serving_root"])]
    for param in parameters.for_target(parameters.LOCAL, pipeline_only=False):
        if not param.run_flag or param.name not in arguments:
            continue
        value = arguments[param.name]
        if param.type is bool:
            cmd.append(param.flag if value else "--no-" + param.flag[2:])
        else:
            cmd += [param.flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return cmd


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``taxifare monitor``."""
    parser.add_argument("--request-log", required=True, metavar="DIR", help="the directory `taxifare serve --request-log` writes")
    parser.add_argument(
        "--model-base-path", required=True, help="the served model's directory (versions 1/, 2/, ... with their training statistics)"
    )
    parser.add_argument(
        "--window", type=float, default=3600.0, help="seconds of requests compared, ending at the newest (default %(default)s)"
    )
    parser.add_argument(
        "--max-skew",
        type=float,
        help="threshold on the Jensen-Shannon divergence (0..1), as the drift gate's max_drift "
        f"(default: the version's run's max_drift, else {DEFAULT_MAX_SKEW})",
    )
    parser.add_argument(
        "--min-instances", type=int, default=DEFAULT_MIN_INSTANCES, help="fewest instances for a verdict (default %(default)s)"
    )
    parser.add_argument("--html", default="monitor.html", help="the page to write (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--notify-webhook", default="", help="POST the verdict as JSON to this URL (Slack-style 'text' and the rows)")
    parser.add_argument(
        "--retrain", action="store_true", help="when something moved, start `taxifare run` with the served version's run parameters"
    )


def run(args: argparse.Namespace) -> int:
    """``taxifare monitor``: 0 when nothing moved, 1 when something did, 2 for a user error (raised as ValueError) or an unsent notice."""
    from base.webhook import check_webhook, post_webhook
    from serving import monitor_page

    if args.notify_webhook:
        check_webhook(args.notify_webhook)
    if not args.window > 0 or args.min_instances < 1:
        raise ValueError("--window must be positive seconds and --min-instances at least 1")
    if not os.path.isdir(args.model_base_path):
        raise ValueError(f"--model-base-path {args.model_base_path} is not a directory: pass the served model's directory")
    report = analyse(args.request_log, args.model_base_path, window=args.window, max_skew=args.max_skew, min_instances=args.min_instances)
    page = monitor_page.write(args.html, report)
    print(json.dumps(report.payload(), indent=1) if args.json else report.table())
    print(report.verdict())
    print(f"page: {os.path.abspath(page)}")
    unsent = False
    if args.notify_webhook:
        try:
            code = post_webhook(args.notify_webhook, report.payload())
            print(f"notified {args.notify_webhook.split('/')[2]} (HTTP {code})")
        except RuntimeError as exc:  # one line; the verdict still decides the exit status and the retrain
            print(f"error: {exc}", file=sys.stderr)
            unsent = True
    if report.moved and args.retrain:
        served = layout.served_version_dir(args.model_base_path)
        cmd = retrain_command(served or os.path.join(args.model_base_path, str(report.moved[0].version)))
        print("retraining: " + shlex.join(cmd), flush=True)
        import subprocess

        subprocess.run([sys.executable, "-m", "pipeline.cli", *cmd[1:]], check=False)
    return 1 if report.moved else (2 if unsent else 0)
