"""The gRPC front end: TF Serving's ``PredictionService`` and ``ModelService`` (official protos).

``Predict`` and ``GetModelMetadata`` of ``tensorflow.serving.PredictionService`` and
``GetModelStatus`` of ``tensorflow.serving.ModelService`` are implemented; ``Classify``,
``Regress``, ``MultiInference`` and ``HandleReloadConfigRequest`` answer UNIMPLEMENTED (the
model has a predict signature only, and versions come from the base path). A stock client
(``prediction_service_pb2_grpc.PredictionServiceStub`` with ``tf.make_tensor_proto`` inputs)
works unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.batching import Overloaded, Scheduler
from serving.metrics import METADATA_API, PREDICT_API, STATUS_API, ServingMetrics
from serving.payload import RequestError, check_batch_size, check_column, check_names
from serving.state import App

access_log = logging.getLogger("serving.access")

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
#: The methods of TF Serving's services this server does not implement, and what to do instead.
_UNIMPLEMENTED = {
    "Classify": "the model has a predict signature only (no classification): call Predict",
    "Regress": "the model has a predict signature only (no tf.Example regression): call Predict",
    "MultiInference": "the model has a predict signature only: call Predict",
    "HandleReloadConfigRequest": "versions come from --model-base-path: publish a version folder, or move traffic with "
    "`taxifare label` / `taxifare rollback`",
}
_STATE = get_model_status_pb2.ModelVersionStatus.State


def _dtype_name(dtype: int) -> str:
    try:
        return str(types_pb2.DataType.Name(dtype))
    except ValueError:
        return f"dtype {dtype}"


def tensor_to_array(name: str, proto: tensor_pb2.TensorProto, kind: str, max_batch: int) -> np.ndarray:
    """A 1-D numpy array from an input TensorProto, checked before it is materialised.

    Raises:
        RequestError: for a wrong dtype or shape, or content that does not match the shape.
    """
    expected = "DT_FLOAT" if kind == "float" else "DT_STRING"
    if kind == "float" and proto.dtype != types_pb2.DT_FLOAT:
        # as TF Serving: the signature's dtype, no conversion (int32 coordinates would be truncated)
        raise RequestError(
            f"input {name} must be a DT_FLOAT tensor (the signature's dtype), got {_dtype_name(proto.dtype)}: "
            "send tf.make_tensor_proto(values, dtype=tf.float32)"
        )
    if kind == "string" and proto.dtype != types_pb2.DT_STRING:
        raise RequestError(f"input {name} must be a {expected} tensor (date-time strings), got {_dtype_name(proto.dtype)}")
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or len(dims) != 1:
        raise RequestError(
            f"input {name} must be a 1-D tensor (one value per instance), got shape {dims}: send tf.make_tensor_proto([v1, v2, ...])"
        )
    if dims[0] < 0:
        raise RequestError(f"input {name} has shape {dims}: a dimension must be a count (0 or more), not {dims[0]}; set the size it holds")
    if dims[0] > max_batch:
        raise RequestError(f"input {name} has {dims[0]} values, more than the limit of {max_batch}: split it into smaller batches")
    content = proto.tensor_content
    if kind == "float" and len(content) == 4 * dims[0]:  # what tf.make_tensor_proto sends: the bytes as they are (~1 us vs ~9)
        return np.frombuffer(content, dtype=np.float32)
    if kind == "float" and not content and len(proto.float_val) == dims[0]:  # one value: make_tensor_proto fills float_val
        return np.fromiter(proto.float_val, dtype=np.float32, count=dims[0])  # ~1.5 us vs ~23 for tf.make_ndarray
    try:
        arr = tf.make_ndarray(proto)
    except Exception as exc:
        raise RequestError(f"input {name} is not a valid tensor: {str(exc)[:200]}") from None
    if arr.shape != (dims[0],):
        raise RequestError(f"input {name} holds {arr.size} values for shape {dims}")
    return arr


def _array_to_tensor(values: np.ndarray) -> tensor_pb2.TensorProto:
    arr = np.ascontiguousarray(values, dtype=np.float32)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=arr.shape[0])])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=arr.tobytes())


class Garbage:
    """What the request deserializer returns for bytes that are not the expected protobuf."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _safe(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """A deserializer that never raises (grpc would answer INTERNAL): the method answers INVALID_ARGUMENT."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:
            return Garbage(exc)

    return deserialize


class Service(prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer):
    """TF Serving's PredictionService and ModelService over the server's app (its versions) and scheduler."""

    def __init__(self, app: App, scheduler: Scheduler, metrics: ServingMetrics) -> None:
        self.app = app
        self.scheduler = scheduler
        self.metrics = metrics
        self._lock = threading.Lock()
        self._predicting = 0  # Predict calls running their model call on a gRPC thread (batching off)

    # -- helpers -------------------------------------------------------------------------------
    def _version(self, spec: Any) -> int | None:
        if spec.name != self.app.model_name:
            raise RequestError(f"model {spec.name!r} is not served here: this server serves {self.app.model_name!r}", status=404)
        if spec.WhichOneof("version_choice") == "version_label":
            return self.app.manager.resolve(spec.version_label)
        if spec.HasField("version"):
            if spec.version.value <= 0:
                raise RequestError(f"version {spec.version.value} is not a version number: use a positive integer", status=404)
            return int(spec.version.value)
        return None

    def _servable(self, spec: Any) -> Any:
        if spec.WhichOneof("version_choice") == "version_label":
            self._version(spec)  # checks the model name
            return self.app.manager.get(label=spec.version_label)
        return self.app.manager.get(self._version(spec))

    def _run(self, method: str, api: str, request: Any, context: grpc.ServicerContext, fn: Callable[[], tuple[Any, str, int]]) -> Any:
        started = time.perf_counter()
        note = ""
        code = "OK"
        examples = 0
        try:
            if isinstance(request, Garbage):
                raise RequestError(f"the request is not a valid {method} request protobuf: {str(request.error)[:200]}")
            result, note, examples = fn()
            return result
        except RequestError as exc:
            status = (
                grpc.StatusCode.RESOURCE_EXHAUSTED
                if isinstance(exc, Overloaded)
                else STATUS_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
            )
            code = status.name
            note = f" error={str(exc)[:200]!r}"
            context.abort(status, str(exc))
        except Exception as exc:
            if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortError":  # raised by context.abort
                raise
            code = "INTERNAL"
            logging.getLogger("serving").error("gRPC %s failed: %s: %s", method, type(exc).__name__, str(exc)[:300])
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.request(api, "GRPC", code, elapsed, examples if code == "OK" else 0)
            if self.app.log_requests:
                access_log.info("gRPC %s %s %s %.2fms%s", context.peer(), method, code, elapsed * 1000, note)

    # -- PredictionService --------------------------------------------------------------------------
    def prepare_predict(self, request: predict_pb2.PredictRequest) -> tuple[Any, dict[str, Any], int]:
        """``(servable, columns, size)`` of a valid Predict request.

        Raises:
            RequestError: naming what is wrong with the request.
        """
        servable = self._servable(request.model_spec)
        if request.model_spec.signature_name not in ("", "serving_default"):
            raise RequestError(f"signature {request.model_spec.signature_name!r} does not exist: the model has serving_default only")
        features = servable.features
        check_names(list(request.inputs.keys()), features)
        limits = self.app.limits
        columns = {}
        for feature in features:
            arr = tensor_to_array(feature.name, request.inputs[feature.name], feature.kind, limits.max_batch)
            columns[feature.name] = check_column(feature, arr if feature.kind == "float" else list(arr), limits)
        sizes = {name: len(col) for name, col in columns.items()}
        if len(set(sizes.values())) > 1:
            detail = ", ".join(f"{k}: {v}" for k, v in sizes.items())
            raise RequestError(f"the input tensors have different lengths ({detail}): send one value per instance for every feature")
        size = next(iter(sizes.values()))
        check_batch_size(size, limits)
        unknown = [name for name in request.output_filter if name != servable.output_name]
        if unknown:
            raise RequestError(f"output_filter names {', '.join(unknown)}: the only output is {servable.output_name}")
        return servable, columns, size

    def predict_response(self, servable: Any, values: np.ndarray, size: int) -> tuple[predict_pb2.PredictResponse, str, int]:
        """The answer to a Predict whose model call returned ``values``.

        Raises:
            RequestError: when a prediction is not finite.
        """
        if not np.isfinite(values).all():
            raise RequestError("the model produced a non-finite prediction for these inputs", status=422)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.app.model_name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = "serving_default"
        response.outputs[servable.output_name].CopyFrom(_array_to_tensor(values))
        return response, f" n={len(values)} v={servable.version}", size

    def _call_here(self, servable: Any, columns: dict[str, Any], size: int) -> np.ndarray:
        """The model call on this gRPC thread.

        Alone (no other Predict here, nothing in the scheduler) it is the scheduler's inline call,
        whose graph runs on this thread too (no hand-over to TensorFlow's pool).
        """
        with self._lock:
            self._predicting += 1
            lone = self._predicting == 1
        try:
            inline = self.scheduler.run_inline(servable, columns, size) if lone else None
            if inline is not None:
                if inline[1] is not None:
                    raise inline[1]
                return inline[0]  # type: ignore[return-value]
            started = time.perf_counter()
            values = servable.predict(columns)
            self.metrics.runtime(time.perf_counter() - started, runtime=servable.runtime)
            return values  # type: ignore[no-any-return]
        finally:
            with self._lock:
                self._predicting -= 1

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        """Predict the fare for the input tensors."""

        def go() -> tuple[predict_pb2.PredictResponse, str, int]:
            servable, columns, size = self.prepare_predict(request)
            if self.scheduler.params.enabled:
                values = self.scheduler.predict(servable, columns, size, timeout=context.time_remaining())
            else:  # without batching the call runs on this gRPC thread, as in TF Serving
                values = self._call_here(servable, columns, size)
            answer = self.predict_response(servable, values, size)
            self.app.log_prediction("gRPC", servable, request.model_spec.version_label, columns, values)
            return answer

        return self._run("Predict", PREDICT_API, request, context, go)

    def metadata_response(self, request: get_model_metadata_pb2.GetModelMetadataRequest) -> tuple[Any, str, int]:
        """The answer to GetModelMetadata (raises :class:`RequestError` for a bad request)."""
        servable = self._servable(request.model_spec)
        fields = list(request.metadata_field)
        if not fields:
            raise RequestError('GetModelMetadataRequest must name at least one metadata_field: use ["signature_def"]')
        unknown = [f for f in fields if f != "signature_def"]
        if unknown:
            raise RequestError(f"metadata field {', '.join(map(repr, unknown))} is not supported: use signature_def")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.app.model_name
        response.model_spec.version.value = servable.version
        packed = any_pb2.Any()
        packed.Pack(servable.signature_def_map())
        response.metadata["signature_def"].CopyFrom(packed)
        return response, f" v={servable.version}", 0

    def status_response(self, request: get_model_status_pb2.GetModelStatusRequest) -> tuple[Any, str, int]:
        """The answer to GetModelStatus: version states, as ``GET /v1/models/{name}`` answers them."""
        entries = self.app.manager.status(self._version(request.model_spec))
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in entries:
            status = response.model_version_status.add()
            status.version = int(entry["version"])
            status.state = _STATE.Value(entry["state"])
            status.status.error_code = 0 if entry["status"]["error_code"] == "OK" else 2  # tensorflow.error.UNKNOWN
            status.status.error_message = entry["status"]["error_message"]
        return response, "", 0

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext) -> Any:
        """The ``signature_def`` metadata of the serving (or requested) version."""
        return self._run("GetModelMetadata", METADATA_API, request, context, lambda: self.metadata_response(request))

    # -- ModelService -------------------------------------------------------------------------------
    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext) -> Any:
        """Version states, as ``GET /v1/models/{name}`` answers them."""
        return self._run("GetModelStatus", STATUS_API, request, context, lambda: self.status_response(request))

    # -- what TF Serving has and this server does not: UNIMPLEMENTED, logged and counted like any call --
    def _unimplemented(self, service: str, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        def go() -> tuple[Any, str, int]:
            raise RequestError(f"{method} is not implemented by this server: {_UNIMPLEMENTED[method]}", status=501)

        return self._run(method, f"/tensorflow.serving.{service}/{method}", request, context, go)

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        """UNIMPLEMENTED (no traceback in the log; counted in the metrics)."""
        return self._unimplemented("PredictionService", "Classify", request, context)

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        """UNIMPLEMENTED (no traceback in the log; counted in the metrics)."""
        return self._unimplemented("PredictionService", "Regress", request, context)

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        """UNIMPLEMENTED (no traceback in the log; counted in the metrics)."""
        return self._unimplemented("PredictionService", "MultiInference", request, context)

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        """UNIMPLEMENTED (no traceback in the log; counted in the metrics)."""
        return self._unimplemented("ModelService", "HandleReloadConfigRequest", request, context)


def handlers(service: Service) -> list[grpc.GenericRpcHandler]:
    """The two services' method handlers (as the generated ``add_..._to_server`` builds them, with safe deserializers)."""

    def handler(fn: Any, req: Any, resp: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=_safe(req.FromString), response_serializer=resp.SerializeToString
        )

    prediction = {
        "Classify": handler(service.Classify, classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse),
        "Regress": handler(service.Regress, regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
        "Predict": handler(service.Predict, predict_pb2.PredictRequest, predict_pb2.PredictResponse),
        "MultiInference": handler(service.MultiInference, inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse),
        "GetModelMetadata": handler(
            service.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest, get_model_metadata_pb2.GetModelMetadataResponse
        ),
    }
    model = {
        "GetModelStatus": handler(
            service.GetModelStatus, get_model_status_pb2.GetModelStatusRequest, get_model_status_pb2.GetModelStatusResponse
        ),
        "HandleReloadConfigRequest": handler(
            service.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest, model_management_pb2.ReloadConfigResponse
        ),
    }
    return [
        grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", prediction),
        grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", model),
    ]


def build_grpc_server(
    app: App, host: str, port: int, max_workers: int, *, scheduler: Scheduler, metrics: ServingMetrics, max_queued: int
) -> tuple[grpc.Server, int]:
    """A ready (not started) gRPC server bound to ``host:port`` and the port it got.

    At most ``max_workers`` calls run at once and ``max_queued`` more wait; beyond that gRPC
    answers ``RESOURCE_EXHAUSTED`` at once.

    Raises:
        OSError: when the address cannot be bound.
    """
    limit = app.limits.max_body_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", 64 * 1024 * 1024), ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=max_workers + max_queued,
    )
    server.add_generic_rpc_handlers(handlers(Service(app, scheduler, metrics)))
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise OSError(f"cannot listen for gRPC on {host}:{port}: {exc} (is another server on port {port}? use --grpc-port)") from None
    if not bound:
        raise OSError(f"cannot listen for gRPC on {host}:{port} (is another server on port {port}? use --grpc-port)")
    return server, bound
