"""A local Vertex AI API for Experiments: PipelineService and MetadataService over gRPC/TLS on 127.0.0.1.

Just enough of ``google.cloud.aiplatform.v1`` for ``PipelineJob.submit(experiment=...)``:
the metadata store, contexts (the experiment, the pipeline run's own context) and context
children, with the official message types. A created job gets its ``system.PipelineRun``
context at once (on Vertex it appears while the job starts). Certificates as in
:mod:`_vertex_fake` (``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` must point at the certificate).
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any


class ExperimentServer:
    """Records what it receives; ``contexts`` and ``children`` hold the metadata it was asked to keep."""

    def __init__(self, key_pem: bytes, cert_pem: bytes) -> None:
        """Start serving on a free port of 127.0.0.1."""
        import grpc
        from google.cloud.aiplatform_v1.types import context as context_pb
        from google.cloud.aiplatform_v1.types import metadata_service, metadata_store, pipeline_job, pipeline_service, pipeline_state

        self.received: list[tuple[str, Any]] = []
        self.jobs: dict[str, Any] = {}
        self.contexts: dict[str, Any] = {}
        self.children: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        Ctx = context_pb.Context

        def record(method: str, request: Any) -> None:
            with self._lock:
                self.received.append((method, request))

        def get_store(request: Any, context: Any) -> Any:
            record("GetMetadataStore", request)
            return metadata_store.MetadataStore(name=request.name)

        def get_context(request: Any, context: Any) -> Any:
            record("GetContext", request)
            if request.name not in self.contexts:
                context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            return self.contexts[request.name]

        def create_context(request: Any, context: Any) -> Any:
            record("CreateContext", request)
            ctx = Ctx(request.context)
            ctx.name = f"{request.parent}/contexts/{request.context_id}"
            if ctx.name in self.contexts:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{ctx.name} exists")
            self.contexts[ctx.name] = ctx
            return ctx

        def add_children(request: Any, context: Any) -> Any:
            record("AddContextChildren", request)
            self.children.setdefault(request.context, []).extend(request.child_contexts)
            return metadata_service.AddContextChildrenResponse()

        def create_job(request: Any, context: Any) -> Any:
            record("CreatePipelineJob", request)
            job = pipeline_job.PipelineJob(request.pipeline_job)
            job.name = f"{request.parent}/pipelineJobs/{request.pipeline_job_id}"
            job.state = pipeline_state.PipelineState.PIPELINE_STATE_RUNNING
            store = request.parent + "/metadataStores/default"
            run_context = Ctx(
                name=f"{store}/contexts/{request.pipeline_job_id}", display_name=request.pipeline_job_id, schema_title="system.PipelineRun"
            )
            self.contexts[run_context.name] = run_context
            job.job_detail.pipeline_run_context = run_context
            self.jobs[job.name] = job
            return job

        def get_job(request: Any, context: Any) -> Any:
            record("GetPipelineJob", request)
            if request.name not in self.jobs:
                context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            return self.jobs[request.name]

        def unary(fn: Any, request_type: Any, response_type: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_type.deserialize, response_serializer=response_type.serialize
            )

        metadata = {
            "GetMetadataStore": unary(get_store, metadata_service.GetMetadataStoreRequest, metadata_store.MetadataStore),
            "GetContext": unary(get_context, metadata_service.GetContextRequest, Ctx),
            "CreateContext": unary(create_context, metadata_service.CreateContextRequest, Ctx),
            "AddContextChildren": unary(
                add_children, metadata_service.AddContextChildrenRequest, metadata_service.AddContextChildrenResponse
            ),
        }
        pipelines = {
            "CreatePipelineJob": unary(create_job, pipeline_service.CreatePipelineJobRequest, pipeline_job.PipelineJob),
            "GetPipelineJob": unary(get_job, pipeline_service.GetPipelineJobRequest, pipeline_job.PipelineJob),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler("google.cloud.aiplatform.v1.MetadataService", metadata),
                grpc.method_handlers_generic_handler("google.cloud.aiplatform.v1.PipelineService", pipelines),
            )
        )
        self.port = self.server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
        self.server.start()
        self.endpoint = f"127.0.0.1:{self.port}"

    def methods(self) -> list[str]:
        """The methods called, in order."""
        with self._lock:
            return [m for m, _ in self.received]

    def stop(self) -> None:
        """Stop serving."""
        self.server.stop(grace=None)
