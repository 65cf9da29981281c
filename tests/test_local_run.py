"""The console of `taxifare run`: kfp.local's lines turned into one line per step event."""

import contextlib
import io

from components.common import summary
from components.impl.contracts import SUMMARY_DIR_ENV
from pipeline import local_run, runs_text


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


def test_a_full_disk_under_the_log_is_one_line_and_every_step_line_once(monkeypatch):
    """The log on a full disk (/dev/full: every write fails with ENOSPC): one line, no traceback, no line twice."""
    monkeypatch.setattr(local_run, "PROGRESS_EVERY", 0.0)
    console: list[str] = []
    with open("/dev/full", "w", encoding="utf-8") as log:
        tracker = local_run.StepTracker(log, console.append)
        lines = [
            "Executing task 'full-train'",
            "Task full-train failed (attempt 1/3)",
            "    Traceback (most recent call last):",
            "    OSError: [Errno 28] No space left on device: '/pr/full-train/model'",
            "Task 'full-train' finished with status FAILURE",
            "Skipping task deploy",
        ]
        for line in lines:
            tracker.write(line + "\n" + "x" * 9000 + "\n")  # more than the file's buffer: the write itself fails
        tracker.flush()
        with contextlib.suppress(OSError):
            log.close()
    problems = [line for line in console if "cannot be written" in line]
    assert len(problems) == 1 and "No space left on device" in problems[0], console
    assert sum("failed attempt 1/3" in line for line in console) == 1
    assert sum("skipped" in line for line in console) == 1
    fail = next(line for line in console if line.startswith("  FAIL full_train"))
    assert "OSError: [Errno 28] No space left on device" in fail


def test_a_cached_model_that_fails_verification_is_not_reused(tmp_path):
    """verify_export failed on a full_train output from the cache: that cache entry goes, and the message names --no-cache."""
    cache = tmp_path / ".kfp_cache"
    cache.mkdir()
    entry, other = cache / "abc123def.json", cache / "fff000.json"
    entry.write_text("{}")
    other.write_text("{}")
    steps = {
        "stage_data": local_run.StepRecord("stage_data", status="cached", cache_key="fff000"),
        "full_train": local_run.StepRecord("full_train", status="cached", cache_key="abc123"),
        "verify_export": local_run.StepRecord("verify_export", status="failed", error="InputError: not a SavedModel"),
    }
    console: list[str] = []
    assert local_run.drop_suspect_cache(steps, str(cache), console.append) == ["full_train"]
    assert not entry.exists() and other.exists()
    assert len(console) == 1 and "full_train" in console[0] and "next run redoes it" in console[0]
    result = local_run.RunResult(
        ok=False, steps=steps, log_path="log", pipeline_root=str(tmp_path), seconds=1.0, failed_step="verify_export"
    )
    assert any("--no-cache" in line for line in runs_text.failure_lines(result))
