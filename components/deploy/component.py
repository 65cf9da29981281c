"""The deploy step as a kfp component: a thin wrapper of :mod:`components.deploy.logic`.

Step 5, deploy: compare-and-publish the blessed model as the next version of a TF-Serving model
base path (or, in canary mode, under the ``canary`` label).
"""

from kfp.dsl import Dataset, Input, Metrics, Model

from components.common import step


@step
def deploy(
    model: Input[Model],
    train_data: Input[Dataset],
    test_data: Input[Dataset],
    verification: Input[Metrics],
    serving_root: str,
    model_name: str,
    run_name: str,
    deploy_mode: str,
) -> str:
    """Publish the model as the next version if it still beats the served one; returns the version path ('' for none)."""
    from components.common import started

    started("deploy")  # first: a failure from here on is this step's

    import math

    from components.common import summary
    from components.contracts import DatasetStats, ModelInfo, Verification
    from components.deploy.logic import Judged, judger, publish
    from components.verify_export.gate import GateSettings

    verdict = Verification.from_metadata(verification.metadata)
    details = verdict.details
    settings = GateSettings.from_dict(details.get("gate", {}))
    test_hash = DatasetStats.from_metadata(test_data.metadata).content_hash
    info = {
        "run": run_name,
        "model_uri": model.uri,
        "verification": {k: v for k, v in verdict.to_metadata().items() if k != "details"},
        "slices": details.get("slices", []),
        "train_metadata": ModelInfo.from_metadata(model.metadata).to_metadata(),
        "test_data_hash": test_hash,
    }
    published = publish(
        model.path,
        serving_root,
        model_name,
        info,
        candidate_rmse=verdict.test_rmse if math.isfinite(verdict.test_rmse) else None,
        test_data_hash=test_hash,
        mode=deploy_mode,
        judged=Judged(details.get("signature"), details.get("champion_version"), settings, judger(model.path, test_data.path, settings)),
        train_stats=DatasetStats.from_metadata(train_data.metadata).to_metadata(),
    )
    notes = "".join(f"; ignored broken {b}" for b in published.broken)
    notes += f"; removed stale {', '.join(published.removed_temporaries)}" if published.removed_temporaries else ""
    text = f"version {published.version} of {model_name} at {published.path} {published.reason}" if published.deployed else published.reason
    summary("deploy", text + notes, version=published.version, path=published.path, deployed=published.deployed)
    return published.path
