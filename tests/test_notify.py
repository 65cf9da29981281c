"""The exit step: a run's summary and the webhook, against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from base import webhook
from components.contracts import SUMMARY_DIR_ENV, append_event
from components.run_summary import logic as notify


class Hook:
    """A webhook receiver on 127.0.0.1 that records each POST (and answers ``status``)."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
                self.send_response(hook.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/taxifare"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "trainer/model.py", line 10, in train',
    '    raise FloatingPointError("the loss became NaN at step 120: lower --learning-rate")',
    "FloatingPointError: the loss became NaN at step 120: lower --learning-rate",
]


def local_records(folder: Path) -> str:
    """The records of a local run whose full_train failed for good (retried once, killed once), as the steps write them."""
    error = "FloatingPointError: the loss became NaN at step 120: lower --learning-rate"
    for record in (
        {"event": "started", "step": "stage_data"},
        {"event": "summary", "step": "stage_data", "text": "2,446 train rows", "figures": {}},
        {"event": "finished", "step": "stage_data", "status": "succeeded"},
        {"event": "started", "step": "full_train"},
        {"event": "progress", "step": "full_train", "at": 100, "of": 2000, "rmse": 3.5, "examples_per_second": 2e5},
        {"event": "started", "step": "full_train"},  # the first attempt was killed
        {"event": "finished", "step": "full_train", "status": "failed", "error": error, "traceback": TRACEBACK},
        {"event": "started", "step": "run_summary"},
    ):
        append_event(str(folder), record)
    return str(folder)


def test_a_local_failure_names_the_step_its_error_and_log_tail(tmp_path):
    log = tmp_path / "run.log"
    result = notify.summarize_run(
        state="FAILED",
        job_resource_name="local-pipeline-exit-handler-1",
        error_message="Task exit-handler-1 failed.",
        run_name="taxifare-2026-11-29-05-00-00",
        run_dir=str(tmp_path),
        log_path=str(log),
        records=local_records(tmp_path / "records"),
    )
    assert result.failed_step == "full_train"  # not stage_data (it succeeded), nor run_summary (running now)
    assert result.error == "FloatingPointError: the loss became NaN at step 120: lower --learning-rate"
    # The tail starts at the step's traceback (not at kfp's echo of its inputs).
    assert result.log_tail[0] == "Traceback (most recent call last):" and result.log_tail[-1].startswith("FloatingPointError")
    assert result.link == str(tmp_path)
    # The chat message: the step, the one-line reason, the log and the run; no traceback (that is in log_tail and summary.txt).
    assert result.text().splitlines() == [
        "taxifare run taxifare-2026-11-29-05-00-00: FAILED at step full_train",
        "FloatingPointError: the loss became NaN at step 120: lower --learning-rate",
        f"Log: {log}",
        str(tmp_path),
    ]
    assert "Traceback" not in result.text() and "Traceback (most recent call last):" in result.details()


def test_a_killed_step_is_the_failed_one(tmp_path):
    for record in ({"event": "started", "step": "full_train"}, {"event": "started", "step": "run_summary"}):
        append_event(str(tmp_path), record)
    step, tail, error = notify.failed_step_from_records(str(tmp_path))
    assert (step, tail) == ("full_train", []) and error.startswith("the step stopped without a Python error")


def test_a_vertex_failure_names_the_step_and_links_the_console():
    result = notify.summarize_run(
        state="FAILED",
        job_resource_name="projects/my-proj/locations/europe-west4/pipelineJobs/taxifare-20261129",
        error_message="The DAG failed because some tasks failed. The failed tasks are: [full-train].",
        run_name="taxifare-20261129",
    )
    assert result.failed_step == "full_train"
    assert (
        result.link == "https://console.cloud.google.com/vertex-ai/locations/europe-west4/pipelines/runs/taxifare-20261129?project=my-proj"
    )
    assert "The failed tasks are: [full-train]" in result.error


def test_a_success_is_short():
    result = notify.summarize_run(state="SUCCEEDED", job_resource_name="", error_message="", run_name="r", run_dir="/runs/r")
    assert result.ok and not result.failed_step and not result.log_tail
    assert result.text() == "taxifare run r: SUCCEEDED\n/runs/r"


def test_the_step_writes_the_summary_and_posts_it(hook, tmp_path, monkeypatch):
    log = tmp_path / "run.log"
    monkeypatch.setenv(notify.LOG_ENV, str(log))
    monkeypatch.setenv(SUMMARY_DIR_ENV, local_records(tmp_path / "records"))
    summary_path = tmp_path / "taxifare-run-dir" / "run-summary" / "summary"
    status = SimpleNamespace(state="FAILED", pipeline_job_resource_name="local", error_message="Task exit-handler-1 failed.")
    result = notify.run_summary_step(status, run_name="taxifare-x", notify_webhook=hook.url, summary_path=str(summary_path))
    assert result.failed_step == "full_train"
    [post] = hook.received
    assert post["path"] == "/hooks/taxifare" and post["type"].startswith("application/json")
    body = post["json"]
    assert body["run"] == "taxifare-x" and body["status"] == "FAILED" and body["failed_step"] == "full_train"
    assert body["log_tail"][-1].startswith("FloatingPointError") and "FAILED at step full_train" in body["text"]
    assert json.loads(summary_path.read_text()) == body
    assert (tmp_path / "taxifare-run-dir" / "run-summary" / "summary.txt").read_text().startswith("taxifare run taxifare-x: FAILED")


def test_a_webhook_that_refuses_gives_one_clear_line(hook):
    hook.status = 404
    with pytest.raises(RuntimeError, match=r"the notify_webhook at 127\.0\.0\.1:\d+ answered HTTP 404"):
        webhook.post_webhook(hook.url, {"text": "x"})


def test_an_unreachable_webhook_gives_one_clear_line():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match=rf"cannot reach the notify_webhook at 127\.0\.0\.1:{port}"):
        webhook.post_webhook(f"http://127.0.0.1:{port}/hook", {"text": "x"}, timeout=2)


@pytest.mark.parametrize("url", ["hooks.slack.com/x", "ftp://host/x", "http://"])
def test_a_webhook_that_is_not_a_url_is_refused(url):
    with pytest.raises(ValueError, match="is not an http\\(s\\) URL"):
        webhook.check_webhook(url)


def test_a_failing_local_run_ends_with_the_step_and_notifies(hook, tmp_path, capsys):
    """kfp.local runs the exit handler: `taxifare run` on bad data, with a webhook, end to end."""
    from pipeline.cli import main
    from pipeline.runs import list_runs

    bad = tmp_path / "bad.csv"
    bad.write_text("12.0,0,0,0,0,1,1\n" * 100)
    root = tmp_path / "runs" / "pipeline"
    argv = ["run", "--pipeline-root", str(root), "--serving-root", str(tmp_path / "serving"), "--source", str(bad)]
    assert main([*argv, "--notify-webhook", hook.url]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("  ok  run_summary") and "FAILED at stage_data" in line for line in out)
    # The last lines: the step and its reason, the log file, the run's summary, what to do.
    assert out[-4].startswith("FAILED at stage_data: InputError: 100 of 100 train data rows (100.0%) are bad")
    assert out[-3] == f"Log file: {root / 'taxifare-run.log'}"
    assert out[-2].startswith(f"Run summary: {root}/taxifare-") and out[-2].endswith("/run-summary/summary")

    [post] = hook.received
    body = post["json"]
    assert body["status"] == "FAILED" and body["failed_step"] == "stage_data"
    assert body["run"].startswith("taxifare-") and body["link"] == str(Path(out[-2].split(": ", 1)[1]).parents[1])
    assert body["error"].startswith("InputError: 100 of 100 train data rows")
    assert body["log_tail"][0] == "Traceback (most recent call last):" and "InputError" in body["log_tail"][-1]
    text = body["text"].splitlines()  # what Slack shows: four lines, the reason and the log, no traceback
    assert len(text) == 4 and text[1] == body["error"] and text[2] == f"Log: {root / 'taxifare-run.log'}"

    [run] = list_runs(str(root))
    assert run.status == "failed" and run.failed_step == "stage_data" and run.arguments["notify_webhook"] == hook.url


def test_a_webhook_that_is_not_a_url_is_refused_before_the_run(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["run", "--pipeline-root", str(tmp_path), "--notify-webhook", "hooks.slack.com/x"]) == 2
    assert "notify_webhook 'hooks.slack.com/x' is not an http(s) URL" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
