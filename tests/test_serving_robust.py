"""Hostile and malformed traffic: every request gets an HTTP (or gRPC) answer, no traceback, no reset.

Each case of issue 10's "Robustness" list is a test here, against a real server on loopback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import struct
import threading
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from _serving_helpers import INSTANCE, export_untrained, publish
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from pipeline.cli import main as taxifare
from serving.grpc_service import tensor_to_array
from serving.http1 import HttpLimits
from serving.payload import Limits
from serving.server import ModelServer, ServerConfig
from trainer import schema

PREDICT = "/v1/models/taxifare:predict"
BODY = json.dumps({"instances": [INSTANCE]}).encode()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_untrained(tmp_path_factory.mktemp("robust-export"), seed=5)


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("robust") / "taxifare"
    publish(model_dir, base, 1)
    config = ServerConfig(
        str(base),
        rest_port=0,
        grpc_port=0,
        poll_interval=0.1,
        limits=Limits(max_batch=1000, max_body_bytes=256 * 1024),
        http=HttpLimits(request_timeout=1.0, keep_alive_timeout=5.0, max_connections=300),
    )
    server = ModelServer(config).start()
    assert server.wait_available(60)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield SimpleNamespace(
        server=server, port=server.rest_port, url=f"http://127.0.0.1:{server.rest_port}", channel=channel, metrics=server.metrics
    )
    channel.close()
    server.stop(grace=5)


@pytest.fixture
def no_tracebacks(caplog):
    caplog.set_level(logging.INFO)
    yield caplog
    bad = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage() or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


def exchange(port: int, data: bytes, *, timeout: float = 5.0, shut: bool = False) -> bytes:
    """Send raw bytes, read until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
        return out


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def json_body(answer: bytes) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head, head
    return json.loads(body)


def tls_client_hello() -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n" % (path.encode(), len(body), extra) + body


MALFORMED = [
    ("5001-digit integer", post(PREDICT, b'{"instances": [{"passengers": ' + b"7" * 5001 + b"}]}"), 400, "too many digits"),
    ("request line over 64 KiB", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "request line"),
    ("garbage request line", b"HELLO\r\n\r\n", 400, "malformed request line"),
    ("unknown HTTP version", b"GET /healthz HTTP/9.9\r\n\r\n", 505, "HTTP/9.9"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "HTTP/2"),
    ("TLS hello", None, 400, "not TLS"),
    ("binary request line", b"\x00\x01\x02\x03 garbage", 400, "binary"),
    ("headers over 64 KiB", b"GET /healthz HTTP/1.1\r\n" + b"X-A: " + b"b" * 70_000 + b"\r\n\r\n", 431, "request head"),
    ("too many headers", b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 150 + b"\r\n", 431, "header lines"),
    ("malformed header", b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400, "malformed header"),
    ("POST without Content-Length", b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n", 411, "Content-Length"),
    (
        "chunked body",
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        411,
        "chunked",
    ),
    ("body over the limit", b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n{", 413, "limit"),
    ("bad Content-Length", b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400, "not a byte count"),
    ("two Content-Lengths", b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "two"),
    ("PUT", b"PUT " + PREDICT.encode() + b" HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 405, "not PUT"),
    ("DELETE", b"DELETE /v1/models/taxifare HTTP/1.1\r\nConnection: close\r\n\r\n", 405, "not DELETE"),
    ("unknown method", b"BREW /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 501, "BREW"),
]


@pytest.mark.parametrize(("data", "status", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_every_malformed_request_gets_an_http_answer_and_no_traceback(served, no_tracebacks, data, status, message):
    answer = exchange(served.port, tls_client_hello() if data is None else data)
    assert status_of(answer) == status, answer[:300]
    assert message in json_body(answer)["error"]
    assert requests.post(served.url + PREDICT, data=BODY, timeout=10).status_code == 200  # still serving


def test_405_names_the_method_and_the_allowed_ones(served):
    answer = requests.get(served.url + PREDICT, timeout=10)
    assert answer.status_code == 405 and answer.json()["error"].endswith("takes POST, not GET")
    assert answer.headers["Allow"] == "POST, OPTIONS"
    answer = requests.post(served.url + "/v1/models/taxifare/metadata", data=b"{}", timeout=10)
    assert answer.status_code == 405 and "takes GET, not POST" in answer.json()["error"]


def test_head_and_options_are_answered_with_json_headers(served):
    head = requests.head(served.url + "/v1/models/taxifare", timeout=10)
    get = requests.get(served.url + "/v1/models/taxifare", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Type"] == "application/json" and int(head.headers["Content-Length"]) == len(get.content)
    options = requests.options(served.url + PREDICT, timeout=10)
    assert options.status_code == 200 and options.headers["Allow"] == "POST, OPTIONS" and options.json() == {"allow": ["POST", "OPTIONS"]}


def test_tf_serving_parity_case_insensitive_routes_and_missing_model_name(served):
    answer = requests.post(served.url + "/V1/Models/taxifare:PREDICT", data=BODY, timeout=10)
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1
    assert requests.get(served.url + "/V1/MODELS/taxifare/VERSIONS/1/METADATA", timeout=10).status_code == 200
    missing = requests.get(served.url + "/v1/models", timeout=10)
    assert missing.status_code == 400 and missing.json() == {"error": "Missing model name in request."}
    assert requests.get(served.url + "/v1/models/TAXIFARE", timeout=10).status_code == 404  # the name itself is case-sensitive


def test_metadata_prints_tf_servings_default_fields(served):
    sig = requests.get(served.url + "/v1/models/taxifare/metadata", timeout=10).json()["metadata"]["signature_def"]["signature_def"]
    tensor = sig["serving_default"]["inputs"]["pickuplon"]
    assert tensor["tensor_shape"]["unknown_rank"] is False  # a default value, printed as TF Serving does
    assert tensor["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]


def test_burst_of_100_new_connections_is_served_never_reset(served):
    results: list[object] = []
    lock = threading.Lock()
    barrier = threading.Barrier(100)

    def client() -> None:
        try:
            barrier.wait()
            answer = exchange(served.port, post(PREDICT, BODY), timeout=30)
            outcome: object = status_of(answer)
        except Exception as exc:  # a reset or a timeout: the failure this test is about
            outcome = repr(exc)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 100
    assert all(r in (200, 503) for r in results), [r for r in results if r not in (200, 503)][:5]
    assert results.count(200) >= 90


def test_200_idle_connections_do_not_starve_a_normal_request(served):
    idle = []
    try:
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", served.port))
            if i % 2:
                sock.sendall(b"POST /v1/models/taxifare:predict HTTP/1.1\r\nHost: x\r\n")  # half-sent headers
            idle.append(sock)
        started = time.monotonic()
        answer = requests.post(served.url + PREDICT, data=BODY, timeout=2)
        assert answer.status_code == 200 and time.monotonic() - started < 2.0
        # the slow clients are timed out (request timeout 1 s here): half-sent heads get a 408
        idle[1].settimeout(5)
        late = b""
        while chunk := idle[1].recv(65536):
            late += chunk
        assert status_of(late) == 408 and "not complete within 1s" in json_body(late)["error"]
    finally:
        for sock in idle:
            sock.close()


def test_a_body_shorter_than_its_content_length_is_not_predicted(served, no_tracebacks):
    before = served.metrics.count("request_count", {"model_name": "taxifare", "status": "OK"})
    short = b"POST /v1/models/taxifare:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (len(BODY) + 10) + BODY
    answer = exchange(served.port, short, shut=True)  # the client gives up: end of stream
    assert status_of(answer) == 400 and "ended after" in json_body(answer)["error"]
    answer = exchange(served.port, short)  # the client waits: the request timeout answers
    assert status_of(answer) == 408
    assert served.metrics.count("request_count", {"model_name": "taxifare", "status": "OK"}) == before


def test_client_disconnect_logs_one_line_not_a_traceback(served, no_tracebacks):
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", served.port))
        sock.sendall(post(PREDICT, json.dumps({"instances": [INSTANCE] * 500}).encode()))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset while the server computes the answer
    time.sleep(0.5)
    assert requests.post(served.url + PREDICT, data=BODY, timeout=10).status_code == 200
    messages = [r.getMessage() for r in no_tracebacks.records]
    assert not any("BrokenPipe" in m or "ConnectionReset" in m for m in messages), messages


def test_a_client_that_closes_before_the_answer_is_not_reported_as_a_model_failure(served, no_tracebacks):
    """wrk's way of stopping: the request sent, then the socket closed (not reset) before the answer."""
    other = socket.create_connection(("127.0.0.1", served.port))  # a second connection: requests go to the model threads
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", served.port))
            sock.sendall(post(PREDICT, json.dumps({"instances": [INSTANCE] * 500}).encode()))
            sock.close()  # a FIN now, and a reset when the answer arrives at the closed socket
        time.sleep(0.5)
        assert requests.post(served.url + PREDICT, data=BODY, timeout=10).status_code == 200
    finally:
        other.close()
    messages = [r.getMessage() for r in no_tracebacks.records]
    assert not any("failed" in m for m in messages), messages


# -- gRPC -------------------------------------------------------------------------------------------
def grpc_request(dtype) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "taxifare"
    for name in schema.NUMERIC_FEATURES:
        request.inputs[name].CopyFrom(tf.make_tensor_proto(np.array([INSTANCE[name]]).astype(dtype)))
    return request


@pytest.mark.parametrize(
    ("dtype", "name"), [(np.int32, "DT_INT32"), (np.int64, "DT_INT64"), (np.float16, "DT_HALF"), (np.float64, "DT_DOUBLE")]
)
def test_grpc_refuses_non_float_inputs_as_tf_serving_does(served, dtype, name):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(served.channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(grpc_request(dtype), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert name in err.value.details() and "DT_FLOAT" in err.value.details()
    assert stub.Predict(grpc_request(np.float32), timeout=10).outputs["fare_amount"].dtype == types_pb2.DT_FLOAT


def test_grpc_garbage_bytes_are_invalid_argument_not_internal(served):
    raw = served.channel.unary_unary("/tensorflow.serving.PredictionService/Predict", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xfe garbage \x00\x01" * 10, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a valid Predict request" in err.value.details()


@pytest.mark.parametrize(
    ("dims", "float_val", "content"),
    [([1], [-73.25], b""), ([3], [1.5, -73.25, 40.5], b""), ([3], [2.0], b""), ([2], [], np.array([1.5, 2.5], np.float32).tobytes())],
    ids=["one-value", "float_val", "float_val-filled", "tensor_content"],
)
def test_grpc_float_inputs_decode_as_tf_make_ndarray_does(dims, float_val, content):
    """Every encoding of a DT_FLOAT input (the fast paths included) gives what tf.make_ndarray gives."""
    shape = tf.TensorShape(dims).as_proto()
    proto = tf.make_tensor_proto(0.0, dtype=tf.float32)
    proto.Clear()
    proto.dtype, proto.tensor_content = types_pb2.DT_FLOAT, content
    proto.tensor_shape.CopyFrom(shape)
    proto.float_val.extend(float_val)
    got = tensor_to_array("pickuplon", proto, "float", 1000)
    assert got.dtype == np.float32 and got.tolist() == tf.make_ndarray(proto).tolist()


# -- health, startup errors -------------------------------------------------------------------------
def test_healthz_says_failed_and_why_when_the_only_version_failed(tmp_path):
    version = tmp_path / "taxifare" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"not a saved model")
    with ModelServer(ServerConfig(str(version.parent), rest_port=0, grpc_port=0, poll_interval=0.05)) as server:
        deadline = time.monotonic() + 20
        while True:
            answer = requests.get(f"http://127.0.0.1:{server.rest_port}/healthz", timeout=10)
            if answer.json()["status"] != "LOADING" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert answer.status_code == 503
    assert answer.json()["status"] == "FAILED" and "version 1" in answer.json()["error"] and "not a SavedModel" in answer.json()["error"]


def test_rest_port_in_use_is_one_line_naming_the_port(tmp_path, model_dir, capsys):
    base = tmp_path / "taxifare"
    publish(model_dir, base, 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = taxifare(["serve", "--model-base-path", str(base), "--rest-port", str(port), "--grpc-port", "0", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: cannot listen for REST on 127.0.0.1:") and f"port {port}" in err[-1] and "--rest-port" in err[-1]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--grace", "-5"], "--grace must be 0 or more"),
        (["--model-name", ""], "--model-name '' is not a model name"),
        (["--max-batch-size", "0"], "--max-batch-size must be positive"),
        (["--batch-timeout-micros", "-1"], "--batch-timeout-micros must be 0 or more"),
    ],
)
def test_bad_serve_flags_are_refused_in_one_line(tmp_path, capsys, flags, message):
    code = taxifare(["serve", "--model-base-path", str(tmp_path), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_connections_over_the_limit_are_answered_503_not_dropped(model_dir, tmp_path):
    base = tmp_path / "taxifare"
    publish(model_dir, base, 1)
    config = ServerConfig(str(base), rest_port=0, grpc_port=0, poll_interval=0.1, http=HttpLimits(max_connections=2))
    with ModelServer(config) as server:
        assert server.wait_available(60)
        held = [socket.create_connection(("127.0.0.1", server.rest_port)) for _ in range(2)]
        try:
            time.sleep(0.2)
            answer = exchange(server.rest_port, post(PREDICT, BODY))
            assert status_of(answer) == 503 and b"Retry-After: 1" in answer
            assert "connections open" in json_body(answer)["error"]
            assert server.metrics.count("load_shed_count", {"entrypoint": "REST", "reason": "connections"}) == 1
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        assert status_of(exchange(server.rest_port, post(PREDICT, BODY))) == 200


def _keep_alive_post(path: str, body: bytes, close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n" % (path.encode(), connection, len(body)) + body


def test_2000_pipelined_requests_in_one_write_get_2000_answers_in_order_and_starve_nobody(served, no_tracebacks):
    """One client's deep pipeline: every request answered in order, no 500, /healthz of another client within 1 s."""
    n = 2000
    bodies = [json.dumps({"instances": [dict(INSTANCE, passengers=1 + i % 6)]}).encode() for i in range(n)]
    burst = b"".join(_keep_alive_post(PREDICT, body, close=i == n - 1) for i, body in enumerate(bodies))
    health: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                ok = requests.get(served.url + "/healthz", timeout=5).status_code == 200
            except requests.RequestException:
                ok = False
            health.append(time.monotonic() - started if ok else 99.0)
            time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        answer = exchange(served.port, burst, timeout=60)
    finally:
        stop.set()
        prober.join(10)
    statuses = [int(answer[i + 9 : i + 12]) for i in range(len(answer)) if answer.startswith(b"HTTP/1.1 ", i)]
    assert len(statuses) == n and set(statuses) == {200}, (len(statuses), sorted(set(statuses)))
    predictions = [json.loads(part.split(b"\r\n\r\n", 1)[1])["predictions"] for part in answer.split(b"HTTP/1.1 ")[1:]]
    first = requests.post(served.url + PREDICT, data=bodies[1], timeout=10).json()["predictions"]
    assert predictions[1] == first and predictions[7] == first  # answers come in the order of the requests
    assert health and max(health) < 1.0, sorted(health)[-5:]
    others = [r.getMessage() for r in no_tracebacks.records if r.name != "serving.access"]  # one access line per request
    assert len(others) < 10, others[:5]


def test_a_pipelining_client_that_reads_nothing_does_not_hold_the_server(served, no_tracebacks):
    """Thousands of answers the client never reads: the connection waits, others are served, drain is not held up."""
    burst = b"".join(_keep_alive_post(PREDICT, json.dumps({"instances": [INSTANCE] * 50}).encode()) for _ in range(3000))
    sock = socket.create_connection(("127.0.0.1", served.port))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sender = threading.Thread(target=lambda: contextlib.suppress(OSError)(sock.sendall)(burst), daemon=True)
        sender.start()
        time.sleep(1.0)
        started = time.monotonic()
        assert requests.get(served.url + "/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def test_a_huge_version_number_in_the_url_is_404_not_500(served, no_tracebacks):
    answer = requests.get(served.url + "/v1/models/taxifare/versions/" + "9" * 5000, timeout=10)
    assert answer.status_code == 404 and "not a version number" in answer.json()["error"]


def test_grpc_negative_dimension_is_named_as_such(served):
    from serving.payload import RequestError

    proto = tf.make_tensor_proto([1.0], dtype=tf.float32)
    proto.tensor_shape.dim[0].size = -1
    with pytest.raises(RequestError) as err:
        tensor_to_array("pickuplon", proto, "float", 1000)
    assert "not -1" in str(err.value) and "more than the limit" not in str(err.value)
