"""The tune step as kfp components: thin wrappers of :mod:`components.tune.logic`.

``tune`` searches locally with Optuna (and passes the given set through when
``tuning_trials`` is 0); on Vertex AI ``tuning_job_spec`` builds the hyperparameter tuning
job's worker pools and study, and ``best_trial`` reads the finished job's best trial.
"""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Metrics, Output

from components.common import step


@step
def tune(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    tuning_trials: int,
    tuning_space: str,
    train_steps: int,
    hidden_units: str,
    learning_rate: float,
    batch_size: int,
    seed: int,
    trials: Output[Metrics],
) -> NamedTuple("Outputs", [("hidden_units", str), ("learning_rate", float), ("batch_size", int)]):  # type: ignore[valid-type]
    """Search hidden units, learning rate and batch size with short trials (none when tuning_trials is 0); return the best set."""
    from components.common import started

    started("tune", output=trials.path)  # first: a failure from here on is this step's

    from components.common import summary
    from components.contracts import Hyperparameters
    from components.tune.logic import tune_local, write_record

    best = tune_local(
        train_data.path,
        eval_data.path,
        trials=tuning_trials,
        space=tuning_space,
        train_steps=train_steps,
        seed=seed,
        given=Hyperparameters(hidden_units, learning_rate, batch_size),
        progress=lambda line: print(line, flush=True),
    )
    write_record(best, trials.path)
    if best.tuned:
        trials.log_metric("best_rmse", best.rmse)
        trials.log_metric("trials", len(best.trials))
        text = f"best of {len(best.trials)} trials: eval RMSE ${best.rmse:.3f} with hidden_units {best.hidden_units}, "
        text += f"learning_rate {best.learning_rate:.5f}, batch_size {best.batch_size}"
    else:
        text = "off (tuning_trials 0): full training uses the given hyperparameters"
    summary("tune", text, **{k: v for k, v in best.record().items() if k != "trials"})
    return best.hyperparameters()


@step
def tuning_job_spec(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    image: str,
    machine_type: str,
    tuning_trials: int,
    tuning_space: str,
    train_steps: int,
    seed: int,
) -> NamedTuple("Outputs", [("worker_pool_specs", list), ("study_spec_parameters", list), ("study_spec_metrics", list)]):  # type: ignore[valid-type]
    """The Vertex hyperparameter tuning job's trial worker pool (the trainer's image on the staged splits) and study."""
    from typing import NamedTuple

    from components.tune.logic import check_tuning, trial_steps, vertex_study_metrics, vertex_study_parameters, vertex_worker_pool_specs

    check_tuning(tuning_trials, tuning_space)
    pools = vertex_worker_pool_specs(
        image, train_data.uri, eval_data.uri, train_steps=trial_steps(train_steps), seed=seed, machine_type=machine_type
    )
    Outputs = NamedTuple(  # noqa: UP014
        "Outputs", [("worker_pool_specs", list), ("study_spec_parameters", list), ("study_spec_metrics", list)]
    )
    return Outputs(pools, vertex_study_parameters(tuning_space), vertex_study_metrics())


@step
def best_trial(
    gcp_resources: str,
    trials: Output[Metrics],
) -> NamedTuple("Outputs", [("hidden_units", str), ("learning_rate", float), ("batch_size", int)]):  # type: ignore[valid-type]
    """The best trial's hidden units, learning rate and batch size from a finished Vertex hyperparameter tuning job."""
    from components.common import summary
    from components.tune.logic import best_of_trials, fetch_trials, write_record

    best = best_of_trials(fetch_trials(gcp_resources))
    write_record(best, trials.path)
    trials.log_metric("best_rmse", best.rmse)
    trials.log_metric("trials", len(best.trials))
    summary(
        "tune",
        f"best of {len(best.trials)} trials: eval RMSE ${best.rmse:.3f}",
        **{k: v for k, v in best.record().items() if k != "trials"},
    )
    return best.hyperparameters()
