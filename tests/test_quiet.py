"""Quiet output: TensorFlow's start-up lines, absl's and Python's warnings stay out unless asked for.

Also: `taxifare predict --grpc` builds its request without importing TensorFlow, and the
trainer run again with nothing left to train keeps its export instead of writing a copy.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

from pipeline import local_run
from trainer import quiet

#: What TensorFlow 2.21 prints on a machine without a GPU before any setting is read (seen here).
START_UP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796452443.804659    5604 port.cc:153] oneDNN custom operations are on. You may see slightly different results.",
    "I0000 00:00:1796452443.804941    5604 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1796452448.626464    5604 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: "
    "UNKNOWN ERROR (303)",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.",
]
#: Lines that must stay: a real error of TensorFlow's, the project's own lines.
KEPT = [
    "E0000 00:00:1796452448.626464    5604 saved_model.cc:12] Could not load the SavedModel: not found",
    "error: --train_steps must be a positive whole number (got 0)",
    "step 100/2000  loss 12.345  rmse 3.514  210,000 examples/s",
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, **extra}


def noise_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if quiet.is_noise(line) or "Warning:" in line or "Sharding callback" in line]


def test_the_start_up_lines_are_recognised_and_nothing_else():
    assert all(quiet.is_noise(line) for line in START_UP)
    assert not any(quiet.is_noise(line) for line in KEPT)


def test_import_tensorflow_is_quiet_unless_verbose():
    script = "from trainer import quiet; tf = quiet.import_tensorflow(); print(tf.constant(2).numpy() + 1)"
    quiet_run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=_env(), cwd=ROOT)
    assert quiet_run.returncode == 0 and quiet_run.stdout.strip() == "3", quiet_run.stderr
    assert quiet_run.stderr == "", quiet_run.stderr
    loud = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=_env(**{quiet.VERBOSE_ENV: "1"}), cwd=ROOT
    )
    assert loud.returncode == 0 and noise_in(loud.stderr), "TensorFlow printed nothing at start-up: the filter is not exercised"


def test_the_step_log_leaves_the_start_up_lines_out_unless_verbose(monkeypatch):
    lines = ["12:00:00.000 - INFO - Executing task 'full-train'", *("    " + line for line in START_UP + KEPT)]
    for verbose, expected in ((False, len(lines) - len(START_UP)), (True, len(lines))):
        monkeypatch.setenv(quiet.VERBOSE_ENV, "1" if verbose else "0")
        log = io.StringIO()
        step_log = local_run.StepLog(log, lambda line: None)
        for line in lines:  # in pieces, as a pipe delivers them
            step_log.write(line[:10])
            step_log.write(line[10:] + "\n")
        step_log.write("unfinished")
        step_log.flush()
        assert log.getvalue().count("\n") == expected and log.getvalue().endswith("unfinished")
        assert all(line[4:] in log.getvalue() for line in lines[-len(KEPT) :])


def test_grpc_predict_request_does_not_import_tensorflow():
    script = (
        "import sys, json\n"
        "from serving.client import GrpcClient, tensor_values\n"
        "client = GrpcClient('127.0.0.1:9')\n"
        "request = client.predict_request([{'pickuplon': -73.88, 'passengers': 2, 'key': 'a'}, {'pickuplon': -73.9, 'passengers': 1, "
        "'key': 'b'}])\n"
        "print(json.dumps({'tf': 'tensorflow.python' in sys.modules, 'bytes': request.SerializeToString().hex()}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["tf"] is False and proc.stderr == ""
    # The same request as the official way builds it (tf.make_tensor_proto), byte for byte.
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from serving.client import tensor_proto, tensor_values

    official = predict_pb2.PredictRequest()
    official.model_spec.name, official.model_spec.signature_name = "taxifare", "serving_default"
    official.inputs["pickuplon"].CopyFrom(tf.make_tensor_proto([-73.88, -73.9], dtype=tf.float32))
    official.inputs["passengers"].CopyFrom(tf.make_tensor_proto([2, 1], dtype=tf.float32))
    official.inputs["key"].CopyFrom(tf.make_tensor_proto(["a", "b"], dtype=tf.string))
    ours = predict_pb2.PredictRequest.FromString(bytes.fromhex(answer["bytes"]))
    assert ours == official
    assert tensor_proto([1.5, 2]) == tf.make_tensor_proto([1.5, 2.0], dtype=tf.float32)
    for values in ([3.25], [1.0, 2.0, 3.0], [7.0] * 4):  # tensor_content, float_val, and TF's one-value fill
        assert tensor_values(tf.make_tensor_proto(values, dtype=tf.float32)) == values
        assert tensor_values(tf.make_tensor_proto(values, dtype=tf.float64)) == values
    assert tensor_values(tf.make_tensor_proto(7.0, dtype=tf.float32, shape=[3])) == [7.0, 7.0, 7.0]


def test_the_lab_trainer_is_quiet_and_a_second_run_keeps_its_export(tmp_path: Path, small_data):
    out = tmp_path / "taxi_trained"
    cmd = [
        sys.executable, "-m", "trainer.task",
        "--train_data_paths", str(small_data["train"]), "--eval_data_paths", str(small_data["valid"]),
        "--output_dir", str(out), "--train_steps", "40", "--train_batch_size", "64", "--eval_every_steps", "20",
    ]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    assert noise_in(first.stderr) == [] and noise_in(first.stdout) == [], noise_in(first.stderr)
    exports = sorted(os.listdir(out / "export" / "exporter"))
    assert len(exports) == 1
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(os.listdir(out / "export" / "exporter")) == exports  # no copy under a new timestamp
    assert "nothing to train (step 40 reached before): the export of step" in again.stderr
    assert f"SavedModel: {out / 'export' / 'exporter' / exports[0]} (unchanged: nothing was trained this run)" in again.stdout
    more = subprocess.run([*cmd[:-6], "--train_steps", "60", *cmd[-4:]], capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert more.returncode == 0, more.stderr[-3000:]
    assert len(os.listdir(out / "export" / "exporter")) == 2  # trained further: a new export


def test_the_install_has_no_license_deprecation_warning():
    """setuptools warns (4 times per install) about `project.license` as a TOML table; 77+ reads an SPDX string."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    setuptools = next(req for req in project["build-system"]["requires"] if req.startswith("setuptools"))
    assert (m := re.fullmatch(r"setuptools>=(\d+)", setuptools)) and int(m.group(1)) >= 77


def test_serve_starts_without_tensorflows_lines(tmp_path: Path):
    """`taxifare serve`: its own lines only, then a gRPC predict from a client that never imports TensorFlow."""
    import signal
    import time

    from _serving_helpers import INSTANCE, export_untrained, publish

    base = tmp_path / "taxifare"
    publish(export_untrained(tmp_path / "export", seed=3), base, 1)
    ports = tmp_path / "ports.json"
    cmd = [sys.executable, "-m", "pipeline.cli", "serve", "--model-base-path", str(base), "--rest-port", "0", "--grpc-port", "0"]
    server = subprocess.Popen([*cmd, "--ports-file", str(ports)], stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not ports.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        grpc_port = json.loads(ports.read_text())["grpc_port"]
        (tmp_path / "test.json").write_text(json.dumps(INSTANCE) + "\n")
        predict = [sys.executable, "-m", "pipeline.cli", "predict", "--json-instances", str(tmp_path / "test.json")]
        for _ in range(100):  # until version 1 is loaded
            answer = subprocess.run([*predict, "--grpc", f"127.0.0.1:{grpc_port}"], capture_output=True, text=True, env=_env(), cwd=ROOT)
            if answer.returncode == 0:
                break
            time.sleep(0.3)
        assert answer.returncode == 0 and answer.stdout.splitlines()[0] == "FARE_AMOUNT" and answer.stderr == "", answer.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert noise_in(err) == [] and "Restoring parameters" not in err, noise_in(err)
    assert "serving model taxifare" in err


def test_import_tensorflow_leaves_out_what_keras_only_imports_because_it_is_installed():
    # scikit-learn (SciPy behind it) and matplotlib cost about 1.2 s of CPU of TensorFlow's start;
    # nothing that trains or serves uses Keras' wrappers of them, and they import as usual later.
    script = (
        "import json, sys\n"
        "from trainer import quiet\n"
        "quiet.import_tensorflow()\n"
        "during = [m for m in ('sklearn', 'matplotlib') if m in sys.modules]\n"
        "import sklearn.ensemble, matplotlib.pyplot\n"
        "print(json.dumps({'during': during, 'meta_path': [type(f).__name__ for f in sys.meta_path]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["during"] == [] and "_Absent" not in answer["meta_path"]


def test_a_process_that_imported_tensorflow_freezes_its_objects_at_exit_and_keeps_its_exit_code(tmp_path: Path):
    # the freeze (base.process.leave_quickly) spares the exit the collector's walk over TensorFlow's objects
    script = (
        "import atexit, gc, sys\n"
        f"atexit.register(lambda: open({str(tmp_path / 'frozen')!r}, 'w').write(str(gc.get_freeze_count())))\n"
        "from trainer.quiet import import_tensorflow\n"
        "import_tensorflow()\n"
        "sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT, env=_env())
    assert proc.returncode == 3, proc.stderr[-1000:]
    assert int((tmp_path / "frozen").read_text()) > 100_000  # the later-registered freeze ran first; handlers still run
