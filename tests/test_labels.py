"""Version labels, canary and rollback: the commands, the label routes, and a rollback and a promote under load.

Real servers on loopback, the stock gRPC stub, distinct models per version (untrained, seeded:
every version answers differently, so an answer names the version that computed it).
"""

from __future__ import annotations

import json
import threading
import time

import grpc
import pytest
import requests
import tensorflow as tf
from _serving_helpers import INSTANCE, export_untrained, inprocess, publish
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from base import layout
from pipeline.cli import main as taxifare
from serving.server import ModelServer, ServerConfig
from trainer import schema


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("label-exports")
    return {v: export_untrained(out, seed) for v, seed in ((1, 21), (2, 22), (3, 23))}


@pytest.fixture(scope="module")
def expected(exports):
    values = {v: inprocess(path, [INSTANCE])[0] for v, path in exports.items()}
    assert len(set(values.values())) == 3
    return values


def base_with(tmp_path, exports, versions=(1, 2, 3), rmses=None):
    base = tmp_path / "taxifare"
    for v in versions:
        path = publish(exports[v], base, v)
        record = {"version": v, "verification": {"test_rmse": (rmses or {}).get(v, 4.0 - v / 10), "blessed": True}}
        (path / layout.DEPLOY_FILE).write_text(json.dumps(record))
    return base


def grpc_request(label: str | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "taxifare"
    if label:
        request.model_spec.version_label = label
    for feature in schema.NUMERIC_FEATURES:
        request.inputs[feature].CopyFrom(tf.make_tensor_proto([INSTANCE[feature]], dtype=tf.float32))
    return request


# -- the commands --------------------------------------------------------------------------------
def test_versions_label_and_rollback_commands(exports, tmp_path, capsys):
    base = base_with(tmp_path, exports)
    (base / "4").mkdir()  # broken: no saved_model.pb
    p = str(base)
    assert taxifare(["versions", "--model-base-path", p]) == 0
    table = capsys.readouterr().out
    assert "$3.700" in table and "no saved_model.pb" in table
    rows = {int(line.split()[0]): line for line in table.splitlines() if line.strip()[:1].isdigit()}
    assert " * " in rows[3] and " * " not in rows[2]  # no stable label: the newest serves

    assert taxifare(["label", "--model-base-path", p, "stable=2", "canary=3"]) == 0
    out = capsys.readouterr().out
    assert "label stable: (none) -> 2" in out and "label canary: (none) -> 3" in out and "default route: version 3 -> version 2" in out
    assert layout.read_labels(p) == {"stable": 2, "canary": 3}
    assert taxifare(["versions", "--model-base-path", p, "--json"]) == 0
    found = {row["version"]: row for row in json.loads(capsys.readouterr().out)}
    assert found[2]["default"] and found[2]["labels"] == ["stable"] and found[3]["labels"] == ["canary"]
    assert found[2]["loaded"] == found[3]["loaded"] == "yes" and found[1]["loaded"] == "no" and not found[4]["complete"]

    assert taxifare(["rollback", "--model-base-path", p]) == 0
    assert "default route: version 2 -> version 1" in capsys.readouterr().out
    assert taxifare(["rollback", "--model-base-path", p]) == 2
    assert "the oldest good version: nothing to roll back to" in capsys.readouterr().err
    assert taxifare(["rollback", "--model-base-path", p, "--to", "3"]) == 0
    assert "label stable: 1 -> 3" in capsys.readouterr().out
    assert taxifare(["label", "--model-base-path", p, "canary="]) == 0
    assert layout.read_labels(p) == {"stable": 3}
    capsys.readouterr()


def test_versions_name_the_rows_of_each_figure_and_score_on_the_same_rows(exports, tmp_path, capsys, real_valid):
    base = base_with(tmp_path, exports)
    for v, rows_id in ((1, "aaaaaaaa11"), (2, "bbbbbbbb22"), (3, "bbbbbbbb22")):
        record = json.loads((base / str(v) / layout.DEPLOY_FILE).read_text())
        (base / str(v) / layout.DEPLOY_FILE).write_text(json.dumps({**record, "test_data_hash": rows_id}))
    assert taxifare(["versions", "--model-base-path", str(base)]) == 0
    table = capsys.readouterr().out
    rows = {int(line.split()[0]): line.split() for line in table.splitlines() if line.strip()[:1].isdigit()}
    assert rows[1][1:3] == ["$3.900", "aaaaaaaa"] and rows[2][1:3] == ["$3.800", "bbbbbbbb"]
    assert "figures on different rows are not comparable" in table and "--score FILE" in table

    assert taxifare(["versions", "--model-base-path", str(base), "--score", str(real_valid), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["rows"] == 1665 and [s["version"] for s in scored["versions"]] == [3, 2, 1]
    assert all(s["rmse"] > 0 and s["mae"] > 0 and not s["problem"] for s in scored["versions"])
    assert len({s["rmse"] for s in scored["versions"]}) == 3  # three models, each scored on the same rows
    assert scored["versions"][0]["routes"] == ["default"]
    assert taxifare(["versions", "--model-base-path", str(base), "--score", str(real_valid)]) == 0
    assert "every version on the same 1,665 rows of taxi-valid.csv" in capsys.readouterr().out
    assert taxifare(["versions", "--model-base-path", str(base), "--score", str(tmp_path / "none*.csv")]) == 2
    assert "none*.csv" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["label", "--model-base-path", "{p}", "stable=9"], "stable=9: version 9 is not a complete version"),
        (["label", "--model-base-path", "{p}", "stable=4"], "stable=4: version 4 is not a complete version"),
        (["label", "--model-base-path", "{p}", "sta-ble=1"], "version label 'sta-ble' must be letters, digits or '_'"),
        (["label", "--model-base-path", "{p}", "stable"], "'stable' is not NAME=VERSION"),
        (["label", "--model-base-path", "{p}", "stable=x"], "'x' is not a version number"),
        (["rollback", "--model-base-path", "{p}", "--to", "0"], "--to 0 is not a version number"),
        (["rollback", "--model-base-path", "{p}", "--to", "7"], "--to 7: version 7 is not a complete version"),
        (["versions", "--model-base-path", "{p}/nope"], "is not a directory"),
        (["versions", "--model-base-path", "{p}", "--url", "http://127.0.0.1:9"], "--url http://127.0.0.1:9"),
    ],
)
def test_command_errors_are_one_line(exports, tmp_path, capsys, argv, message):
    base = base_with(tmp_path, exports, versions=(1,))
    (base / "4").mkdir()
    assert taxifare([a.replace("{p}", str(base)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


# -- the routes -----------------------------------------------------------------------------------
def test_label_routes_over_rest_and_grpc(exports, expected, tmp_path, capsys):
    base = base_with(tmp_path, exports)
    layout.write_labels(str(base), {"stable": 1, "canary": 3})
    with ModelServer(ServerConfig(str(base), rest_port=0, grpc_port=0, poll_interval=0.1)) as server:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/taxifare"
        deadline = time.monotonic() + 60
        while server.manager.labels != {"stable": 1, "canary": 3} and time.monotonic() < deadline:
            time.sleep(0.05)
        body = {"instances": [INSTANCE]}
        for route, version in (("", 1), ("/labels/stable", 1), ("/labels/canary", 3), ("/versions/3", 3)):
            answer = requests.post(f"{url}{route}:predict", json=body, timeout=10)
            assert answer.status_code == 200 and answer.headers["X-Model-Version"] == str(version), route
            assert answer.json()["predictions"] == [expected[version]]
        assert requests.get(f"{url}/labels/canary/metadata", timeout=10).json()["model_spec"]["version"] == "3"
        assert requests.get(f"{url}/labels/canary", timeout=10).json()["model_version_status"][0]["version"] == "3"
        missing = requests.post(f"{url}/labels/blue:predict", json=body, timeout=10)
        assert missing.status_code == 404 and "version label 'blue'" in missing.json()["error"]
        mixed = f"http://127.0.0.1:{server.rest_port}/V1/Models/taxifare/LABELS/canary:Predict"  # routes match case-insensitively
        answer = requests.post(mixed, json=body, timeout=10)
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "3"
        bad = requests.get(f"{url}/labels/can-ary/metadata", timeout=10)
        assert bad.status_code == 404 and "not a label name" in bad.json()["error"]
        metrics = requests.get(f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics", timeout=10).text
        assert ':tensorflow:serving:request_count{model_name="taxifare",status="OK"}' in metrics
        states = {s["version"]: s["state"] for s in requests.get(url, timeout=10).json()["model_version_status"]}
        assert states == {"1": "AVAILABLE", "3": "AVAILABLE"}  # version 2: no route names it, never loaded
        assert taxifare(["versions", "--model-base-path", str(base), "--url", f"http://127.0.0.1:{server.rest_port}", "--json"]) == 0
        rows = {row["version"]: row for row in json.loads(capsys.readouterr().out)}
        assert {v: row["loaded"] for v, row in rows.items()} == {1: "AVAILABLE", 2: "-", 3: "AVAILABLE"}

        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        response = stub.Predict(grpc_request("canary"), timeout=10)
        assert response.model_spec.version.value == 3
        assert tf.make_ndarray(response.outputs["fare_amount"]).tolist() == [expected[3]]
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(grpc_request("blue"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

        # a labels file that is not valid JSON: the routes keep their versions
        (base / layout.LABELS_FILE).write_text("{broken")
        time.sleep(0.5)
        assert server.manager.labels == {"stable": 1, "canary": 3}
        assert requests.post(f"{url}/labels/canary:predict", json=body, timeout=10).status_code == 200


def test_rollback_and_promote_under_load(exports, expected, tmp_path, capsys):
    """8 clients; a rollback then a promote mid-run: no failed request, each answer from the version its route names."""
    base = base_with(tmp_path, exports)
    layout.write_labels(str(base), {"stable": 2, "canary": 3})
    routes = ["", "/labels/stable", "/labels/canary", "", "", "/labels/stable"]  # 6 REST clients, 2 gRPC clients
    answers: list[tuple[str, float, float, int, float]] = []
    failures: list[str] = []
    lock = threading.Lock()
    with ModelServer(ServerConfig(str(base), rest_port=0, grpc_port=0, poll_interval=0.2, log_requests=False)) as server:
        deadline = time.monotonic() + 60
        while server.manager.labels != {"stable": 2, "canary": 3} and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/taxifare"
        stop = threading.Event()

        def rest_client(route: str) -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    start = time.monotonic()
                    try:
                        answer = session.post(f"{url}{route}:predict", json={"instances": [INSTANCE]}, timeout=20)
                        end = time.monotonic()
                        if answer.status_code != 200:
                            raise RuntimeError(f"{answer.status_code} {answer.text}")
                        with lock:
                            answers.append((route, start, end, int(answer.headers["X-Model-Version"]), answer.json()["predictions"][0]))
                    except Exception as exc:
                        with lock:
                            failures.append(f"REST {route}: {exc}")

        def grpc_client(label: str | None) -> None:
            channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = grpc_request(label)
            route = f"/labels/{label}" if label else ""
            while not stop.is_set():
                start = time.monotonic()
                try:
                    response = stub.Predict(request, timeout=20)
                    value = tf.make_ndarray(response.outputs["fare_amount"]).tolist()[0]
                    with lock:
                        answers.append((route, start, time.monotonic(), response.model_spec.version.value, value))
                except Exception as exc:
                    with lock:
                        failures.append(f"gRPC {route}: {exc}")
            channel.close()

        threads = [threading.Thread(target=rest_client, args=(r,)) for r in routes]
        threads += [threading.Thread(target=grpc_client, args=(label,)) for label in (None, "canary")]
        for t in threads:
            t.start()

        def change(argv: list[str], wanted: int) -> tuple[float, float]:
            """Run the command; when it started, and when the server's default route served ``wanted``."""
            started = time.monotonic()
            assert taxifare(argv) == 0
            limit = time.monotonic() + 30
            while server.manager.current_version != wanted and time.monotonic() < limit:
                time.sleep(0.005)
            assert server.manager.current_version == wanted
            return started, time.monotonic()

        time.sleep(1.5)
        rollback = change(["rollback", "--model-base-path", str(base)], 1)  # stable 2 -> 1 (version 1 loads first)
        time.sleep(1.5)
        promote = change(["label", "--model-base-path", str(base), "stable=3"], 3)  # the canary becomes stable
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(30)
        states = {s["version"]: s["state"] for s in server.manager.status()}
    out = capsys.readouterr().out
    assert "default route: version 2 -> version 1" in out and "label stable: 1 -> 3" in out

    assert not failures, failures[:5]
    assert len(answers) > 200, len(answers)
    wrong = [a for a in answers if a[4] != expected[a[3]]]
    assert not wrong, wrong[:3]  # every answer is what the version it names computes

    def allowed(route: str, start: float, end: float) -> set[int]:
        """The versions the route named while the request was in flight."""
        if route == "/labels/canary":
            return {3}
        names = set()
        for since, until, version in ((0.0, rollback[1], 2), (rollback[0], promote[1], 1), (promote[0], float("inf"), 3)):
            if start <= until and end >= since:
                names.add(version)
        return names

    off_route = [a for a in answers if a[3] not in allowed(a[0], a[1], a[2])]
    assert not off_route, off_route[:3]
    for route in ("", "/labels/stable"):
        served = {a[3] for a in answers if a[0] == route}
        assert served == {1, 2, 3}, (route, served)
    assert states["3"] == "AVAILABLE" and states["1"] == "END" and states["2"] == "END"  # no route names 1 or 2 any more
