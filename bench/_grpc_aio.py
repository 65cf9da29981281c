"""For bench/bench_grpc_frontend.py: the gRPC front end on ``grpc.aio`` (measured, not kept; see docs/benchmarks.md).

The same services as :mod:`serving.grpc_service`, on one event loop.

The handlers are coroutines on the server's own event-loop thread. A request is parsed and
checked there; its model call goes to the :class:`~serving.batching.Scheduler` (which merges
concurrent calls when batching is on) and the handler awaits an asyncio future that the
scheduler's ``done`` callback completes with ``loop.call_soon_threadsafe``. A lone request
(no other gRPC call in flight, nothing queued or running in the scheduler) runs its model
call inline on the loop thread: no hand-over to a model thread and back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np

from serving.batching import Overloaded, Scheduler
from serving.grpc_service import STATUS_CODES, Garbage, Service, access_log, handlers
from serving.metrics import METADATA_API, PREDICT_API, STATUS_API, ServingMetrics
from serving.payload import RequestError
from serving.state import App

#: Whether a lone request runs its model call inline on the loop thread (``--serve-aio-noinline`` clears it).
INLINE = True


def status_of(exc: RequestError) -> grpc.StatusCode:
    """The gRPC status of a refused request."""
    return (
        grpc.StatusCode.RESOURCE_EXHAUSTED
        if isinstance(exc, Overloaded)
        else STATUS_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
    )


class _AioService(Service):
    """The services' methods as coroutines (see the module docstring)."""

    def __init__(self, app: App, scheduler: Scheduler, metrics: ServingMetrics) -> None:
        super().__init__(app, scheduler, metrics)
        self.in_flight = 0  # Predict calls received and not answered (event-loop thread only)

    async def _arun(
        self, method: str, api: str, request: Any, context: grpc.aio.ServicerContext, fn: Callable[[], Awaitable[tuple[Any, str, int]]]
    ) -> Any:
        started = time.perf_counter()
        note = ""
        code = "OK"
        examples = 0
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            if isinstance(request, Garbage):
                raise RequestError(f"the request is not a valid {method} request protobuf: {str(request.error)[:200]}")
            result, note, examples = await fn()
            return result
        except RequestError as exc:
            failure = (status_of(exc), str(exc))
            note = f" error={str(exc)[:200]!r}"
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            logging.getLogger("serving").error("gRPC %s failed: %s: %s", method, type(exc).__name__, str(exc)[:300])
            failure = (grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            if failure is not None:
                code = failure[0].name
            elapsed = time.perf_counter() - started
            self.metrics.request(api, "GRPC", code, elapsed, examples if code == "OK" else 0)
            if self.app.log_requests:
                access_log.info("gRPC %s %s %s %.2fms%s", context.peer(), method, code, elapsed * 1000, note)
        await context.abort(*failure)  # raises

    async def _model_call(self, servable: Any, columns: dict[str, Any], size: int, timeout: float | None) -> np.ndarray:
        scheduler = self.scheduler
        if self.in_flight == 1 and INLINE:  # a lone request: no hand-over to a model thread
            inline = scheduler.run_inline(servable, columns, size)
            if inline is not None:
                if inline[1] is not None:
                    raise inline[1]
                return inline[0]  # type: ignore[return-value]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()

        def settle(values: np.ndarray | None, error: BaseException | None) -> None:
            if not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(values)  # type: ignore[arg-type]

        def done(values: np.ndarray | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(settle, values, error)

        scheduler.submit(servable, columns, size, done)
        if timeout is None:
            return await future
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise Overloaded(f"no model thread answered within {timeout:.0f}s: the server is overloaded") from None

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[override]
        """Predict the fare for the input tensors."""

        async def go() -> tuple[Any, str, int]:
            servable, columns, size = self.prepare_predict(request)
            values = await self._model_call(servable, columns, size, context.time_remaining())
            return self.predict_response(servable, values, size)

        self.in_flight += 1
        try:
            return await self._arun("Predict", PREDICT_API, request, context, go)
        finally:
            self.in_flight -= 1

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[override]
        """The ``signature_def`` metadata of the serving (or requested) version."""

        async def go() -> tuple[Any, str, int]:
            return self.metadata_response(request)

        return await self._arun("GetModelMetadata", METADATA_API, request, context, go)

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[override]
        """Version states, as ``GET /v1/models/{name}`` answers them."""

        async def go() -> tuple[Any, str, int]:
            return self.status_response(request)

        return await self._arun("GetModelStatus", STATUS_API, request, context, go)

    async def _unimplemented(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")

    Classify = Regress = MultiInference = HandleReloadConfigRequest = _unimplemented  # type: ignore[assignment]


class AioGrpcServer:
    """A ``grpc.aio`` server on its own event-loop thread, with the sync server's ``start``/``stop``.

    Raises:
        OSError: when the address cannot be bound (the message names the port).
    """

    def __init__(
        self, handlers: list[grpc.GenericRpcHandler], address: str, port: int, options: list[tuple[str, Any]], max_rpcs: int
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop_main, name="grpc-aio", daemon=True)
        self._thread.start()

        async def build() -> tuple[grpc.aio.Server, int]:
            server = grpc.aio.server(options=options, maximum_concurrent_rpcs=max_rpcs)
            server.add_generic_rpc_handlers(handlers)
            try:
                return server, server.add_insecure_port(address)
            except RuntimeError as exc:
                await server.stop(None)
                raise OSError(f"cannot listen for gRPC on {address}: {exc} (is another server on port {port}? use --grpc-port)") from None

        try:
            self.server, self.port = asyncio.run_coroutine_threadsafe(build(), self.loop).result()
        except BaseException:
            self._close_loop()
            raise

    def _loop_main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

    def start(self) -> None:
        """Start serving."""
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result()

    def stop(self, grace: float | None) -> threading.Event:
        """Refuse new calls, let those in flight finish for up to ``grace`` s; the event is set when stopped."""
        stopped = threading.Event()

        async def shutdown() -> None:
            try:
                await self.server.stop(grace)
            finally:
                stopped.set()
                threading.Thread(target=self._close_loop, name="grpc-aio-close", daemon=True).start()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        return stopped


def build_aio_grpc_server(
    app: App, host: str, port: int, max_workers: int, *, scheduler: Scheduler, metrics: ServingMetrics, max_queued: int
) -> tuple[AioGrpcServer, int]:
    """A ready (not started) ``grpc.aio`` server bound to ``host:port`` and the port it got.

    At most ``max_workers + max_queued`` calls are in flight; beyond that gRPC answers
    ``RESOURCE_EXHAUSTED`` at once.

    Raises:
        OSError: when the address cannot be bound.
    """
    options = [("grpc.max_receive_message_length", app.limits.max_body_bytes), ("grpc.max_send_message_length", 64 * 1024 * 1024)]
    options.append(("grpc.so_reuseport", 0))
    service = _AioService(app, scheduler, metrics)
    server = AioGrpcServer(handlers(service), f"{host}:{port}", port, options, max_workers + max_queued)
    return server, server.port
