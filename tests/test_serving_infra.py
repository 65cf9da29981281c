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
