"""The console of `taxifare run`: kfp.local's lines turned into one line per step event."""

import io

from components.common import summary
from components.impl.contracts import SUMMARY_DIR_ENV
from pipeline import local_run


def feed(lines: list[str], monkeypatch, summary_dir: str = "") -> tuple[list[str], local_run.StepTracker, str]:
    monkeypatch.setattr(local_run, "PROGRESS_EVERY", 0.0)
    log, console = io.StringIO(), []
    tracker = local_run.StepTracker(log, console.append, summary_dir)
    tracker.write("\n".join(lines) + "\n")
    return console, tracker, log.getvalue()


def test_step_events_progress_and_summary(monkeypatch, tmp_path):
    monkeypatch.setenv(SUMMARY_DIR_ENV, str(tmp_path))
    summary("full_train", "eval RMSE $3.30", rmse=3.3)  # what the step does in its own process
    lines = [
        "12:00:00.000 - INFO - Executing task \x1b[96m'full-train'\x1b[0m",
        "    step 100/2000  loss 12.345  rmse 3.514  210,000 examples/s",
        "full_train: eval RMSE $3.30",  # its log line: the figures come from the file, not from here
        "12:00:09.000 - INFO - Task \x1b[96m'full-train'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
        "2026-11-28 INFO Task stage-data cache hit (key=abc); skipping execution.",
        "2026-11-28 INFO Skipping conditional task condition-1 (condition evaluated to False)",
    ]
    console, tracker, log = feed(lines, monkeypatch, str(tmp_path))
    assert console[0].split() == ["...", "full_train", "started"]
    assert "step 100/2,000 (5%), train RMSE $3.51, 210,000 examples/s" in console[1]
    assert console[2].startswith("  ok  full_train") and console[2].endswith("eval RMSE $3.30")
    assert "stage_data" in console[3] and "cached" in console[3]
    assert "deploy" in console[4] and "not blessed" in console[4]
    assert tracker.steps["full_train"].figures == {"rmse": 3.3}
    assert tracker.steps["deploy"].status == "skipped"
    assert log.count("\n") == len(lines)  # every raw line is kept in the log


def test_a_failing_step_shows_its_error(monkeypatch):
    lines = [
        "Executing task 'stage-data'",
        "    Traceback (most recent call last):",
        "        raise InputError(f'...')",
        "    trainer.errors.InputError: 100 of 100 train data rows (100.0%) are bad (outside_nyc=100)",
        "Task 'stage-data' finished with status FAILURE",
    ]
    console, tracker, _ = feed(lines, monkeypatch)
    assert tracker.steps["stage_data"].status == "failed"
    assert tracker.steps["stage_data"].error == "InputError: 100 of 100 train data rows (100.0%) are bad (outside_nyc=100)"
    assert console[-1].startswith("  FAIL stage_data") and "InputError: 100 of 100" in console[-1]
