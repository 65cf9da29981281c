"""taxifare's server beside the Python model servers a user would pick instead, on the same model call.

In one run, on one SavedModel (``--model-dir``, or a fresh export with the project's signature;
latency does not depend on the weights), every server wraps the **same graph-mode session call**
(the stock loader into a ``tf.compat.v1.Session``, one ``Session::Run`` through a callable made
once: ``serving.servable.session_callable``, copied without the project's imports in
``bench/peers/peer_model.py``), so only the server differs:

* **taxifare**: ``python -m serving serve`` of this checkout (defaults, batching off);
* **KServe**: its Python ``ModelServer`` with a custom ``kserve.Model`` (V1 protocol, the same
  ``/v1/models/taxifare:predict`` body as taxifare's);
* **BentoML**: a ``@bentoml.service`` with one worker, ``POST /predict`` with ``{"instances": [...]}``;
* **Ray Serve**: a deployment (one replica) behind its HTTP proxy, ``POST /predict`` with ``{"instances": [...]}``;
* **MLServer**: a custom runtime, V2 protocol (``/v2/models/taxifare/infer``; it has no
  ``instances`` route, so its body is the same rows as V2 columns).

**gRPC** where the peer has it: taxifare's TF Serving ``PredictionService/Predict`` (the request its
stock client makes: ``tf.make_tensor_proto`` per input), KServe's and MLServer's V2 / Open Inference
Protocol ``ModelInfer`` (one FP32 input per feature, its bytes in ``raw_input_contents``, as their
clients send numpy arrays; made by ``bench/peers/v2_messages.py`` in a peer's venv). BentoML's
``@bentoml.service`` has no gRPC (only the legacy 1.x ``Service`` had), and Ray Serve's gRPC proxy
needs the user's own compiled protos: neither is driven over gRPC. One load generator drives every
gRPC API (``bench/peers/grpc_load.py``: one ``grpc.aio`` channel, ``--concurrency`` calls in flight,
the serialized request sent as bytes, so the client does the same work for every server).

Each peer runs in its own virtualenv that this script makes OUTSIDE the repository (``--venvs``,
default ``~/.cache/taxifare-bench-peers``; ``pip install`` of the peer and of the TensorFlow
release the project uses, from PyPI; made once, reused while its requirements are the same), never
in the project's environment. Every answer is checked against taxifare's for the same rows first
(the same predictions), then wrk (one thread, ``-c`` keep-alive connections; ``apt-get install wrk``)
drives each REST API, and the gRPC load generator each gRPC API, with 1-instance and 100-instance
bodies at 1 and 8 connections (calls in flight, for gRPC), the servers
taking turns cell by cell for ``--rounds`` rounds (the best round of each cell is kept: the machine
is shared); while one is measured the others are paused (SIGSTOP to their process trees), so
their idle threads take nothing from it. The in-process session call, driven by 1 and 8 threads of this process, is the limit.

Printed per cell: instances/s, p50, p99, server CPU (the server's process tree, 100% = every
core; and per request, in µs), the load generator's CPU, the ratio of taxifare to the best peer,
and each server's throughput over the in-process call's. Peer versions are printed with the table.

Run: ``.venv/bin/python bench/bench_peers.py`` (first run: 2 to 6 minutes per peer to make its
virtualenv; then about 8 minutes with 2 rounds of 5 s cells). ``--setup-only`` makes the venvs;
``--protocols REST`` or ``gRPC`` runs one side only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
PEERS_SRC = ROOT / "bench" / "peers"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_serving as bs  # noqa: E402


@dataclass
class Peer:
    """A server under test: how to install, start and ask it."""

    name: str
    packages: list[str]  # pip requirements of its venv (TensorFlow is added)
    dist: str  # the distribution whose version is reported
    body_format: str  # "v1" ({"instances": [...]}) or "v2" (V2 inference request)
    path: str  # the predict route
    health: str  # a GET route answering 200 once the model is loaded
    grpc: bool = False  # has a gRPC API (V2 / Open Inference Protocol ``ModelInfer``) that the bench drives
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    grpc_port: int = 0
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


PEERS = {
    "kserve": Peer("KServe", ["kserve"], "kserve", "v1", "/v1/models/taxifare:predict", "/v1/models/taxifare", grpc=True),
    "bentoml": Peer("BentoML", ["bentoml"], "bentoml", "v1", "/predict", "/readyz"),
    # uvloop 0.22 made asyncio.get_event_loop() raise outside a loop, which MLServer 1.7's inference worker calls
    "mlserver": Peer(
        "MLServer", ["mlserver", "uvloop<0.22"], "mlserver", "v2", "/v2/models/taxifare/infer", "/v2/models/taxifare/ready", grpc=True
    ),
    "rayserve": Peer("Ray Serve", ["ray[serve]"], "ray", "v1", "/predict", "/predict"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tf_requirement() -> str:
    import importlib.metadata

    return f"tensorflow=={importlib.metadata.version('tensorflow')}"


def ensure_venv(venvs: Path, key: str, peer: Peer) -> Path:
    """The peer's virtualenv under ``venvs`` (made with ``pip install`` from PyPI when missing or stale)."""
    venv = venvs / key
    wanted = " ".join([*peer.packages, tf_requirement()])
    marker = venv / "bench-requirements.txt"
    if not (marker.exists() and marker.read_text() == wanted):
        print(f"making {venv}: pip install {wanted} (a few minutes the first time)", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
        log = venvs / f"{key}-install.log"
        with open(log, "wb") as fh:
            done = subprocess.run([str(venv / "bin" / "pip"), "install", *wanted.split()], stdout=fh, stderr=subprocess.STDOUT)
        if done.returncode:
            raise SystemExit(f"pip could not install {wanted} into {venv}; see {log}")
        marker.write_text(wanted)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import importlib.metadata as m; print(m.version({peer.dist!r}))"],
        capture_output=True,
        text=True,
        check=True,
    )
    peer.version = out.stdout.strip()
    return venv


def start_peer(key: str, peer: Peer, venv: Path, work: Path, model_dir: str, names: list[str], calling_thread: bool = False) -> None:
    """Start the peer on a free port (its logs in ``work``); returns once ``peer.health`` answers 200."""
    peer.port, peer.grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "BENCH_MODEL_DIR": model_dir,
        "BENCH_INPUTS": ",".join(names),
        "BENCH_CALLING_THREAD": "1" if calling_thread else "0",
        "PYTHONPATH": str(PEERS_SRC),
        "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
    }
    env.pop("VIRTUAL_ENV", None)
    py = str(venv / "bin" / "python")
    if key == "kserve":
        cmd = [py, str(PEERS_SRC / "kserve_server.py"), "--http_port", str(peer.port), "--grpc_port", str(peer.grpc_port)]
    elif key == "rayserve":
        cmd = [py, str(PEERS_SRC / "rayserve_app.py"), str(peer.port)]
    elif key == "bentoml":
        cmd = [str(venv / "bin" / "bentoml"), "serve", "bentoml_service:Taxifare", "--host", "127.0.0.1", "--port", str(peer.port)]
    else:
        settings = work / "mlserver"
        model = settings / "taxifare"
        model.mkdir(parents=True, exist_ok=True)
        (settings / "settings.json").write_text(
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "http_port": peer.port,
                    "grpc_port": peer.grpc_port,
                    "metrics_port": free_port(),
                    # no access log, as taxifare's server runs with --quiet
                    "logging_settings": {
                        "version": 1,
                        "disable_existing_loggers": False,
                        "loggers": {"uvicorn.access": {"level": "WARNING"}},
                    },
                }
            )
        )
        (model / "model-settings.json").write_text(json.dumps({"name": "taxifare", "implementation": "mlserver_runtime.Taxifare"}))
        cmd = [str(venv / "bin" / "mlserver"), "start", str(settings)]
    log = open(work / f"server-{key}.log", "wb")  # noqa: SIM115 - the server writes to it until stopped
    peer.proc = subprocess.Popen(cmd, cwd=str(PEERS_SRC), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if peer.proc.poll() is not None:
            raise SystemExit(f"{peer.name} exited; see {work / f'server-{key}.log'}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=5)
            conn.request("GET", peer.health)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{peer.name} did not answer {peer.health} in 240 s; see {work / f'server-{key}.log'}")


def body_for(fmt: str, data: list[dict[str, float]], names: list[str]) -> bytes:
    if fmt == "v1":
        return json.dumps({"instances": data}).encode()
    inputs = [{"name": n, "shape": [len(data)], "datatype": "FP32", "data": [r[n] for r in data]} for n in names]
    return json.dumps({"inputs": inputs}).encode()


def predictions(port: int, path: str, body: bytes) -> list[float]:
    """POST ``body``; the answer's fares (V1 ``predictions`` or the V2 output's ``data``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    if response.status != 200:
        raise SystemExit(f"POST {path} on port {port}: {response.status} {payload[:300]!r}")
    answer = json.loads(payload)
    return [float(x) for x in (answer["predictions"] if "predictions" in answer else answer["outputs"][0]["data"])]


def tree_cpu(pid: int) -> float:
    """CPU seconds of the process ``pid`` and its children (a server may run workers)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def pause_others(pids: list[int], keep: int | None, pause: bool) -> None:
    """SIGSTOP (``pause``) or SIGCONT every server but ``keep``, so idle servers take no CPU from the one measured."""
    for pid in pids:
        if pid == keep:
            continue
        for proc in tree(pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.suspend() if pause else proc.resume()


def wrk(port: int, path: str, body: bytes, clients: int, seconds: float, work: Path, tag: str) -> dict[str, float]:
    """``clients`` keep-alive connections from wrk (one thread) posting ``body`` to ``path`` for ``seconds``."""
    body_file, script = work / f"body-{tag}.json", work / f"post-{tag}.lua"
    body_file.write_bytes(body)
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"local f = io.open({json.dumps(str(body_file))}, 'rb')\nwrk.body = f:read('*a')\nf:close()\n"
    )
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "--latency", "-s", str(script)]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    return bs.parse_wrk(out, f" on {path}")


TFS_PREDICT = "/tensorflow.serving.PredictionService/Predict"  # taxifare's gRPC API (TF Serving's)
V2_INFER = "/inference.GRPCInferenceService/ModelInfer"  # KServe's and MLServer's (V2 / Open Inference Protocol)


@dataclass
class Target:
    """One server's API under test: REST (driven by wrk) or gRPC (driven by ``bench/peers/grpc_load.py``)."""

    name: str
    protocol: str  # "REST" or "gRPC"
    pid: int
    port: int
    route: str  # the REST path, or the gRPC method
    bodies: dict[int, bytes]  # instances per request -> the request in this server's protocol


def tfs_request(data: list[dict[str, float]], names: list[str]) -> bytes:
    """A TF Serving ``PredictRequest`` as its stock client makes one (``tf.make_tensor_proto`` per input)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "taxifare", "serving_default"
    for name in names:
        request.inputs[name].CopyFrom(tf.make_tensor_proto(np.array([r[name] for r in data], np.float32)))
    return bytes(request.SerializeToString())


def v2_run(venv: Path, names: list[str], *args: str) -> str:
    """``bench/peers/v2_messages.py`` in a peer's venv (the V2 protos are not in the project's environment)."""
    env = {**os.environ, "BENCH_INPUTS": ",".join(names), "PYTHONPATH": str(PEERS_SRC)}
    cmd = [str(venv / "bin" / "python"), str(PEERS_SRC / "v2_messages.py"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout


def grpc_load(target: Target, batch: int, work: Path, *args: str) -> str:
    request = work / f"grpc-{target.route.rsplit('/', 1)[-1]}-{batch}.bin"
    request.write_bytes(target.bodies[batch])
    cmd = [sys.executable, str(PEERS_SRC / "grpc_load.py"), "--target", f"127.0.0.1:{target.port}", "--method", target.route]
    return subprocess.run([*cmd, "--request", str(request), *args], capture_output=True, text=True, check=True).stdout


def grpc_fares(target: Target, batch: int, work: Path, v2_venv: Path | None, names: list[str]) -> list[float]:
    """The fares of one gRPC call of ``batch`` instances (retried for 60 s while the server's gRPC side starts)."""
    answer = work / "grpc-answer.bin"
    deadline = time.monotonic() + 60
    while True:
        try:
            grpc_load(target, batch, work, "--once", str(answer))
            break
        except subprocess.CalledProcessError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"{target.name}'s gRPC {target.route} on port {target.port} failed: {exc.stderr[-500:]}") from None
            time.sleep(1)
    if target.route == TFS_PREDICT:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        response = predict_pb2.PredictResponse.FromString(answer.read_bytes())
        return [float(x) for x in tf.make_ndarray(response.outputs["fare_amount"]).reshape(-1)]
    assert v2_venv is not None
    return [float(x) for x in json.loads(v2_run(v2_venv, names, "fares", str(answer)))]


def measure(target: Target, batch: int, clients: int, seconds: float, work: Path) -> dict[str, float]:
    """One cell on ``target``: wrk (REST) or the gRPC load generator, plus the server's process-tree CPU (100% = every core)
    and the client's (the load generator's process: wrk, or the gRPC client)."""
    cpu0, client0 = tree_cpu(target.pid), children_cpu()
    if target.protocol == "REST":
        cell = wrk(target.port, target.route, target.bodies[batch], clients, seconds, work, f"{target.port}-{batch}")
    else:
        cell = json.loads(grpc_load(target, batch, work, "--concurrency", str(clients), "--seconds", f"{seconds:g}"))
    # over the measured window (the gRPC client's start is outside it, and the server idles meanwhile)
    cores = os.cpu_count() or 1
    cell["server_cpu"] = (tree_cpu(target.pid) - cpu0) / (cell["wall"] * cores)
    cell["client_cpu"] = cell.get("client_cpu_s", children_cpu() - client0) / (cell["wall"] * cores)
    return cell


def children_cpu() -> float:
    """CPU seconds of this process's finished children (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="SavedModel to serve (default: export a fresh one)")
    parser.add_argument("--venvs", default=str(Path.home() / ".cache" / "taxifare-bench-peers"), help="where the peers' venvs live")
    parser.add_argument("--peers", default="kserve,bentoml,mlserver,rayserve", help="comma-separated, of: " + ", ".join(PEERS))
    parser.add_argument("--protocols", default="REST,gRPC", help="comma-separated, of: REST, gRPC (default %(default)s)")
    parser.add_argument(
        "--peer-calling-thread",
        action="store_true",
        help="the peers run every call's graph on the calling thread (BENCH_CALLING_THREAD=1; taxifare does for a lone call)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every cell; the best is kept (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (the servers' logs)")
    parser.add_argument("--setup-only", action="store_true", help="make the peers' venvs and stop")
    parser.add_argument("--json-out", help="also write the results to this JSON file")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    venvs = Path(os.path.expanduser(args.venvs))
    if ROOT in venvs.resolve().parents or venvs.resolve() == ROOT:
        raise SystemExit(f"--venvs {venvs} is inside the repository: give a directory outside it")
    venvs.mkdir(parents=True, exist_ok=True)
    peers = {k: PEERS[k] for k in args.peers.split(",") if k}
    unknown = set(args.peers.split(",")) - set(PEERS) - {""}
    if unknown:
        raise SystemExit(f"unknown peer(s) {', '.join(sorted(unknown))}: use {', '.join(PEERS)}")
    protocols = [p for p in args.protocols.split(",") if p]
    if not protocols or set(protocols) - {"REST", "gRPC"}:
        raise SystemExit(f"--protocols {args.protocols!r}: give REST, gRPC or both, comma-separated")
    venv_of = {k: ensure_venv(venvs, k, p) for k, p in peers.items()}
    if args.setup_only:
        for p in peers.values():
            print(f"{p.name} {p.version}")
        return 0
    if "REST" in protocols and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    results, versions = run(args, peers, venv_of, protocols)
    report(results, versions, args)
    return 0


def targets_of(
    peers: dict[str, Peer], venv_of: dict[str, Path], taxi: tuple[int, dict[str, int]], names: list[str], protocols: list[str]
) -> tuple[list[Target], Path | None]:
    """Every API under test (taxifare's first in each protocol) with its 1- and 100-instance requests."""
    rows = {batch: bs.rows(batch) for batch in (1, 100)}
    taxi_pid, ports = taxi
    targets: list[Target] = []
    if "REST" in protocols:
        rest = {b: body_for("v1", rows[b], names) for b in rows}
        targets.append(Target("taxifare", "REST", taxi_pid, ports["rest_port"], "/v1/models/taxifare:predict", rest))
        for peer in peers.values():
            assert peer.proc is not None
            bodies = {b: body_for(peer.body_format, rows[b], names) for b in rows}
            targets.append(Target(peer.name, "REST", peer.proc.pid, peer.port, peer.path, bodies))
    v2_venv = next((venv_of[k] for k, p in peers.items() if p.grpc), None)
    if "gRPC" in protocols:
        tfs = {b: tfs_request(rows[b], names) for b in rows}
        targets.append(Target("taxifare", "gRPC", taxi_pid, ports["grpc_port"], TFS_PREDICT, tfs))
        if v2_venv is not None:
            v2 = {}
            for b in rows:
                (work := Path(tempfile.mkdtemp(prefix="bench-v2-"))).joinpath("rows.json").write_text(json.dumps(rows[b]))
                v2_run(v2_venv, names, "request", str(work / "rows.json"), str(work / "request.bin"))
                v2[b] = (work / "request.bin").read_bytes()
                shutil.rmtree(work, ignore_errors=True)
            for peer in peers.values():
                if peer.grpc:
                    assert peer.proc is not None
                    targets.append(Target(peer.name, "gRPC", peer.proc.pid, peer.grpc_port, V2_INFER, v2))
    return targets, v2_venv


def run(
    args: argparse.Namespace, peers: dict[str, Peer], venv_of: dict[str, Path], protocols: list[str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    import tensorflow as tf

    from serving.payload import features_for
    from serving.servable import SIGNATURE, read_signature_defs, session_callable

    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    model_dir, base = bs.model_base(str(work), args.model_dir)
    model_dir = os.path.abspath(model_dir)
    signature = read_signature_defs(model_dir)[SIGNATURE]
    names = [f.name for f in features_for(list(signature.inputs))]
    versions = {"taxifare": "this checkout", "tensorflow": tf.__version__}
    results: list[dict[str, Any]] = []
    taxi_proc = None
    try:
        taxi_proc, ports = bs.start_server(str(work), "taxifare", base, [], str(ROOT))
        for key, peer in peers.items():
            start_peer(key, peer, venv_of[key], work, model_dir, names, args.peer_calling_thread)
            versions[peer.name] = peer.version
        targets, v2_venv = targets_of(peers, venv_of, (taxi_proc.pid, ports), names, protocols)
        session_call = session_callable(model_dir, signature, names)
        for batch in (1, 100):
            data = bs.rows(batch)
            want = session_call(*[np.array([r[k] for r in data], np.float32) for k in names]).reshape(-1)
            for t in targets:
                if t.protocol == "REST":
                    got = np.array(predictions(t.port, t.route, t.bodies[batch]), np.float32)
                else:
                    got = np.array(grpc_fares(t, batch, work, v2_venv, names), np.float32)
                if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-4):
                    raise SystemExit(f"{t.name} {t.protocol} answered {got[:3]} for batch {batch}, the session call {want[:3]}")
        print(f"every API answers the session call's fares (1 and 100 rows); load average {os.getloadavg()[0]:.2f}", flush=True)
        results = measure_all(args, targets, session_call, names, work)
    finally:
        if taxi_proc is not None:
            bs.stop_servers([taxi_proc])
        for peer in peers.values():
            if peer.proc is not None and peer.proc.poll() is None:
                os.killpg(peer.proc.pid, 15)
                try:
                    peer.proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(peer.proc.pid, 9)
    if args.keep:
        print(f"kept {work} (the servers' logs)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return results, versions


def measure_all(args: argparse.Namespace, targets: list[Target], session_call: Any, names: list[str], work: Path) -> list[dict[str, Any]]:
    """Every cell, ``args.rounds`` times, taking turns; the best round of each is kept. The others are paused meanwhile."""
    best: dict[tuple[str, str, int, int], dict[str, Any]] = {}
    pids = sorted({t.pid for t in targets})
    for rnd in range(args.rounds):
        for batch in (1, 100):
            data = bs.rows(batch)
            arrays = [np.array([r[k] for r in data], np.float32) for k in names]
            for clients in (1, 8):
                # the in-process call through TensorFlow's pool (the limit; 1 and 8 threads), and on the calling
                # thread (as taxifare's server runs a lone call; 1 thread only: concurrent callers stall)
                inproc: list[Target | str | None] = ["in-process session"] + (
                    ["in-process session, calling thread"] if clients == 1 else []
                )
                for target in [*inproc, *targets]:
                    keep = target.pid if isinstance(target, Target) else None
                    pause_others(pids, keep, True)
                    try:
                        if not isinstance(target, Target):
                            fn = session_call.lone if target == "in-process session, calling thread" else session_call
                            cell = bs.run_cell(lambda a=arrays, fn=fn: lambda: fn(*a), clients, args.seconds, None)
                            cell["server_cpu"], cell["client_cpu"] = cell["client_cpu"], 0.0
                        else:
                            cell = measure(target, batch, clients, args.seconds, work)
                    finally:
                        pause_others(pids, keep, False)
                    name, protocol = (target.name, target.protocol) if isinstance(target, Target) else (str(target), "-")
                    cell.update(mode=name, protocol=protocol, batch=batch, clients=clients, round=rnd)
                    cell["inst_per_s"] = cell["requests"] * batch / cell["wall"]
                    # the server's CPU per request (µs): steadier than throughput when other work shares the cores
                    cell["cpu_us"] = cell["server_cpu"] * (os.cpu_count() or 1) * cell["wall"] / cell["requests"] * 1e6
                    key = (name, protocol, batch, clients)
                    if key not in best or cell["inst_per_s"] > best[key]["inst_per_s"]:
                        best[key] = cell
                    print(
                        f"  round {rnd + 1} {name:18s} {protocol:4s} batch {batch:3d} conns {clients}: {cell['inst_per_s']:9,.0f}/s "
                        f"p50 {cell['p50_ms']:.2f} ms p99 {cell['p99_ms']:.2f} ms CPU server {cell['server_cpu']:.0%} "
                        f"({cell['cpu_us']:.0f} µs/request) client {cell['client_cpu']:.0%}",
                        flush=True,
                    )
    return list(best.values())


def report(results: list[dict[str, Any]], versions: dict[str, str], args: argparse.Namespace) -> None:
    load = os.getloadavg()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "?")
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; load average now {load[0]:.2f}")
    print(
        "\n| server | protocol | instances/request | concurrency | instances/s | p50 ms | p99 ms | server CPU | "
        "server CPU µs/request | client CPU | / in-process |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    by = {(r["mode"], r["protocol"], r["batch"], r["clients"]): r for r in results}
    order = {"-": 0, "REST": 1, "gRPC": 2}
    for r in sorted(results, key=lambda r: (r["batch"], r["clients"], order[r["protocol"]])):
        ref = by[("in-process session", "-", r["batch"], r["clients"])]
        print(
            f"| {r['mode']} | {r['protocol']} | {r['batch']} | {r['clients']} | {r['inst_per_s']:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['server_cpu']:.0%} | {r['cpu_us']:.0f} | {r['client_cpu']:.0%} | "
            f"{r['inst_per_s'] / ref['inst_per_s']:.2f} |"
        )
    print("\n| protocol | instances/request | concurrency | taxifare / best peer | best peer | taxifare / in-process | / calling thread |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for protocol in ("REST", "gRPC"):
        for batch in (1, 100):
            for clients in (1, 8):
                cell = [r for r in results if (r["protocol"], r["batch"], r["clients"]) == (protocol, batch, clients)]
                peers = [r for r in cell if r["mode"] != "taxifare"]
                taxi = by.get(("taxifare", protocol, batch, clients))
                if not peers or taxi is None:
                    continue
                top = max(peers, key=lambda r: r["inst_per_s"])
                ref = by[("in-process session", "-", batch, clients)]
                lone = by.get(("in-process session, calling thread", "-", batch, clients))
                over_lone = f"{taxi['inst_per_s'] / lone['inst_per_s']:.2f}" if lone else "-"
                print(
                    f"| {protocol} | {batch} | {clients} | {taxi['inst_per_s'] / top['inst_per_s']:.2f} | {top['mode']} | "
                    f"{taxi['inst_per_s'] / ref['inst_per_s']:.2f} | {over_lone} |"
                )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"results": results, "versions": versions, "load_after": load}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
