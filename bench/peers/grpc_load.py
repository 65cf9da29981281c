"""The gRPC load generator of ``bench/bench_peers.py``: the same client for every server's gRPC API.

One ``grpc.aio`` channel (one HTTP/2 connection) to ``--target`` and ``--concurrency`` tasks,
each sending the request in ``--request`` (a serialized protobuf, made beforehand in the
server's own protocol) to ``--method`` again and again for ``--seconds``; the answer is read
as bytes. The client does the same work whatever the protocol (no encoding or decoding of
messages while timed), so only the server differs, as wrk's fixed body does for REST. Prints one
JSON line: requests, wall seconds, p50/p99 latency (ms) and the client's own CPU seconds.
``--once FILE`` sends the request once and writes the answer's bytes to FILE (to check it).
Run with the project's Python (grpcio and numpy): ``python grpc_load.py --target 127.0.0.1:P ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc
import numpy as np


async def load(target: str, method: str, request: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        call = channel.unary_unary(method)  # bytes in, bytes out: no (de)serializer
        latencies: list[float] = []
        await call(request, timeout=30)  # the connection and the server's first call, untimed
        cpu0, t0 = time.process_time(), time.perf_counter()
        stop = t0 + seconds

        async def worker() -> None:
            clock, record = time.perf_counter, latencies.append
            while (started := clock()) < stop:
                await call(request, timeout=30)
                record(clock() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        ms = np.array(latencies) * 1000
        return {
            "requests": len(latencies),
            "wall": wall,
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "client_cpu_s": time.process_time() - cpu0,
        }


async def once(target: str, method: str, request: bytes) -> bytes:
    async with grpc.aio.insecure_channel(target) as channel:
        answer: bytes = await channel.unary_unary(method)(request, timeout=60)
        return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--method", required=True, help="/package.Service/Method")
    parser.add_argument("--request", required=True, help="file holding the serialized request")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--once", help="send once and write the answer's bytes to this file")
    args = parser.parse_args()
    request = Path(args.request).read_bytes()
    if args.once:
        Path(args.once).write_bytes(asyncio.run(once(args.target, args.method, request)))
        return
    print(json.dumps(asyncio.run(load(args.target, args.method, request, args.concurrency, args.seconds))))


if __name__ == "__main__":
    main()
