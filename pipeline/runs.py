"""Local runs, side by side: ``taxifare runs``, ``runs show``, ``runs compare`` and ``runs/index.html``.

Every ``taxifare run`` leaves a folder ``<pipeline-root>/taxifare-<time>/`` (kfp.local's run
directory, one sub-folder per task that wrote outputs). At the end of the run
:func:`save_record` adds ``taxifare-run.json`` to it: when and how long, the status and the
failed step, every parameter, each step's status and key figures, and where the report, the
TensorBoard logs and the log file are. :func:`pipeline.runs_page.write_index` then refreshes the static page
``index.html`` beside the pipeline root (``runs/index.html`` by default): the table of runs and
a plot of test RMSE over runs, readable on a phone.

A folder without a record (a run killed before its end, or made before records existed) is
still listed, with what its outputs tell (the time in its name, verify_export's metrics). What
a run hands to its record is here too (:class:`StepRecord`, :class:`RunResult`).
Standard library only: listing runs imports neither kfp nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any

from base import atomic

RECORD = "taxifare-run.json"
#: The runs page's file name, beside the pipeline root.
INDEX = "index.html"
#: The status of a run folder without a record: the run is still going, or was stopped.
NO_RECORD = "no record: running or stopped"
_RUN_DIR = re.compile(r"^taxifare-(\d{4})-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d+)$")
#: Parameters that say where things go rather than what the run does (not shown as differences).
PLACES = ("serving_root",)
#: Parameters no user sets: computed for every run (what the sources held), so never "not the default".
COMPUTED = ("data_fingerprint",)
#: The metrics shown side by side, in this order, with their labels.
METRICS = {
    "test_rmse": "test RMSE",
    "distance_rule_rmse": "distance rule RMSE",
    "mean_predictor_rmse": "training-mean RMSE",
    "gbt_baseline_rmse": "gradient-boosted trees RMSE",
    "deployed_rmse": "deployed model RMSE (before)",
    "test_json_fare": "fare for the lab's test.json",
    "test_examples": "test trips",
}


@dataclasses.dataclass
class StepRecord:
    """What the console shows about one step."""

    name: str
    status: str = "pending"
    started: float = 0.0
    seconds: float = 0.0
    summary: str = ""
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str = ""
    #: The start of kfp.local's cache key when the step's outputs came from the cache.
    cache_key: str = ""


@dataclasses.dataclass
class RunResult:
    """The outcome of a local pipeline run."""

    ok: bool
    steps: dict[str, StepRecord]
    log_path: str
    pipeline_root: str
    seconds: float
    failed_step: str = ""
    #: The run's directory under ``pipeline_root`` (its outputs and ``taxifare-run.json``).
    run_dir: str = ""
    #: The runs page refreshed after the run (``runs/index.html``).
    index: str = ""

    def figure(self, step: str, key: str, default: Any = None) -> Any:
        """A key figure a step reported (``None`` when it did not run)."""
        record = self.steps.get(step)
        return record.figures.get(key, default) if record else default


@dataclasses.dataclass
class Run:
    """One local run as ``taxifare runs`` shows it."""

    name: str
    path: str
    started: str  # ISO 8601, local time
    seconds: float | None = None
    status: str = "unknown"
    failed_step: str = ""
    error: str = ""
    arguments: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    blessed: bool | None = None
    deployed_version: int | None = None
    report: str = ""
    tensorboard: str = ""
    log: str = ""

    @property
    def test_rmse(self) -> float | None:
        """The model's test RMSE (``None`` when verify_export did not run)."""
        value = self.metrics.get("test_rmse")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    @property
    def test_rows_id(self) -> str:
        """The id of the test rows the figures were measured on ('' when unknown)."""
        return str(self.metrics.get("test_rows_id") or "")

    @property
    def verdict(self) -> str:
        """'blessed', 'not blessed' or '-'."""
        return "-" if self.blessed is None else ("blessed" if self.blessed else "not blessed")

    def differences(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """The parameters set to something else than their default (places and computed ones left out)."""
        return {k: v for k, v in self.arguments.items() if k not in PLACES + COMPUTED and (k not in defaults or not _same(v, defaults[k]))}

    @property
    def summary_file(self) -> str:
        """The run_summary step's text (status, failed step, its error and log tail), when it wrote one."""
        path = os.path.join(self.path, "run-summary", "summary.txt")
        return path if os.path.exists(path) else ""


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b))
    return bool(a == b)


def _started_from_name(name: str) -> str:
    m = _RUN_DIR.match(name)
    if not m:
        return ""
    y, mo, d, h, mi, s, us = m.groups()
    return dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), int(us[:6].ljust(6, "0"))).isoformat(timespec="seconds")


def _cache_entries(pipeline_root: str, cache_key: str) -> Iterator[dict[str, Any]]:
    """kfp.local's cache entries whose key starts with ``cache_key`` (output name -> its artifact or value)."""
    import glob

    for path in glob.glob(os.path.join(pipeline_root, ".kfp_cache", f"{cache_key}*.json")):
        try:
            with open(path, encoding="utf-8") as fh:
                entry = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict):
            yield entry


def _find_cached_output(pipeline_root: str, cache_key: str, output: str) -> str:
    """The URI of ``output`` in kfp.local's cache entry whose key starts with ``cache_key``."""
    for entry in _cache_entries(pipeline_root, cache_key):
        value = entry.get(output)
        if isinstance(value, dict) and value.get("uri"):
            return str(value["uri"])
    return ""


def _cached_origin(pipeline_root: str, cache_key: str) -> str:
    """The folder name of the run whose outputs kfp.local's cache entry ``cache_key...`` holds ('' when unknown)."""
    for entry in _cache_entries(pipeline_root, cache_key):
        for value in entry.values():
            uri = value.get("uri") if isinstance(value, dict) else None
            name = os.path.relpath(str(uri), pipeline_root).split(os.sep)[0] if uri else ""
            if _RUN_DIR.match(name):
                return name
    return ""


def _step_data(pipeline_root: str, steps: dict[str, StepRecord]) -> dict[str, dict[str, Any]]:
    """Each step's record; a cached step's summary and figures are those of the run that made its outputs."""
    data = {}
    for name, rec in steps.items():
        step = {"status": rec.status, "seconds": round(rec.seconds, 2), "summary": rec.summary, "figures": rec.figures, "error": rec.error}
        origin = _cached_origin(pipeline_root, rec.cache_key) if rec.status == "cached" and rec.cache_key else ""
        made = load_run(pipeline_root, origin).steps.get(name, {}) if origin else {}
        if made.get("summary") or made.get("figures"):
            step |= {
                "summary": made.get("summary", ""),
                "figures": made.get("figures", {}),
                "cached_from": made.get("cached_from") or origin,
            }
        data[name] = step
    return data


def new_run_dir(pipeline_root: str, before: set[str], started: float, name: str = "", window: tuple[float, float] | None = None) -> str:
    """This run's directory: ``name`` when the run saw it, else the one kfp.local stamped within ``window``.

    Never simply "the newest new folder": with several runs at once in one root, that is
    another run's. A run that wrote no folder (every step from the cache) gets its own,
    named by ``started``.
    """
    if name and os.path.isdir(os.path.join(pipeline_root, name)):
        return os.path.join(pipeline_root, name)
    names = sorted(set(list_run_dirs(pipeline_root)) - before)
    if window is not None:
        low, high = window
        names = [n for n in names if low - 0.001 <= _stamp(n) <= high + 0.001]  # the stamp is taken between the two
    if len(names) == 1:
        return os.path.join(pipeline_root, names[0])
    stamp = dt.datetime.fromtimestamp(started).strftime("%Y-%m-%d-%H-%M-%S-%f")
    path = os.path.join(pipeline_root, f"taxifare-{stamp}")
    os.makedirs(path, exist_ok=True)
    return path


def _stamp(name: str) -> float:
    """The time in a run folder's name (kfp.local's local-time stamp); 0 when it has none."""
    try:
        return dt.datetime.strptime(name.removeprefix("taxifare-"), "%Y-%m-%d-%H-%M-%S-%f").timestamp()
    except ValueError:
        return 0.0


def list_run_dirs(pipeline_root: str) -> list[str]:
    """The names of the run directories under ``pipeline_root``, oldest first."""
    try:
        names = os.listdir(pipeline_root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if _RUN_DIR.match(n) and os.path.isdir(os.path.join(pipeline_root, n)))


def save_record(
    run_dir: str,
    *,
    arguments: dict[str, Any],
    steps: dict[str, StepRecord],
    ok: bool,
    failed_step: str,
    started: float,
    seconds: float,
    log_path: str,
) -> Run:
    """Write ``taxifare-run.json`` into ``run_dir`` (atomically) and return the run it describes.

    Args:
        run_dir: the run's directory under the pipeline root.
        arguments: every pipeline parameter of the run.
        steps: ``{step: StepRecord}`` as :mod:`pipeline.local_run` tracked them.
        ok: whether every step succeeded.
        failed_step: the first failed step ('' when none).
        started: the start as a UNIX time.
        seconds: the run's duration.
        log_path: the log file of the run.
    """
    pipeline_root = os.path.dirname(os.path.abspath(run_dir))
    step_data = _step_data(pipeline_root, steps)
    verify = steps.get("verify_export")
    metrics = {k: v for k, v in (verify.figures if verify else {}).items() if k != "blessed"}
    deploy = steps.get("deploy")
    report = os.path.join(run_dir, "verify-export", "report.html")
    tensorboard = os.path.join(run_dir, "full-train", "tensorboard")
    train = steps.get("full_train")
    if train is not None and train.cache_key and not os.path.isdir(tensorboard):
        tensorboard = _find_cached_output(pipeline_root, train.cache_key, "tensorboard")
    run = Run(
        name=os.path.basename(run_dir),
        path=os.path.abspath(run_dir),
        started=dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        seconds=round(seconds, 1),
        status="succeeded" if ok else "failed",
        failed_step=failed_step,
        error=steps[failed_step].error if failed_step and failed_step in steps else "",
        arguments=dict(arguments),
        steps=step_data,
        metrics=metrics,
        blessed=verify.figures.get("blessed") if verify and verify.status == "succeeded" else None,
        deployed_version=deploy.figures.get("version") if deploy and deploy.status == "succeeded" else None,
        report=report if os.path.exists(report) else "",
        tensorboard=tensorboard if tensorboard and os.path.isdir(tensorboard) else "",
        log=os.path.abspath(log_path),
    )
    atomic.write_text(os.path.join(run_dir, RECORD), json.dumps(dataclasses.asdict(run), indent=1, default=str))
    return run


def load_run(pipeline_root: str, name: str) -> Run:
    """The run in ``<pipeline_root>/<name>``: its record, or what its outputs tell."""
    path = os.path.join(os.path.abspath(pipeline_root), name)
    record = os.path.join(path, RECORD)
    if os.path.exists(record):
        try:
            with open(record, encoding="utf-8") as fh:
                data = json.load(fh)
            fields = {f.name for f in dataclasses.fields(Run)}
            run = Run(**{k: v for k, v in data.items() if k in fields})
            run.path = path
            return run
        except (OSError, ValueError, TypeError):
            pass
    run = Run(name=name, path=path, started=_started_from_name(name), status=NO_RECORD)
    try:
        with open(os.path.join(path, "verify-export", "executor_output.json"), encoding="utf-8") as fh:
            out = json.load(fh)
        meta = out["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        run.metrics = {k: v for k, v in meta.items() if k in METRICS}
        run.blessed = meta.get("blessed")
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    for candidate in ("report.html", "report"):
        if os.path.exists(os.path.join(path, "verify-export", candidate)):
            run.report = os.path.join(path, "verify-export", candidate)
            break
    return run


def list_runs(pipeline_root: str) -> list[Run]:
    """Every run under ``pipeline_root``, newest first."""
    return [load_run(pipeline_root, n) for n in reversed(list_run_dirs(pipeline_root))]


def find_run(pipeline_root: str, key: str) -> Run:
    """The run named ``key``: its folder name, a unique part of it (e.g. ``05-14-31``), ``latest``, or ``-N`` (the N-th newest).

    Raises:
        InputError: naming the runs that exist.
    """
    from base.errors import InputError

    names = list(reversed(list_run_dirs(pipeline_root)))
    if not names:
        raise InputError(f"no runs under {pipeline_root}: start one with `taxifare run` (or pass --pipeline-root)")
    if key == "latest":
        return load_run(pipeline_root, names[0])
    if re.fullmatch(r"-\d+", key):
        index = int(key[1:]) - 1
        if not 0 <= index < len(names):
            raise InputError(f"run {key}: there are {len(names)} runs (-1 is the newest)")
        return load_run(pipeline_root, names[index])
    matches = [n for n in names if n == key or key in n]
    if len(matches) == 1 or key in matches:
        return load_run(pipeline_root, key if key in matches else matches[0])
    if not matches:
        raise InputError(f"no run {key!r} under {pipeline_root}: `taxifare runs` lists them (e.g. {names[0]}, latest, -2)")
    raise InputError(f"{key!r} matches {len(matches)} runs ({', '.join(matches[:4])}...): give more of the name")


def defaults() -> dict[str, Any]:
    """The pipeline parameters' defaults."""
    from pipeline import parameters

    return parameters.defaults(parameters.LOCAL)


def fmt_seconds(seconds: float | None) -> str:
    """A duration as ``42s`` or ``3.5min`` (``-`` when unknown), for ``taxifare runs`` and the runs page."""
    if seconds is None:
        return "-"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}min"


def fmt_money(value: Any) -> str:
    """Dollars as ``$4.21`` (``-`` when not a finite number)."""
    return f"${value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def fmt_params(params: dict[str, Any]) -> str:
    """Parameters as ``name=value`` words (``(defaults)`` when none)."""
    return " ".join(f"{k}={v}" for k, v in params.items()) or "(defaults)"


def table_row(run: Run, base: dict[str, Any]) -> dict[str, str]:
    """The cells of one run in ``taxifare runs`` and on the runs page (``base``: the defaults)."""
    return {
        "run": run.name,
        "time": run.started.replace("T", " "),
        "source": str(run.arguments.get("source", "-")),
        "parameters": fmt_params({k: v for k, v in run.differences(base).items() if k != "source"}) if run.arguments else "?",
        "test RMSE": fmt_money(run.test_rmse),
        "verdict": run.verdict,
        "deployed": str(run.deployed_version) if run.deployed_version is not None else "-",
        "duration": fmt_seconds(run.seconds),
        "status": run.status + (f" at {run.failed_step}" if run.failed_step else ""),
    }


def index_path(pipeline_root: str) -> str:
    """Where the runs page lives: beside the pipeline root (``runs/index.html`` for ``runs/pipeline``)."""
    return os.path.join(os.path.dirname(os.path.abspath(pipeline_root)), INDEX)
