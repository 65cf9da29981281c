"""Prometheus metrics with TF Serving's names and labels, served at ``/monitoring/prometheus/metrics``.

TF Serving exports its ``/tensorflow/serving/...`` monitoring metrics to Prometheus with the
slashes turned into colons (``:tensorflow:serving:request_count``); dashboards and alerts
written for it read these unchanged. Histograms are ``prometheus_client`` histograms with TF
Serving's bucket layout (latencies in microseconds). Counters are exported under TF
Serving's exact names, without the ``_total`` suffix ``prometheus_client`` adds to its own
counters (so their ``TYPE`` line says ``untyped``, as for any custom collector sample).

Each server has its own registry (tests run several servers in one process).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

#: Content type of the text exposition format (version 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = ":tensorflow:serving:"
PREDICT_API = "/tensorflow.serving.PredictionService/Predict"
METADATA_API = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS_API = "/tensorflow.serving.ModelService/GetModelStatus"
#: The project's own metrics (request logging, skew), beside TF Serving's.
TAXIFARE_PREFIX = ":taxifare:"


def _exponential(scale: float, growth: float, count: int) -> list[float]:
    """TF's ``monitoring::Buckets::Exponential(scale, growth, count)`` upper bounds."""
    return [scale * growth**i for i in range(count)]


#: TF Serving's request and runtime latency buckets (10 us x 1.8^i, 33 buckets).
LATENCY_BUCKETS = _exponential(10, 1.8, 33)
#: TF Serving's batching queueing latency buckets (100 us x 1.2^i, 52 buckets, ~1 s).
QUEUE_BUCKETS = _exponential(100, 1.2, 52)
#: Batch and request sizes: powers of two up to 2^16.
SIZE_BUCKETS = [float(2**i) for i in range(17)]


class _Counters(Collector):
    """Counters exported under their exact names (no ``_total``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._docs: dict[str, str] = {}

    def declare(self, name: str, doc: str) -> None:
        self._docs[name] = doc
        self._values.setdefault(name, {})

    def inc(self, name: str, labels: dict[str, str], amount: float = 1.0) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + amount

    def value(self, name: str, labels: dict[str, str]) -> float:
        with self._lock:
            return self._values[name].get(tuple(sorted(labels.items())), 0.0)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = {name: dict(series) for name, series in self._values.items()}
        for name, series in snapshot.items():
            metric = Metric(name, self._docs[name], "unknown")
            for key, value in sorted(series.items()):
                metric.add_sample(name, dict(key), value)
            yield metric


class ServingMetrics:
    """The server's metrics; the front ends and the batch scheduler record into it.

    Args:
        model_name: the served model's name (the ``model_name`` / ``model`` label).
    """

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.registry = CollectorRegistry(auto_describe=False)
        self._counters = _Counters()
        self._counters.declare(PREFIX + "request_count", "The total number of requests.")
        self._counters.declare(PREFIX + "request_example_count_total", "The total number of examples (instances) in predict requests.")
        self._counters.declare(PREFIX + "batching_session:wrapped_run_count", "Total count of run calls on the wrapped model (batches).")
        self._counters.declare(PREFIX + "load_shed_count", "Requests refused because a connection or queue limit was reached.")
        self._counters.declare(TAXIFARE_PREFIX + "request_log_dropped", "Sampled requests not logged because the log's writer fell behind.")
        self.registry.register(self._counters)

        def histogram(name: str, text: str, labels: list[str], buckets: Sequence[float]) -> Histogram:
            return Histogram(PREFIX + name, text, labels, buckets=buckets, registry=self.registry)

        self.request_latency = histogram(
            "request_latency",
            "Distribution of wall time (in microseconds) for TensorFlow Serving request.",
            ["API", "entrypoint"],
            LATENCY_BUCKETS,
        )
        self.runtime_latency = histogram(
            "runtime_latency", "Distribution of wall time (in microseconds) for TensorFlow runtime.", ["API", "runtime"], LATENCY_BUCKETS
        )
        self.example_counts = histogram(
            "request_example_counts", "The number of examples (instances) per predict request.", ["model"], SIZE_BUCKETS
        )
        self.warmup_latency = histogram(
            "model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ["model_path", "status"],
            LATENCY_BUCKETS,
        )
        self.queuing_latency = histogram(
            "batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing.",
            ["thread_pool_name"],
            QUEUE_BUCKETS,
        )
        self.input_batch_size = histogram(
            "batching_session:input_batch_size",
            "Tracks the batching input size (examples per request entering the batch queue).",
            ["thread_pool_name"],
            SIZE_BUCKETS,
        )
        self.processed_batch_size = histogram(
            "batching_session:processed_batch_size",
            "Tracks the batch size processed by one model call (examples).",
            ["thread_pool_name"],
            SIZE_BUCKETS,
        )
        self.open_connections = Gauge(PREFIX + "rest:open_connections", "Open REST connections.", registry=self.registry)
        self.queued_requests = Gauge(PREFIX + "queued_requests", "Predict requests waiting for a model thread.", registry=self.registry)
        self.feature_skew = Gauge(
            TAXIFARE_PREFIX + "feature_skew",
            "Jensen-Shannon divergence (0..1) of a feature's recent logged requests from the version's training data (request log only).",
            ["feature", "version"],
            registry=self.registry,
        )
        self.skew_instances = Gauge(
            TAXIFARE_PREFIX + "feature_skew_instances",
            "Logged instances the feature_skew of a version is computed over.",
            ["version"],
            registry=self.registry,
        )

    # -- recording -------------------------------------------------------------------------------
    def request(self, api: str, entrypoint: str, status: str, seconds: float, examples: int = 0) -> None:
        """Record one finished model request (``status`` is ``OK`` or a gRPC status code name)."""
        self._counters.inc(PREFIX + "request_count", {"model_name": self.model_name, "status": status})
        self.request_latency.labels(api, entrypoint).observe(seconds * 1e6)
        if examples:
            self._counters.inc(PREFIX + "request_example_count_total", {"model": self.model_name}, examples)
            self.example_counts.labels(self.model_name).observe(examples)

    def runtime(self, seconds: float, api: str = PREDICT_API, runtime: str = "TF1") -> None:
        """Record one model call (``runtime``: TF Serving's label, ``TF1`` for a session, ``TF2`` for the TF2 fallback)."""
        self.runtime_latency.labels(api, runtime).observe(seconds * 1e6)

    def batch(self, pool: str, sizes: list[int], waited: list[float]) -> None:
        """Record one processed batch: the examples of each request in it and how long each queued."""
        self._counters.inc(PREFIX + "batching_session:wrapped_run_count", {})
        self.processed_batch_size.labels(pool).observe(sum(sizes))
        for size, seconds in zip(sizes, waited, strict=True):
            self.input_batch_size.labels(pool).observe(size)
            self.queuing_latency.labels(pool).observe(seconds * 1e6)

    def warmup(self, model_path: str, seconds: float, ok: bool) -> None:
        """Record the warm-up of a version."""
        self.warmup_latency.labels(model_path, "OK" if ok else "FAILED").observe(seconds * 1e6)

    def shed(self, entrypoint: str, reason: str) -> None:
        """Count a request refused by a limit."""
        self._counters.inc(PREFIX + "load_shed_count", {"entrypoint": entrypoint, "reason": reason})

    def request_log_dropped(self) -> None:
        """Count a sampled request the request log could not keep."""
        self._counters.inc(TAXIFARE_PREFIX + "request_log_dropped", {})

    def count(self, name: str, labels: dict[str, str]) -> float:
        """The current value of one of the exact-name counters (tests, the benchmark)."""
        return self._counters.value(PREFIX + name, labels)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
