"""The batch_predict step as a kfp component: a thin wrapper of :mod:`components.batch_predict.logic`.

The optional last step (pipeline parameter ``batch_source``; empty: the step is skipped): score
those trips with the version deploy just published, or the served one when nothing was deployed.
On Vertex AI the same step is google-cloud-pipeline-components' ``ModelBatchPredictOp``.
"""

from kfp.dsl import Dataset, Output

from components.common import step


@step
def batch_predict(batch_source: str, deployed_path: str, serving_root: str, model_name: str, predictions: Output[Dataset]) -> None:
    """Score ``batch_source`` into the ``predictions`` folder (predictions_*.jsonl, errors_*.jsonl, batch_summary.json)."""
    from components.common import started

    started("batch_predict", output=predictions.path)  # first: a failure from here on is this step's

    from components.batch_predict.logic import batch_predict as score
    from components.common import summary
    from serving.batch import summary_line

    result = score(batch_source, deployed_path, serving_root, model_name, predictions.path)
    if result is None:
        summary("batch_predict", f"nothing scored: no version of {model_name} is deployed under {serving_root} yet", rows=0)
        return
    keys = ("rows", "scored", "errors", "version", "shards", "rows_per_second")
    predictions.metadata.update({key: result[key] for key in keys if result[key] is not None})
    summary("batch_predict", summary_line(result), **{key: result[key] for key in keys}, path=predictions.path)
