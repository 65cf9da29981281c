"""KServe's Python ModelServer around the shared session call (V1 protocol: ``/v1/models/taxifare:predict``).

A custom ``kserve.Model`` as KServe's docs write one: ``load`` then a synchronous ``predict``
taking the decoded ``{"instances": [...]}`` body. Run by ``bench/bench_peers.py`` in KServe's
own virtualenv: ``python kserve_server.py --http_port P --grpc_port G`` (KServe's own flags).
No access log and no latency log, as taxifare's server runs with ``--quiet``.
"""

from __future__ import annotations

import logging
from typing import Any

import kserve
import peer_model


class Taxifare(kserve.Model):
    def __init__(self) -> None:
        super().__init__("taxifare")
        self.call = None
        self.load()

    def load(self) -> bool:
        self.call = peer_model.load()
        self.ready = True
        return True

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        out = self.call(*peer_model.columns(payload["instances"]))
        return {"predictions": out.astype(float).tolist()}


if __name__ == "__main__":
    server = kserve.ModelServer(enable_latency_logging=False)  # configures logging
    for name in ("uvicorn.access", "kserve.trace"):  # no access log nor per-request timing lines, as taxifare's --quiet
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([Taxifare()])
