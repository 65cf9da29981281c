"""A Ray Serve deployment around the shared session call: ``POST /predict`` with ``{"instances": [...]}``.

The deployment as Ray Serve's docs write one (a class with ``__call__`` taking the Starlette
request, one replica), behind Ray Serve's HTTP proxy on a local Ray instance (no dashboard, no
usage reports, no access log, as taxifare's server runs with ``--quiet``). Run by ``bench/bench_peers.py`` in Ray Serve's own virtualenv:
``python rayserve_app.py PORT``; ``GET /predict`` answers ``ok`` once the deployment is up.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import peer_model
import ray
from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=1, logging_config={"enable_access_log": False})
class Taxifare:
    def __init__(self) -> None:
        self.call = peer_model.load()

    async def __call__(self, request: Request) -> Any:
        if request.method == "GET":
            return "ok"
        body = await request.json()
        out = self.call(*peer_model.columns(body["instances"]))
        return {"predictions": out.astype(float).tolist()}


if __name__ == "__main__":
    ray.init(include_dashboard=False, logging_level="WARNING")
    serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])}, logging_config={"enable_access_log": False})
    serve.run(Taxifare.bind(), route_prefix="/predict")
    while True:
        time.sleep(3600)
