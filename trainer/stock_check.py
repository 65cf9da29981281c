"""Run an export the way stock TF Serving does, in a process of its own.

``tensorflow_model_server``, Vertex AI's prebuilt prediction containers, KServe and
``saved_model_cli run`` do not use TF2's ``tf.saved_model.load``: they load the SavedModel in
graph mode (a session that runs the restore op, then feeds the ``serving_default``
signature's input tensors and fetches its output tensor). An export can load in TF2 and fail
there (tensorflow/serving#2250), so :func:`stock_predict` checks that contract with the same
loader, ``tf.compat.v1.saved_model.loader.load`` in a ``tf.compat.v1.Session``.

It runs in a child process (``python -m trainer.stock_check EXPORT_DIR``, instances as JSON
on stdin, one JSON line on stdout), so a crash, a hang or the graph-mode state of TensorFlow
cannot take the caller down. Standard library only on the caller's side.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class StockResult:
    """What the graph-mode loader answered.

    Attributes:
        ok: the export loaded and answered one finite fare per instance.
        fares: the ``fare_amount`` answers (empty when not ``ok``).
        error: one line saying what failed (empty when ``ok``).
        seconds: the child process's wall time.
    """

    ok: bool
    fares: list[float]
    error: str = ""
    seconds: float = 0.0


def stock_predict(export_dir: str, instances: Sequence[Mapping[str, Any]], *, timeout: float = 180.0) -> StockResult:
    """Load ``export_dir`` with the graph-mode loader in a child process and predict ``instances``.

    Args:
        export_dir: the SavedModel directory (a local path).
        instances: raw-feature dicts (like the lab's ``test.json`` lines).
        timeout: seconds allowed to the child process.

    Returns:
        A :class:`StockResult`; never raises for a bad export (``ok`` False and ``error`` say why).
    """
    started = time.monotonic()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "trainer.stock_check", export_dir],
            input=json.dumps(list(map(dict, instances))),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return StockResult(False, [], f"the graph-mode loader did not answer within {timeout:.0f}s", time.monotonic() - started)
    seconds = time.monotonic() - started
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if proc.returncode == 0 and "fares" in answer:
        return StockResult(True, [float(v) for v in answer["fares"]], "", seconds)
    error = answer.get("error") or _last_line(proc.stderr) or f"the loader process exited with code {proc.returncode}"
    return StockResult(False, [], error, seconds)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


#: Lines of TensorFlow's error messages that say nothing about the cause.
_FILLER = ("Graph execution error", "Detected at node", "[[", "File ", "Stack trace", "Traceback")


def tf_error_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message that names the cause."""
    lines = [line.strip() for line in str(getattr(exc, "message", None) or exc).splitlines() if line.strip()]
    cause = next((line for line in lines if not line.startswith(_FILLER)), lines[0] if lines else "")
    cause = cause.split(". This could mean", 1)[0]  # TensorFlow's generic hint after "Could not find variable X"
    return f"{type(exc).__name__}: {cause[:400]}"


def graph_mode_predict(export_dir: str, instances: Sequence[Mapping[str, Any]]) -> list[float]:
    """Predict with the graph-mode loader in this process (what the child process runs).

    Raises:
        KeyError: an instance lacks one of the signature's inputs.
        tensorflow.errors.OpError: the export does not load or run in graph mode.
    """
    import numpy as np
    import tensorflow as tf

    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, [tf.saved_model.SERVING], export_dir)
        if "serving_default" not in meta.signature_def:
            raise KeyError(f"no serving_default signature (it has {', '.join(meta.signature_def) or 'none'})")
        sig = meta.signature_def["serving_default"]
        if "fare_amount" not in sig.outputs:
            raise KeyError(f"serving_default returns {sorted(sig.outputs)}, not fare_amount")
        feed = {}
        for name, info in sig.inputs.items():
            values = [row[name] for row in instances]
            if info.dtype == tf.string.as_datatype_enum:
                feed[info.name] = np.array([str(v).encode() for v in values], dtype=object)
            else:
                feed[info.name] = np.asarray(values, dtype=tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
        out = sess.run(sig.outputs["fare_amount"].name, feed_dict=feed)
    return [float(v) for v in np.asarray(out).reshape(-1)]


def main(argv: Sequence[str] | None = None) -> int:
    """The child process: ``python -m trainer.stock_check EXPORT_DIR`` < instances.json."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(json.dumps({"error": "usage: python -m trainer.stock_check EXPORT_DIR < instances.json"}))
        return 2
    try:
        instances = json.loads(sys.stdin.read() or "[]")
        from trainer.quiet import import_tensorflow

        tf = import_tensorflow()  # its start-up lines would hide the child's own error line
        tf.get_logger().setLevel("ERROR")
        fares = graph_mode_predict(args[0], instances)
        if len(fares) != len(instances):
            raise ValueError(f"{len(fares)} answers for {len(instances)} instances")
    except Exception as exc:  # the one line is the product: the caller shows it
        print(json.dumps({"error": tf_error_line(exc)}), flush=True)
        return 1
    print(json.dumps({"fares": fares}), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip TensorFlow's teardown: the answer is written, nothing else to wait for
