"""The ``tune`` step: search hidden units, learning rate and batch size with short trials, hand the best set to full training.

``tuning_trials`` (0 = off, the default) trials, each a short training run
(:func:`trial_steps`: a tenth of ``train_steps``, at least 50) on the staged train split,
scored by eval RMSE on the eval split. The search space is the pipeline parameter
``tuning_space`` (:data:`trainer.config.TUNING_SPACE` when empty), written as::

    hidden_units=32,16|64,32|128,64; learning_rate=0.0003..0.03; batch_size=128|256|512

(choices separated by ``|``; the learning rate a range searched on a log scale).

* Locally (:func:`tune_local`): Optuna's TPE sampler, seeded, trials run in this process one
  after another; one line per trial (``trial i/N ... best so far``).
* On Vertex AI: the hyperparameter tuning job of google-cloud-pipeline-components runs the
  trainer's image (:func:`vertex_worker_pool_specs`, :func:`vertex_study_parameters`), each
  trial reports the hypertune metric ``rmse``; :func:`best_of_trials` picks the best.

No kfp here; TensorFlow and Optuna are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Callable
from typing import Any

from base import atomic, checks
from base.errors import InputError
from components.common import progress as record_progress
from components.contracts import Hyperparameters
from trainer.config import TUNING_SPACE

#: The metric every trial reports (the trainer's hypertune metric).
METRIC = "rmse"
#: The searched hyperparameters, by their one name: the tune step's outputs, the Vertex study's
#: parameter ids and the trainer's flags (Vertex passes ``--<id>=<value>``).
NAMES = Hyperparameters._fields
MIN_TRIAL_STEPS = 50


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The values a trial may take."""

    hidden_units: tuple[str, ...]
    learning_rate: tuple[float, float]
    batch_size: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"hidden_units": list(self.hidden_units), "learning_rate": list(self.learning_rate), "batch_size": list(self.batch_size)}


def parse_space(text: str) -> SearchSpace:
    """The search space from its text form (:data:`trainer.config.TUNING_SPACE` when empty).

    Raises:
        InputError: one line naming the dimension that leaves no valid value, or the syntax error.
    """
    from components.full_train.logic import parse_hidden_units

    example = f"write it like {TUNING_SPACE!r}"
    given: dict[str, str] = {}
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in NAMES:
            raise InputError(f"tuning_space: {part.strip()!r} is not hidden_units=..., learning_rate=... or batch_size=...; {example}")
        given[name] = value.strip()
    defaults = dict(p.strip().split("=", 1) for p in TUNING_SPACE.split(";"))
    values = {name: given.get(name, defaults[name].strip()) for name in NAMES}

    units: list[str] = []
    for choice in values["hidden_units"].split("|"):
        if choice.strip():
            try:
                units.append(",".join(str(u) for u in parse_hidden_units(choice)))
            except InputError:
                raise InputError(
                    f"tuning_space: hidden_units choice {choice.strip()!r} is not layer sizes such as 64,32; {example}"
                ) from None
    low_text, sep, high_text = values["learning_rate"].partition("..")
    try:
        low, high = float(low_text), float(high_text if sep else low_text)
    except ValueError:
        raise InputError(
            f"tuning_space: learning_rate {values['learning_rate']!r} is not a range such as 0.0003..0.03; {example}"
        ) from None
    sizes: list[int] = []
    for choice in values["batch_size"].split("|"):
        if choice.strip():
            try:
                sizes.append(int(choice))
            except ValueError:
                raise InputError(f"tuning_space: batch_size choice {choice.strip()!r} is not a whole number; {example}") from None
    if not units:
        raise InputError(f"tuning_space: hidden_units leaves no choice; {example}")
    try:  # each end a valid learning rate (base.checks.learning_rate), the range not empty
        checks.learning_rate("learning_rate", low)
        checks.learning_rate("learning_rate", high)
        if low > high:
            raise InputError("LOW is above HIGH")
    except InputError:
        raise InputError(
            f"tuning_space: learning_rate {values['learning_rate']!r} leaves no valid value: "
            "give LOW..HIGH, both valid learning rates and LOW <= HIGH, e.g. 0.0003..0.03"
        ) from None
    sizes = [s for s in sizes if s > 0] if all(s > 0 for s in sizes) else []
    if not sizes:
        raise InputError(
            f"tuning_space: batch_size leaves no valid value: give positive sizes such as 128|256|512 (got {values['batch_size']!r})"
        )
    return SearchSpace(tuple(dict.fromkeys(units)), (low, high), tuple(dict.fromkeys(sizes)))


def check_tuning(trials: Any, space: str, parallel_trials: Any = 1) -> None:
    """Refuse tuning settings that cannot work, before anything runs.

    Raises:
        InputError: a negative or single trial, a bad parallel count, a space with no valid value.
    """
    try:
        count = int(trials)
    except (TypeError, ValueError):
        count = -1
    if count < 0 or count == 1 or str(trials).strip() not in (str(count), f"{count}.0"):
        raise InputError(f"tuning_trials must be 0 (no tuning) or at least 2 trials to compare (got {trials!r}): e.g. --tuning-trials 8")
    try:
        parallel = int(parallel_trials)
    except (TypeError, ValueError):
        parallel = 0
    if parallel < 1:
        raise InputError(f"tuning_parallel_trials must be a positive number of trials run at once (got {parallel_trials!r})")
    if count and parallel > count:
        raise InputError(f"tuning_parallel_trials ({parallel}) is above tuning_trials ({count}): run at most {count} at once")
    parse_space(space)


def trial_steps(train_steps: int) -> int:
    """Steps of one trial: a tenth of full training, at least :data:`MIN_TRIAL_STEPS` (and never more than full training)."""
    return max(1, min(int(train_steps), max(MIN_TRIAL_STEPS, int(train_steps) // 10)))


@dataclasses.dataclass
class Tuned:
    """The set handed to full training."""

    hidden_units: str
    learning_rate: float
    batch_size: int
    rmse: float = math.nan
    trials: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    tuned: bool = False

    def hyperparameters(self) -> Hyperparameters:
        """The set full training takes."""
        return Hyperparameters(self.hidden_units, self.learning_rate, self.batch_size)

    def record(self) -> dict[str, Any]:
        """What full training records (and the tune step's metrics file holds)."""
        return {
            "tuned": self.tuned,
            "hidden_units": self.hidden_units,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "best_rmse": None if math.isnan(self.rmse) else self.rmse,
            "trials": self.trials,
        }


def tune_local(
    train_path: str,
    eval_path: str,
    *,
    trials: int,
    space: str,
    train_steps: int,
    seed: int,
    given: Hyperparameters,
    progress: Callable[[str], None] = print,
) -> Tuned:
    """Run ``trials`` short trainings chosen by Optuna's TPE sampler and return the best set.

    The settings are the pipeline parameters (their defaults are in :mod:`pipeline.parameters`).

    Args:
        train_path: the staged train ``Dataset`` directory.
        eval_path: the staged eval ``Dataset`` directory.
        trials: how many trials; 0 returns ``given`` untouched (no TensorFlow import).
        space: the search space text (see :func:`parse_space`).
        train_steps: full training's steps (each trial runs :func:`trial_steps` of them).
        seed: seed of the sampler and of every trial's training.
        given: the pipeline's own hyperparameters; the first trial
            tries them, so tuning never does worse than not tuning on the eval split.
        progress: receives one line per trial.

    Raises:
        InputError: bad tuning settings.
        FloatingPointError: every trial diverged.
    """
    if trials == 0:
        return Tuned(*given)
    check_tuning(trials, space)
    import optuna

    searched = parse_space(space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, trials)))
    units, rate, batch = given
    if units in searched.hidden_units and batch in searched.batch_size and searched.learning_rate[0] <= rate <= searched.learning_rate[1]:
        study.enqueue_trial({"hidden_units": units, "learning_rate": rate, "batch_size": batch})
    records: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = {
            "hidden_units": trial.suggest_categorical("hidden_units", list(searched.hidden_units)),
            "learning_rate": trial.suggest_float(
                "learning_rate", *searched.learning_rate, log=searched.learning_rate[0] < searched.learning_rate[1]
            ),
            "batch_size": trial.suggest_categorical("batch_size", list(searched.batch_size)),
        }
        rmse = _run_trial(train_path, eval_path, params, train_steps=trial_steps(train_steps), seed=seed)
        records.append({"trial": trial.number + 1, **params, METRIC: rmse})
        return rmse if math.isfinite(rmse) else math.inf

    def report(study: Any, trial: Any) -> None:
        best = study.best_trial
        line = (
            f"trial {trial.number + 1}/{trials}: eval RMSE ${trial.value:.3f} "
            f"(hidden_units {trial.params['hidden_units']}, learning_rate {trial.params['learning_rate']:.5f}, "
            f"batch_size {trial.params['batch_size']}); best so far ${best.value:.3f} (trial {best.number + 1})"
        )
        progress(line)
        record_progress("tune", trial=trial.number + 1, of=trials, rmse=trial.value, best_rmse=best.value, text=line, **trial.params)

    study.optimize(objective, n_trials=trials, callbacks=[report])
    best = study.best_trial
    if best.value is None or not math.isfinite(best.value):
        raise FloatingPointError("tune: every trial's eval RMSE was infinite or NaN: lower the learning_rate range of tuning_space")
    return Tuned(
        hidden_units=str(best.params["hidden_units"]),
        learning_rate=float(best.params["learning_rate"]),
        batch_size=int(best.params["batch_size"]),
        rmse=float(best.value),
        trials=records,
        tuned=True,
    )


def _run_trial(train_path: str, eval_path: str, params: dict[str, Any], *, train_steps: int, seed: int) -> float:
    """One short training with ``params`` in a scratch folder of its own (removed after it); its eval RMSE."""
    from components.full_train.logic import data_pattern, parse_hidden_units
    from trainer.quiet import import_tensorflow

    import_tensorflow()  # without its start-up lines (unless TAXIFARE_VERBOSE=1)
    from trainer.model import TrainConfig, train_and_evaluate

    with tempfile.TemporaryDirectory(prefix="taxifare-trial-", ignore_cleanup_errors=True) as out:
        result = train_and_evaluate(
            TrainConfig(
                train_data_paths=data_pattern(train_path),
                eval_data_paths=data_pattern(eval_path),
                output_dir=out,
                train_steps=train_steps,
                batch_size=int(params["batch_size"]),
                hidden_units=parse_hidden_units(str(params["hidden_units"])),
                learning_rate=float(params["learning_rate"]),
                seed=seed,
                validate_data=False,
            ),
            progress=lambda line: None,
        )
    return float(result.metrics["rmse"])


def write_record(tuned: Tuned, path: str) -> None:
    """The tuning record as JSON at ``path`` (through a temporary name)."""
    atomic.write_text(path, json.dumps(tuned.record(), indent=1))


# --- Vertex AI hyperparameter tuning job --------------------------------------------------


def vertex_study_parameters(space: str) -> list[dict[str, Any]]:
    """The study's parameter specs (as ``serialize_parameters`` of google-cloud-pipeline-components writes them)."""
    from google.cloud.aiplatform import hyperparameter_tuning as hpt
    from google_cloud_pipeline_components.v1.hyperparameter_tuning_job import serialize_parameters

    searched = parse_space(space)
    low, high = searched.learning_rate
    rate = (
        hpt.DoubleParameterSpec(min=low, max=high, scale="log") if low < high else hpt.DiscreteParameterSpec(values=[low], scale="linear")
    )
    return serialize_parameters(
        {
            "hidden_units": hpt.CategoricalParameterSpec(values=list(searched.hidden_units)),
            "learning_rate": rate,
            "batch_size": hpt.DiscreteParameterSpec(values=[float(b) for b in searched.batch_size], scale="linear"),
        }
    )


def vertex_study_metrics() -> list[dict[str, Any]]:
    """Minimise the trainer's hypertune metric ``rmse``."""
    from google_cloud_pipeline_components.v1.hyperparameter_tuning_job import serialize_metrics

    return serialize_metrics({METRIC: "minimize"})


def vertex_worker_pool_specs(
    image: str, train_path: str, eval_path: str, *, train_steps: int, seed: int, machine_type: str
) -> list[dict[str, Any]]:
    """One trial's worker pool: the trainer's image running ``python -m trainer.task`` on the staged splits.

    The tuning service appends ``--hidden_units=…``, ``--learning_rate=…`` and ``--batch_size=…``;
    the trial's output directory is ``AIP_MODEL_DIR`` (the job's base output directory / trial id).
    """
    from components.common import local_path
    from components.full_train.logic import data_pattern

    args = [
        "--train_data_paths",
        data_pattern(local_path(train_path)),
        "--eval_data_paths",
        data_pattern(local_path(eval_path)),
        "--train_steps",
        str(train_steps),
        "--seed",
        str(seed),
        "--no_validate",
    ]
    return [
        {
            "machine_spec": {"machine_type": machine_type},
            "replica_count": 1,
            "container_spec": {"image_uri": image, "command": ["python", "-m", "trainer.task"], "args": args},
        }
    ]


def best_of_trials(trials: list[dict[str, Any]]) -> Tuned:
    """The best completed trial of a Vertex tuning job (``HyperparameterTuningJob.trials`` as dicts).

    Raises:
        RuntimeError: when no trial reported the metric.
    """
    scored = []
    for trial in trials:
        metrics = (trial.get("final_measurement") or {}).get("metrics") or []
        value = next((m.get("value") for m in metrics if m.get("metric_id") == METRIC), None)
        if value is not None and math.isfinite(float(value)):
            params = {p["parameter_id"]: p["value"] for p in trial.get("parameters", [])}
            scored.append((float(value), str(trial.get("id", "")), params))
    if not scored:
        raise RuntimeError(f"tune: no trial of the tuning job reported the metric {METRIC!r}: see the trials' logs")
    rmse, _, params = min(scored, key=lambda s: s[0])
    records = [{"trial": tid, **p, METRIC: v} for v, tid, p in scored]
    return Tuned(
        hidden_units=str(params["hidden_units"]),
        learning_rate=float(params["learning_rate"]),
        batch_size=int(float(params["batch_size"])),
        rmse=rmse,
        trials=records,
        tuned=True,
    )


def fetch_trials(gcp_resources: str, *, client: Any = None) -> list[dict[str, Any]]:
    """The trials of the tuning job named in the ``gcp_resources`` JSON that ``HyperparameterTuningJobRunOp`` outputs."""
    from google.cloud import aiplatform_v1

    uri = json.loads(gcp_resources)["resources"][0]["resourceUri"]
    name = uri.split("/v1/", 1)[-1]
    if client is None:
        location = name.split("/")[3]
        client = aiplatform_v1.JobServiceClient(client_options={"api_endpoint": f"{location}-aiplatform.googleapis.com"})
    job = client.get_hyperparameter_tuning_job(name=name)
    return [aiplatform_v1.Trial.to_dict(t) for t in job.trials]
