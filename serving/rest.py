"""The REST front end: TF Serving's REST API, Vertex AI's predict API, health and metrics.

The routes of the asyncio HTTP/1.1 server of :mod:`serving.http_server`. Model calls go to the
:class:`serving.batching.Scheduler`'s threads, so the event loop never blocks on the model and
the number of threads is fixed whatever the load. Routes (matched case-insensitively, as TF
Serving does; label names themselves are kept as written in ``labels.json``):

* ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]`` - version status;
* ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata`` - signature and training metrics;
* ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict`` - ``instances`` or ``inputs``;
* ``POST /v1/projects/{p}/locations/{l}/endpoints/{e}:predict`` (also ``/v1/endpoints/{e}:predict``)
  - Vertex AI's body and answer;
* ``GET  /v1/projects/{p}/locations/{l}/endpoints/{e}`` - a minimal Vertex endpoint resource;
* ``GET  /healthz`` - 200 when a version is available, 503 before (``FAILED`` and why when
  no version could be loaded);
* ``GET  /monitoring/prometheus/metrics`` - Prometheus metrics (:mod:`serving.metrics`);
* under Vertex AI (``AIP_PREDICT_ROUTE``, ``AIP_HEALTH_ROUTE``, see :mod:`serving.aip`): those two
  routes too, the predict one answering ``{"predictions": [...]}`` only.

Errors are ``{"error": "..."}`` (Google's ``{"error": {"code", "message", "status"}}`` on the
Vertex routes) with a 4xx status that fits the problem.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import numpy as np
import orjson

from serving import metrics as m
from serving.batching import Overloaded
from serving.http1 import Request
from serving.http_server import Connection, HttpServer
from serving.payload import RequestError, parse_json, parse_predict_body
from serving.state import App

access_log = logging.getLogger("serving.access")
log = logging.getLogger("serving")

_MODEL_RE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?(?P<rest>/metadata|:[a-zA-Z]+)?$",
    re.IGNORECASE,
)
_VERTEX_RE = re.compile(
    r"^/v1(?:beta1)?/(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/)?endpoints/(?P<endpoint>[^/:]+)(?P<rest>:[a-zA-Z]+)?$",
    re.IGNORECASE,
)
_LABEL_RE = re.compile(r"^[a-zA-Z0-9_]+$")
_NO_MODEL_RE = re.compile(r"^/v1/models/?(?::[a-zA-Z]+)?$", re.IGNORECASE)
_HEALTH = {"/healthz", "/health", "/v1/health"}
METRICS_PATH = "/monitoring/prometheus/metrics"
_GRPC_STATUS = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    411: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    422: "FAILED_PRECONDITION",
    503: "UNAVAILABLE",
}
_KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}


def _parse_version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not text.isascii() or len(text) > 18 or int(text) <= 0:
        raise RequestError(f"version {text!r} is not a version number: use a positive integer", status=404)
    return int(text)


class _Exchange:
    """One request being answered: routing, the model call, the answer, the log line and metrics."""

    def __init__(self, conn: Connection, request: Request, body: bytes) -> None:
        self.conn = conn
        self.server = conn.server
        self.app: App = conn.server.app
        self.request = request
        self.body = body
        self.started = time.perf_counter()
        self.note = ""
        self.api = ""  # TF Serving's API name when this is a model request (counted in the metrics)
        self.google = False
        self.aip = False  # Vertex AI's AIP_PREDICT_ROUTE: the answer is {"predictions": [...]} only
        self.examples = 0
        self.status_code = "OK"
        self.close_after = False
        self.label: str | None = None  # the version label a model route names (for the request log)
        self.columns: Any = None

    def run(self) -> None:
        try:
            if self.conn.over_limit:
                self.close_after = True
                self.server.metrics.shed("REST", "connections")
                raise Overloaded(f"the server has {self.server.http.max_connections} connections open (its limit): retry shortly")
            self.route()
        except RequestError as exc:
            self.error(exc)
        except Exception as exc:  # a bug: answer 500 with one log line and the traceback once
            log.exception("REST %s %s failed", self.request.method, self.request.path)
            self.error(RequestError(f"internal error: {type(exc).__name__}: {str(exc)[:200]}", status=500))

    # -- routing ---------------------------------------------------------------------------------
    def route(self) -> None:
        request = self.request
        method = request.method
        path = request.path
        lower = path.lower()
        if method not in _KNOWN_METHODS:
            raise RequestError(f"method {method} is not implemented: use GET, POST, HEAD or OPTIONS", status=501)
        allowed: tuple[str, ...]
        aip = self.app.vertex_routes or ("", "")  # AIP_PREDICT_ROUTE, AIP_HEALTH_ROUTE: exact paths
        model = _MODEL_RE.match(path) if path not in aip else None
        vertex = _VERTEX_RE.match(path) if model is None and path not in aip else None
        if path == aip[0]:
            allowed = ("POST",)
        elif lower in _HEALTH or lower == METRICS_PATH or path == aip[1]:
            allowed = ("GET", "HEAD")
        elif model is not None:
            allowed = ("POST",) if (model["rest"] or "").startswith(":") else ("GET", "HEAD")
        elif vertex is not None:
            self.google = True
            allowed = ("POST",) if vertex["rest"] else ("GET", "HEAD")
        elif _NO_MODEL_RE.match(path):
            raise RequestError("Missing model name in request.", status=400)
        elif path == "*" and method == "OPTIONS":
            allowed = ("GET", "HEAD", "POST")
        else:
            hint = f"GET /v1/models/{self.app.model_name}" if method != "POST" else f"POST /v1/models/{self.app.model_name}:predict"
            raise RequestError(f"no such route: {method} {path} (try {hint})", status=404)
        allow = ", ".join((*allowed, "OPTIONS"))
        if method == "OPTIONS":
            self.answer(200, {"allow": [*allowed, "OPTIONS"]}, {"Allow": allow})
            return
        if method not in allowed:
            takes = " or ".join(a for a in allowed if a != "HEAD")
            self.error(RequestError(f"{path} takes {takes}, not {method}", status=405), {"Allow": allow})
            return
        if path == aip[0]:
            self.api, self.aip = m.PREDICT_API, True
            self.predict(self.app.manager.get(None), vertex=(None, None))
        elif lower in _HEALTH or path == aip[1]:
            self.health()
        elif lower == METRICS_PATH:
            self.conn.write_answer(request, 200, self.server.metrics.exposition(), {"Content-Type": m.CONTENT_TYPE}, close=False)
        elif model is not None:
            self.model_route(model)
        elif vertex is not None:
            if vertex["rest"] is None:
                self.answer(200, self.app.vertex_endpoint(vertex["project"], vertex["location"], vertex["endpoint"]))
            elif vertex["rest"].lower() in (":predict", ":rawpredict"):
                self.api = m.PREDICT_API
                self.predict(self.app.manager.get(None), vertex=(vertex["project"], vertex["location"]))
            else:
                raise RequestError(f"no such route: POST {path} (the method is :predict)", status=404)

    def model_route(self, match: re.Match[str]) -> None:
        rest = (match["rest"] or "").lower()
        self.api = m.PREDICT_API if rest.startswith(":") else (m.METADATA_API if rest == "/metadata" else m.STATUS_API)
        version, label = self.model_version(match)
        self.label = label
        if rest == "/metadata":
            self.answer(200, self.app.metadata(version, label))
        elif rest == "":
            version = self.app.manager.resolve(label) if label is not None else version
            self.answer(200, {"model_version_status": self.app.manager.status(version)})
        elif rest == ":predict":
            self.predict(self.app.manager.get(version, label))
        elif rest in (":classify", ":regress"):
            raise RequestError(f"{rest[1:]} is not supported: this model has a predict signature only; POST to :predict")
        else:
            raise RequestError(f"no such route: POST {self.request.path} (the method is :predict)", status=404)

    def model_version(self, match: re.Match[str]) -> tuple[int | None, str | None]:
        """The (version, label) a model route names, for ``manager.get(version, label)``."""
        app = self.app
        if match["name"] != app.model_name:
            raise RequestError(f"model {match['name']!r} is not served here: this server serves {app.model_name!r}", status=404)
        if match["label"] is not None:
            if not _LABEL_RE.match(match["label"]):
                raise RequestError(f"version label {match['label']!r} is not a label name (letters, digits, '_')", status=404)
            return None, match["label"]
        return _parse_version(match["version"]), None

    def health(self) -> None:
        app = self.app
        version = app.manager.current_version
        if self.server.draining:
            state = "DRAINING"
        elif version is not None:
            state = "AVAILABLE"
        else:
            state = "LOADING"
        answer: dict[str, Any] = {"status": state, "model": app.model_name, "version": None if version is None else str(version)}
        if version is None and not self.server.draining:
            entries = app.manager.status()
            failed = [e for e in entries if e["status"]["error_code"] != "OK"]
            if entries and len(failed) == len(entries):
                answer["status"] = "FAILED"
                answer["error"] = "; ".join(f"version {e['version']}: {e['status']['error_message']}" for e in failed)
        self.answer(200 if state == "AVAILABLE" else 503, answer)

    # -- predict ---------------------------------------------------------------------------------
    def predict(self, servable: Any, vertex: tuple[str | None, str | None] | None = None) -> None:
        columns, rows, signature = parse_predict_body(parse_json(self.body), servable.features, self.app.limits, vertex=vertex is not None)
        if signature not in (None, "", "serving_default"):
            raise RequestError(f"signature {signature!r} does not exist: the model has serving_default only", status=400)
        size = len(next(iter(columns.values())))
        self.examples = size
        self.columns = columns
        loop = self.server.loop

        def done(values: np.ndarray | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(self.finish_predict, servable, rows, vertex, values, error)

        if self.server.in_flight == 1 and len(self.server.conns) == 1:  # a lone client: no hand-over to a model thread
            inline = self.server.scheduler.run_inline(servable, columns, size)
            if inline is not None:
                self.finish_predict(servable, rows, vertex, *inline)
                return
        self.server.scheduler.submit(servable, columns, size, done)

    def finish_predict(
        self,
        servable: Any,
        rows: bool,
        vertex: tuple[str | None, str | None] | None,
        values: np.ndarray | None,
        error: BaseException | None,
    ) -> None:
        try:
            if error is not None:
                raise error
            assert values is not None
            if not np.isfinite(values).all():
                raise RequestError("the model produced a non-finite prediction for these inputs", status=422)
            self.app.log_prediction("REST", servable, self.label, self.columns, values)
            out = values.astype(np.float64)
            self.note = f" n={len(out)} v={servable.version}" + (" vertex" if vertex else "")
            answer: dict[str, Any]
            if self.aip:
                answer = {"predictions": out}
            elif vertex is not None:
                answer = {"predictions": out, **self.app.vertex_model_fields(servable.version, *vertex)}
            else:
                answer = {"predictions": out} if rows else {"outputs": out}
            self.answer(200, answer, {"X-Model-Version": str(servable.version)})
        except RequestError as exc:
            self.error(exc)
        except Exception as exc:
            log.error("REST predict failed in the model: %s: %s", type(exc).__name__, str(exc)[:300])
            self.error(RequestError(f"the model failed: {type(exc).__name__}: {str(exc)[:200]}", status=500))

    # -- answers ---------------------------------------------------------------------------------
    def answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        self.done(status, data, {"Content-Type": "application/json", **(headers or {})})

    def error(self, exc: RequestError, headers: dict[str, str] | None = None) -> None:
        message = str(exc)
        self.note = f" error={message[:200]!r}"
        code = (
            "RESOURCE_EXHAUSTED"
            if isinstance(exc, Overloaded)
            else _GRPC_STATUS.get(exc.status, "INTERNAL" if exc.status >= 500 else "INVALID_ARGUMENT")
        )
        headers = dict(headers or {})
        if isinstance(exc, Overloaded):
            headers["Retry-After"] = "1"
        if self.google:
            body: dict[str, Any] = {"error": {"code": exc.status, "message": message, "status": code}}
        else:
            body = {"error": message}
        self.status_code = code
        self.answer(exc.status, body, headers)

    def done(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        elapsed = time.perf_counter() - self.started
        if self.api:
            code = "OK" if status == 200 else self.status_code
            self.server.metrics.request(self.api, "REST", code, elapsed, self.examples if status == 200 else 0)
        if self.app.log_requests:
            r = self.request
            access_log.info('REST %s "%s %s" %s %.2fms%s', self.conn.peer, r.method, r.target[:200], status, elapsed * 1000, self.note)
        self.conn.write_answer(self.request, status, data, headers, close=self.close_after)


class RestServer(HttpServer):
    """The REST server (see :class:`serving.http_server.HttpServer` for its arguments): TF Serving's routes."""

    def exchange(self, conn: Connection, request: Request, body: bytes) -> None:
        """Answer one complete request."""
        _Exchange(conn, request, body).run()
