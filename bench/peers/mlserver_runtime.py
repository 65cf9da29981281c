"""An MLServer custom runtime around the shared session call (V2 protocol: ``/v2/models/taxifare/infer``).

The runtime as MLServer's docs write one: an ``MLModel`` whose ``predict`` decodes the V2
request's named inputs with ``NumpyCodec`` and answers one ``fare_amount`` output. MLServer
has no V1 ``instances`` route, so its body is the V2 columnar request of the same rows.
Run by ``bench/bench_peers.py`` in MLServer's own virtualenv: ``mlserver start DIR``.
"""

from __future__ import annotations

import numpy as np
import peer_model
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class Taxifare(MLModel):
    async def load(self) -> bool:
        self.call = peer_model.load()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        given = {inp.name: NumpyCodec.decode_input(inp) for inp in payload.inputs}
        out = self.call(*(np.asarray(given[n], np.float32).reshape(-1) for n in peer_model.NAMES))
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output(peer_model.OUTPUT, out)])
