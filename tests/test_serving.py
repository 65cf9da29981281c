"""The server on loopback: TF Serving's REST and gRPC APIs, Vertex's body, errors, versions, shutdown.

Real servers on 127.0.0.1 with free ports, the stock clients (requests, the official
PredictionServiceStub with tf.make_tensor_proto), the model trained by the session fixture.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from _serving_helpers import INSTANCE, export_untrained, inprocess, inprocess_tf2, instances, publish
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from pipeline.cli import main as taxifare
from serving.client import GrpcClient, RestClient, ServingError
from serving.manager import ModelManager
from serving.payload import Limits
from serving.server import ModelServer, ServerConfig
from trainer import schema

FEATURES = schema.NUMERIC_FEATURES
LIMITS = Limits(max_batch=1000, max_body_bytes=256 * 1024)


@pytest.fixture(scope="module")
def served(trained_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("serve") / "taxifare"
    publish(trained_model.export_dir, base, 1)
    server = ModelServer(ServerConfig(str(base), rest_port=0, grpc_port=0, poll_interval=0.1, limits=LIMITS)).start()
    assert server.wait_available(60)
    batch = instances(50)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield SimpleNamespace(
        server=server,
        url=f"http://127.0.0.1:{server.rest_port}",
        grpc_target=f"127.0.0.1:{server.grpc_port}",
        stub=prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_stub=model_service_pb2_grpc.ModelServiceStub(channel),
        export=trained_model.export_dir,
        batch=batch,
        expected=inprocess(trained_model.export_dir, batch),
        lab=inprocess(trained_model.export_dir, [INSTANCE])[0],
    )
    channel.close()
    server.stop(grace=5)


def grpc_request(rows, name="taxifare", version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = "serving_default"
    if version is not None:
        request.model_spec.version.value = version
    for feature in FEATURES:
        request.inputs[feature].CopyFrom(tf.make_tensor_proto([row[feature] for row in rows], dtype=tf.float32))
    return request


# -- REST ------------------------------------------------------------------------------------------
def test_rest_status_and_version_status(served):
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert requests.get(f"{served.url}/v1/models/taxifare", timeout=10).json() == expected
    assert requests.get(f"{served.url}/v1/models/taxifare/versions/1", timeout=10).json() == expected
    missing = requests.get(f"{served.url}/v1/models/taxifare/versions/9", timeout=10)
    assert missing.status_code == 404 and "version 9" in missing.json()["error"]


def test_rest_metadata_has_the_signature_and_metrics(served):
    meta = requests.get(f"{served.url}/v1/models/taxifare/versions/1/metadata", timeout=10).json()
    assert meta["model_spec"] == {"name": "taxifare", "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sorted(sig["inputs"]) == sorted(FEATURES)
    assert sig["inputs"]["pickuplon"]["dtype"] == "DT_FLOAT"
    assert list(sig["outputs"]) == ["fare_amount"]
    assert "rmse" in meta["metadata"]["metrics"]


def test_rest_predict_row_and_columnar_equal_inprocess(served):
    rows = requests.post(f"{served.url}/v1/models/taxifare:predict", json={"instances": served.batch}, timeout=10)
    assert rows.status_code == 200 and rows.headers["X-Model-Version"] == "1"
    assert rows.json() == {"predictions": served.expected}
    columns = {name: [row[name] for row in served.batch] for name in FEATURES}
    cols = requests.post(
        f"{served.url}/v1/models/taxifare/versions/1:predict", json={"inputs": columns, "signature_name": "serving_default"}, timeout=10
    )
    assert cols.json() == {"outputs": served.expected}


def test_lab_test_instance_gets_a_sensible_fare(served):
    (fare,) = requests.post(f"{served.url}/v1/models/taxifare:predict", json={"instances": [INSTANCE]}, timeout=10).json()["predictions"]
    assert fare == served.lab
    assert 3 < fare < 60  # ~ 9 km across Queens and Manhattan


def test_vertex_body_and_answer(served):
    path = "/v1/projects/my-project/locations/us-central1/endpoints/1234:predict"
    answer = requests.post(served.url + path, json={"instances": served.batch[:3], "parameters": {}}, timeout=10).json()
    assert answer["predictions"] == inprocess_cached(served.export, served.batch[:3])  # same batch: oneDNN sums per batch size
    assert answer["deployedModelId"] == "1"
    assert answer["model"] == "projects/my-project/locations/us-central1/models/taxifare"
    bad = requests.post(served.url + path, json={"instances": [{"pickuplon": 1}]}, timeout=10)
    assert bad.status_code == 400
    assert bad.json()["error"]["status"] == "INVALID_ARGUMENT" and "missing features" in bad.json()["error"]["message"]


def test_vertex_sdk_client_works_unchanged(served):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format, struct_pb2

    client = aiplatform_v1.PredictionServiceClient(
        transport="rest", client_options=ClientOptions(api_endpoint=served.url), credentials=AnonymousCredentials()
    )
    values = [json_format.ParseDict(row, struct_pb2.Value()) for row in served.batch[:2]]
    response = client.predict(endpoint="projects/p/locations/us-central1/endpoints/42", instances=values)
    assert list(response.predictions) == inprocess_cached(served.export, served.batch[:2])
    assert response.deployed_model_id == "1"


def test_health_and_request_log(served, caplog):
    with caplog.at_level(logging.INFO, logger="serving.access"):
        health = requests.get(f"{served.url}/healthz", timeout=10)
        requests.post(f"{served.url}/v1/models/taxifare:predict", json={"instances": [INSTANCE]}, timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "AVAILABLE", "model": "taxifare", "version": "1"}
    lines = [r.getMessage() for r in caplog.records if r.name == "serving.access"]
    assert any('"POST /v1/models/taxifare:predict" 200' in line and "n=1 v=1" in line for line in lines), lines


PREDICT = "/v1/models/taxifare:predict"
BAD_REST = [
    ("POST", PREDICT, b"{not json", 400, "malformed JSON"),
    ("POST", PREDICT, json.dumps({"instances": [{**INSTANCE, "extra": 1}]}).encode(), 400, "unknown feature extra"),
    (
        "POST",
        "/v1/models/taxifare:predict",
        json.dumps({"instances": [{**INSTANCE, "passengers": "x"}]}).encode(),
        400,
        "passengers must be a number",
    ),
    ("POST", PREDICT, b'{"instances": [{"pickuplon": NaN}]}', 400, "NaN"),
    ("POST", PREDICT, json.dumps({"instances": []}).encode(), 400, "no instance"),
    ("POST", PREDICT, json.dumps({"instances": [INSTANCE] * 1001}).encode(), 400, "limit of 1000"),
    ("POST", PREDICT, b'{"instances": [' + b" " * 300_000 + b"]}", 413, "limit of 262144"),
    ("POST", "/v1/models/other:predict", json.dumps({"instances": [INSTANCE]}).encode(), 404, "model 'other' is not served"),
    ("POST", "/v1/models/taxifare/versions/7:predict", json.dumps({"instances": [INSTANCE]}).encode(), 404, "version 7"),
    ("POST", "/v1/models/taxifare/versions/x:predict", json.dumps({"instances": [INSTANCE]}).encode(), 404, "not a version number"),
    ("POST", "/v1/models/taxifare/labels/stable:predict", json.dumps({"instances": [INSTANCE]}).encode(), 404, "label 'stable'"),
    ("POST", "/v1/models/taxifare:classify", json.dumps({"instances": [INSTANCE]}).encode(), 400, "not supported"),
    ("GET", "/v1/models/taxifare:predict", None, 405, "takes POST"),
    ("GET", "/nowhere", None, 404, "no such route"),
    (
        "POST",
        "/v1/models/taxifare:predict",
        json.dumps({"instances": [INSTANCE], "signature_name": "other"}).encode(),
        400,
        "signature 'other'",
    ),
]


@pytest.mark.parametrize(("method", "path", "data", "status", "message"), BAD_REST, ids=[row[4] for row in BAD_REST])
def test_rest_bad_requests_get_a_4xx_naming_the_problem(served, method, path, data, status, message):
    response = requests.request(method, served.url + path, data=data, headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert requests.post(f"{served.url}/v1/models/taxifare:predict", json={"instances": [INSTANCE]}, timeout=10).status_code == 200


# -- gRPC ------------------------------------------------------------------------------------------
def test_grpc_predict_with_the_stock_stub(served):
    response = served.stub.Predict(grpc_request(served.batch), timeout=10)
    assert response.model_spec.name == "taxifare" and response.model_spec.version.value == 1
    assert tf.make_ndarray(response.outputs["fare_amount"]).tolist() == served.expected


def test_grpc_metadata_and_status(served):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "taxifare"
    meta = served.stub.GetModelMetadata(request, timeout=10)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(sig_map)
    assert sorted(sig_map.signature_def["serving_default"].inputs) == sorted(FEATURES)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "taxifare"
    status = served.model_stub.GetModelStatus(status_request, timeout=10)
    assert [(s.version, s.state) for s in status.model_version_status] == [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def _tensor(dtype, dims, **values):
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **values)


INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _bad_grpc_cases():
    def with_input(name, proto):
        request = grpc_request([INSTANCE])
        request.inputs[name].CopyFrom(proto)
        return request

    missing = grpc_request([INSTANCE])
    del missing.inputs["passengers"]
    nan = grpc_request([{**INSTANCE, "pickuplat": float("nan")}])
    return [
        (missing, grpc.StatusCode.INVALID_ARGUMENT, "missing feature passengers"),
        (with_input("tip", tf.make_tensor_proto([1.0])), grpc.StatusCode.INVALID_ARGUMENT, "unknown feature tip"),
        (with_input("passengers", tf.make_tensor_proto(["2"])), grpc.StatusCode.INVALID_ARGUMENT, "DT_STRING"),
        (with_input("passengers", tf.make_tensor_proto([[2.0]])), grpc.StatusCode.INVALID_ARGUMENT, "1-D"),
        (
            with_input("passengers", _tensor(types_pb2.DT_FLOAT, [10**12], float_val=[1.0])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "limit of 1000",
        ),
        (with_input("passengers", _tensor(types_pb2.DT_FLOAT, [3], tensor_content=b"abc")), grpc.StatusCode.INVALID_ARGUMENT, "passengers"),
        (nan, grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
        (with_input("passengers", tf.make_tensor_proto([2.0, 3.0])), grpc.StatusCode.INVALID_ARGUMENT, "different lengths"),
        (grpc_request([INSTANCE], name="other"), grpc.StatusCode.NOT_FOUND, "not served"),
        (grpc_request([INSTANCE], version=5), grpc.StatusCode.NOT_FOUND, "version 5"),
        (grpc_request([INSTANCE] * 1001), grpc.StatusCode.INVALID_ARGUMENT, "limit of 1000"),
        (grpc_request([]), grpc.StatusCode.INVALID_ARGUMENT, "no instance"),
    ]


@pytest.mark.parametrize("case", range(12))
def test_grpc_bad_requests_get_a_status_naming_the_problem(served, case):
    request, code, message = _bad_grpc_cases()[case]
    with pytest.raises(grpc.RpcError) as info:
        served.stub.Predict(request, timeout=10)
    assert info.value.code() == code
    assert message in info.value.details()
    assert served.stub.Predict(grpc_request([INSTANCE]), timeout=10).outputs["fare_amount"].tensor_content


def test_grpc_message_over_the_size_limit(served):
    big = grpc_request([INSTANCE] * 900)
    big.inputs["pickuplon"].CopyFrom(tf.make_tensor_proto(np.full(70_000, -73.9, np.float32)))
    with pytest.raises(grpc.RpcError) as info:
        served.stub.Predict(big, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- the client and the CLI ------------------------------------------------------------------------
def test_python_clients_rest_and_grpc(served):
    with RestClient(served.url) as rest:
        assert rest.predict(served.batch) == served.expected and rest.last_version == "1"
        assert rest.status()[0]["state"] == "AVAILABLE"
        with pytest.raises(ServingError, match="HTTP 400: instance 0: missing feature"):
            rest.predict([{"pickuplon": -73.9}])
    with GrpcClient(served.grpc_target) as client:
        assert client.predict(served.batch) == served.expected and client.last_version == "1"
        assert client.status().model_version_status[0].version == 1
        with pytest.raises(ServingError, match="NOT_FOUND"):
            client.predict(served.batch, version=3)


def test_taxifare_predict_command(served, tmp_path, capsys):
    test_json = tmp_path / "test.json"
    test_json.write_text(json.dumps(INSTANCE) + "\n" + json.dumps(served.batch[0]) + "\n")
    assert taxifare(["predict", "--json-instances", str(test_json), "--url", served.url]) == 0
    expected = inprocess_cached(served.export, [INSTANCE, served.batch[0]])
    rest_out = capsys.readouterr().out.split()
    assert rest_out == ["FARE_AMOUNT", f"{expected[0]:.4f}", f"{expected[1]:.4f}"]
    assert taxifare(["predict", "--json-instances", str(test_json), "--grpc", served.grpc_target, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"predictions": expected, "model_version": "1"}
    test_json.write_text(json.dumps({"pickuplon": 1}) + "\n")
    assert taxifare(["predict", "--json-instances", str(test_json), "--url", served.url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: predict: HTTP 400") and "missing features" in err[0]


def test_serve_command_help_and_user_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        taxifare(["serve", "--help"])
    text = capsys.readouterr().out
    for flag in ("--model-base-path", "--model-name", "--rest-port", "--grpc-port", "--host", "--poll-interval", "--max-batch", "--grace"):
        assert flag in text
    assert taxifare(["serve", "--model-base-path", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    nested = tmp_path / "models"
    (nested / "taxifare" / "1").mkdir(parents=True)
    (nested / "taxifare" / "1" / "saved_model.pb").write_bytes(b"")
    assert taxifare(["serve", "--model-base-path", str(nested)]) == 2
    assert "pass the model's directory" in capsys.readouterr().err
    assert taxifare(["serve", "--model-base-path", str(tmp_path), "--rest-port", "70000"]) == 2
    assert taxifare(["predict", "--json-instances", str(tmp_path / "missing.json")]) == 2


# -- property-based: random bodies never give a 5xx nor stop the server -----------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from([*FEATURES, "x", "instances", "inputs"]), children, max_size=6)
    ),
    max_leaves=20,
)
feature_values = st.one_of(st.floats(-80, -70), st.floats(35, 46), st.integers(-2, 12), json_values)
instance_like = st.dictionaries(st.sampled_from([*FEATURES, "extra"]), feature_values, min_size=3, max_size=6)
rest_bodies = st.one_of(
    st.builds(lambda rows: {"instances": rows}, st.lists(instance_like, max_size=4)),
    st.builds(lambda cols: {"inputs": cols}, st.dictionaries(st.sampled_from([*FEATURES, "extra"]), st.lists(feature_values, max_size=3))),
    st.dictionaries(st.sampled_from(["instances", "inputs", "signature_name", "parameters", "other"]), json_values, max_size=3),
    json_values,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=rest_bodies, raw=st.one_of(st.none(), st.binary(max_size=60)), route=st.sampled_from(["tf", "tf_v1", "vertex"]))
def test_random_rest_bodies_never_give_5xx(served, body, raw, route):
    path = {
        "tf": "/v1/models/taxifare:predict",
        "tf_v1": "/v1/models/taxifare/versions/1:predict",
        "vertex": "/v1/projects/p/locations/l/endpoints/e:predict",
    }[route]
    data = raw if raw is not None else json.dumps(body).encode()
    response = requests.post(served.url + path, data=data, timeout=10)
    assert response.status_code in (200, 400, 404, 413), response.text
    answer = response.json()
    if response.status_code == 200:
        values = answer.get("predictions", answer.get("outputs"))
        assert all(np.isfinite(values))
    else:
        assert answer["error"]


tensor_protos = st.builds(
    lambda dtype, dims, floats, strings, content: _tensor(dtype, dims, float_val=floats, string_val=strings, tensor_content=content),
    st.sampled_from([types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT64, types_pb2.DT_STRING, types_pb2.DT_BOOL, 0, 99]),
    st.lists(st.integers(-2, 2**40), max_size=3),
    st.lists(st.floats(width=32), max_size=4),
    st.lists(st.binary(max_size=8), max_size=2),
    st.binary(max_size=16),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(inputs=st.dictionaries(st.sampled_from([*FEATURES, "extra"]), tensor_protos, max_size=6), name=st.sampled_from(["taxifare", "x"]))
def test_random_grpc_requests_never_give_internal_errors(served, inputs, name):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    try:
        response = served.stub.Predict(request, timeout=10)
        assert np.isfinite(tf.make_ndarray(response.outputs["fare_amount"])).all()
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), exc.details()
        assert exc.details()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 30))
def test_valid_batches_equal_inprocess_over_both_protocols(served, seed, n):
    rows = instances(n, seed)
    expected = inprocess_cached(served.export, rows)
    rest = requests.post(f"{served.url}/v1/models/taxifare:predict", json={"instances": rows}, timeout=10).json()["predictions"]
    answer = served.stub.Predict(grpc_request(rows), timeout=10)
    assert rest == expected
    assert tf.make_ndarray(answer.outputs["fare_amount"]).tolist() == expected


_session_cache: dict[str, tuple[object, object]] = {}


def inprocess_cached(model_dir, rows):
    """:func:`inprocess` (graph mode, as TF Serving) with the session kept open between calls."""
    if model_dir not in _session_cache:
        session = tf.compat.v1.Session(graph=tf.Graph())
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], model_dir)
        _session_cache[model_dir] = (session, meta.signature_def["serving_default"])
    session, sig = _session_cache[model_dir]
    feed = {sig.inputs[name].name: np.array([row[name] for row in rows], np.float32) for name in FEATURES}  # type: ignore[attr-defined]
    return [float(v) for v in session.run(sig.outputs["fare_amount"].name, feed_dict=feed)]  # type: ignore[attr-defined]


def test_answers_agree_with_the_tf2_loaders_call_to_1e_4(served):
    """The server runs the graph as TF Serving does; the TF2 loader's call of the same signature agrees."""
    rows = instances(200, seed=7)
    answer = requests.post(f"{served.url}/v1/models/taxifare:predict", json={"instances": rows}, timeout=10).json()["predictions"]
    assert np.max(np.abs(np.array(answer) - np.array(inprocess_tf2(served.export, rows)))) <= 1e-4


# -- versions ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    return {seed: export_untrained(out, seed) for seed in (2, 3)}


def test_version_policy_ignores_partial_dirs_and_survives_a_broken_version(trained_model, exports, tmp_path):
    base = tmp_path / "taxifare"
    publish(trained_model.export_dir, base, 1)
    (base / ".tmp-2-999").mkdir()  # a deploy in progress
    (base / "5").mkdir()  # no saved_model.pb (yet)
    (base / "notes").mkdir()
    manager = ModelManager(str(base), "taxifare", poll_interval=0.1)
    manager.poll_once()
    assert manager.current_version is None  # seen once: not yet known to be complete
    manager.poll_once()
    assert manager.current_version == 1
    assert [s["version"] for s in manager.status()] == ["1"]

    # a version still being written (its files keep changing) is not loaded
    writing = base / "3"
    writing.mkdir()
    (writing / "saved_model.pb").write_bytes((Path(exports[2]) / "saved_model.pb").read_bytes()[:100])
    manager.poll_once()
    with open(writing / "saved_model.pb", "ab") as fh:
        fh.write(b"more")
    manager.poll_once()
    assert manager.current_version == 1 and "3" not in [s["version"] for s in manager.status()]
    # ... and when it stops changing but is broken, it is reported and version 1 keeps serving
    manager.poll_once()
    broken = manager.status(3)[0]
    assert broken["state"] == "END" and broken["status"]["error_code"] == "UNKNOWN" and broken["status"]["error_message"]
    assert manager.current_version == 1
    manager.poll_once()  # not retried while unchanged
    assert manager.status(3)[0]["state"] == "END"

    # the deploy protocol (temp dir + rename) publishes version 4: loaded, warmed up, switched to
    publish(exports[3], base, 4)
    manager.poll_once()
    manager.poll_once()
    assert manager.current_version == 4
    states = {s["version"]: s["state"] for s in manager.status()}
    assert states == {"4": "AVAILABLE", "1": "END", "3": "END"}
    assert manager.get(None).predict({f: np.array([INSTANCE[f]], np.float32) for f in FEATURES})[0] == inprocess(exports[3], [INSTANCE])[0]


def test_server_switches_to_a_new_version_and_unloads_the_old(exports, tmp_path):
    base = tmp_path / "taxifare"
    publish(exports[2], base, 1)
    with ModelServer(ServerConfig(str(base), rest_port=0, grpc_port=0, poll_interval=0.1)) as server:
        assert server.wait_available(60)
        client = RestClient(f"http://127.0.0.1:{server.rest_port}")
        assert client.predict([INSTANCE]) == inprocess(exports[2], [INSTANCE]) and client.last_version == "1"
        publish(exports[3], base, 2)
        deadline = time.monotonic() + 30
        while server.manager.current_version != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.predict([INSTANCE]) == inprocess(exports[3], [INSTANCE]) and client.last_version == "2"
        with pytest.raises(ServingError, match="version 1 of model taxifare is not available"):
            client.predict([INSTANCE], version=1)
        client.close()


def test_graceful_stop_lets_requests_in_flight_finish(exports, tmp_path):
    base = tmp_path / "taxifare"
    publish(exports[2], base, 1)
    server = ModelServer(ServerConfig(str(base), rest_port=0, grpc_port=0, poll_interval=0.1)).start()
    assert server.wait_available(60)
    idle = socket.create_connection(("127.0.0.1", server.rest_port))  # an idle keep-alive connection
    body = json.dumps({"instances": [INSTANCE]}).encode()
    sock = socket.create_connection(("127.0.0.1", server.rest_port))
    sock.sendall(b"POST /v1/models/taxifare:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
    time.sleep(0.3)  # the server is now reading this request's body
    result = {}
    stopper = threading.Thread(target=lambda: result.setdefault("ok", server.stop(grace=10)))
    stopper.start()
    time.sleep(0.5)
    assert stopper.is_alive()  # waiting for the request in flight
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.rest_port), timeout=2).sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
    sock.sendall(body[10:])
    answer = b""
    while b"predictions" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    stopper.join(15)
    assert b"200 OK" in answer and b"predictions" in answer
    assert result["ok"] is True
    assert idle.recv(10) == b""  # the idle connection was closed
    sock.close()
    idle.close()
