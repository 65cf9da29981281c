"""The check_drift step as a kfp component: a thin wrapper of :mod:`components.check_drift.logic`.

Compares the staged training split's statistics with those the deployed version was trained
on (Jensen-Shannon divergence per feature); stops the run before training when a feature moved
more than ``max_drift`` (0 = report only). Never cached: it compares with what is deployed now.
"""

from kfp.dsl import Dataset, Input, Metrics, Output

from components.common import step


@step
def check_drift(
    train_data: Input[Dataset],
    serving_root: str,
    model_name: str,
    deployed_stats_uri: str,
    max_drift: float,
    drift: Output[Metrics],
):
    """Compare the training split with the deployed model's training data; stop above max_drift."""
    from components.common import started

    started("check_drift", output=drift.path)  # first: a failure from here on is this step's

    from components.check_drift.logic import check
    from components.common import write_metrics

    result = check(
        dict(train_data.metadata),
        serving_root=serving_root,
        model_name=model_name,
        deployed_stats_uri=deployed_stats_uri,
        max_drift=max_drift,
    )
    write_metrics(drift, result.as_metrics() if result else {}, reference_version=result.reference_version if result else "")
