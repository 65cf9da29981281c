"""Server-side batching: concurrent requests coalesce, every client gets its own rows back, in order; load is shed."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from _serving_helpers import export_untrained, instances, publish
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.batching import BatchingParameters, Overloaded, Scheduler
from serving.servable import Servable
from serving.server import ModelServer, ServerConfig
from trainer import schema

FEATURES = schema.NUMERIC_FEATURES


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_untrained(tmp_path_factory.mktemp("batching-export"), seed=6)


@pytest.fixture(scope="module")
def servable(model_dir):
    return Servable(model_dir, 1)


def columns(rows):
    return {name: np.array([row[name] for row in rows], np.float32) for name in FEATURES}


class Recording:
    """A servable that records the size of every model call and answers row i with its pickuplon (so rows can be traced)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sizes: list[int] = []
        self.version = 1

    def predict(self, cols):
        self.sizes.append(len(cols["pickuplon"]))
        time.sleep(self.delay)
        return np.asarray(cols["pickuplon"], np.float32) * 1.0


def test_queued_tasks_merge_and_each_gets_its_own_rows_in_order():
    model = Recording(delay=0.2)
    scheduler = Scheduler(BatchingParameters(enabled=True, num_batch_threads=1, max_batch_size=100), threads=1, max_queued=100)
    answers: dict[int, np.ndarray] = {}
    done = threading.Event()

    def collect(i):
        def cb(values, error):
            assert error is None
            answers[i] = values
            if len(answers) == 10:
                done.set()

        return cb

    try:
        for i in range(10):  # task 0 occupies the only thread; 1..9 queue meanwhile and merge into one call
            size = i + 1
            scheduler.submit(model, {"pickuplon": np.arange(size, dtype=np.float32) + 100 * i}, size, collect(i))
            if i == 0:
                time.sleep(0.05)
        assert done.wait(10)
    finally:
        scheduler.close()
    assert model.sizes == [1, sum(range(2, 11))]
    for i in range(10):
        assert answers[i].tolist() == (np.arange(i + 1) + 100 * i).tolist()


def test_batches_respect_max_batch_size_and_the_queue_sheds_load():
    model = Recording(delay=0.2)
    params = BatchingParameters(enabled=True, num_batch_threads=1, max_batch_size=4, max_enqueued_batches=2)
    scheduler = Scheduler(params, threads=1, max_queued=100)
    finished = threading.Semaphore(0)
    try:
        scheduler.submit(model, {"pickuplon": np.zeros(1, np.float32)}, 1, lambda v, e: finished.release())
        time.sleep(0.05)
        for _ in range(8):  # 2 batches of 4 examples may wait
            scheduler.submit(model, {"pickuplon": np.zeros(1, np.float32)}, 1, lambda v, e: finished.release())
        with pytest.raises(Overloaded, match="batch queue is full"):
            scheduler.submit(model, {"pickuplon": np.zeros(1, np.float32)}, 1, lambda v, e: None)
        for _ in range(9):
            assert finished.acquire(timeout=10)
    finally:
        scheduler.close()
    assert model.sizes == [1, 4, 4]


def test_unbatched_queue_limit_sheds_load():
    model = Recording(delay=0.3)
    scheduler = Scheduler(BatchingParameters(enabled=False), threads=1, max_queued=2)
    try:
        for _ in range(3):  # one runs, two wait
            scheduler.submit(model, {"pickuplon": np.zeros(1, np.float32)}, 1, lambda v, e: None)
            time.sleep(0.02)
        with pytest.raises(Overloaded, match="already waiting"):
            scheduler.submit(model, {"pickuplon": np.zeros(1, np.float32)}, 1, lambda v, e: None)
    finally:
        scheduler.close()
    assert model.sizes == [1, 1, 1]  # never merged with batching off


def test_real_model_batched_answers_equal_each_clients_own_call(servable):
    scheduler = Scheduler(BatchingParameters(enabled=True, num_batch_threads=1, batch_timeout_micros=50_000), threads=1, max_queued=100)
    batches = [instances(n, seed=n) for n in (1, 2, 3, 5, 8)]
    got: dict[int, np.ndarray] = {}
    try:
        threads = [
            threading.Thread(target=lambda i=i, rows=rows: got.__setitem__(i, scheduler.predict(servable, columns(rows), len(rows), 10)))
            for i, rows in enumerate(batches)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        scheduler.close()
    for i, rows in enumerate(batches):
        alone = servable.predict(columns(rows))
        np.testing.assert_allclose(got[i], alone, rtol=1e-5, atol=1e-4)  # float32 sums differ in the last bits between batch sizes


def noting(recorded: list[str], **attributes):
    """A Recording servable class that notes which call ran: ``pool`` (predict) or ``lone`` (predict_lone)."""

    class Both(Recording):
        def predict(self, cols):
            recorded.append("pool")
            return super().predict(cols)

        def predict_lone(self, cols):
            recorded.append("lone")
            return super().predict(cols)

    for name, value in attributes.items():
        setattr(Both, name, value)
    return Both


def test_a_lone_call_runs_the_graph_on_the_calling_thread_and_answers_as_the_pool(servable):
    """``predict_lone`` (the scheduler's inline call) is the same signature run on the calling thread: same fares, same shape."""
    for n in (1, 7, 100):
        cols = columns(instances(n, seed=n))
        np.testing.assert_array_equal(servable.predict_lone(cols), servable.predict(cols))
    recorded: list[str] = []
    Both = noting(recorded)

    scheduler = Scheduler(BatchingParameters(), threads=1, max_queued=10)
    try:
        scheduler.predict(Both(0.0), columns(instances(2, seed=1)), 2, 10)  # nothing else queued or running: inline
        assert recorded == ["lone"]
        done = threading.Event()
        scheduler.submit(Both(0.0), columns(instances(2, seed=2)), 2, lambda values, error: done.set())  # a model thread
        assert done.wait(10)
        assert recorded == ["lone", "pool"]
    finally:
        scheduler.close()


def test_a_lone_grpc_predict_without_batching_is_the_inline_call_and_overlapping_ones_use_the_pool():
    """gRPC without batching: the only Predict in flight runs ``predict_lone``; one that overlaps another runs ``predict``."""
    from serving.grpc_service import Service
    from serving.metrics import ServingMetrics

    recorded: list[str] = []
    Both = noting(recorded, runtime="TF1")

    scheduler = Scheduler(BatchingParameters(), threads=1, max_queued=10)
    service = Service(None, scheduler, ServingMetrics("taxifare"))  # type: ignore[arg-type]  # no app needed for the model call
    try:
        cols = columns(instances(3, seed=3))
        np.testing.assert_array_equal(service._call_here(Both(0.0), cols, 3), cols["pickuplon"])
        assert recorded == ["lone"]
        service._predicting = 1  # another Predict is running its model call on another gRPC thread
        service._call_here(Both(0.0), cols, 3)
        assert recorded == ["lone", "pool"]
        assert service._predicting == 1  # its own count was given back
    finally:
        scheduler.close()


def test_server_with_batching_coalesces_concurrent_clients_over_both_protocols(model_dir, servable, tmp_path):
    base = tmp_path / "taxifare"
    publish(model_dir, base, 1)
    params = BatchingParameters(enabled=True, num_batch_threads=1, batch_timeout_micros=5_000)
    config = ServerConfig(str(base), rest_port=0, grpc_port=0, poll_interval=0.1, batching=params, log_requests=False)
    failures: list[str] = []
    mismatched: list[int] = []
    with ModelServer(config) as server:
        assert server.wait_available(60)
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/taxifare:predict"
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def client(i: int) -> None:
            session = requests.Session()
            for j in range(15):
                rows = instances(1 + (i + j) % 4, seed=1000 * i + j)
                expected = servable.predict(columns(rows))
                try:
                    if i % 2:
                        values = np.array(session.post(url, json={"instances": rows}, timeout=10).json()["predictions"])
                    else:
                        request = predict_pb2.PredictRequest()
                        request.model_spec.name = "taxifare"
                        for name in FEATURES:
                            request.inputs[name].CopyFrom(tf.make_tensor_proto([row[name] for row in rows], dtype=tf.float32))
                        values = tf.make_ndarray(stub.Predict(request, timeout=10).outputs["fare_amount"])
                except Exception as exc:
                    failures.append(repr(exc))
                    continue
                if not np.allclose(values, expected, rtol=1e-5, atol=1e-4):
                    mismatched.append(i)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        channel.close()
        metrics = server.metrics
        text = metrics.exposition().decode()
    assert not failures, failures[:3]
    assert not mismatched  # every client got its own rows back, in order
    count = float(next(line.split()[-1] for line in text.splitlines() if "processed_batch_size_count{" in line))
    total = float(next(line.split()[-1] for line in text.splitlines() if "processed_batch_size_sum{" in line))
    requests_in = float(next(line.split()[-1] for line in text.splitlines() if "input_batch_size_count{" in line))
    assert requests_in == 8 * 15  # every predict went through the batch queue (the warm-up calls the model directly)
    assert count < requests_in and total / count > 1.5  # batches hold several requests
    assert ':tensorflow:serving:batching_session:queuing_latency_count{thread_pool_name="batch_threads"}' in text


def _grpc_request(rows):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "taxifare"
    for name in FEATURES:
        request.inputs[name].CopyFrom(tf.make_tensor_proto([row[name] for row in rows], dtype=tf.float32))
    return request


@pytest.mark.parametrize(
    ("batching", "workers", "size", "shed_by"),
    [
        # batching off: 1 gRPC worker + 1 queued call (maximum_concurrent_rpcs): gRPC itself refuses the rest
        (BatchingParameters(), 1, 1000, "grpc"),
        # batching on: a batch waits 50 ms for company and 1 request may wait: the scheduler refuses the rest
        # (16 gRPC workers, one per client, so that gRPC's own limit never refuses first on a loaded machine)
        (BatchingParameters(enabled=True, num_batch_threads=1, batch_timeout_micros=50_000), 16, 100, "scheduler"),
    ],
    ids=["grpc-limit", "batch-queue"],
)
def test_grpc_sheds_load_with_resource_exhausted_end_to_end(model_dir, servable, tmp_path, batching, workers, size, shed_by):
    """A real server with a tiny queue and 16 concurrent stock clients: some are refused, none hangs, the rest are right."""
    base = tmp_path / "taxifare"
    publish(model_dir, base, 1)
    config = ServerConfig(
        str(base), rest_port=0, grpc_port=0, poll_interval=0.1, batching=batching, grpc_workers=workers, max_queued_requests=1
    )
    codes: list[grpc.StatusCode] = []
    shed_details: list[str] = []
    wrong: list[int] = []
    with ModelServer(config) as server:
        assert server.wait_available(60)
        channels = [grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") for _ in range(16)]
        stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
        batches = [instances(size, seed=i) for i in range(16)]
        requests_ = [_grpc_request(rows) for rows in batches]
        expected = [servable.predict(columns(rows)) for rows in batches]
        for stub in stubs:  # connect first, so the calls below arrive together
            stub.Predict(_grpc_request(batches[0][:1]), timeout=10)
        for _ in range(10):  # rounds, until the limit was hit at least once (the first round nearly always does)
            futures = [stub.Predict.future(request, timeout=30) for stub, request in zip(stubs, requests_, strict=True)]
            for i, future in enumerate(futures):
                try:
                    values = tf.make_ndarray(future.result(timeout=30).outputs["fare_amount"])  # raises on a hang
                    codes.append(grpc.StatusCode.OK)
                    if not np.allclose(values, expected[i], rtol=1e-5, atol=1e-4):
                        wrong.append(i)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        shed_details.append(exc.details() or "")
            if shed_details:
                break
        assert stubs[0].Predict(requests_[0], timeout=10).outputs["fare_amount"].tensor_content  # serving on after the burst
        text = server.metrics.exposition().decode()
        for channel in channels:
            channel.close()
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, set(codes)
    assert grpc.StatusCode.OK in codes and shed_details, codes
    assert not wrong  # every answered client got its own rows
    if shed_by == "scheduler":
        assert all("waiting for the model" in d for d in shed_details), shed_details[:2]
        shed = sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith(":tensorflow:serving:request_count{") and 'status="RESOURCE_EXHAUSTED"' in line
        )
        assert shed == len(shed_details)  # each refusal is counted under TF Serving's status
