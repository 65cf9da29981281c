"""The V2 (Open Inference Protocol) gRPC messages of ``bench/bench_peers.py``, made in a peer's virtualenv.

KServe and MLServer ship the same ``inference.GRPCInferenceService`` protos; this uses whichever
is installed, so the project's environment needs neither.
``python v2_messages.py request ROWS.json OUT``: a ``ModelInferRequest`` for model ``taxifare``
with one FP32 input per name of ``BENCH_INPUTS`` (shape ``[n]``, its bytes in
``raw_input_contents``, as both servers' clients send numpy arrays);
``python v2_messages.py fares ANSWER``: the ``ModelInferResponse``'s first output as a JSON list.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

try:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
except ImportError:
    from mlserver.grpc import dataplane_pb2 as pb  # type: ignore[no-redef]


def request(rows: list[dict[str, float]], names: list[str]) -> bytes:
    message = pb.ModelInferRequest(model_name="taxifare")
    for name in names:
        message.inputs.add(name=name, datatype="FP32", shape=[len(rows)])
        message.raw_input_contents.append(np.array([r[name] for r in rows], np.float32).tobytes())
    return bytes(message.SerializeToString())


def fares(answer: bytes) -> list[float]:
    message = pb.ModelInferResponse.FromString(answer)
    if message.raw_output_contents:
        return [float(x) for x in np.frombuffer(message.raw_output_contents[0], np.float32)]
    return [float(x) for x in message.outputs[0].contents.fp32_contents]


if __name__ == "__main__":
    if sys.argv[1] == "request":
        Path(sys.argv[3]).write_bytes(request(json.loads(Path(sys.argv[2]).read_text()), os.environ["BENCH_INPUTS"].split(",")))
    else:
        print(json.dumps(fares(Path(sys.argv[2]).read_bytes())))
