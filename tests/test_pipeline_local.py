"""The whole DAG with kfp.local: deploys, refuses a worse model, stops on bad data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from pipeline.local_run import run_local
from pipeline.runs_text import summarize

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SMALL = {"synthetic_rows": 3000, "train_steps": 300, "batch_size": 128, "smoke_steps": 5}


def run(tmp_path: Path, **arguments):
    lines: list[str] = []
    serving = tmp_path / "serving"
    result = run_local(
        {**SMALL, **arguments, "serving_root": str(serving)},
        pipeline_root=str(tmp_path / "root"),
        log_path=str(tmp_path / "run.log"),
        console=lines.append,
    )
    return result, lines, serving


def test_runs_deploys_then_refuses_a_worse_model(tmp_path):
    first, lines, serving = run(tmp_path)
    assert first.ok, (first.failed_step, lines)
    assert [r.status for r in first.steps.values()] == ["succeeded"] * 8  # the seven steps and the exit step, run_summary
    assert first.figure("run_summary", "status") == "SUCCEEDED"
    assert first.figure("verify_export", "blessed") is True
    assert first.figure("deploy", "version") == 1
    version = serving / "taxifare" / "1"
    assert (version / "saved_model.pb").exists()
    record = json.loads((version / "taxifare_deploy.json").read_text())
    assert record["version"] == 1 and record["test_data_hash"]
    assert any(line.startswith("  ok  full_train") and "eval RMSE" in line for line in lines)
    text = summarize(first, str(serving), "taxifare")
    assert "Deployed version 1" in text and "tensorboard --logdir" in text and "Test RMSE $" in text

    # A much shorter training: worse than what is deployed, so nothing is deployed (the comparison decides; the first run
    # checked the served model, so this one skips infra validation).
    second, lines, _ = run(tmp_path, train_steps=20, infra_validation=False)
    assert second.ok
    assert second.steps["stage_data"].status == "cached"
    assert second.figure("verify_export", "blessed") is False
    assert "not better overall" in second.steps["verify_export"].summary and "version 1's" in second.steps["verify_export"].summary
    assert second.steps["deploy"].status == "skipped"
    assert sorted(p.name for p in (serving / "taxifare").iterdir() if not p.name.startswith(".")) == ["1"]
    assert "Nothing deployed." in summarize(second, str(serving), "taxifare")

    # A model with another signature (the datetime layout needs pickup_datetime) never replaces the served contract:
    # callers sending the lab's instance keep being served by version 1.
    third, lines, _ = run(tmp_path, datetime_layout=True, infra_validation=False)
    assert third.ok and third.figure("verify_export", "blessed") is False
    line = third.steps["verify_export"].summary
    assert "incompatible signature: adds input pickup_datetime (version 1, served by the default route)" in line
    assert "--allow-signature-change" in line and "broken" not in line
    assert sorted(p.name for p in (serving / "taxifare").iterdir() if not p.name.startswith(".")) == ["1"]
    assert "incompatible signature" in summarize(third, str(serving), "taxifare")


def test_bad_data_fails_at_stage_data_with_the_reason(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("12.0,0,0,0,0,1,1\n" * 100)
    result, _lines, serving = run(tmp_path, source=str(bad))
    assert not result.ok and result.failed_step == "stage_data"
    assert "100 of 100 train data rows (100.0%) are bad (outside_nyc=100)" in result.steps["stage_data"].error
    assert all(r.status == "skipped" for name, r in result.steps.items() if name not in ("stage_data", "run_summary"))
    assert result.steps["run_summary"].status == "succeeded"  # the exit step runs whatever happened
    text = summarize(result, str(serving), "taxifare")
    assert "FAILED at stage_data" in text and str(tmp_path / "run.log") in text
    assert not serving.exists()


def test_cli_rejects_a_bad_parameter_before_running(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--train-steps", "-5", "--pipeline-root", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: train_steps must be a positive integer (got -5)"
    assert not (tmp_path / "taxifare-run.log").exists()


def test_a_killed_run_resumes_from_its_completed_steps(tmp_path):
    import os
    import signal
    import time

    root, serving = tmp_path / "root", tmp_path / "serving"
    args = ["--synthetic-rows", "3000", "--train-steps", "200000", "--batch-size", "128", "--smoke-steps", "5"]
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--pipeline-root", str(root), "--serving-root", str(serving), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "full_train     started" in line or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)  # the run and every step process
    proc.wait()
    assert any("ok  smoke_train" in line for line in seen), seen
    staged = list(root.glob("taxifare-*/stage-data/train_data/data.csv"))
    assert len(staged) == 1 and staged[0].stat().st_size > 0

    # about resuming: the served-model check (a server in a process of its own) is test_runs_deploys_then_refuses_a_worse_model's
    resumed = {"synthetic_rows": 3000, "train_steps": 100, "batch_size": 128, "smoke_steps": 5, "infra_validation": False}
    result, lines, _ = run(tmp_path, **resumed)
    assert result.ok, lines
    assert result.steps["stage_data"].status == "cached" and result.steps["smoke_train"].status == "cached"
    assert result.steps["full_train"].status == "succeeded"
