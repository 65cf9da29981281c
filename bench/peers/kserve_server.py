"""KServe's Python ModelServer around the shared session call (REST V1 ``/v1/models/taxifare:predict``; gRPC V2).

A custom ``kserve.Model`` as KServe's docs write one: ``load`` then a synchronous ``predict``
taking the decoded ``{"instances": [...]}`` body (REST, V1 protocol) or an ``InferRequest``
(its gRPC server, the V2/Open Inference Protocol ``ModelInfer``: one FP32 input per feature,
answered with one FP32 ``fare_amount`` output, binary both ways). Run by ``bench/bench_peers.py`` in KServe's
own virtualenv: ``python kserve_server.py --http_port P --grpc_port G`` (KServe's own flags).
No access log and no latency log, as taxifare's server runs with ``--quiet``.
"""

from __future__ import annotations

import logging
from typing import Any

import kserve
import peer_model
from kserve import InferOutput, InferRequest, InferResponse


class Taxifare(kserve.Model):
    def __init__(self) -> None:
        super().__init__("taxifare")
        self.call = None
        self.load()

    def load(self) -> bool:
        self.call = peer_model.load()
        self.ready = True
        return True

    def predict(self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None) -> dict[str, Any] | InferResponse:
        if isinstance(payload, InferRequest):  # gRPC (V2)
            given = {inp.name: inp.as_numpy() for inp in payload.inputs}
            fares = self.call(*(given[n].reshape(-1) for n in peer_model.NAMES))
            output = InferOutput(name=peer_model.OUTPUT, shape=list(fares.shape), datatype="FP32", data=fares)
            return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=[output])
        out = self.call(*peer_model.columns(payload["instances"]))
        return {"predictions": out.astype(float).tolist()}


if __name__ == "__main__":
    server = kserve.ModelServer(enable_latency_logging=False)  # configures logging
    for name in ("uvicorn.access", "kserve.trace"):  # no access log nor per-request timing lines, as taxifare's --quiet
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([Taxifare()])
