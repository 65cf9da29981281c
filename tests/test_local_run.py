"""The console of `taxifare run`: the steps' records (and the DAG's plan) turned into one line per step event."""

import contextlib
import io
import json
import os
import subprocess
import sys

from conftest import ROOT

from components.common import progress, started, summary
from components.contracts import SUMMARY_DIR_ENV, append_event, read_events
from pipeline import local_run, runs, runs_text
from pipeline.pipeline import create_pipeline


def the_plan() -> dict:
    """The plan record of the real DAG, as the kfp.local process writes it."""
    from pipeline.local_kfp import plan

    return {"event": "plan", "tasks": plan(create_pipeline().pipeline_spec)}


def feed(records: list[dict], monkeypatch) -> tuple[list[str], local_run.StepTracker]:
    monkeypatch.setattr(local_run, "PROGRESS_EVERY", 0.0)
    console: list[str] = []
    tracker = local_run.StepTracker(console.append)
    for record in [the_plan(), *records]:
        tracker.add(record)
    return console, tracker


def written(directory) -> list[dict]:
    return read_events(str(directory))[0]


def test_step_events_progress_and_summary(monkeypatch, tmp_path):
    """A second run: stage_data and the trainers from the cache, full_train trains again, deploy's condition false."""
    monkeypatch.setenv(SUMMARY_DIR_ENV, str(tmp_path))
    append_event(str(tmp_path), {"event": "cache_hit", "task": "stage-data", "key": "abc123def456"})  # the kfp.local process
    started("check_drift")  # what the steps do in their own processes
    append_event(str(tmp_path), {"event": "finished", "step": "check_drift", "status": "succeeded"})
    started("full_train", output=str(tmp_path / "taxifare-2026-11-28-12-00-00-1" / "full-train" / "model"))
    progress("full_train", at=100, of=2000, loss=12.345, rmse=3.514, examples_per_second=210000.4)
    summary("full_train", "eval RMSE $3.30", rmse=3.3)
    append_event(str(tmp_path), {"event": "finished", "step": "full_train", "status": "succeeded"})
    started("verify_export")
    summary("verify_export", "NOT blessed: not better overall", blessed=False)
    append_event(str(tmp_path), {"event": "finished", "step": "verify_export", "status": "succeeded"})
    started("run_summary")
    console, tracker = feed(written(tmp_path), monkeypatch)
    assert console[0].split() == ["ok", "stage_data", "cached", "(outputs", "of", "an", "earlier", "run", "reused)"]
    assert console[1].split() == ["...", "check_drift", "started"]
    assert console[3:6] == [
        "  ok  smoke_train    cached  (outputs of an earlier run reused)",
        "  ok  tune           cached  (outputs of an earlier run reused)",
        "  ... full_train     started",
    ]
    assert console[6] == "  ... full_train     step 100/2,000 (5%), train RMSE $3.51, 210,000 examples/s"
    assert console[7].startswith("  ok  full_train") and console[7].endswith("eval RMSE $3.30")
    assert console[-2:] == ["  --  deploy         skipped (model not blessed)", "  ... run_summary    started"]
    assert tracker.steps["full_train"].figures == {"rmse": 3.3}
    assert tracker.steps["deploy"].status == "skipped" and "batch_predict" not in tracker.steps  # batch_source empty: no branch ran
    assert tracker.steps["stage_data"].cache_key == "abc123def456" and tracker.steps["tune"].cache_key == ""
    assert tracker.run_name == "taxifare-2026-11-28-12-00-00-1"


def test_a_failing_step_shows_its_error_and_what_is_skipped(monkeypatch):
    records = [
        {"event": "started", "step": "stage_data", "time": 10.0},
        {"event": "finished", "step": "stage_data", "status": "failed", "time": 12.5, "error": "InputError: 100 of 100 rows are bad"},
        {"event": "started", "step": "run_summary", "time": 13.0},
        {"event": "summary", "step": "run_summary", "text": "FAILED at stage_data", "figures": {}},
        {"event": "finished", "step": "run_summary", "status": "succeeded", "time": 13.5},
        {"event": "pipeline", "status": "ended"},
    ]
    console, tracker = feed(records, monkeypatch)
    tracker.close()
    assert tracker.steps["stage_data"].status == "failed"
    assert tracker.steps["stage_data"].error == "InputError: 100 of 100 rows are bad"
    assert console[1] == "  FAIL stage_data       2.5s  InputError: 100 of 100 rows are bad"
    skipped = ["check_drift", "smoke_train", "tune", "full_train", "verify_export", "deploy"]
    assert console[2:8] == [f"  --  {name:<14} skipped (an earlier step failed)" for name in skipped]
    assert [r.status for r in tracker.steps.values()] == ["failed", *["skipped"] * 6, "succeeded"]


def test_a_retried_step_a_killed_one_and_kfps_own_failure(monkeypatch):
    """full_train fails once and is retried (3 attempts); the next attempt is killed; then kfp.local itself fails."""
    records = [
        {"event": "started", "step": "full_train", "time": 1.0},
        {"event": "finished", "step": "full_train", "status": "failed", "time": 2.0, "error": "OSError: [Errno 28] No space left"},
        {"event": "started", "step": "full_train", "time": 12.0},
        {"event": "started", "step": "full_train", "time": 20.0},  # the second attempt ended without a record
        {"event": "pipeline", "status": "failed", "error": "OSError: [Errno 30] Read-only file system: '/pr/x'"},
    ]
    console, tracker = feed(records, monkeypatch)
    assert console[:3] == [f"  ok  {name:<14} cached  (outputs of an earlier run reused)" for name in ("stage_data", "smoke_train", "tune")]
    assert console[3:] == [
        "  ... full_train     started",
        "  FAIL full_train       1.0s  OSError: [Errno 28] No space left",
        "  ... full_train     failed attempt 1/3; retrying (resumes from checkpoints)",
        "  ... full_train     started",
        f"  FAIL full_train       8.0s  {local_run.STOPPED}",
        "  ... full_train     failed attempt 2/3; retrying (resumes from checkpoints)",
        "  ... full_train     started",
        "  FAIL full_train    OSError: [Errno 30] Read-only file system: '/pr/x'",
    ]
    assert tracker.steps["full_train"].status == "failed" and not tracker.open


def test_a_steps_own_process_records_how_it_ended(tmp_path):
    """kfp's executor runs a step that fails: its records say started, then failed with the error line, and the traceback still prints."""
    module = tmp_path / "component.py"
    module.write_text(
        "def broken(n: int):\n"
        "    from components.common import started\n"
        "    started('broken')\n"
        "    from base.errors import InputError\n"
        "    raise InputError(f'{n} rows are bad\\nsecond line')\n"
        "def fine():\n"
        "    from components.common import started\n"
        "    started('fine')\n"
    )
    records = tmp_path / "records"
    env = {**os.environ, SUMMARY_DIR_ENV: str(records), "PYTHONPATH": str(ROOT)}
    for function, inputs in (("broken", {"parameterValues": {"n": 7}}), ("fine", {})):
        executor_input = {"inputs": inputs, "outputs": {"outputFile": str(tmp_path / f"{function}.json")}}
        argv = [sys.executable, "-m", "kfp.dsl.executor_main", "--component_module_path", str(module)]
        argv += ["--executor_input", json.dumps(executor_input), "--function_to_execute", function]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == (1 if function == "broken" else 0), proc.stderr
        if function == "broken":
            assert "Traceback (most recent call last):" in proc.stderr
    events = [(r["event"], r["step"], r.get("status"), r.get("error")) for r in written(records)]
    assert events == [
        ("started", "broken", None, None),
        ("finished", "broken", "failed", "InputError: 7 rows are bad"),
        ("started", "fine", None, None),
        ("finished", "fine", "succeeded", None),
    ]


def test_a_full_disk_under_the_log_is_one_line(monkeypatch):
    """The log on a full disk (/dev/full: every write fails with ENOSPC): one console line, no traceback."""
    console: list[str] = []
    with open("/dev/full", "w", encoding="utf-8") as log:
        step_log = local_run.StepLog(log, console.append)
        for line in ("Executing task 'full-train'", "    step 1/3", "Task 'full-train' finished with status SUCCESS"):
            step_log.write(line + "\n" + "x" * 9000 + "\n")  # more than the file's buffer: the write itself fails
        step_log.flush()
        with contextlib.suppress(OSError):
            log.close()
    assert len(console) == 1 and "cannot be written" in console[0] and "No space left on device" in console[0], console


def test_the_step_log_keeps_every_line_it_gets():
    log = io.StringIO()
    step_log = local_run.StepLog(log, print)
    step_log.write("Executing task 'stage-data'\n    stage_data: 2,446 train")
    step_log.write(" rows\nunfinished")
    step_log.flush()
    assert log.getvalue() == "Executing task 'stage-data'\n    stage_data: 2,446 train rows\nunfinished"


def test_a_cached_model_that_fails_verification_is_not_reused(tmp_path):
    """verify_export failed on a full_train output from the cache: that cache entry goes, and the message names --no-cache."""
    cache = tmp_path / ".kfp_cache"
    cache.mkdir()
    entry, other = cache / "abc123def.json", cache / "fff000.json"
    entry.write_text("{}")
    other.write_text("{}")
    steps = {
        "stage_data": runs.StepRecord("stage_data", status="cached", cache_key="fff000"),
        "full_train": runs.StepRecord("full_train", status="cached", cache_key="abc123"),
        "verify_export": runs.StepRecord("verify_export", status="failed", error="InputError: not a SavedModel"),
    }
    console: list[str] = []
    assert local_run.drop_suspect_cache(steps, str(cache), console.append) == ["full_train"]
    assert not entry.exists() and other.exists()
    assert len(console) == 1 and "full_train" in console[0] and "next run redoes it" in console[0]
    result = runs.RunResult(ok=False, steps=steps, log_path="log", pipeline_root=str(tmp_path), seconds=1.0, failed_step="verify_export")
    assert any("--no-cache" in line for line in runs_text.failure_lines(result))
