"""verify_export's TensorFlow work, in a process of its own: stock TF Serving's loader first, then TF2's.

verify_export's own process does not import TensorFlow (2-4 s of CPU): it reads the test split,
the signature (from ``saved_model.pb``) and the baselines without it, and hands the rest to
one child process, started at once beside the infra-validation server
(``python -m components.verify_export.scorer JOB_DIR``). The child, in order:

1. runs the candidate with stock TF Serving's graph-mode loader (:func:`trainer.stock_check.graph_mode_predict`)
   on the lab instance and the sample: first, in a fresh process where nothing else was loaded;
2. loads it with TF2's ``tf.saved_model.load`` and predicts the test rows, the lab instance and
   the sample (the in-process answers the others are compared with);
3. finds and scores the champion on the same rows (:func:`components.verify_export.champion.find`).

The job goes in as files (``job.json``, ``features.npz``), the answers come back as files
(``result.json``, ``*.npy``); a crash or a hang of the child is an error line, never the
caller's crash.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from base import atomic
from trainer.stock_check import StockResult

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass
class Scores:
    """What the child answered (see the module doc)."""

    stock: StockResult
    #: TF2's answers: the test rows, and the instances (lab instance first); ``None`` when not asked or failed.
    pred: Any = None
    instances: list[float] | None = None
    #: The champion (a :class:`components.verify_export.champion.Champion`).
    champion: Any = None


@dataclasses.dataclass
class Job:
    """The child process at work; :meth:`result` waits for it."""

    workdir: str
    proc: subprocess.Popen[str] | None
    started: float
    timeout: float

    def cancel(self) -> None:
        """Stop the child if it still runs (after an error of the caller), and remove its files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def result(self) -> Scores:
        """Wait for the child and read its answers.

        Raises:
            RuntimeError: the child failed outside what it reports as a result (the candidate does
                not load in TF2, a crash, a hang): one line saying so.
        """
        try:
            if self.proc is None:
                raise RuntimeError("the TensorFlow process of verify_export could not start")
            try:
                _, stderr = self.proc.communicate(timeout=max(1.0, self.started + self.timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
                raise RuntimeError(f"the TensorFlow process of verify_export did not answer within {self.timeout:.0f}s") from None
            sys.stderr.write(stderr)  # its own lines (warnings) belong to the step's log
            try:
                with open(os.path.join(self.workdir, "result.json"), encoding="utf-8") as fh:
                    out = json.load(fh)
            except (OSError, ValueError):
                last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or [f"exit code {self.proc.returncode}"]
                raise RuntimeError(f"the TensorFlow process of verify_export failed: {last[0][:500]}") from None
            if out.get("error"):
                raise RuntimeError(out["error"])
            return self._scores(out)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _scores(self, out: dict[str, Any]) -> Scores:
        import numpy as np

        from components.verify_export.champion import Champion

        s = out["stock"]
        scores = Scores(StockResult(bool(s["ok"]), [float(v) for v in s.get("fares", [])], s.get("error", ""), float(s["seconds"])))
        if out.get("pred"):
            scores.pred = np.load(os.path.join(self.workdir, out["pred"]))
            scores.instances = [float(v) for v in out["instances"]]
        champ = dict(out["champion"])
        pred_file = champ.pop("pred", None)
        scores.champion = Champion(**champ, pred=np.load(os.path.join(self.workdir, pred_file)) if pred_file else None)
        return scores


def start(
    model_path: str,
    feats: dict[str, Any],
    label: Any,
    instances: list[dict[str, Any]],
    *,
    predict: bool,
    champion: dict[str, Any],
    timeout: float = 300.0,
) -> Job:
    """Start the child on the candidate (see the module doc); it works while the caller goes on.

    Args:
        model_path: the candidate SavedModel directory.
        feats: the test rows' features by name.
        label: their fares.
        instances: the lab instance then the sample, as raw-feature dicts (stock loader and TF2).
        predict: run the candidate at all (False when its signature does not match the schema:
            only the champion is looked for, as before).
        champion: :func:`components.verify_export.champion.find`'s keyword arguments (``serving_root``,
            ``model_name``, ``uri``, ``recorded_rmse``).
        timeout: seconds the child gets in all.
    """
    import numpy as np

    from trainer import schema

    workdir = tempfile.mkdtemp(prefix="taxifare-verify-")
    arrays = {f"feat_{k}": (v.astype(str) if k == schema.DATETIME else v) for k, v in feats.items()}
    np.savez(os.path.join(workdir, "features.npz"), label=np.asarray(label), **arrays)
    job = {"model_path": model_path, "instances": instances, "predict": predict, "champion": champion}
    with open(os.path.join(workdir, "job.json"), "w", encoding="utf-8") as fh:
        json.dump(job, fh)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
    started = time.monotonic()
    try:
        proc: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-m", "components.verify_export.scorer", workdir],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    except OSError:
        proc = None
    return Job(workdir, proc, started, timeout)


def _stock(model_path: str, instances: list[dict[str, Any]], predict: bool) -> dict[str, Any]:
    """Stock TF Serving's graph-mode loader on ``instances`` (the first thing this process loads)."""
    from trainer.stock_check import graph_mode_predict, tf_error_line

    started = time.monotonic()
    if not predict:
        return {"ok": False, "error": "not run (the signature does not match the schema)", "seconds": 0.0}
    try:
        fares = graph_mode_predict(model_path, instances)
        if len(fares) != len(instances):
            raise ValueError(f"{len(fares)} answers for {len(instances)} instances")
    except Exception as exc:  # the one line is the product: verify_export shows it
        return {"ok": False, "error": tf_error_line(exc), "seconds": time.monotonic() - started}
    return {"ok": True, "fares": fares, "seconds": time.monotonic() - started}


def _work(workdir: str) -> dict[str, Any]:
    import numpy as np

    from trainer import schema
    from trainer.quiet import import_tensorflow

    with open(os.path.join(workdir, "job.json"), encoding="utf-8") as fh:
        job = json.load(fh)
    with np.load(os.path.join(workdir, "features.npz")) as data:
        label = data["label"]
        feats = {k[5:]: (data[k].astype(object) if k[5:] == schema.DATETIME else data[k]) for k in data.files if k.startswith("feat_")}
    tf = import_tensorflow()
    tf.get_logger().setLevel("ERROR")
    out: dict[str, Any] = {"stock": _stock(job["model_path"], job["instances"], job["predict"])}
    if job["predict"]:
        from components.verify_export.evaluation import predict
        from trainer.stock_check import tf_error_line

        try:
            fn = tf.saved_model.load(job["model_path"]).signatures["serving_default"]
        except Exception as exc:
            return {"error": f"the candidate does not load in TensorFlow 2: {tf_error_line(exc)}"}
        np.save(os.path.join(workdir, "pred.npy"), predict(fn, feats))
        rows = job["instances"]
        by_name = {k: np.array([r[k] for r in rows], dtype=object if k == schema.DATETIME else np.float32) for k in rows[0]}
        out.update(pred="pred.npy", instances=[float(v) for v in predict(fn, by_name)])
    from components.verify_export import champion

    champ = champion.find(feats, label, **job["champion"])
    fields = dataclasses.asdict(champ)
    if champ.pred is not None:
        np.save(os.path.join(workdir, "champion.npy"), champ.pred)
        fields["pred"] = "champion.npy"
    else:
        fields.pop("pred")
    out["champion"] = fields
    return out


def main(argv: list[str] | None = None) -> int:
    """The child: ``python -m components.verify_export.scorer JOB_DIR`` writes ``JOB_DIR/result.json``."""
    (workdir,) = sys.argv[1:] if argv is None else argv
    try:
        out = _work(workdir)
    except Exception as exc:  # one line for the caller, whatever failed
        out = {"error": f"the TensorFlow process of verify_export failed: {type(exc).__name__}: {str(exc)[:400]}"}
    atomic.write_text(os.path.join(workdir, "result.json"), json.dumps(out))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip TensorFlow's teardown: the answer is written
