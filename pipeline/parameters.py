"""Every pipeline parameter, declared once: name, type, default, help text and check.

The table is the dataclass :class:`Parameters`: one field per parameter, its annotation the
type and :func:`row` its default, check and help. It drives the signatures and docstrings of
both pipelines (:mod:`pipeline.pipeline` for kfp.local and Kubeflow,
:mod:`pipeline.vertex_pipeline` for Vertex AI), the ``taxifare run`` flags, and
:func:`check_params`, which ``taxifare run``, ``submit`` and ``schedule`` call before anything
runs. Where the local and the Vertex default differ (``train_steps``, ``synthetic_rows``) the
row says so with ``vertex_default``.

The pipeline body (:mod:`pipeline.dag`) receives a :class:`Parameters` whose attributes are
kfp's channels of the parameters, so ``p.train_steps`` in the DAG leads to its row here, and
each step takes it as an input of the same name.

The checks themselves are in :mod:`base.checks`, which the steps and the trainer call
too; the hyperparameters default to the trainer's own (:mod:`trainer.config`). The steps'
functions take these settings without defaults of their own: every default is declared here.
No kfp and no TensorFlow here (as TFX's ``constants.py``).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from base import checks, layout
from base.errors import InputError
from trainer import config, validation

LOCAL = "local"
VERTEX = "vertex"
TARGETS = (LOCAL, VERTEX)
_SAME = object()
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One pipeline parameter (or front-door setting): a field of :class:`Parameters` and its row."""

    name: str
    type: type
    default: Any
    help: str
    check: Callable[[str, Any], Any]
    #: The default of the Vertex pipeline, when it is not ``default``.
    vertex_default: Any = _SAME
    #: The pipelines that take it.
    targets: tuple[str, ...] = TARGETS
    #: ``False`` for a front-door setting that is checked but not passed to the pipeline.
    in_pipeline: bool = True
    #: ``False`` when ``taxifare run`` has a flag of its own for it (``--serving-root``).
    run_flag: bool = True

    def default_for(self, target: str) -> Any:
        """The default in the ``target`` pipeline."""
        return self.default if target == LOCAL or self.vertex_default is _SAME else self.vertex_default

    @property
    def flag(self) -> str:
        """The ``taxifare run`` flag."""
        return "--" + self.name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class _Row:
    """What a field of :class:`Parameters` says besides its name, type and default."""

    check: Callable[[str, Any], Any]
    help: str
    vertex_default: Any = _SAME
    targets: tuple[str, ...] = TARGETS
    in_pipeline: bool = True
    run_flag: bool = True


def row(default: _T, check: Callable[[str, Any], Any], help: str, **kw: Any) -> _T:
    """A row of the table: the field's ``default``, its ``check``, its ``help`` and the :class:`Parameter` options in ``kw``."""
    meta = {"row": _Row(check, help, **kw)}
    if isinstance(default, list):
        items = list(default)
        return typing.cast(_T, dataclasses.field(default_factory=lambda: list(items), metadata=meta))
    return typing.cast(_T, dataclasses.field(default=default, metadata=meta))


def _max_drift(name: str, value: Any) -> float:
    from trainer.divergence import check_max_drift

    return check_max_drift(value)


def _tuning_trials(name: str, value: Any) -> int:
    from components.tune.logic import check_tuning

    check_tuning(value, "")
    return int(value)


def _tuning_space(name: str, value: Any) -> str:
    from components.tune.logic import parse_space

    parse_space(str(value))
    return str(value)


# fmt: off
@dataclasses.dataclass(frozen=True)
class Parameters:
    """The pipeline parameters, one field per parameter (the table).

    In a pipeline body each attribute is kfp's channel of that parameter (typed here as the
    value it carries); a parameter the body's pipeline does not take is :class:`NotInPipeline`,
    which kfp refuses as a step input, so using it fails when the pipeline compiles.
    """

    # The data.
    source: str = row("synthetic", checks.source,
       "'synthetic' for generated trips, 'bigquery' for the public NYC trips table (with window_days), or CSV files "
       "(a glob, globs separated by commas, or a directory; local or gs://).")
    eval_source: str = row("", checks.text, "CSV files for the eval split; empty to carve it out of source by a hash of each row's key.")
    test_source: str = row("", checks.text, "CSV files for the test split; empty to carve it out of source by a hash of each row's key.")
    synthetic_rows: int = row(50_000, checks.positive_int, "rows to generate when source is 'synthetic'.", vertex_default=1_000_000)
    seed: int = row(42, checks.integer, "seed of the generated data and of training.")
    datetime_layout: bool = row(False, checks.boolean, "generate the layout with pickup_datetime (when source is 'synthetic').")
    eval_fraction: float = row(0.1, checks.split_fraction, "share of source rows carved out for eval.")
    test_fraction: float = row(0.1, checks.split_fraction, "share of source rows carved out for test.")
    max_bad_fraction: float = row(validation.MAX_BAD_FRACTION, checks.unit_fraction,
       "stop at stage_data when a larger share of rows is malformed or out of range.")
    window_days: int = row(0, checks.non_negative_int,
       "with a source folder of dt=YYYY-MM-DD partitions, or 'bigquery', the days of trips before the run's scheduled time "
       "to use; 0 for none.")
    scheduled_time: str = row("", checks.scheduled_time,
       "the end of the data window, RFC 3339 (e.g. 2026-11-28T06:00:00Z); empty for now. (kfp.local cannot resolve the "
       "schedule-time placeholder, so the local pipeline takes it as a parameter; on Vertex it is the schedule's time.)",
       targets=(LOCAL,))
    data_fingerprint: str = row("", checks.text,
       "a fingerprint of what the sources resolve to (file sizes and times, gs:// generations, window bounds), computed by "
       "taxifare run, submit and schedule: stage_data's cache keys on the data, not only on its path.", run_flag=False)
    bigquery_project: str = row("", checks.text,
       "the project that runs the BigQuery export of source 'bigquery'; empty for the credentials' project "
       "(on Vertex: the pipeline's project).", targets=(LOCAL,))
    # Training.
    smoke_steps: int = row(10, checks.positive_int, "steps of the smoke training that gates full training.")
    train_steps: int = row(config.TRAIN_STEPS, checks.positive_int, "optimizer steps of full training.", vertex_default=20_000)
    # The trainer's own defaults (trainer/config.py), so `python -m trainer.task` and the pipeline train alike.
    batch_size: int = row(config.BATCH_SIZE, checks.positive_int, "examples per training step (per replica on Vertex).")
    hidden_units: str = row(",".join(map(str, config.HIDDEN_UNITS)), checks.hidden_units,
       "hidden layer sizes separated by commas, e.g. '64,32'.")
    learning_rate: float = row(config.LEARNING_RATE, checks.learning_rate, "Adam learning rate.")
    max_model_params: int = row(config.MAX_MODEL_PARAMS, checks.positive_int,
       "the largest model (in parameters, from hidden_units and the embeddings) accepted before any step runs.",
       in_pipeline=False)
    max_drift: float = row(0.0, _max_drift,
       "stop before training when a feature's Jensen-Shannon divergence from the deployed model's training data is above "
       "this (0 to 1); 0 only reports the drift.")
    tuning_trials: int = row(0, _tuning_trials,
       "trials of the hyperparameter search before full training (hidden_units, learning_rate, batch_size); 0 for none, "
       "else at least 2.")
    tuning_space: str = row("", _tuning_space,
       "the search space, e.g. 'hidden_units=32,16|64,32|128,64; learning_rate=0.0003..0.03; batch_size=128|256|512|1024' "
       "(the default when empty; give only the dimensions to change).")
    tuning_parallel_trials: int = row(1, checks.positive_int, "trials the Vertex hyperparameter tuning job runs at once.",
       targets=(VERTEX,))
    # Vertex training machines.
    machine_type: str = row("n1-standard-4", checks.machine_type, "machine type of each training replica.", targets=(VERTEX,))
    accelerator_type: str = row("", checks.text, "accelerator of each training replica, e.g. NVIDIA_TESLA_T4; empty for none.",
       targets=(VERTEX,))
    accelerator_count: int = row(0, checks.non_negative_int, "accelerators per training replica.", targets=(VERTEX,))
    replica_count: int = row(1, checks.positive_int, "training machines; more than 1 trains with MultiWorkerMirroredStrategy.",
       targets=(VERTEX,))
    training_service_account: str = row("", checks.text, "service account of the training job; empty for the pipeline's.",
       targets=(VERTEX,))
    tensorboard: str = row("", checks.text,
       "a Vertex TensorBoard instance (projects/P/locations/L/tensorboards/ID) for the training curves; empty for none.",
       targets=(VERTEX,))
    restart_job_on_worker_restart: bool = row(True, checks.boolean,
       "restart the training job when a worker restarts (it resumes from its checkpoints).", targets=(VERTEX,))
    # Verification and deployment.
    max_rmse: float = row(10.0, checks.dollars, "the largest test RMSE in dollars that may be deployed.")
    # The deploy decision against the served model, on the same test rows (components/verify_export/gate.py; docs/pipeline.md says why).
    min_improvement: float = row(0.01, checks.non_negative_dollars,
       "the least test-RMSE gain in dollars over the served model, on the same rows, for a candidate to replace it.")
    require_significant: bool = row(True, checks.boolean,
       "replace the served model only when the paired bootstrap's 95% interval of the RMSE difference lies below zero "
       "(better beyond the noise of the test rows).")
    max_slice_regression: float = row(0.1, checks.unit_fraction,
       "refuse a candidate whose RMSE on any slice (distance band, airport, passengers, hour, weekday) of at least "
       "min_slice_rows trips is worse than the served model's by more than this fraction.")
    min_slice_rows: int = row(200, checks.non_negative_int, "the fewest test trips a slice needs to count in max_slice_regression.")
    allow_signature_change: bool = row(False, checks.boolean,
       "deploy a model whose serving signature (inputs, outputs) differs from the served one, replacing the contract its "
       "callers use; recorded with the version. Without it such a model is refused (or use a new model_name).")
    require_beat_baseline: bool = row(False, checks.boolean,
       "refuse a model whose test RMSE is not below that of gradient-boosted trees (scikit-learn, 15 plain features) "
       "trained on the run's train split; off: the trees' RMSE is reported beside the model's.")
    serving_root: str = row("", checks.text, "the directory of TF-Serving model base paths that deploy publishes into.",
       targets=(LOCAL,), run_flag=False)
    model_name: str = row(layout.MODEL_NAME, checks.model_name, "the served model's name (a directory under serving_root).",
       targets=(LOCAL,))
    infra_validation: bool = row(True, checks.boolean,
       "serve the candidate in its own process and check its REST and gRPC answers before blessing it.", targets=(LOCAL,))
    deploy_mode: str = row(checks.REPLACE, checks.deploy_mode,
       "'replace' moves the default route to the new version; 'canary' publishes it under the canary label and leaves "
       "stable where it is (promote with `taxifare label --model-base-path P stable=N`).", targets=(LOCAL,))
    model_display_name: str = row("taxifare", checks.display_name,
       "the Vertex model: a new version of it when it exists, else a new model.", targets=(VERTEX,))
    endpoint_display_name: str = row("taxifare", checks.display_name, "the Vertex endpoint: used when it exists, else created.",
       targets=(VERTEX,))
    deploy_machine_type: str = row("n1-standard-2", checks.machine_type, "machine type of the serving replicas.", targets=(VERTEX,))
    min_replicas: int = row(1, checks.positive_int, "least serving replicas.", targets=(VERTEX,))
    max_replicas: int = row(2, checks.positive_int, "most serving replicas.", targets=(VERTEX,))
    traffic_percentage: int = row(100, checks.percentage,
       "share of the endpoint's traffic the new version takes (the rest stays where it was).", targets=(VERTEX,))
    request_logging_sampling_rate: float = row(0.0, checks.unit_fraction,
       "share of the endpoint's online predictions Vertex AI logs to BigQuery (request-response logging, set after deploy); "
       "0 leaves the endpoint's logging as it is (off for a new endpoint).", targets=(VERTEX,))
    request_logging_bigquery: str = row("", checks.bigquery_destination,
       "where request-response logging writes: bq://PROJECT[.DATASET[.TABLE]]; empty for a new dataset "
       "logging_<endpoint>_<id> in the run's project.", targets=(VERTEX,))
    batch_source: str = row("", checks.text,
       "trips to score with the version just deployed (or the served one) as the last step; empty to skip. Locally CSV or "
       "JSON-lines files (a glob, globs separated by commas; local or gs://); on Vertex gs:// JSON-lines files separated by "
       "commas or one bq://PROJECT.DATASET.TABLE (see docs/batch.md).")
    batch_machine_type: str = row("n1-standard-2", checks.machine_type, "machine type of the batch prediction job's replicas.",
       targets=(VERTEX,))
    batch_starting_replica_count: int = row(1, checks.positive_int, "replicas the batch prediction job starts with.",
       targets=(VERTEX,))
    batch_max_replica_count: int = row(2, checks.positive_int, "most replicas of the batch prediction job.", targets=(VERTEX,))
    # Word when a run ends.
    notify_webhook: str = row("", checks.webhook_url,
       "a URL that receives each run's outcome as a JSON POST (status, failed step, its log tail; Slack-style 'text'); "
       "empty for none.")
    notify_emails: list[str] = row([], checks.email_recipients,  # noqa: RUF009 - row() gives a default_factory field
       "up to three addresses Vertex AI e-mails each run's final status to (VertexNotificationEmailOp as the exit task "
       "around the whole run); a parameter of the template compiled with the e-mail handler only "
       "(`taxifare submit --notify-email`, `taxifare compile --target vertex-email`).",
       targets=(VERTEX,), in_pipeline=False)

# fmt: on


def _parameter(field: dataclasses.Field[Any], hint: Any) -> Parameter:
    meta: _Row = field.metadata["row"]
    factory: Any = field.default_factory
    default = field.default if factory is dataclasses.MISSING else factory()  # a list's default comes from its factory
    return Parameter(
        field.name,
        typing.get_origin(hint) or hint,  # list[str] -> list, the type kfp reads
        default,
        meta.help,
        meta.check,
        vertex_default=meta.vertex_default,
        targets=meta.targets,
        in_pipeline=meta.in_pipeline,
        run_flag=meta.run_flag,
    )


_HINTS = typing.get_type_hints(Parameters)
PARAMETERS: tuple[Parameter, ...] = tuple(_parameter(f, _HINTS[f.name]) for f in dataclasses.fields(Parameters))
BY_NAME: dict[str, Parameter] = {p.name: p for p in PARAMETERS}


@dataclasses.dataclass(frozen=True)
class NotInPipeline:
    """What a pipeline body sees for a parameter its pipeline does not take (kfp refuses it as a step input)."""

    name: str
    target: str

    def __repr__(self) -> str:
        return f"<{self.name}: not a parameter of the {self.target} pipeline>"


def for_target(target: str, *, pipeline_only: bool = True) -> list[Parameter]:
    """The parameters of the ``target`` pipeline (``local`` or ``vertex``), in table order."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")
    return [p for p in PARAMETERS if target in p.targets and (p.in_pipeline or not pipeline_only)]


def defaults(target: str = LOCAL) -> dict[str, Any]:
    """``{name: default}`` of the ``target`` pipeline's parameters."""
    return {p.name: p.default_for(target) for p in for_target(target)}


def _with_extra(target: str, extra: Iterable[str]) -> list[Parameter]:
    return [*for_target(target), *(BY_NAME[name] for name in extra)]


def signature(target: str, extra: Iterable[str] = ()) -> inspect.Signature:
    """The ``target`` pipeline function's signature (typed keyword parameters with defaults), plus the ``extra`` rows."""
    return inspect.Signature(
        [
            inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default_for(target), annotation=p.type)
            for p in _with_extra(target, extra)
        ],
        return_annotation=None,
    )


def docstring(summary: str, target: str, extra: Iterable[str] = ()) -> str:
    """A Google-style docstring with one ``Args:`` line per parameter of ``target`` (and of the ``extra`` rows)."""
    lines = [summary, "", "Args:"]
    lines += [f"    {p.name}: {p.help}" for p in _with_extra(target, extra)]
    return "\n".join(lines) + "\n"


def pipeline_function(
    body: Callable[[Parameters], None], *, target: str, name: str, summary: str, extra: tuple[str, ...] = ()
) -> Callable[..., None]:
    """A function with the ``target`` pipeline's signature and docstring that calls ``body(Parameters(...))``.

    ``@dsl.pipeline`` reads the parameters from the signature and their descriptions from the
    docstring, then calls the function with one channel per parameter (positionally); ``body``
    gets them as the attributes of one :class:`Parameters` (:class:`NotInPipeline` for the
    others). ``extra`` names rows that are not parameters of the plain pipeline but of this
    variant (``notify_emails``).
    """
    names = [p.name for p in _with_extra(target, extra)]

    def pipeline_func(*args: Any, **kwargs: Any) -> None:
        given = {**dict(zip(names, args, strict=False)), **kwargs}
        body(Parameters(**{p.name: given.get(p.name, NotInPipeline(p.name, target)) for p in PARAMETERS}))

    pipeline_func.__signature__ = signature(target, extra)  # type: ignore[attr-defined]
    pipeline_func.__doc__ = docstring(summary, target, extra)
    pipeline_func.__name__ = pipeline_func.__qualname__ = name.replace("-", "_")
    return pipeline_func


def arguments(p: Parameters, target: str) -> dict[str, object]:
    """The ``target`` pipeline's parameters of ``p`` by name: how a body hands them all on to a sub-pipeline."""
    return {param.name: getattr(p, param.name) for param in for_target(target)}


def _coerce(param: Parameter, value: Any) -> Any:
    label = param.name
    out = param.check(label, value)
    if param.type is str:
        return str(value)  # the check may parse it (hidden_units); the pipeline takes the text
    return param.type(out)


def checked(values: Mapping[str, Any], target: str = LOCAL, *, known: Iterable[str] | None = None) -> dict[str, Any]:
    """``values`` (strings from ``--param NAME=VALUE`` are fine) checked and converted to their types.

    Each value is checked on its own, then the rules between parameters (the split fractions
    leave rows to train on, 'bigquery' needs a window, the model fits the size limit) on the
    values merged with the ``target`` defaults.

    Args:
        values: parameter values by name; front-door settings such as ``max_model_params`` included.
        target: whose defaults complete the values (``local`` or ``vertex``).
        known: the names accepted (default: the ``target`` pipeline's and the front-door settings).

    Returns:
        The given values converted to their types (front-door settings included).

    Raises:
        InputError: one line naming the parameter and a valid value.
    """
    params = {p.name: p for p in for_target(target, pipeline_only=False)}
    allowed = set(known) if known is not None else set(params)
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in allowed or name not in params:
            raise InputError(f"unknown pipeline parameter {name!r}: known ones are {', '.join(n for n in params if n in allowed)}")
        out[name] = _coerce(params[name], value)
    merged = {p.name: p.default_for(target) for p in params.values()} | out
    checks.split_fractions(merged["eval_fraction"], merged["test_fraction"])
    checks.data_window(merged["source"], merged["window_days"])
    checks.synthetic_rows(merged["source"], merged["synthetic_rows"])
    hidden = checks.hidden_units("hidden_units", merged["hidden_units"])
    config.check_model_size(hidden, limit=merged["max_model_params"], datetime_layout=merged["datetime_layout"], flag=_limit_flag(target))
    if merged["tuning_trials"]:
        from components.tune.logic import check_tuning, parse_space

        check_tuning(merged["tuning_trials"], merged["tuning_space"], merged.get("tuning_parallel_trials", 1))

        for choice in parse_space(merged["tuning_space"]).hidden_units:  # every size tuning may try fits the limit too
            units = checks.hidden_units("tuning_space hidden_units", choice)
            layout = merged["datetime_layout"]
            try:
                config.check_model_size(units, limit=merged["max_model_params"], datetime_layout=layout, flag=_limit_flag(target))
            except InputError as exc:
                raise InputError(f"tuning_space: {exc}") from None
    if target == VERTEX and merged["min_replicas"] > merged["max_replicas"]:
        raise InputError(f"min_replicas ({merged['min_replicas']}) is above max_replicas ({merged['max_replicas']}): raise max_replicas")
    _check_batch(merged, target)
    return out


def _check_batch(merged: Mapping[str, Any], target: str) -> None:
    """Refuse a batch_source that cannot be scored, before the run.

    Locally its local files must exist (a run does not fail at its last step for a typo); on
    Vertex it is what a BatchPredictionJob reads (gs:// JSON lines or one bq:// table), and the
    replica counts agree.
    """
    if target != VERTEX:
        from base import storage

        local = [pattern for pattern in str(merged["batch_source"]).split(",") if pattern.strip() and not storage.is_gcs(pattern.strip())]
        if local:
            storage.expand(local, what="batch_source")
        return
    if merged["batch_source"]:
        from serving.batch_vertex import job_source

        job_source(merged["batch_source"])
    if merged["batch_starting_replica_count"] > merged["batch_max_replica_count"]:
        raise InputError(
            f"batch_starting_replica_count ({merged['batch_starting_replica_count']}) is above batch_max_replica_count "
            f"({merged['batch_max_replica_count']}): raise batch_max_replica_count"
        )


def _limit_flag(target: str) -> str:
    return "--max-model-params N" if target == LOCAL else "--param max_model_params=N"


def check_params(values: Mapping[str, Any], target: str = LOCAL) -> None:
    """Refuse parameter values that cannot work, before any step or request.

    Raises:
        InputError: one line naming the parameter and the fix.
    """
    checked(values, target)


def pipeline_arguments(values: Mapping[str, Any], target: str = LOCAL) -> dict[str, Any]:
    """The values the ``target`` pipeline takes (front-door settings such as ``max_model_params`` dropped)."""
    names = {p.name for p in for_target(target)}
    return {name: value for name, value in values.items() if name in names}
