"""Local servers speaking the engines' real wire protocols, for the submit and schedule tests.

* :class:`VertexServer`: gRPC over TLS on 127.0.0.1 implementing
  ``google.cloud.aiplatform.v1.PipelineService`` (CreatePipelineJob, GetPipelineJob) and
  ``ScheduleService`` (CreateSchedule, GetSchedule, ListSchedules, PauseSchedule,
  ResumeSchedule, DeleteSchedule), and ``EndpointService`` (GetEndpoint, ListEndpoints by display
  name, UpdateEndpoint: the traffic split, request-response logging) and ``ModelService`` (ListModels: each model's default
  version, by display name; GetModel of ``name``, ``name@version_id`` or ``name@alias``, with model
  versions) and ``JobService`` (CreateBatchPredictionJob, GetBatchPredictionJob: pending, running,
  then succeeded) with the official message types of google-cloud-aiplatform.
  The SDK's gRPC transport always opens a TLS channel, so the server has a self-signed
  certificate for 127.0.0.1 and ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` points gRPC at it.
* :class:`VertexRestServer`: plain HTTP on 127.0.0.1 speaking the same PipelineService over
  Vertex's REST mapping (``POST /v1/{parent}/pipelineJobs?pipelineJobId=``, ``GET /v1/{name}``),
  what the SDK sends with ``api_transport="rest"``.
* :class:`KfpServer`: HTTP speaking enough of the Kubeflow Pipelines v2beta1 REST API for
  ``kfp.Client``: healthz, experiments, runs, recurring runs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import threading
import uuid
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

_PAIR: list[tuple[bytes, bytes]] = []


def self_signed(directory: str) -> tuple[bytes, bytes, str]:
    """A key, a certificate for 127.0.0.1 and the certificate's path.

    One pair per test process: gRPC reads its default roots (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH) once
    per process, when it first opens a TLS channel, so every local TLS server must present the same
    certificate for the test modules to run in any order.
    """
    if _PAIR:
        key_pem, cert_pem = _PAIR[0]
        path = os.path.join(directory, "vertex-fake-ca.pem")
        with open(path, "wb") as fh:
            fh.write(cert_pem)
        return key_pem, cert_pem, path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _PAIR.append((key_pem, cert_pem))
    path = os.path.join(directory, "vertex-fake-ca.pem")
    with open(path, "wb") as fh:
        fh.write(cert_pem)
    return key_pem, cert_pem, path


class VertexServer:
    """A gRPC Vertex AI PipelineService + ScheduleService that records what it receives."""

    def __init__(self, key_pem: bytes, cert_pem: bytes) -> None:
        import grpc
        from google.cloud.aiplatform_v1.types import pipeline_job, pipeline_service, pipeline_state, schedule, schedule_service
        from google.longrunning import operations_pb2
        from google.protobuf import any_pb2, empty_pb2

        self.received: list[tuple[str, Any]] = []
        self.jobs: dict[str, Any] = {}
        self.job_polls: dict[str, int] = {}
        self.schedules: dict[str, Any] = {}
        self._lock = threading.Lock()
        PJ, S = pipeline_job.PipelineJob, schedule.Schedule

        def record(method: str, request: Any) -> None:
            with self._lock:
                self.received.append((method, request))

        def create_job(request: Any, context: Any) -> Any:
            record("CreatePipelineJob", request)
            job = PJ(request.pipeline_job)
            job.name = f"{request.parent}/pipelineJobs/{request.pipeline_job_id or uuid.uuid4().hex[:8]}"
            job.state = pipeline_state.PipelineState.PIPELINE_STATE_PENDING
            self.jobs[job.name] = job
            return job

        def get_job(request: Any, context: Any) -> Any:
            record("GetPipelineJob", request)
            job = self.jobs.get(request.name)
            if job is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            # The first read (the submitter's, right after the create) sees the job still pending;
            # each later one moves it a step on.
            polls = self.job_polls[request.name] = self.job_polls.get(request.name, -1) + 1
            task_state = pipeline_job.PipelineTaskDetail.State
            steps = [("stage-data", 1), ("smoke-train", 2), ("full-train", 3)]
            job.job_detail.task_details = [
                pipeline_job.PipelineTaskDetail(
                    task_name=name,
                    state=task_state.SUCCEEDED if polls > at else task_state.RUNNING if polls == at else task_state.PENDING,
                )
                for name, at in steps
                if polls >= at
            ]
            job.state = (
                pipeline_state.PipelineState.PIPELINE_STATE_SUCCEEDED
                if polls > 3
                else pipeline_state.PipelineState.PIPELINE_STATE_RUNNING
                if polls
                else pipeline_state.PipelineState.PIPELINE_STATE_PENDING
            )
            return job

        def create_schedule(request: Any, context: Any) -> Any:
            record("CreateSchedule", request)
            sched = S(request.schedule)
            sched.name = f"{request.parent}/schedules/{len(self.schedules) + 1}"
            sched.state = schedule.Schedule.State.ACTIVE
            self.schedules[sched.name] = sched
            return sched

        def get_schedule(request: Any, context: Any) -> Any:
            record("GetSchedule", request)
            if request.name not in self.schedules:
                context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            return self.schedules[request.name]

        def list_schedules(request: Any, context: Any) -> Any:
            record("ListSchedules", request)
            mine = [s for name, s in self.schedules.items() if name.startswith(request.parent + "/")]
            return schedule_service.ListSchedulesResponse(schedules=mine)

        def set_state(state: Any, method: str) -> Any:
            def handler(request: Any, context: Any) -> Any:
                record(method, request)
                if request.name not in self.schedules:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
                self.schedules[request.name].state = state
                return empty_pb2.Empty()

            return handler

        def delete_schedule(request: Any, context: Any) -> Any:
            record("DeleteSchedule", request)
            self.schedules.pop(request.name, None)
            response = any_pb2.Any()
            response.Pack(empty_pb2.Empty())
            return operations_pb2.Operation(name=f"{request.name}/operations/1", done=True, response=response)

        def unary(fn: Any, request_type: Any, response_serializer: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_type.deserialize, response_serializer=response_serializer
            )

        empty = empty_pb2.Empty.SerializeToString
        pipeline_handlers = {
            "CreatePipelineJob": unary(create_job, pipeline_service.CreatePipelineJobRequest, PJ.serialize),
            "GetPipelineJob": unary(get_job, pipeline_service.GetPipelineJobRequest, PJ.serialize),
        }
        schedule_handlers = {
            "CreateSchedule": unary(create_schedule, schedule_service.CreateScheduleRequest, S.serialize),
            "GetSchedule": unary(get_schedule, schedule_service.GetScheduleRequest, S.serialize),
            "ListSchedules": unary(list_schedules, schedule_service.ListSchedulesRequest, schedule_service.ListSchedulesResponse.serialize),
            "PauseSchedule": unary(set_state(S.State.PAUSED, "PauseSchedule"), schedule_service.PauseScheduleRequest, empty),
            "ResumeSchedule": unary(set_state(S.State.ACTIVE, "ResumeSchedule"), schedule_service.ResumeScheduleRequest, empty),
            "DeleteSchedule": unary(delete_schedule, schedule_service.DeleteScheduleRequest, operations_pb2.Operation.SerializeToString),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler("google.cloud.aiplatform.v1.PipelineService", pipeline_handlers),
                grpc.method_handlers_generic_handler("google.cloud.aiplatform.v1.ScheduleService", schedule_handlers),
                grpc.method_handlers_generic_handler("google.cloud.aiplatform.v1.EndpointService", self._endpoint_handlers(record, unary)),
                grpc.method_handlers_generic_handler("google.cloud.aiplatform.v1.ModelService", self._model_handlers(record, unary)),
                grpc.method_handlers_generic_handler("google.cloud.aiplatform.v1.JobService", self._job_handlers(record, unary)),
            )
        )
        self.port = self.server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
        self.server.start()
        self.endpoint = f"127.0.0.1:{self.port}"

    def _endpoint_handlers(self, record: Any, unary: Any) -> dict[str, Any]:
        """GetEndpoint, ListEndpoints (by display name) and UpdateEndpoint (traffic split, display name) over :attr:`endpoints`."""
        import re

        import grpc
        from google.cloud.aiplatform_v1.types import endpoint as endpoint_types
        from google.cloud.aiplatform_v1.types import endpoint_service

        self.endpoints: dict[str, Any] = {}
        E = endpoint_types.Endpoint

        def get_endpoint(request: Any, context: Any) -> Any:
            record("GetEndpoint", request)
            with self._lock:
                found = self.endpoints.get(request.name)
            if found is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Endpoint {request.name} not found")
            return found

        def list_endpoints(request: Any, context: Any) -> Any:
            record("ListEndpoints", request)
            wanted = re.fullmatch(r'display_name="(.*)"', request.filter or "")
            with self._lock:
                found = [
                    e
                    for e in self.endpoints.values()
                    if e.name.startswith(request.parent + "/") and (not wanted or e.display_name == wanted[1])
                ]
            return endpoint_service.ListEndpointsResponse(endpoints=found)

        def update_endpoint(request: Any, context: Any) -> Any:
            record("UpdateEndpoint", request)
            with self._lock:
                found = self.endpoints.get(request.endpoint.name)
                if found is None:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"Endpoint {request.endpoint.name} not found")
                paths = list(request.update_mask.paths)
                if "traffic_split" in paths:
                    split = dict(request.endpoint.traffic_split)
                    ids = {d.id for d in found.deployed_models}
                    if sum(split.values()) not in (0, 100) or not set(split) <= ids:
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad traffic split {split} for deployed models {sorted(ids)}")
                    found.traffic_split.clear()
                    found.traffic_split.update(split)
                for path in paths:
                    if path in ("display_name", "description", "predict_request_response_logging_config"):
                        setattr(found, path, getattr(request.endpoint, path))
                found.update_time = dt.datetime.now(dt.UTC)
                return found

        return {
            "GetEndpoint": unary(get_endpoint, endpoint_service.GetEndpointRequest, E.serialize),
            "ListEndpoints": unary(list_endpoints, endpoint_service.ListEndpointsRequest, endpoint_service.ListEndpointsResponse.serialize),
            "UpdateEndpoint": unary(update_endpoint, endpoint_service.UpdateEndpointRequest, E.serialize),
        }

    def _model_handlers(self, record: Any, unary: Any) -> dict[str, Any]:
        """ListModels and GetModel over :attr:`models` (model name -> its versions, oldest first).

        As Vertex AI answers: ListModels lists each model once, as its ``default`` version (the
        ``display_name="..."`` filter; newest update first); GetModel of ``name`` is the default
        version, of ``name@2`` version 2, of ``name@alias`` the version with that alias; the
        returned ``name`` never has the ``@version`` (``version_id`` says which one it is).
        """
        import re

        import grpc
        from google.cloud.aiplatform_v1.types import model as model_types
        from google.cloud.aiplatform_v1.types import model_service

        self.models: dict[str, list[Any]] = {}

        def list_models(request: Any, context: Any) -> Any:
            record("ListModels", request)
            wanted = re.fullmatch(r'display_name="(.*)"', request.filter or "")
            with self._lock:
                found = [
                    self._version(versions, "")
                    for name, versions in self.models.items()
                    if name.startswith(request.parent + "/") and (not wanted or versions[0].display_name == wanted[1])
                ]
            found.sort(key=lambda m: m.update_time, reverse=True)
            return model_service.ListModelsResponse(models=found)

        def get_model(request: Any, context: Any) -> Any:
            record("GetModel", request)
            name, _, ref = request.name.partition("@")
            with self._lock:
                found = self._version(self.models.get(name, []), ref)
            if found is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Model {request.name} not found")
            return found

        return {
            "ListModels": unary(list_models, model_service.ListModelsRequest, model_service.ListModelsResponse.serialize),
            "GetModel": unary(get_model, model_service.GetModelRequest, model_types.Model.serialize),
        }

    def _job_handlers(self, record: Any, unary: Any) -> dict[str, Any]:
        """CreateBatchPredictionJob and GetBatchPredictionJob over :attr:`batch_jobs` (running on the first look, then succeeded)."""
        import grpc
        from google.cloud.aiplatform_v1.types import batch_prediction_job, job_service, job_state

        self.batch_jobs: dict[str, Any] = {}
        B = batch_prediction_job.BatchPredictionJob

        def create(request: Any, context: Any) -> Any:
            record("CreateBatchPredictionJob", request)
            job = B(request.batch_prediction_job)
            if not job.model or not job.display_name:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model and display_name are required")
            with self._lock:
                job.name = f"{request.parent}/batchPredictionJobs/{len(self.batch_jobs) + 1}"
                job.state = job_state.JobState.JOB_STATE_PENDING
                job.create_time = dt.datetime.now(dt.UTC)
                self.batch_jobs[job.name] = job
            return job

        def get(request: Any, context: Any) -> Any:
            record("GetBatchPredictionJob", request)
            with self._lock:
                job = self.batch_jobs.get(request.name)
                if job is None:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"BatchPredictionJob {request.name} not found")
                if job.state == job_state.JobState.JOB_STATE_PENDING:
                    job.state = job_state.JobState.JOB_STATE_RUNNING
                else:
                    job.state = job_state.JobState.JOB_STATE_SUCCEEDED
                    job.completion_stats.successful_count = 1665
                    prefix = job.output_config.gcs_destination.output_uri_prefix
                    job.output_info.gcs_output_directory = f"{prefix}/prediction-{job.display_name}-2026_01_01T00_00_00_000Z"
                return job

        return {
            "CreateBatchPredictionJob": unary(create, job_service.CreateBatchPredictionJobRequest, B.serialize),
            "GetBatchPredictionJob": unary(get, job_service.GetBatchPredictionJobRequest, B.serialize),
        }

    @staticmethod
    def _version(versions: list[Any], ref: str) -> Any:
        """The version ``ref`` (a version ID or an alias; empty: the default one) of a model, or ``None``."""
        if ref:
            found = [v for v in versions if v.version_id == ref or ref in v.version_aliases]
        else:
            found = [v for v in versions if "default" in v.version_aliases]
        return found[0] if found else None

    def upload_model(self, name: str, display_name: str, artifact_uri: str, labels: dict[str, str], *, default: bool = True) -> str:
        """A new version of model ``name`` (the first one creates it) with ``artifact_uri`` and ``labels``; its version ID.

        The new version takes the ``default`` alias unless ``default`` is false (the first version
        always has it), as an upload with the SDK's ``is_default_version`` does.
        """
        import datetime as _dt

        from google.cloud.aiplatform_v1.types import model as model_types

        now = _dt.datetime.now(_dt.UTC)
        with self._lock:
            versions = self.models.setdefault(name, [])
            version_id = str(len(versions) + 1)
            default = default or not versions
            for older in versions:
                older.update_time = now
                if default:
                    older.version_aliases = [a for a in older.version_aliases if a != "default"]
            versions.append(
                model_types.Model(
                    name=name,
                    display_name=display_name,
                    artifact_uri=artifact_uri,
                    labels=labels,
                    version_id=version_id,
                    version_aliases=["default"] if default else [],
                    create_time=versions[0].create_time if versions else now,
                    version_create_time=now,
                    update_time=now,
                )
            )
        return version_id

    def add_endpoint(
        self, name: str, deployed: list[tuple[Any, ...]], traffic_split: dict[str, int], display_name: str = "taxifare"
    ) -> None:
        """An endpoint ``name`` with deployed models ``(id, display_name, created seconds ago[, model])``.

        ``model`` is the model deployed (``name``, ``name@version`` or ``name@alias``, as a deploy
        request names it), kept as given; ``model_version_id`` is the version it resolves to among
        :attr:`models` then. Without it the model is ``.../models/{display_name}``.
        """
        import datetime as _dt

        from google.cloud.aiplatform_v1.types import endpoint as endpoint_types

        now = _dt.datetime.now(_dt.UTC)
        models = []
        for model_id, display, age, *model in deployed:
            resource = model[0] if model else f"{name.split('/endpoints/')[0]}/models/{display}"
            base, _, ref = resource.partition("@")
            with self._lock:
                version = self._version(self.models.get(base, []), ref)
            models.append(
                endpoint_types.DeployedModel(
                    id=model_id,
                    display_name=display,
                    model=resource,
                    model_version_id=version.version_id if version is not None else "",
                    create_time=now - _dt.timedelta(seconds=age),
                )
            )
        with self._lock:
            self.endpoints[name] = endpoint_types.Endpoint(
                name=name, display_name=display_name, deployed_models=models, traffic_split=traffic_split, create_time=now, update_time=now
            )

    def requests(self, method: str) -> list[Any]:
        """The requests received by ``method``, oldest first."""
        with self._lock:
            return [r for m, r in self.received if m == method]

    def stop(self) -> None:
        """Stop serving."""
        self.server.stop(grace=None)


class VertexRestServer:
    """Vertex AI's PipelineService over REST (create and get a pipeline job); records what it creates."""

    def __init__(self) -> None:
        from google.cloud.aiplatform_v1.types import pipeline_job, pipeline_state

        self.created: list[tuple[str, Any]] = []
        self.jobs: dict[str, Any] = {}
        owner = self
        PJ = pipeline_job.PipelineJob

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                from urllib.parse import parse_qs, urlsplit

                url = urlsplit(self.path)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                owner.created.append((self.path, body))
                job = PJ.from_json(json.dumps(body), ignore_unknown_fields=True)
                job_id = parse_qs(url.query).get("pipelineJobId", [uuid.uuid4().hex[:8]])[0]
                job.name = f"{url.path.removeprefix('/v1/').removesuffix('/pipelineJobs')}/pipelineJobs/{job_id}"
                job.state = pipeline_state.PipelineState.PIPELINE_STATE_PENDING
                owner.jobs[job.name] = job
                self._reply(200, PJ.to_json(job))

            def do_GET(self) -> None:
                job = owner.jobs.get(self.path.split("?", 1)[0].removeprefix("/v1/"))
                if job is None:
                    return self._reply(404, json.dumps({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}))
                job.state = pipeline_state.PipelineState.PIPELINE_STATE_SUCCEEDED
                return self._reply(200, PJ.to_json(job))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


class KfpServer:
    """Enough of the Kubeflow Pipelines v2beta1 REST API for ``kfp.Client``; records every request."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, Any]] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.recurring: dict[str, dict[str, Any]] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null") if length else None
                path = self.path.split("?", 1)[0]
                owner.received.append((method, self.path, body))
                status, reply = owner.route(method, path, body)
                self._reply(status, reply)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """Answer one API call."""
        base = "/apis/v2beta1/"
        rest = path[len(base) :] if path.startswith(base) else ""
        if rest == "healthz":
            return 200, {"multi_user": False}
        if rest == "experiments" and method == "GET":
            return 200, {"experiments": list(self.experiments.values()), "total_size": len(self.experiments)}
        if rest == "experiments" and method == "POST":
            exp = {**body, "experiment_id": f"exp-{len(self.experiments) + 1}"}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if rest == "runs" and method == "POST":
            return 200, {**body, "run_id": "run-1", "state": "PENDING"}
        if rest == "recurringruns" and method == "POST":
            run = {**body, "recurring_run_id": f"rr-{len(self.recurring) + 1}", "status": "ENABLED"}
            self.recurring[run["recurring_run_id"]] = run
            return 200, run
        if rest == "recurringruns" and method == "GET":
            return 200, {"recurringRuns": list(self.recurring.values()), "total_size": len(self.recurring)}
        if rest.startswith("recurringruns/"):
            rid, _, action = rest[len("recurringruns/") :].partition(":")
            if rid not in self.recurring:
                return 404, {"error": f"{rid} not found", "code": 5}
            if method == "DELETE":
                del self.recurring[rid]
            elif action == "disable":
                self.recurring[rid]["status"] = "DISABLED"
            elif action == "enable":
                self.recurring[rid]["status"] = "ENABLED"
            return 200, {}
        return 404, {"error": f"unhandled {method} {path}", "code": 5}

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def vertex(tmp_path: Any) -> Any:
    """A local Vertex API server over TLS (gRPC) and the path of its CA file (``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``)."""
    key, cert, path = self_signed(str(tmp_path))
    server = VertexServer(key, cert)
    yield server, path
    server.stop()
