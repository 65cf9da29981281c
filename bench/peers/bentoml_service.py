"""A BentoML service around the shared session call: ``POST /predict`` with ``{"instances": [...]}``.

The service as BentoML's docs write one (``@bentoml.service`` class, a synchronous ``@bentoml.api``
method with typed arguments, one worker; no access log, as taxifare's server runs with ``--quiet``).
Run by ``bench/bench_peers.py`` in BentoML's own virtualenv: ``bentoml serve bentoml_service:Taxifare --port P``.
"""

from __future__ import annotations

import bentoml
import peer_model


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Taxifare:
    def __init__(self) -> None:
        self.call = peer_model.load()

    @bentoml.api
    def predict(self, instances: list[dict[str, float]]) -> dict[str, list[float]]:
        out = self.call(*peer_model.columns(instances))
        return {"predictions": out.astype(float).tolist()}
