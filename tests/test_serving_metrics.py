"""Prometheus metrics at /monitoring/prometheus/metrics: TF Serving's names and labels, counts after known traffic."""

from __future__ import annotations

import json

import grpc
import pytest
import requests
import tensorflow as tf
from _serving_helpers import INSTANCE, export_untrained, instances, publish
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

from serving.server import ModelServer, ServerConfig
from trainer import schema

P = ":tensorflow:serving:"


def scrape(url: str) -> dict[str, list]:
    answer = requests.get(url + "/monitoring/prometheus/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    return sum(v for got, v in samples.get(name, []) if all(got.get(k) == want for k, want in labels.items()))


def grpc_predict(stub, rows):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "taxifare"
    for name in schema.NUMERIC_FEATURES:
        request.inputs[name].CopyFrom(tf.make_tensor_proto([row[name] for row in rows], dtype=tf.float32))
    return stub.Predict(request, timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("metrics") / "taxifare"
    publish(export_untrained(tmp_path_factory.mktemp("metrics-export"), seed=4), base, 1)
    with ModelServer(ServerConfig(str(base), rest_port=0, grpc_port=0, poll_interval=0.1)) as server:
        assert server.wait_available(60)
        yield server


def test_counts_latencies_and_examples_after_known_traffic(server):
    url = f"http://127.0.0.1:{server.rest_port}"
    before = scrape(url)
    for n in (1, 3, 5):  # 3 REST predicts, 9 instances
        assert requests.post(url + "/v1/models/taxifare:predict", json={"instances": instances(n)}, timeout=10).status_code == 200
    bad = requests.post(url + "/v1/models/taxifare:predict", data=json.dumps({"instances": [{"x": 1}]}), timeout=10)
    assert bad.status_code == 400
    assert requests.get(url + "/v1/models/taxifare/metadata", timeout=10).status_code == 200
    assert requests.get(url + "/healthz", timeout=10).status_code == 200  # not a model request: not counted
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        grpc_predict(stub, instances(2))  # 2 gRPC predicts, 6 instances
        grpc_predict(stub, instances(4))
        with pytest.raises(grpc.RpcError):
            grpc_predict(stub, [{**INSTANCE, "pickuplat": 0.0}])  # out of range: INVALID_ARGUMENT
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "taxifare"
        model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=10)
    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, P + name, **labels) - value(before, P + name, **labels)

    assert delta("request_count", model_name="taxifare", status="OK") == 3 + 1 + 2 + 1
    assert delta("request_count", model_name="taxifare", status="INVALID_ARGUMENT") == 2
    predict_api = "/tensorflow.serving.PredictionService/Predict"
    assert delta("request_latency_count", API=predict_api, entrypoint="REST") == 4
    assert delta("request_latency_count", API=predict_api, entrypoint="GRPC") == 3
    assert delta("request_latency_count", API="/tensorflow.serving.PredictionService/GetModelMetadata", entrypoint="REST") == 1
    assert delta("request_latency_count", API="/tensorflow.serving.ModelService/GetModelStatus", entrypoint="GRPC") == 1
    assert delta("request_latency_sum", entrypoint="REST") > 0  # microseconds
    assert delta("runtime_latency_count", API=predict_api, runtime="TF1") == 5  # model calls of the valid predicts (a session)
    assert delta("request_example_counts_count", model="taxifare") == 5
    assert delta("request_example_counts_sum", model="taxifare") == 9 + 6
    assert delta("request_example_count_total", model="taxifare") == 15
    # the version's warm-up was timed when it loaded
    assert value(after, P + "model_warmup_latency_count", status="OK") == 1
    assert value(after, P + "model_warmup_latency_sum") > 0


def test_exposition_uses_tf_servings_exact_names(server):
    text = requests.get(f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics", timeout=10).text
    lines = text.splitlines()
    assert any(line.startswith(':tensorflow:serving:request_count{model_name="taxifare",status="OK"} ') for line in lines), text[:2000]
    assert "# TYPE :tensorflow:serving:request_latency histogram" in lines
    assert not any(line.startswith(":tensorflow:serving:request_count_total") for line in lines)


def test_unimplemented_methods_answer_without_a_traceback_and_are_counted(server, caplog):
    """Classify (and the other TF Serving methods this server lacks): UNIMPLEMENTED with what to call instead."""
    import logging

    from tensorflow_serving.apis import classification_pb2, model_management_pb2

    url = f"http://127.0.0.1:{server.rest_port}"
    before = scrape(url)
    with caplog.at_level(logging.INFO), grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "taxifare"
        with pytest.raises(grpc.RpcError) as exc:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(request, timeout=10)
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
        expected = "Classify is not implemented by this server: the model has a predict signature only (no classification): call Predict"
        assert exc.value.details() == expected
        with pytest.raises(grpc.RpcError) as exc:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(), timeout=10
            )
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED and "taxifare label" in exc.value.details()
    after = scrape(url)
    assert not [r for r in caplog.records if r.exc_info or "Exception calling application" in r.getMessage()]
    assert any("Classify UNIMPLEMENTED" in r.getMessage() for r in caplog.records if r.name == "serving.access")
    assert value(after, P + "request_count", status="UNIMPLEMENTED") - value(before, P + "request_count", status="UNIMPLEMENTED") == 2
    classify = {"API": "/tensorflow.serving.PredictionService/Classify", "entrypoint": "GRPC"}
    assert value(after, P + "request_latency_count", **classify) - value(before, P + "request_latency_count", **classify) == 1
