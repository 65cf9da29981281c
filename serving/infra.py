"""Infra validation: serve a candidate model in its own process and check its answers.

Like TFX's InfraValidator: a model that does not load, or does not answer over REST and
gRPC what it answers in process, is not blessed. The pipeline's ``verify_export`` step calls
:func:`validate`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from base.layout import MODEL_NAME

#: Largest absolute difference accepted between served and in-process predictions (dollars).
TOLERANCE = 1e-4


@dataclasses.dataclass
class InfraResult:
    """The outcome of :func:`validate`.

    Attributes:
        ok: the model loaded, answered both protocols, and the answers match.
        reason: one line saying why (or what was checked).
        rest_predictions: the REST answers (``None`` when not reached).
        grpc_predictions: the gRPC answers (``None`` when not reached).
        inprocess_predictions: ``serving_default`` called in this process by the TF2 loader (the server runs
            the graph in a session, as TF Serving: the two agree within ``tolerance``, not to the bit).
        max_abs_diff: the largest difference between served and in-process answers.
        load_seconds: from starting the server process to the version being AVAILABLE.
        server_exit_code: the server's exit code after SIGTERM (0: stopped gracefully).
        server_log: the tail of the server's log.
    """

    ok: bool
    reason: str
    rest_predictions: list[float] | None = None
    grpc_predictions: list[float] | None = None
    inprocess_predictions: list[float] | None = None
    max_abs_diff: float | None = None
    load_seconds: float | None = None
    server_exit_code: int | None = None
    server_log: str = ""


def _inprocess(model_dir: str, instances: Sequence[Mapping[str, Any]]) -> list[float]:
    import numpy as np
    import tensorflow as tf

    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    _, specs = fn.structured_input_signature
    tensors = {name: tf.constant([row[name] for row in instances], dtype=spec.dtype) for name, spec in specs.items()}
    out = fn(**tensors)["fare_amount"].numpy()
    return [float(v) for v in np.asarray(out, dtype=np.float32)]


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes], grace: float = 15.0, *, signalled: bool = False) -> int:
    if proc.poll() is None:
        if not signalled:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return int(proc.returncode)


@dataclasses.dataclass
class Server:
    """A candidate being served for infra validation: :func:`start` it, :meth:`query` it, :meth:`close` it.

    Started early (its process imports TensorFlow: seconds), it loads while the caller does other
    work; ``started`` is when its process started, the start of the load timeout.
    """

    model_name: str
    workdir: str
    log_path: str
    ports_file: str
    started: float
    proc: subprocess.Popen[bytes] | None = None
    #: Why it could not be started ('' when it was).
    error: str = ""
    #: SIGTERM was sent already.
    signalled: bool = False
    closed: bool = False

    def query(
        self, instances: list[dict[str, Any]], expected: list[float] | str, *, timeout: float = 60.0, tolerance: float = TOLERANCE
    ) -> InfraResult:
        """Wait until the version is AVAILABLE, send ``instances`` over REST and gRPC, compare with ``expected``; then SIGTERM.

        ``expected`` are the in-process answers of ``serving_default`` (or why there are none).
        The server is asked to stop at once; :meth:`close` waits for it and checks how it stopped.
        """
        if self.proc is None:
            return InfraResult(False, self.error or "infra validation failed: the server was not started")
        if not instances:
            return InfraResult(False, "no instance to validate with: pass at least one")
        try:
            return _query(self.proc, self.ports_file, self.model_name, instances, expected, self.started, timeout, tolerance)
        except Exception as exc:  # the verdict must be a result, never a crash of the pipeline step
            return InfraResult(False, f"infra validation failed: {type(exc).__name__}: {exc}")
        finally:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # it stops while the caller goes on; close() waits
                self.signalled = True

    def close(self, result: InfraResult | None = None) -> InfraResult:
        """Stop the server (if it still runs), record how it stopped and its log's tail in ``result``; remove its files.

        Closing again does nothing (and returns ``result``).
        """
        result = result or InfraResult(False, "not run")
        if self.closed:
            return result
        self.closed = True
        if self.proc is not None:
            result.server_exit_code = _stop(self.proc, signalled=self.signalled)
            if result.ok and result.server_exit_code != 0:
                result.ok = False
                result.reason = f"the server did not stop cleanly on SIGTERM (exit code {result.server_exit_code})"
        result.server_log = _tail(self.log_path)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return result


def start(model_dir: str, *, model_name: str = MODEL_NAME) -> Server:
    """Copy ``model_dir`` as version ``1`` into a temporary model base path and start ``taxifare serve`` on it.

    The server (``python -m serving serve``) listens on free loopback ports; it does not raise:
    a failure to start is :attr:`Server.error`, reported by :meth:`Server.query`.
    """
    workdir = tempfile.mkdtemp(prefix="taxifare-infra-")
    server = Server(model_name, workdir, os.path.join(workdir, "server.log"), os.path.join(workdir, "ports.json"), time.monotonic())
    if not os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        server.error = f"{model_dir} holds no saved_model.pb"
        return server
    try:
        base = os.path.join(workdir, model_name)
        shutil.copytree(model_dir, os.path.join(base, "1"))
        cmd = [sys.executable, "-m", "serving", "serve", "--model-base-path", base, "--model-name", model_name]
        cmd += ["--rest-port", "0", "--grpc-port", "0", "--poll-interval", "0.2", "--allow-out-of-range", "--ports-file", server.ports_file]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        server.started = time.monotonic()
        with open(server.log_path, "wb") as log_file:
            server.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    except Exception as exc:  # the verdict must be a result, never a crash of the pipeline step
        server.error = f"infra validation failed: {type(exc).__name__}: {exc}"
    return server


def validate(
    model_dir: str,
    instances: list[dict[str, Any]],
    *,
    timeout: float = 60.0,
    model_name: str = MODEL_NAME,
    tolerance: float = TOLERANCE,
) -> InfraResult:
    """Serve ``model_dir`` with ``taxifare serve`` in its own process and compare its answers.

    The candidate is copied as version ``1`` into a temporary model base path; the server
    (``python -m serving serve``) starts on free loopback ports, and once the version is
    AVAILABLE the ``instances`` go over REST (``POST /v1/models/NAME:predict``) and gRPC
    (``PredictionService.Predict``). Both answers must equal the in-process predictions of
    ``serving_default`` within ``tolerance``. The server then gets SIGTERM and must stop;
    no process is left behind, whatever happens. (:func:`start`, :meth:`Server.query` and
    :meth:`Server.close` are the same in three parts, for a caller with the answers at hand.)

    Args:
        model_dir: the candidate SavedModel directory.
        instances: raw-feature instances (like the lab's ``test.json`` lines), at least one.
        timeout: seconds allowed for the server to start and load the model.
        model_name: the model name to serve it under.
        tolerance: the largest accepted absolute difference, in dollars.

    Returns:
        An :class:`InfraResult`; ``ok`` is False with a ``reason`` for any failure.
    """
    if not instances:
        return InfraResult(False, "no instance to validate with: pass at least one")
    if not os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        return InfraResult(False, f"{model_dir} holds no saved_model.pb")
    server = start(model_dir, model_name=model_name)
    result = InfraResult(False, "not run")
    try:
        try:
            inprocess: list[float] | str = _inprocess(model_dir, instances)
        except Exception as exc:  # reported after the server's verdict, which names the problem better
            inprocess = f"{type(exc).__name__}: {str(exc)[:300]}"
        result = server.query(instances, inprocess, timeout=timeout, tolerance=tolerance)
    finally:
        server.close(result)
    return result


def _query(
    proc: subprocess.Popen[bytes],
    ports_file: str,
    model_name: str,
    instances: list[dict[str, Any]],
    inprocess_or_error: list[float] | str,
    started: float,
    timeout: float,
    tolerance: float,
) -> InfraResult:
    from serving.client import GrpcClient, RestClient, ServingError

    inprocess = inprocess_or_error if isinstance(inprocess_or_error, list) else None
    deadline = started + timeout
    ports: dict[str, int] | None = None
    rest: RestClient | None = None
    while True:
        if proc.poll() is not None:
            return InfraResult(
                False, f"the server exited with code {proc.returncode} before the model was available", inprocess_predictions=inprocess
            )
        if ports is None and os.path.exists(ports_file):
            with open(ports_file, encoding="utf-8") as fh:
                ports = json.load(fh)
            rest = RestClient(f"http://127.0.0.1:{ports['rest_port']}", model_name=model_name, timeout=10)
        if rest is not None:
            try:
                status = rest.status()
            except ServingError:
                status = []
            states = {entry["version"]: entry for entry in status}
            if states.get("1", {}).get("state") == "AVAILABLE":
                break
            if states.get("1", {}).get("state") == "END":
                message = states["1"]["status"]["error_message"]
                return InfraResult(False, f"the model does not load in the server: {message}", inprocess_predictions=inprocess)
        if time.monotonic() > deadline:
            return InfraResult(False, f"the model was not AVAILABLE within {timeout:.0f}s", inprocess_predictions=inprocess)
        time.sleep(0.1)
    load_seconds = time.monotonic() - started
    assert ports is not None and rest is not None
    result = InfraResult(False, "", inprocess_predictions=inprocess, load_seconds=load_seconds)
    try:
        result.rest_predictions = rest.predict(instances)
    except ServingError as exc:
        result.reason = f"REST predict failed: {exc}"
        return result
    finally:
        rest.close()
    try:
        with GrpcClient(f"127.0.0.1:{ports['grpc_port']}", model_name=model_name, timeout=10) as grpc_client:
            result.grpc_predictions = grpc_client.predict(instances)
    except ServingError as exc:
        result.reason = f"gRPC Predict failed: {exc}"
        return result
    if inprocess is None:
        result.reason = f"the model answers when served but does not load in process: {inprocess_or_error}"
        return result
    diffs = [abs(a - b) for served in (result.rest_predictions, result.grpc_predictions) for a, b in zip(served, inprocess, strict=False)]
    counts = {len(result.rest_predictions), len(result.grpc_predictions), len(inprocess)}
    if len(counts) != 1:
        result.reason = (
            f"answer counts differ: REST {len(result.rest_predictions)}, gRPC {len(result.grpc_predictions)}, in-process {len(inprocess)}"
        )
        return result
    result.max_abs_diff = max(diffs)
    if result.max_abs_diff > tolerance:
        result.reason = f"served answers differ from in-process predictions by up to {result.max_abs_diff:.6g} (tolerance {tolerance})"
        return result
    result.ok = True
    result.reason = (
        f"{len(instances)} instances over REST and gRPC equal the in-process predictions (max diff {result.max_abs_diff:.2g}); "
        f"loaded in {load_seconds:.1f}s"
    )
    return result
