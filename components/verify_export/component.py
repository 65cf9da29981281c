"""The verify_export step as a kfp component: a thin wrapper of :mod:`components.verify_export.logic`.

Step 4, verify_export: decide whether the trained model may be deployed.
"""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.common import step


@step
def verify_export(
    model: Input[Model],
    train_data: Input[Dataset],
    test_data: Input[Dataset],
    tensorboard: Input[Artifact],
    max_rmse: float,
    min_improvement: float,
    require_significant: bool,
    max_slice_regression: float,
    min_slice_rows: int,
    allow_signature_change: bool,
    require_beat_baseline: bool,
    serving_root: str,
    model_name: str,
    infra_validation: bool,
    deployed_model_uri: str,
    deployed_rmse: float,
    metrics: Output[Metrics],
    report: Output[HTML],
) -> bool:
    """Check the export against the schema, the baselines and the deployed model; return whether it is blessed.

    The reason and the figures go to the Metrics artifact (its metadata holds ``blessed`` and
    ``reason``) and the HTML report: the ``report`` artifact the pipeline UIs render, and the
    same page as ``report.html`` beside it, which a browser opens from a file path. The verdict
    is the task's single output because kfp.local resolves conditions only on a task's single
    ``Output``.
    """
    from components.common import started

    started("verify_export", output=metrics.path)  # first: a failure from here on is this step's

    from components.common import write_metrics
    from components.contracts import DatasetStats
    from components.verify_export.gate import GateSettings
    from components.verify_export.logic import verify
    from components.verify_export.report import write_report

    verdict = verify(
        model.path,
        test_data.path,
        train_fare_mean=DatasetStats.from_metadata(train_data.metadata).mean(),
        training_dir=tensorboard.path,
        max_rmse=max_rmse,
        serving_root=serving_root,
        model_name=model_name,
        infra_validation=infra_validation,
        deployed_model_uri=deployed_model_uri,
        deployed_rmse=deployed_rmse,
        gate=GateSettings(min_improvement, require_significant, max_slice_regression, min_slice_rows, allow_signature_change),
        test_rows_id=DatasetStats.from_metadata(test_data.metadata).content_hash[:8],
        train_path=train_data.path,
        require_beat_baseline=require_beat_baseline,
    )
    # kfp logs only finite figures; the file has them all, after the verdict.
    write_metrics(metrics, verdict.finite_metrics(), blessed=verdict.blessed, reason=verdict.reason, **verdict.metrics)
    metrics.metadata.update(verdict.to_metadata())
    from components.check_drift.logic import report_section, with_section

    drift = report_section(
        dict(train_data.metadata), serving_root=serving_root, model_name=model_name, deployed_stats_uri=deployed_model_uri
    )
    write_report(report.path, with_section(verdict.report_html, drift))  # ends with the training data against the deployed model's
    return verdict.blessed
