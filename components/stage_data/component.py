"""The stage_data step as a kfp component: a thin wrapper of :mod:`components.stage_data.logic`.

Step 1, stage_data: validate the source rows and write the train / eval / test splits.
"""

from kfp.dsl import Dataset, Output

from components.common import step


@step
def stage_data(
    source: str,
    eval_source: str,
    test_source: str,
    synthetic_rows: int,
    seed: int,
    datetime_layout: bool,
    eval_fraction: float,
    test_fraction: float,
    max_bad_fraction: float,
    window_days: int,
    scheduled_time: str,
    bigquery_project: str,
    data_fingerprint: str,
    train_data: Output[Dataset],
    eval_data: Output[Dataset],
    test_data: Output[Dataset],
):
    """Validate the source rows and write the train, eval and test splits with their statistics.

    ``data_fingerprint`` (what the sources resolved to when the run started) is not read: it is
    an input so that kfp's cache keys this step on the data, not only on the source's path.
    """
    from components.common import started

    started("stage_data", output=train_data.path)  # first: a failure from here on is this step's

    from components.stage_data.logic import StageSettings, stage

    settings = StageSettings(
        source=source,
        eval_source=eval_source,
        test_source=test_source,
        synthetic_rows=synthetic_rows,
        seed=seed,
        datetime_layout=datetime_layout,
        eval_fraction=eval_fraction,
        test_fraction=test_fraction,
        max_bad_fraction=max_bad_fraction,
        window_days=window_days,
        scheduled_time=scheduled_time,
        bigquery_project=bigquery_project,
    )
    outputs = {"train": train_data, "eval": eval_data, "test": test_data}
    staged = stage(
        settings,
        {name: artifact.path for name, artifact in outputs.items()},
        bigquery_export_prefix=train_data.uri.rstrip("/") + "-bigquery-export",
    )
    for name, artifact in outputs.items():
        artifact.metadata.update(staged[name].metadata)
        artifact.metadata["data_fingerprint"] = data_fingerprint
