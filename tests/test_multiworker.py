"""Two trainer processes on loopback train one model together (MultiWorkerMirroredStrategy)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow
def test_two_workers_train_together_and_export_once(tmp_path, small_data):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "model"
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": "",
        }
        cmd = [
            sys.executable,
            "-m",
            "trainer.task",
            "--train_data_paths",
            str(small_data["train"]),
            "--eval_data_paths",
            str(small_data["valid"]),
            "--output_dir",
            str(out),
            "--train_steps",
            "40",
            "--steps_per_loop",
            "20",
            "--train_batch_size",
            "64",
            "--seed",
            "3",
        ]
        log = open(tmp_path / f"worker{index}.log", "w")  # noqa: SIM115
        procs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=240))
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)

    exports = sorted(p for p in (out / "export" / "exporter").iterdir() if not p.name.startswith("."))
    assert len(exports) == 1, exports
    metrics = json.loads((exports[0] / "metrics.json").read_text())
    assert metrics["steps"] == 40
    # --train_batch_size is the global batch, split between the two workers and summed back.
    assert metrics["train_examples_this_run"] == 40 * 64
    assert all("num_workers = 2" in log for log in logs)  # one cluster of two, not two lone trainers
    assert "step 40/40" in logs[1]  # worker 1 trained to the end too
    # Only the chief's checkpoints remain; no worker scratch is left behind.
    assert not [p for p in out.rglob(".worker-*")]
    assert (out / "checkpoints" / "checkpoint").exists()
