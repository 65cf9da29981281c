"""Load on loopback: 8 clients for 30 s while a new version is published halfway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
import tensorflow as tf
from _serving_helpers import export_untrained, inprocess, instances, publish
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.client import RestClient, ServingError
from trainer import schema

DURATION = 30.0


@pytest.mark.slow
def test_eight_clients_for_30s_across_a_version_switch(tmp_path):
    exports = {v: export_untrained(tmp_path / "exports", seed) for v, seed in ((1, 11), (2, 12))}
    rows = instances(5, seed=7)
    expected = {str(v): inprocess(path, rows) for v, path in exports.items()}
    assert expected["1"] != expected["2"]
    base = tmp_path / "models" / "taxifare"
    publish(exports[1], base, 1)
    ports_file = tmp_path / "ports.json"
    log_path = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "serving", "serve", "--model-base-path", str(base), "--rest-port", "0", "--grpc-port", "0"]
    cmd += ["--poll-interval", "0.5", "--quiet", "--ports-file", str(ports_file)]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        deadline = time.monotonic() + 90
        while not ports_file.exists():
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        ports = json.loads(ports_file.read_text())
        probe = RestClient(f"http://127.0.0.1:{ports['rest_port']}")
        while True:
            try:
                if [s["state"] for s in probe.status()] == ["AVAILABLE"]:
                    break
            except ServingError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "taxifare"
        for name in schema.NUMERIC_FEATURES:
            request.inputs[name].CopyFrom(tf.make_tensor_proto([row[name] for row in rows], dtype=tf.float32))
        answers: list[tuple[float, float, str, list[float]]] = []  # (start, end, version, values)
        failures: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + DURATION

        def rest_client() -> None:
            client = RestClient(f"http://127.0.0.1:{ports['rest_port']}", timeout=10)
            while time.monotonic() < stop_at:
                try:
                    start = time.monotonic()
                    values = client.predict(rows)
                    with lock:
                        answers.append((start, time.monotonic(), str(client.last_version), values))
                except Exception as exc:
                    with lock:
                        failures.append(f"REST: {exc}")
            client.close()

        def grpc_client() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{ports['grpc_port']}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                while time.monotonic() < stop_at:
                    try:
                        start = time.monotonic()
                        response = stub.Predict(request, timeout=10)
                        values = tf.make_ndarray(response.outputs["fare_amount"]).tolist()
                        with lock:
                            answers.append((start, time.monotonic(), str(response.model_spec.version.value), values))
                    except Exception as exc:
                        with lock:
                            failures.append(f"gRPC: {exc}")

        threads = [threading.Thread(target=rest_client) for _ in range(4)] + [threading.Thread(target=grpc_client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(DURATION / 2)
        published_at = time.monotonic()
        publish(exports[2], base, 2)
        for t in threads:
            t.join(DURATION + 30)

        assert not failures, failures[:5]
        assert len(answers) > 500
        wrong = [(version, values) for _, _, version, values in answers if values != expected.get(version)]
        assert not wrong, wrong[:3]  # every answer is exactly what its (complete) version computes
        first_v2 = min(end for _, end, version, _ in answers if version == "2")
        assert first_v2 > published_at
        late_v1 = [start for start, _, version, _ in answers if version == "1" and start > first_v2]
        assert not late_v1  # once version 2 answered, no request that starts later gets version 1
        assert sum(version == "2" for _, _, version, _ in answers) > 100
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    log_text = log_path.read_text()
    assert "version 2 of taxifare is AVAILABLE" in log_text and "unloaded version 1" in log_text
