"""A small client for ``taxifare serve`` (and TF Serving itself): REST or gRPC.

::

    from serving.client import RestClient, GrpcClient
    fares = RestClient("http://127.0.0.1:8501").predict([{"pickuplon": -73.88, ...}])
    with GrpcClient("127.0.0.1:8500") as client:
        fares = client.predict(instances)

The REST client uses the standard library only (a keep-alive connection per thread); the
gRPC client uses the official TF Serving stubs and builds its tensors with numpy, without
TensorFlow (whose import costs about 4 s of CPU for one request): see :func:`serving_protos`.
"""

from __future__ import annotations

import functools
import http.client
import json
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from types import SimpleNamespace, TracebackType
from typing import Any

from base.layout import MODEL_NAME
from serving.payload import RequestError


@functools.cache
def serving_protos() -> SimpleNamespace:
    """TF Serving's request and stub modules, loaded without running ``tensorflow/__init__.py``.

    The ``*_pb2`` modules of ``tensorflow_serving.apis`` import ``tensorflow.core.framework``'s
    protos, and importing any ``tensorflow.*`` module first runs TensorFlow's package
    ``__init__`` (the whole library: 4-7 s); :func:`trainer.protos.load` loads them without it.
    """
    from trainer.protos import load

    names = {
        "tensor_pb2": "tensorflow.core.framework.tensor_pb2",
        "tensor_shape_pb2": "tensorflow.core.framework.tensor_shape_pb2",
        "types_pb2": "tensorflow.core.framework.types_pb2",
        "predict_pb2": "tensorflow_serving.apis.predict_pb2",
        "get_model_status_pb2": "tensorflow_serving.apis.get_model_status_pb2",
        "get_model_metadata_pb2": "tensorflow_serving.apis.get_model_metadata_pb2",
        "prediction_service_pb2_grpc": "tensorflow_serving.apis.prediction_service_pb2_grpc",
        "model_service_pb2_grpc": "tensorflow_serving.apis.model_service_pb2_grpc",
    }
    return SimpleNamespace(**{short: load(module) for short, module in names.items()})


def tensor_proto(values: Sequence[Any]) -> Any:
    """A 1-D ``TensorProto`` of ``values``: DT_FLOAT bytes as ``tf.make_tensor_proto`` sends them, or DT_STRING.

    Raises:
        TypeError, ValueError: values that are neither all numbers nor all strings.
    """
    import numpy as np

    protos = serving_protos()
    shape = protos.tensor_shape_pb2.TensorShapeProto(dim=[protos.tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))])
    if values and isinstance(values[0], str):
        if not all(isinstance(v, str) for v in values):
            raise TypeError("mixes strings and other values")
        return protos.tensor_pb2.TensorProto(
            dtype=protos.types_pb2.DT_STRING, tensor_shape=shape, string_val=[v.encode("utf-8") for v in values]
        )
    odd = [v for v in values if v is None or isinstance(v, (str, bytes))]
    if odd:
        raise TypeError(f"expected a number for every instance, got {odd[0]!r}")
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"expected one number per instance, got shape {array.shape}")
    return protos.tensor_pb2.TensorProto(dtype=protos.types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=array.tobytes())


def tensor_values(proto: Any) -> list[float]:
    """The numbers of a float or double ``TensorProto`` (what ``tf.make_ndarray`` gives, flattened).

    Raises:
        ServingError: a tensor of another type.
    """
    import numpy as np

    types = serving_protos().types_pb2
    dtypes = {types.DT_FLOAT: (np.float32, "float_val"), types.DT_DOUBLE: (np.float64, "double_val")}
    if proto.dtype not in dtypes:
        raise ServingError(f"the server answered a tensor of type {types.DataType.Name(proto.dtype)}, not numbers")
    dtype, field = dtypes[proto.dtype]
    size = 1
    for dim in proto.tensor_shape.dim:
        size *= dim.size
    if proto.tensor_content:
        return [float(v) for v in np.frombuffer(proto.tensor_content, dtype=dtype)]
    values = list(getattr(proto, field))
    if len(values) == 1 and size > 1:  # TF's compact form: one value for a tensor filled with it
        values *= size
    return [float(v) for v in values]


class ServingError(RuntimeError):
    """The server refused a request or could not be reached; ``status`` is the HTTP status or gRPC code."""

    def __init__(self, message: str, status: int | str | None = None) -> None:
        super().__init__(message)
        self.status = status


class RestClient:
    """Calls TF Serving's REST API.

    Args:
        url: ``http://HOST:PORT`` of the server, or a full ``...:predict`` URL.
        model_name: the served model's name.
        timeout: seconds per request.
    """

    def __init__(self, url: str = "http://127.0.0.1:8501", model_name: str = MODEL_NAME, timeout: float = 30.0) -> None:
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme != "http" or not parsed.hostname:
            raise RequestError(f"--url {url} is not an http://HOST:PORT URL")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.model_name = model_name
        self.timeout = timeout
        self._predict_path = parsed.path if parsed.path.endswith(":predict") else None
        self._local = threading.local()
        self.last_version: str | None = None

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
        """Send one request; returns ``(status, decoded JSON, headers)``.

        Raises:
            ServingError: when the server cannot be reached or does not answer JSON.
        """
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode("utf-8"))
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()  # a keep-alive connection the server closed: retry once on a new one
                self._local.conn = None
                if attempt:
                    raise ServingError(f"http://{self.host}:{self.port}{path}: {exc}") from None
            except OSError as exc:
                conn.close()
                self._local.conn = None
                raise ServingError(f"cannot reach http://{self.host}:{self.port}{path}: {exc}") from None
        if response.getheader("Connection", "").lower() == "close":
            conn.close()
            self._local.conn = None
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            raise ServingError(f"{method} {path} answered {response.status} with non-JSON: {raw[:200]!r}", response.status) from None
        return response.status, decoded, {k.lower(): v for k, v in response.getheaders()}

    def _check(self, status: int, body: Any, what: str) -> Any:
        if status >= 400:
            message = body.get("error") if isinstance(body, dict) else body
            if isinstance(message, dict):
                message = message.get("message")
            raise ServingError(f"{what}: HTTP {status}: {message}", status)
        return body

    def _model_path(self, version: int | None) -> str:
        path = f"/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        return path if version is None else f"{path}/versions/{version}"

    def predict(self, instances: Sequence[Mapping[str, Any]], version: int | None = None) -> list[float]:
        """Fares for ``instances`` (row format); the answering version is in ``last_version``.

        Raises:
            ServingError: with the server's message.
        """
        path = self._predict_path or f"{self._model_path(version)}:predict"
        status, body, headers = self.request("POST", path, {"instances": list(instances)})
        body = self._check(status, body, "predict")
        self.last_version = headers.get("x-model-version")
        return list(body["predictions"])

    def status(self, version: int | None = None) -> list[dict[str, Any]]:
        """The ``model_version_status`` entries.

        Raises:
            ServingError: with the server's message.
        """
        status, body, _ = self.request("GET", self._model_path(version))
        return list(self._check(status, body, "status")["model_version_status"])

    def metadata(self, version: int | None = None) -> dict[str, Any]:
        """The model's metadata (signature and training metrics).

        Raises:
            ServingError: with the server's message.
        """
        status, body, _ = self.request("GET", f"{self._model_path(version)}/metadata")
        return dict(self._check(status, body, "metadata"))

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class GrpcClient:
    """Calls TF Serving's gRPC API with the official stubs.

    Args:
        target: ``HOST:PORT`` of the server.
        model_name: the served model's name.
        timeout: seconds per call.
    """

    def __init__(self, target: str = "127.0.0.1:8500", model_name: str = MODEL_NAME, timeout: float = 30.0) -> None:
        import grpc

        protos = serving_protos()
        self.target = target
        self.model_name = model_name
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        self.stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.model_stub = protos.model_service_pb2_grpc.ModelServiceStub(self._channel)
        self.last_version: str | None = None

    def _call(self, fn: Any, request: Any, what: str) -> Any:
        import grpc

        try:
            return fn(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise ServingError(f"{what}: {code.name if code else 'ERROR'}: {details}", code.name if code else None) from None

    def predict_request(self, instances: Sequence[Mapping[str, Any]], version: int | None = None) -> Any:
        """The ``PredictRequest`` for ``instances`` (one tensor per feature, as ``tf.make_tensor_proto`` makes it).

        Raises:
            RequestError: when the instances do not all have the same features.
        """
        if not instances:
            raise RequestError("no instance to send: give at least one")
        names = list(instances[0])
        request = serving_protos().predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = "serving_default"
        if version is not None:
            request.model_spec.version.value = version
        for name in names:
            try:
                values = [row[name] for row in instances]
            except KeyError:
                raise RequestError(f"every instance needs the same features; one lacks {name}") from None
            try:
                request.inputs[name].CopyFrom(tensor_proto(values))
            except (TypeError, ValueError) as exc:
                raise RequestError(f"{name}: {exc}") from None
        return request

    def predict(self, instances: Sequence[Mapping[str, Any]], version: int | None = None) -> list[float]:
        """Fares for ``instances``; the answering version is in ``last_version``.

        Raises:
            ServingError: with the server's status and message.
        """
        response = self._call(self.stub.Predict, self.predict_request(instances, version), "Predict")
        self.last_version = str(response.model_spec.version.value)
        return tensor_values(response.outputs["fare_amount"])

    def status(self, version: int | None = None) -> Any:
        """The ``GetModelStatusResponse``.

        Raises:
            ServingError: with the server's status and message.
        """
        request = serving_protos().get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        if version is not None:
            request.model_spec.version.value = version
        return self._call(self.model_stub.GetModelStatus, request, "GetModelStatus")

    def metadata(self, version: int | None = None) -> Any:
        """The ``GetModelMetadataResponse`` (``signature_def``).

        Raises:
            ServingError: with the server's status and message.
        """
        request = serving_protos().get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self.model_name
        if version is not None:
            request.model_spec.version.value = version
        return self._call(self.stub.GetModelMetadata, request, "GetModelMetadata")

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
