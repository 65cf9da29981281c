"""Infra validation and ``taxifare serve`` as a process: start, answer, SIGTERM, nothing left behind."""

from __future__ import annotations

import os
import shutil

import psutil
from _serving_helpers import INSTANCE, instances

from serving.infra import TOLERANCE, InfraResult, validate


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_a_good_model_is_served_and_answers_like_in_process(trained_model):
    before = _children()
    result = validate(trained_model.export_dir, [INSTANCE, *instances(20)], timeout=90)
    assert isinstance(result, InfraResult)
    assert result.ok, (result.reason, result.server_log)
    assert len(result.rest_predictions) == len(result.grpc_predictions) == 21
    assert result.rest_predictions == result.grpc_predictions  # one runtime behind both protocols
    # the in-process reference is the TF2 loader's call; the server runs the graph as TF Serving does
    assert result.inprocess_predictions is not None and result.max_abs_diff <= TOLERANCE
    assert max(abs(a - b) for a, b in zip(result.rest_predictions, result.inprocess_predictions, strict=True)) == result.max_abs_diff
    assert 0 < result.load_seconds < 90
    assert result.server_exit_code == 0  # SIGTERM: graceful stop
    assert "SIGTERM received" in result.server_log and "stopped (all requests finished)" in result.server_log
    assert "Predict OK" in result.server_log  # request log
    assert _children() == before


def test_a_model_that_does_not_load_is_not_blessed(trained_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(trained_model.export_dir, broken)
    shutil.rmtree(broken / "variables")
    os.makedirs(broken / "variables")
    before = _children()
    result = validate(str(broken), [INSTANCE], timeout=60)
    assert not result.ok
    assert "does not load" in result.reason
    assert result.rest_predictions is None
    assert _children() == before


def test_instances_the_model_cannot_take_are_reported():
    result = validate("/nonexistent/model", [INSTANCE])
    assert not result.ok and "saved_model.pb" in result.reason
    assert not validate("/nonexistent/model", []).ok


def test_sighup_drains_like_sigterm_and_says_so(tmp_path, trained_model):
    """A server whose terminal was closed (SIGHUP) finishes its requests and exits 0 with a log line."""
    import json
    import signal
    import subprocess
    import sys
    import time

    base = tmp_path / "taxifare"
    shutil.copytree(trained_model.export_dir, base / "1")
    ports = tmp_path / "ports.json"
    command = [sys.executable, "-m", "serving", "serve", "--model-base-path", str(base), "--rest-port", "0", "--grpc-port", "0"]
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*command, "--ports-file", str(ports), "--quiet"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not ports.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ports.exists(), log.read_text()
        json.loads(ports.read_text())
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "SIGHUP received: finishing requests in flight" in log.read_text()


def test_a_version_directory_given_as_the_base_path_is_named_at_once(tmp_path, trained_model, capsys):
    from pipeline.cli import main as taxifare

    code = taxifare(["serve", "--model-base-path", trained_model.export_dir, "--rest-port", "0", "--grpc-port", "0", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "is a version directory (it holds saved_model.pb), not a base path" in err[0]
