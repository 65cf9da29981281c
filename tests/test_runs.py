"""Runs side by side: the run records, `taxifare runs` / `runs show` / `runs compare`, and runs/index.html in Chromium."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from _browser import check_page

from pipeline import runs, runs_page
from pipeline.cli import main
from pipeline.runs import StepRecord


def fake_run_dir(root: Path, stamp: str) -> Path:
    """A run folder as kfp.local names it, with the report verify_export leaves."""
    path = root / f"taxifare-{stamp}"
    (path / "verify-export").mkdir(parents=True)
    (path / "verify-export" / "report.html").write_text("<!doctype html><title>r</title>")
    (path / "full-train" / "tensorboard").mkdir(parents=True)
    return path


def record(
    root: Path,
    stamp: str,
    *,
    rmse: float | None,
    blessed: bool | None,
    version: int | None,
    failed: str = "",
    rows_id="aaaaaaaa",
    **arguments,
):
    """Save a run record the way `taxifare run` does, from the steps' records."""
    path = fake_run_dir(root, stamp)
    steps = {"stage_data": StepRecord("stage_data", "succeeded", seconds=1.0, summary="2,446 train rows")}
    if failed:
        steps[failed] = StepRecord(failed, "failed", seconds=2.0, error="FloatingPointError: the loss became NaN")
    if rmse is not None:
        figures = {"blessed": blessed, "test_rmse": rmse, "distance_rule_rmse": 4.1, "mean_predictor_rmse": 8.8, "test_examples": 291}
        figures["test_rows_id"] = rows_id
        steps["verify_export"] = StepRecord("verify_export", "succeeded", seconds=5.0, figures=figures)
    if version is not None:
        steps["deploy"] = StepRecord("deploy", "succeeded", seconds=0.1, figures={"version": version, "path": "/srv/taxifare/1"})
    (root / "taxifare-run.log").write_text("the step log\n")
    if failed:  # no report (verify_export never ran), but what the exit step leaves
        (path / "verify-export" / "report.html").unlink()
        (path / "run-summary").mkdir()
        (path / "run-summary" / "summary.txt").write_text(f"FAILED at step {failed}\n")
    return runs.save_record(
        str(path),
        arguments={**runs.defaults(), "data_fingerprint": f"sha256:{stamp}", **arguments, "serving_root": "/srv"},
        steps=steps,
        ok=not failed,
        failed_step=failed,
        started=time.mktime(time.strptime(stamp[:19], "%Y-%m-%d-%H-%M-%S")),
        seconds=83.0,
        log_path=str(root / "taxifare-run.log"),
    )


@pytest.fixture
def three(tmp_path):
    root = tmp_path / "runs" / "pipeline"
    record(root, "2026-11-28-06-00-00-000001", rmse=3.97, blessed=True, version=1)
    record(root, "2026-11-28-07-00-00-000001", rmse=None, blessed=None, version=None, failed="full_train", learning_rate=5.0)
    record(root, "2026-11-28-08-00-00-000001", rmse=3.62, blessed=True, version=2, train_steps=4000, hidden_units="128,64")
    fake_run_dir(root, "2026-11-28-09-00-00-000001")  # a run still going (no record yet)
    return root


def test_records_are_written_whole_and_read_back(three):
    listed = runs.list_runs(str(three))
    assert [r.name[-26:-7] for r in listed] == ["2026-11-28-09-00-00", "2026-11-28-08-00-00", "2026-11-28-07-00-00", "2026-11-28-06-00-00"]
    assert listed[0].status == runs.NO_RECORD
    best = listed[1]
    assert best.test_rmse == 3.62 and best.verdict == "blessed" and best.deployed_version == 2 and best.status == "succeeded"
    assert best.differences(runs.defaults()) == {"train_steps": 4000, "hidden_units": "128,64"}
    assert best.report.endswith("verify-export/report.html") and best.tensorboard.endswith("full-train/tensorboard")
    failed = listed[2]
    assert failed.status == "failed" and failed.failed_step == "full_train" and "NaN" in failed.error
    assert not list(three.glob("*/*.tmp-*"))


def test_runs_lists_newest_first_with_what_differs(three, capsys):
    assert main(["runs", "--pipeline-root", str(three)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["STARTED", "TEST", "RMSE", "DEPLOYED", "TOOK", "OUTCOME"]
    assert out[1].split()[0] == "-1" and out[1].endswith(runs.NO_RECORD)
    assert out[2].split()[:6] == ["-2", "2026-11-28", "08:00", "$3.62", "2", "83s"] and out[2].endswith("blessed")
    assert out[3].strip() == "synthetic; train_steps=4000 hidden_units=128,64"  # never data_fingerprint: no user sets it
    assert out[4].endswith("failed at full_train") and out[5].strip() == "synthetic; learning_rate=5.0"
    assert out[6].split()[3] == "$3.97" and out[7].strip() == "synthetic; (defaults)"
    assert out[-1] == f"Runs page: {three.parent / 'index.html'}"
    assert max(len(line) for line in out[:-1]) <= 80


def _fits_80_columns(text: str) -> None:
    """Every line fits 80 columns, but for a path (or a command holding one) on a line of its own."""
    for line in text.splitlines():
        words = line.split()
        alone = len(words) == 1 or words[:2] in (["tensorboard", "--logdir"], ["tensorboard", "--logdir_spec"])
        assert len(line) <= 80 or (alone and "/" in line), f"{len(line)} columns: {line}"


def test_runs_show_and_compare(three, capsys):
    assert main(["runs", "--pipeline-root", str(three), "show", "08-00-00"]) == 0
    shown = capsys.readouterr().out
    assert "* train_steps" in shown and "4000" in shown and "deployed version 2" in shown
    assert "  tensorboard --logdir " + str(three / "taxifare-2026-11-28-08-00-00-000001" / "full-train" / "tensorboard") in shown
    assert "* data_fingerprint" not in shown and "  data_fingerprint" in shown
    _fits_80_columns(shown)

    assert main(["runs", "--pipeline-root", str(three), "show", "07-00-00"]) == 0
    failed = capsys.readouterr().out
    assert "status    failed at full_train: FloatingPointError" in failed
    assert f"run summary:\n  {three / 'taxifare-2026-11-28-07-00-00-000001' / 'run-summary' / 'summary.txt'}" in failed
    assert f"log:\n  {three / 'taxifare-run.log'}" in failed

    assert main(["runs", "--pipeline-root", str(three), "compare", "06-00-00", "08-00-00"]) == 0
    compared = capsys.readouterr().out
    rmse_row = next(line for line in compared.splitlines() if line.startswith("RMSE vs the first"))
    assert "-0.35 (-8.8%)" in rmse_row
    steps_row = next(line for line in compared.splitlines() if line.startswith("* train_steps"))
    assert steps_row.split()[2:] == ["2000", "4000"]
    assert compared.count("verify-export/report.html") == 2 and "--logdir_spec" in compared
    _fits_80_columns(compared)


def test_a_cached_step_shows_the_figures_of_the_run_that_made_it(tmp_path, capsys):
    root = tmp_path / "pipeline"
    first = fake_run_dir(root, "2026-11-28-06-00-00-000001")
    made = StepRecord("full_train", "succeeded", seconds=9.9, summary="eval RMSE $3.13 after 2,000 steps", figures={"rmse": 3.13})
    runs.save_record(
        str(first), arguments=runs.defaults(), steps={"full_train": made}, ok=True, failed_step="", started=time.time() - 60,
        seconds=30.0, log_path=str(root / "taxifare-run.log"),
    )  # fmt: skip
    (root / ".kfp_cache").mkdir()
    entry = {"tensorboard": {"uri": str(first / "full-train" / "tensorboard")}, "steps": 2000}
    (root / ".kfp_cache" / "5e1f00d.json").write_text(json.dumps(entry))
    second = fake_run_dir(root, "2026-11-28-07-00-00-000001")
    cached = StepRecord("full_train", "cached", cache_key="5e1f")
    run = runs.save_record(
        str(second), arguments=runs.defaults(), steps={"full_train": cached}, ok=True, failed_step="", started=time.time(),
        seconds=5.0, log_path=str(root / "taxifare-run.log"),
    )  # fmt: skip
    assert run.steps["full_train"]["figures"] == {"rmse": 3.13} and run.steps["full_train"]["cached_from"] == first.name
    assert main(["runs", "--pipeline-root", str(root), "show", "07-00-00"]) == 0
    shown = capsys.readouterr().out
    assert f"  full_train     cached       0.0s  eval RMSE $3.13 after 2,000 steps (made by {first.name})" in shown.replace("\n      ", " ")


def test_the_closing_loss_curves_line_names_the_runs_own_logs(tmp_path):
    """A run whose full_train came from the cache points at the logs its record names, not at the newest folder on disk."""
    from pipeline.runs import RunResult
    from pipeline.runs_text import summarize

    root = tmp_path / "pipeline"
    mine = fake_run_dir(root, "2026-11-28-06-00-00-000001")
    (mine / "full-train" / "tensorboard" / "tensorboard" / "train").mkdir(parents=True)
    runs.save_record(
        str(mine), arguments=runs.defaults(), steps={}, ok=True, failed_step="", started=time.time(), seconds=5.0,
        log_path=str(root / "taxifare-run.log"),
    )  # fmt: skip
    other = fake_run_dir(root, "2026-11-28-09-00-00-000001")  # newer, and written last
    (other / "full-train" / "tensorboard" / "tensorboard" / "train").mkdir(parents=True)
    result = RunResult(ok=True, steps={}, log_path=str(root / "taxifare-run.log"), pipeline_root=str(root), seconds=5.0, run_dir=str(mine))
    text = summarize(result, str(tmp_path / "serving"), "taxifare")
    assert f"Loss curves:  tensorboard --logdir {mine / 'full-train' / 'tensorboard' / 'tensorboard'}" in text.splitlines()


def test_figures_from_other_rows_are_not_compared_or_joined(three, capsys):
    record(three, "2026-11-28-10-00-00-000001", rmse=4.4, blessed=True, version=3, rows_id="bbbbbbbb", source="data/*.csv")
    assert main(["runs", "--pipeline-root", str(three), "compare", "06-00-00", "08-00-00", "10-00-00"]) == 0
    compared = capsys.readouterr().out.splitlines()
    assert next(line for line in compared if line.startswith("test rows (id)")).split()[3:] == ["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"]
    rmse_row = next(line for line in compared if line.startswith("RMSE vs the first"))
    assert "-0.35 (-8.8%)" in rmse_row and rmse_row.endswith("other rows")
    page = Path(runs_page.write_index(str(three))).read_text()
    assert page.count('class="series"') == 2
    assert 'data-test-rows="aaaaaaaa"' in page and 'data-test-rows="bbbbbbbb"' in page and "on test set bbbbbbbb" in page


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "nope"], "no run 'nope'"),
        (["show", "2026-11-28"], "matches 4 runs"),
        (["show", "-9"], "there are 4 runs"),
        (["compare", "-1"], "at least two runs"),
    ],
)
def test_bad_run_names_get_one_line(three, capsys, argv, message):
    assert main(["runs", "--pipeline-root", str(three), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_no_runs_yet(tmp_path, capsys):
    assert main(["runs", "--pipeline-root", str(tmp_path / "none")]) == 0
    assert "no runs yet" in capsys.readouterr().out


@pytest.mark.parametrize("width", [390, 1280])
def test_the_runs_page_reads_well_in_chromium(browser, three, width):
    page = runs_page.write_index(str(three))
    assert page == str(three.parent / "index.html")
    found = browser.measure(Path(page).as_uri(), width, name="runs")
    check_page(found, width)
    assert len(found["runs"]) == 1 + 4  # the header and one row per run
    assert "$3.62" in found["runs"][1 + 1] and "failed at full_train" in found["runs"][1 + 2]
    assert json.loads(browser.evaluate("JSON.stringify(document.querySelectorAll('#rmse-plot circle').length)")) == 2
    # The links of a run open its report; a failed run's, its run summary and its log.
    href = browser.evaluate("document.querySelector('#runs a').href")
    assert href.endswith("verify-export/report.html") and os.path.exists(href.removeprefix("file://"))
    failed = json.loads(
        browser.evaluate("JSON.stringify([...document.querySelectorAll('#runs tr')[3].querySelectorAll('a')].map(a => a.href))")
    )
    assert [h.rsplit("/", 2)[-2:] for h in failed] == [["run-summary", "summary.txt"], ["pipeline", "taxifare-run.log"]]
    assert all(os.path.exists(h.removeprefix("file://")) for h in failed)
    # The loss curves: the command to run (TensorBoard is a server), not a link to a folder listing.
    assert "tensorboard --logdir " + str(three) in found["runs"][1 + 1]
    assert "data_fingerprint" not in found["runs"][1 + 1]


def test_three_runs_at_once_each_find_their_own_folder(tmp_path):
    """Runs started together in one root: each record goes to its own folder, never 'the newest new one'."""
    import datetime as dt

    from pipeline import local_run

    def stamp(t: float) -> str:
        return "taxifare-" + dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d-%H-%M-%S-%f")

    t0 = 1_790_000_000.0
    names = [stamp(t0 + i * 0.2) for i in range(3)]  # three runs, kfp.local stamped 0.2 s apart
    for name in names:
        (tmp_path / name).mkdir()
    before: set[str] = set()
    # the first run saw its folder in its outputs' URIs; the second only knows when kfp stamped it
    assert runs.new_run_dir(str(tmp_path), before, t0 - 1, names[0]) == str(tmp_path / names[0])
    assert runs.new_run_dir(str(tmp_path), before, t0 - 1, "", (t0 + 0.19, t0 + 0.21)) == str(tmp_path / names[1])
    # a run whose steps all came from the cache wrote no folder: it gets its own, not another run's
    own = runs.new_run_dir(str(tmp_path), before, t0 + 5, "", (t0 + 5, t0 + 5.01))
    assert os.path.basename(own) not in names and os.path.isdir(own)
    # the tracker reads the run's folder from a step's record (the path of one of its outputs)
    tracker = local_run.StepTracker(lambda line: None)
    tracker.add({"event": "started", "step": "stage_data", "run": names[2], "time": t0})
    assert tracker.run_name == names[2]
