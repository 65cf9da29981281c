"""Monitoring end to end: a served version, its request log, `taxifare monitor`, the skew gauges and the webhook.

Traffic drawn like the version's training data raises nothing; the same trips with their
latitudes moved north are flagged on exactly pickuplat and dropofflat, by the command, its
page and the server's ``:taxifare:feature_skew`` gauges, and the webhook gets one message.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest
import requests
from _browser import browser, check_page  # noqa: F401 - fixture
from _serving_helpers import export_untrained, publish
from tensorflow_serving.apis import prediction_service_pb2_grpc
from test_serving_metrics import grpc_predict, scrape

from components.check_drift import logic as drift
from serving import cli, monitor, request_log
from serving.request_log import RequestLogSettings
from serving.server import ModelServer, ServerConfig
from trainer import schema, statistics, synthetic

FEATURES = schema.NUMERIC_FEATURES
MOVED = {"pickuplat", "dropofflat"}
SHIFT = 0.06  # degrees north, about 6.7 km


def _trips(path: str) -> list[dict[str, float]]:
    rows = np.loadtxt(path, delimiter=",", usecols=range(1, 6))
    return [dict(zip(FEATURES, map(float, r), strict=True)) for r in rows]


class _Hook:
    """A local webhook: records each JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                owner.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring")
    data = synthetic.generate(6000, str(tmp / "data"), seed=11, fractions=(0.5, 0.5, 0.0)).paths
    model = export_untrained(tmp / "export", seed=3)
    # the version keeps its training split's statistics, as deploy writes them
    drift.write_stats({"rows": 3000, "columns": statistics.describe(data["train"], schema.Variant.LAB.columns)}, model)
    base = tmp / "models" / "taxifare"
    publish(model, base, 1)
    log_dir = tmp / "requests"
    settings = RequestLogSettings(str(log_dir), sample_rate=1.0, segment_seconds=0.3)
    config = ServerConfig(str(base), rest_port=0, grpc_port=0, poll_interval=0.1, log_requests=False, request_log=settings)
    with ModelServer(config) as server:
        assert server.wait_available(60)
        yield {"server": server, "base": base, "log": log_dir, "trips": _trips(data["valid"]), "tmp": tmp}


def _send(server, trips: list[dict[str, float]]) -> None:
    """Half the trips over REST (50 a request), half over gRPC."""
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/taxifare:predict"
    half = len(trips) // 2
    for i in range(0, half, 50):
        assert requests.post(url, json={"instances": trips[i : i + 50]}, timeout=10).status_code == 200
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for i in range(half, len(trips), 50):
            grpc_predict(stub, trips[i : i + 50])


def _published(log_dir, instances: int, timeout: float = 10.0) -> None:
    """Wait until the complete segments hold ``instances`` logged instances."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(len(r["outputs"]) for r in request_log.read(str(log_dir))) >= instances:
            return
        time.sleep(0.1)
    raise AssertionError(f"the request log did not publish {instances} instances within {timeout}s")


def _skew_gauges(server) -> dict[str, float]:
    samples = scrape(f"http://127.0.0.1:{server.rest_port}")
    return {labels["feature"]: v for labels, v in samples.get(":taxifare:feature_skew", []) if labels["version"] == "1"}


def test_like_training_then_moved(world, capsys):
    server, base, log_dir = world["server"], world["base"], world["log"]
    like, moved = world["trips"][:1000], world["trips"][1000:3000]
    _send(server, like)
    _published(log_dir, len(like))
    # every line: the version, the API, TF Serving's columnar inputs and the answers
    lines = list(request_log.read(str(log_dir)))
    assert {line["api"] for line in lines} == {"REST", "gRPC"} and {line["version"] for line in lines} == {1}
    assert sum(len(line["inputs"]["pickuplat"]) for line in lines) == len(like)
    page = world["tmp"] / "calm.html"
    args = ["monitor", "--request-log", str(log_dir), "--model-base-path", str(base), "--html", str(page)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "no skew or drift above the thresholds" in out and "moved" not in out.split("\n", 1)[1]
    gauges = _skew_gauges(server)
    assert set(gauges) == set(FEATURES) and max(gauges.values()) < monitor.DEFAULT_MAX_SKEW

    started = time.time()
    time.sleep(1.0)  # a gap between the two kinds of traffic, so a window can hold the moved trips only
    shifted = [{**t, **{k: t[k] + SHIFT for k in MOVED}} for t in moved]
    _send(server, shifted)
    _published(log_dir, len(like) + len(shifted))
    hook = _Hook()
    try:
        newest = max(r["time"] for r in request_log.read(str(log_dir)))
        window = f"{newest - (started + 0.5):.3f}"  # from the middle of the gap to the newest logged request
        code = cli.main([*args[:-1], str(world["tmp"] / "moved.html"), "--window", window, "--notify-webhook", hook.url, "--json"])
        out = capsys.readouterr().out
    finally:
        hook.server.shutdown()
    assert code == 1
    rows = json.loads(out[: out.index("\ntaxifare monitor:")])["rows"]
    flagged = {r["feature"] for r in rows if r["verdict"] == "moved" and r["kind"] == "skew"}
    assert flagged == MOVED, rows
    assert {r["instances"] for r in rows if r["kind"] == "skew"} == {len(shifted)}
    assert len(hook.bodies) == 1 and hook.bodies[0]["moved"] is True and "pickuplat" in hook.bodies[0]["text"]
    html = (world["tmp"] / "moved.html").read_text()
    assert 'data-moved="true"' in html and html.count("<svg") == len(FEATURES) + 1 and 'name="viewport"' in html
    # the server's gauges: its window holds both kinds of traffic, the moved features stand out past the threshold
    gauges = _skew_gauges(server)
    assert {f for f, v in gauges.items() if v > monitor.DEFAULT_MAX_SKEW} == MOVED, gauges


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "holds no complete segment"),
        (["--notify-webhook", "ftp://example.com/hook"], "is not an http(s) URL"),
        (["--window", "0"], "--window must be positive"),
    ],
)
def test_monitor_usage_errors_are_one_line(tmp_path, capsys, extra, message):
    (tmp_path / "models").mkdir()
    code = cli.main(["monitor", "--request-log", str(tmp_path / "none"), "--model-base-path", str(tmp_path / "models"), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_an_unreachable_webhook_is_one_line_and_the_verdict_still_counts(world, capsys):
    """A webhook that cannot be reached: one error line; the exit status stays the verdict's (1 when moved, else 2)."""
    args = ["monitor", "--request-log", str(world["log"]), "--model-base-path", str(world["base"]), "--html", str(world["tmp"] / "x.html")]
    code = cli.main([*args, "--notify-webhook", "http://127.0.0.1:9/hook", "--min-instances", "1"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot reach the notify_webhook at 127.0.0.1:9")
    assert code == (1 if "the live requests moved away" in captured.out else 2)


def test_retrain_command_repeats_the_versions_run(tmp_path):
    """--retrain's command line: the recorded parameters of the run that deployed the version, accepted by `taxifare run`."""
    from pipeline import cli as pipeline_cli
    from pipeline import parameters

    run_dir = tmp_path / "pipeline" / "taxifare-2026-12-05-07-00-00-1"
    (run_dir / "full-train" / "model").mkdir(parents=True)
    arguments = {**parameters.defaults(parameters.LOCAL), "train_steps": 77, "max_drift": 0.2, "serving_root": str(tmp_path / "serving")}
    (run_dir / "taxifare-run.json").write_text(json.dumps({"path": str(run_dir), "arguments": arguments}))
    version = tmp_path / "serving" / "taxifare" / "3"
    version.mkdir(parents=True)
    # full_train came from an earlier run's cache: the deploying run (named in the record) is the one repeated
    cached = tmp_path / "pipeline" / "taxifare-2026-12-04-07-00-00-1"
    (cached / "full-train" / "model").mkdir(parents=True)
    (cached / "taxifare-run.json").write_text(json.dumps({"path": str(cached), "arguments": {**arguments, "train_steps": 5}}))
    record = {"run": run_dir.name, "model_uri": str(cached / "full-train" / "model")}
    (version / "taxifare_deploy.json").write_text(json.dumps(record))
    cmd = monitor.retrain_command(str(version))
    parsed = pipeline_cli.build_parser().parse_args(cmd[1:])
    assert parsed.command == "run" and parsed.train_steps == 77 and parsed.pipeline_root == str(tmp_path / "pipeline")
    assert parsed.serving_root == str(tmp_path / "serving")
    assert monitor.threshold_for(str(version), None) == 0.2  # the gate's threshold of that run
    with pytest.raises(ValueError, match="no record of the run"):
        monitor.retrain_command(str(tmp_path))


@pytest.mark.parametrize("width", [390, 1280])
def test_the_page_reads_well_in_chromium(browser, world, width):  # noqa: F811
    """The page of the moved traffic (written by test_like_training_then_moved) in a real browser, phone and laptop widths."""
    page = world["tmp"] / "moved.html"
    if not page.exists():
        pytest.skip("test_like_training_then_moved did not write the page")
    found = browser.measure(page.as_uri(), width, name="monitor")
    check_page(found, width)
    assert found["verdict"][0].startswith("Moved") and "pickuplat" in found["body"] and "dropofflat" in found["body"]
