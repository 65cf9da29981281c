"""`taxifare serve` as a Vertex AI custom serving container, and warm-up from TF Serving's warm-up file.

The real command in its own process with Vertex's variables and no flags; the model from a local
path and from ``gs://`` on the GCS emulator; bad settings get one line and a non-zero exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from _gcs import make_bucket
from _serving_helpers import INSTANCE, export_untrained, inprocess, publish
from conftest import ROOT

from base import layout
from serving.manager import ModelManager

PREDICT = "/v1/endpoints/123/deployedModels/456:predict"
HEALTH = "/v1/endpoints/123/deployedModels/456"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return export_untrained(tmp_path_factory.mktemp("aip-export"), 31)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def aip_env(storage_uri: str | None, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIP_")}
    env.update(
        AIP_MODE="PREDICTION",
        AIP_HTTP_PORT=str(port),
        AIP_PREDICT_ROUTE=PREDICT,
        AIP_HEALTH_ROUTE=HEALTH,
        AIP_DEPLOYED_MODEL_ID="456",
        AIP_ENDPOINT_ID="123",
        TF_CPP_MIN_LOG_LEVEL="2",
        **extra,
    )
    if storage_uri is not None:
        env["AIP_STORAGE_URI"] = storage_uri
    return env


def serve_and_predict(env: dict[str, str], port: int, tmp_path: Path) -> tuple[list[float], str]:
    """Start `taxifare serve` (no flags), wait for the health route, predict once, stop it; (predictions, log)."""
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.poll() is None, log_path.read_text()[-3000:]
            try:
                if requests.get(url + HEALTH, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("the health route never answered 200: " + log_path.read_text()[-3000:])
        answer = requests.post(url + PREDICT, json={"instances": [INSTANCE, INSTANCE]}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"predictions"}  # Vertex adds the deployed model's fields itself
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    return body["predictions"], log_path.read_text()


def test_serves_a_local_saved_model_under_the_aip_variables(export, tmp_path):
    # no flags: everything comes from the AIP_* variables
    port = free_port()
    predictions, log = serve_and_predict(aip_env(export, port), port, tmp_path)
    assert predictions == pytest.approx(inprocess(export, [INSTANCE, INSTANCE]), abs=1e-5)
    assert f"Vertex AI serving container: model from {export}, port {port}" in log


def test_serves_a_gs_model_downloaded_from_the_emulator(export, tmp_path, gcs, gcs_server):
    bucket = make_bucket(gcs, "aip-models")
    for path in Path(export).rglob("*"):
        if path.is_file():
            bucket.blob(f"models/taxifare/{path.relative_to(export)}").upload_from_filename(str(path))
    port = free_port()
    env = aip_env("gs://aip-models/models/taxifare", port, STORAGE_EMULATOR_HOST=gcs_server.url)
    predictions, _ = serve_and_predict(env, port, tmp_path)
    assert predictions == pytest.approx(inprocess(export, [INSTANCE, INSTANCE]), abs=1e-5)


def test_bad_aip_settings_get_one_line_and_a_non_zero_exit(export, tmp_path, gcs, gcs_server):
    make_bucket(gcs, "aip-empty")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (None, "AIP_STORAGE_URI is not set"),
        (str(tmp_path / "missing"), "is not a readable directory"),
        (str(empty), "holds no saved_model.pb"),
        ("gs://aip-empty/nothing/here", "holds no object"),
        ("gs://no-such-bucket-here/model", "cannot be read (NotFound"),
    ]
    for uri, message in cases:
        env = aip_env(uri, free_port(), STORAGE_EMULATOR_HOST=gcs_server.url)
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 2, (uri, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (uri, proc.stderr)
    # without --model-base-path and outside Vertex: says what to pass
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIP_")}
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: --model-base-path is required (or run under Vertex AI's AIP_* variables: see docs/serving.md)"
    )


# -- warm-up ----------------------------------------------------------------------------------------
def write_warmup(version_dir: Path, rows: list[dict], drop: str = "") -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    path = version_dir / layout.WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in rows:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "taxifare"
            for name, value in row.items():
                if name != drop:
                    request.inputs[name].CopyFrom(tf.make_tensor_proto([value], dtype=tf.float32))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def test_versions_warm_up_from_their_warmup_file(export, tmp_path, caplog):
    from serving import warmup

    base = tmp_path / "taxifare"
    good = tmp_path / "good"
    shutil.copytree(export, good)
    write_warmup(good, [INSTANCE, {**INSTANCE, "passengers": 3.0}])
    assert len(warmup.read_requests(str(good))) == 2
    bad = tmp_path / "bad"
    shutil.copytree(export, bad)
    write_warmup(bad, [INSTANCE], drop="passengers")
    publish(str(good), base, 1)
    publish(str(bad), base, 2)
    manager = ModelManager(str(base), "taxifare", poll_interval=0.1)
    with caplog.at_level("INFO", logger="serving"):
        manager.poll_once()
        manager.poll_once()
    states = {s["version"]: s for s in manager.status()}
    assert states["2"]["state"] == "END" and "warm-up request 0 lacks the inputs passengers" in states["2"]["status"]["error_message"]
    assert manager.current_version == 1  # the version whose warm-up failed never serves
    assert "version 1: replayed 2 warm-up requests" in caplog.text
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "assets.extra").mkdir()
    (tmp_path / "junk" / layout.WARMUP_FILE).write_bytes(b"not a tfrecord at all")
    with pytest.raises(ValueError, match="is not a TFRecord file of PredictionLog records"):
        warmup.read_requests(str(tmp_path / "junk"))
