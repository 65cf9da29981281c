"""The pipeline's optional batch_predict step: its function, and `taxifare run --batch-source` with kfp.local."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _serving_helpers import export_untrained, publish
from conftest import real

from components.batch_predict.logic import batch_predict
from pipeline.local_run import run_local
from pipeline.runs_text import summarize


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    """A serving root whose model has versions 1 and 2, the default route on 1 (stable)."""
    root = tmp_path_factory.mktemp("serving")
    for version in (1, 2):
        publish(export_untrained(root.parent / f"e{version}", seed=version), root / "taxifare", version)
    (root / "taxifare" / "labels.json").write_text(json.dumps({"stable": 1}))
    return root


def test_the_step_scores_with_the_deployed_version_else_the_served_one(serving, tmp_path):
    valid = str(real("taxi-valid.csv"))
    deployed = batch_predict(valid, str(serving / "taxifare" / "2"), str(serving), "taxifare", str(tmp_path / "a"))
    served = batch_predict(valid, "", str(serving), "taxifare", str(tmp_path / "b"))
    assert (deployed["version"], served["version"]) == (2, 1)
    assert deployed["rows"] == served["rows"] == deployed["scored"] == 1665
    assert (tmp_path / "a" / "predictions_00001.jsonl").read_bytes() != (tmp_path / "b" / "predictions_00001.jsonl").read_bytes()
    assert batch_predict(valid, "", str(tmp_path / "empty"), "taxifare", str(tmp_path / "c")) is None  # nothing deployed yet
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.e2e
@pytest.mark.slow
def test_run_with_a_batch_source_scores_it_as_the_last_step(serving, tmp_path):
    root = tmp_path / "serving"
    shutil.copytree(serving, root)
    lines: list[str] = []
    arguments = {"synthetic_rows": 2000, "train_steps": 20, "batch_size": 128, "smoke_steps": 3, "infra_validation": False}
    batch_source = str(real("taxi-valid.csv"))
    result = run_local(
        {**arguments, "serving_root": str(root), "batch_source": batch_source},
        pipeline_root=str(tmp_path / "root"),
        log_path=str(tmp_path / "run.log"),
        console=lines.append,
    )
    assert result.ok, (result.failed_step, lines)
    # 20 steps do not beat the served version's baselines: nothing deployed, the served version (1) scores the trips
    assert result.figure("verify_export", "blessed") is False and result.steps["deploy"].status == "skipped"
    batch = result.steps["batch_predict"]
    assert batch.status == "succeeded" and (batch.figures["version"], batch.figures["rows"], batch.figures["errors"]) == (1, 1665, 0)
    folder = batch.figures["path"]
    assert folder.startswith(str(tmp_path / "root")) and folder.endswith("/predictions")  # the step's output artifact
    assert json.loads((Path(folder) / "batch_summary.json").read_text())["scored"] == 1665
    assert any(line.startswith("  ok  batch_predict") and "scored 1,665 of 1,665 rows with version 1" in line for line in lines)
    assert "Batch predictions: scored 1,665 of 1,665 rows with version 1" in summarize(result, str(root), "taxifare")
