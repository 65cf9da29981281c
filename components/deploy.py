"""The deploy step as a kfp component: a thin wrapper of :mod:`components.impl.deploy`.

Step 5, deploy: publish the blessed model as the next version of a TF-Serving model base path.
"""

from kfp import dsl

from components.common import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def deploy(
    model: dsl.Input[dsl.Model],
    test_data: dsl.Input[dsl.Dataset],
    verification: dsl.Input[dsl.Metrics],
    serving_root: str,
    model_name: str,
    run_name: str,
) -> str:
    """Publish the model as the next version under serving_root/model_name; returns the version path."""
    from components.common import summary
    from components.impl.contracts import DatasetStats, ModelInfo, Verification
    from components.impl.deploy import publish

    info = {
        "run": run_name,
        "model_uri": model.uri,
        "verification": Verification.from_metadata(verification.metadata).to_metadata(),
        "train_metadata": ModelInfo.from_metadata(model.metadata).to_metadata(),
        "test_data_hash": DatasetStats.from_metadata(test_data.metadata).content_hash,
    }
    published = publish(model.path, serving_root, model_name, info)
    summary("deploy", f"version {published.version} of {model_name} at {published.path}", version=published.version, path=published.path)
    return published.path
