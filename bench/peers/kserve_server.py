"""KServe's Python ModelServer around the shared session call (V1 protocol: ``/v1/models/taxifare:predict``).

A custom ``kserve.Model`` as KServe's docs write one: ``load`` then a synchronous ``predict``
taking the decoded ``{"instances": [...]}`` body. Run by ``bench/bench_peers.py`` in KServe's
own virtualenv: ``python kserve_server.py --http_port P --grpc_port G`` (KServe's own flags).
"""

from __future__ import annotations

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
    kserve.ModelServer(enable_latency_logging=False).start([Taxifare()])
