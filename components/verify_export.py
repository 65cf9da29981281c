"""The verify_export step as a kfp component: a thin wrapper of :mod:`components.impl.verify_export`.

Step 4, verify_export: decide whether the trained model may be deployed.
"""

from kfp import dsl

from components.common import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def verify_export(
    model: dsl.Input[dsl.Model],
    train_data: dsl.Input[dsl.Dataset],
    test_data: dsl.Input[dsl.Dataset],
    tensorboard: dsl.Input[dsl.Artifact],
    max_rmse: float,
    serving_root: str,
    model_name: str,
    infra_validation: bool,
    deployed_model_uri: str,
    deployed_rmse: float,
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.HTML],
) -> bool:
    """Check the export against the schema, the baselines and the deployed model; return whether it is blessed.

    The reason and the figures go to the Metrics artifact (its metadata holds ``blessed`` and
    ``reason``) and the HTML report: the ``report`` artifact the pipeline UIs render, and the
    same page as ``report.html`` beside it, which a browser opens from a file path. The verdict
    is the task's single output because kfp.local resolves conditions only on a task's single
    ``Output``.
    """
    import json

    from components.impl.contracts import DatasetStats, Verification
    from components.impl.report import write_report
    from components.impl.verify_export import verify

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
    )
    verification = Verification(verdict.blessed, verdict.reason, verdict.metrics)
    for key, value in verification.finite_metrics().items():
        metrics.log_metric(key, value)
    metrics.metadata.update(verification.to_metadata())
    from components.impl.drift import report_section, with_section

    drift = report_section(
        dict(train_data.metadata), serving_root=serving_root, model_name=model_name, deployed_stats_uri=deployed_model_uri
    )
    write_report(report.path, with_section(verdict.report_html, drift))  # ends with the training data against the deployed model's
    with open(metrics.path, "w") as fh:
        json.dump({"blessed": verdict.blessed, "reason": verdict.reason, **verdict.metrics}, fh, default=str)
    return verdict.blessed
