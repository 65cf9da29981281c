"""The request log: survives a kill (no half segment read), keeps its bounds, never blocks the request path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import requests
from _serving_helpers import export_untrained, instances, publish

from serving import cli, request_log
from serving.request_log import RequestLog, RequestLogSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVABLE = SimpleNamespace(version=2, path="/nowhere/2")


def _columns(n: int) -> dict[str, np.ndarray]:
    rows = instances(n)
    return {k: np.asarray([r[k] for r in rows], np.float32) for k in rows[0]}


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_server_leaves_no_readable_half_segment_and_the_next_one_publishes_its_complete_lines(tmp_path):
    base = tmp_path / "taxifare"
    publish(export_untrained(tmp_path / "export", seed=5), base, 1)
    log_dir, ports = tmp_path / "log", tmp_path / "ports.json"
    cmd = [sys.executable, "-m", "serving", "serve", "--model-base-path", str(base), "--rest-port", "0", "--grpc-port", "0"]
    cmd += [
        "--quiet",
        "--poll-interval",
        "0.1",
        "--ports-file",
        str(ports),
        "--request-log",
        str(log_dir),
        "--request-log-sample-rate",
        "1",
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": ROOT}, stderr=subprocess.DEVNULL)
    try:
        _wait(ports.exists, 90)
        root = f"http://127.0.0.1:{json.loads(ports.read_text())['rest_port']}"
        _wait(lambda: _up(root) and requests.get(root + "/healthz", timeout=5).status_code == 200, 90)
        url = root + "/v1/models/taxifare"
        for n in range(1, 21):
            assert requests.post(url + ":predict", json={"instances": instances(n)}, timeout=10).status_code == 200
        _wait(lambda: any(p.read_bytes().count(b"\n") == 20 for p in _temporaries(log_dir)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert request_log.segments(str(log_dir)) == [] and list(request_log.read(str(log_dir))) == []  # readers never see it
    (tmp,) = _temporaries(log_dir)
    with open(tmp, "ab") as fh:
        fh.write(b'{"time": 1, "model": "taxifare", "inp')  # a line cut by the kill
    writer = RequestLog(RequestLogSettings(str(log_dir)), "taxifare")
    assert writer.recovered == [tmp.name[len(".tmp-") :]]
    lines = list(request_log.read(str(log_dir)))
    assert [len(r["outputs"]) for r in lines] == list(range(1, 21)) and {r["version"] for r in lines} == {1}
    assert not _temporaries(log_dir)


def _temporaries(log_dir) -> list:
    return [p for p in log_dir.iterdir() if p.name.startswith(".tmp-")]


def _up(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return False
    return True


def test_segments_rotate_and_respect_size_and_age_bounds(tmp_path):
    old = tmp_path / "requests-20200101T000000-1-000001.jsonl"
    old.write_text('{"inputs": {}}\n')
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    settings = RequestLogSettings(str(tmp_path), sample_rate=1.0, segment_bytes=4000, max_bytes=20_000, max_age=3600, flush_interval=0.02)
    writer = RequestLog(settings, "taxifare").start()
    assert not old.exists()  # older than max-age
    for _ in range(200):
        writer.record("REST", SERVABLE, "canary", _columns(5), np.arange(5, dtype=np.float32))
        time.sleep(0.001)
    writer.close()
    files = request_log.segments(str(tmp_path))
    sizes = [os.path.getsize(f) for f in files]
    assert int(files[-1].rsplit("-", 1)[1].split(".")[0]) >= 4  # segments rotated
    assert len(files) >= 2 and sum(sizes) <= settings.max_bytes and max(sizes) < 4 * settings.segment_bytes
    assert writer.logged == 200 and not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    kept = list(request_log.read(str(tmp_path)))
    assert 0 < len(kept) < 200 and all(r["label"] == "canary" and r["version"] == 2 for r in kept)  # the oldest were deleted


def test_a_segment_is_published_after_its_seconds_even_when_small(tmp_path):
    settings = RequestLogSettings(str(tmp_path), sample_rate=1.0, segment_seconds=0.2, flush_interval=0.02)
    writer = RequestLog(settings, "taxifare").start()
    try:
        writer.record("gRPC", SERVABLE, None, _columns(1), np.ones(1, np.float32))
        _wait(lambda: len(request_log.segments(str(tmp_path))) == 1, 5)
    finally:
        writer.close()


def test_the_request_path_never_waits_for_the_writer(tmp_path):
    """With the writer stopped, the queue fills to its bound, then requests are dropped and counted, never blocked."""
    dropped: list[int] = []
    writer = RequestLog(RequestLogSettings(str(tmp_path), sample_rate=1.0), "taxifare", on_drop=lambda: dropped.append(1))
    columns, out = _columns(1), np.ones(1, np.float32)
    started = time.perf_counter()
    for _ in range(request_log.MAX_PENDING + 10):
        writer.record("REST", SERVABLE, None, columns, out)
    assert time.perf_counter() - started < 5 and writer.dropped == 10 and len(dropped) == 10


def test_sampling_keeps_about_the_rate(tmp_path):
    writer = RequestLog(RequestLogSettings(str(tmp_path), sample_rate=0.1), "taxifare")
    for _ in range(5000):
        writer.record("REST", SERVABLE, None, _columns(1), np.ones(1, np.float32))
    writer.close()
    assert 350 < writer.logged < 650


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--request-log-sample-rate", "0"], "--request-log-sample-rate must be in (0, 1]"),
        (["--request-log-max-bytes", "10"], "--request-log-max-bytes (10) must be at least --request-log-segment-bytes"),
        (["--request-log-segment-seconds", "-1"], "--request-log-segment-seconds must be positive"),
    ],
)
def test_bad_request_log_flags_get_one_line(tmp_path, capsys, flags, message):
    code = cli.main(["serve", "--model-base-path", str(tmp_path), "--request-log", str(tmp_path / "log"), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


def test_read_recent_keeps_the_window_before_the_newest_request(tmp_path):
    """The requests of the window before the newest one, whatever order the segments' names and times are in."""
    for n, (times, mtime) in enumerate((([100.0, 110.0], 110), ([290.0, 300.0], 300), ([250.0, 260.0], 260)), start=1):
        path = tmp_path / f"requests-20261205T000000-1-{n:06d}.jsonl"
        lines = [json.dumps({"time": t, "version": 1, "inputs": {"pickuplat": [40.7]}, "outputs": [9.0]}) for t in times]
        path.write_text("\n".join(lines) + "\n")
        os.utime(path, (mtime, mtime))
    garbled = tmp_path / "requests-20261205T000000-1-000009.jsonl"
    garbled.write_text("not json\n")  # skipped, line by line
    assert sorted(r["time"] for r in request_log.read_recent(str(tmp_path), 45)) == [260.0, 290.0, 300.0]
    assert len(request_log.read_recent(str(tmp_path), 1000)) == 6
