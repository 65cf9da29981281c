"""Runs side by side: the run records, `taxifare runs` / `runs show` / `runs compare`, and runs/index.html in Chromium."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from _browser import check_page

from pipeline import runs
from pipeline.cli import main
from pipeline.local_run import StepRecord


def fake_run_dir(root: Path, stamp: str) -> Path:
    """A run folder as kfp.local names it, with the report verify_export leaves."""
    path = root / f"taxifare-{stamp}"
    (path / "verify-export").mkdir(parents=True)
    (path / "verify-export" / "report.html").write_text("<!doctype html><title>r</title>")
    (path / "full-train" / "tensorboard").mkdir(parents=True)
    return path


def record(root: Path, stamp: str, *, rmse: float | None, blessed: bool | None, version: int | None, failed: str = "", **arguments):
    """Save a run record the way `taxifare run` does, from the steps' records."""
    path = fake_run_dir(root, stamp)
    steps = {"stage_data": StepRecord("stage_data", "succeeded", seconds=1.0, summary="2,446 train rows")}
    if failed:
        steps[failed] = StepRecord(failed, "failed", seconds=2.0, error="FloatingPointError: the loss became NaN")
    if rmse is not None:
        figures = {"blessed": blessed, "test_rmse": rmse, "distance_rule_rmse": 4.1, "mean_predictor_rmse": 8.8, "test_examples": 291}
        steps["verify_export"] = StepRecord("verify_export", "succeeded", seconds=5.0, figures=figures)
    if version is not None:
        steps["deploy"] = StepRecord("deploy", "succeeded", seconds=0.1, figures={"version": version, "path": "/srv/taxifare/1"})
    return runs.save_record(
        str(path),
        arguments={**runs.defaults(), **arguments, "serving_root": "/srv"},
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
    assert out[0].split()[:4] == ["time", "source", "parameters", "test"]
    assert "running or stopped" in out[1]
    assert "train_steps=4000 hidden_units=128,64" in out[2] and "$3.62" in out[2] and "blessed" in out[2] and "83s" in out[2]
    assert "learning_rate=5.0" in out[3] and "failed at full_train" in out[3]
    assert "(defaults)" in out[4] and "$3.97" in out[4]
    assert out[-1] == f"Runs page: {three.parent / 'index.html'}"


def test_runs_show_and_compare(three, capsys):
    assert main(["runs", "--pipeline-root", str(three), "show", "08-00-00"]) == 0
    shown = capsys.readouterr().out
    assert "* train_steps" in shown and "4000" in shown and "deployed version 2" in shown
    assert "tensorboard --logdir " + str(three / "taxifare-2026-11-28-08-00-00-000001" / "full-train" / "tensorboard") in shown

    assert main(["runs", "--pipeline-root", str(three), "compare", "06-00-00", "08-00-00"]) == 0
    compared = capsys.readouterr().out
    rmse_row = next(line for line in compared.splitlines() if line.startswith("test RMSE vs first"))
    assert "-0.35 (-8.8%)" in rmse_row
    steps_row = next(line for line in compared.splitlines() if line.startswith("* train_steps"))
    assert steps_row.split()[2:] == ["2000", "4000"]
    assert compared.count("verify-export/report.html") == 2 and "--logdir_spec" in compared


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
    page = runs.write_index(str(three))
    assert page == str(three.parent / "index.html")
    found = browser.measure(Path(page).as_uri(), width, name="runs")
    check_page(found, width)
    assert len(found["runs"]) == 1 + 4  # the header and one row per run
    assert "$3.62" in found["runs"][1 + 1] and "failed at full_train" in found["runs"][1 + 2]
    assert json.loads(browser.evaluate("JSON.stringify(document.querySelectorAll('#rmse-plot circle').length)")) == 2
    # The links of a run open its report.
    href = browser.evaluate("document.querySelector('#runs a').href")
    assert href.endswith("verify-export/report.html") and os.path.exists(href.removeprefix("file://"))


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
    # the tracker reads the run's folder from kfp.local's output lines
    tracker = local_run.StepTracker(io.StringIO(), lambda line: None)
    uri = f"{tmp_path}/{names[2]}/stage-data/dataset"
    tracker.write(f"Task 'stage-data' outputs:\n    dataset: Dataset( name='dataset',\n        uri='{uri}',\n")
    assert tracker.run_name == names[2]
