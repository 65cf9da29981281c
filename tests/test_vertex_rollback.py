"""`taxifare rollback --endpoint`: the Vertex SDK moves an endpoint's traffic back, against a local Vertex API server.

The real command in its own process (gRPC reads its TLS roots once per process), the Vertex AI
SDK's own calls, and a local server speaking Vertex's EndpointService (tests/_vertex_fake.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

NAME = "projects/test-project/locations/us-central1/endpoints/123"


def rollback(vertex, *args: str):
    server, ca = vertex
    env = {**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": ca}
    base = ["--project", "test-project", "--region", "us-central1", "--api-endpoint", server.endpoint, "--anonymous"]
    cmd = [sys.executable, "-m", "pipeline.cli", "rollback", *args, *base]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow  # four runs of the command, each importing the Vertex SDK (~5 s each on a quiet machine)
def test_rollback_moves_the_traffic_to_the_previous_deployed_model(vertex):
    server, _ = vertex
    # "3" was deployed last as a canary with 10%; "2" holds 90%; "1" is older
    server.add_endpoint(NAME, [("1", "taxifare-v1", 300), ("2", "taxifare-v2", 200), ("3", "taxifare-v3", 100)], {"2": 90, "3": 10})
    proc = rollback(vertex, "--endpoint", NAME)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"endpoint {NAME} traffic: 2 (taxifare-v2) 90%, 3 (taxifare-v3) 10% -> 2 (taxifare-v2) 100%"
    assert dict(server.endpoints[NAME].traffic_split) == {"2": 100}  # the canary is out
    update = server.requests("UpdateEndpoint")[-1]
    assert list(update.update_mask.paths) == ["traffic_split"]

    proc = rollback(vertex, "--endpoint", NAME)  # and once more: the model deployed before 2
    assert proc.returncode == 0 and dict(server.endpoints[NAME].traffic_split) == {"1": 100}

    proc = rollback(vertex, "--endpoint", NAME)  # "1" is the oldest: nothing older
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: deployed model 1 is the oldest one on endpoint {NAME}: nothing to roll back to"
    )
    proc = rollback(vertex, "--endpoint", NAME, "--to", "3")  # forward again, to a given deployed model
    assert proc.returncode == 0 and dict(server.endpoints[NAME].traffic_split) == {"3": 100}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--endpoint", NAME, "--to", "9"], "--to 9: deployed model 9 is not on endpoint"),
        (["--endpoint", NAME.replace("123", "999")], "Vertex AI: NotFound"),
    ],
)
def test_rollback_errors_are_one_line(vertex, args, message):
    server, _ = vertex
    server.add_endpoint(NAME, [("1", "taxifare-v1", 300), ("2", "taxifare-v2", 200)], {"2": 100})
    proc = rollback(vertex, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert dict(server.endpoints[NAME].traffic_split) == {"2": 100}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--endpoint", "abc", "--project", "test-project", "--region", "us-central1"], "--endpoint 'abc' must be an endpoint ID"),
        (["--endpoint", "1", "--project", "BAD PROJECT", "--region", "us-central1"], "is not a Google Cloud project ID"),
        (["--endpoint", "1", "--project", "test-project", "--region", "us/../x"], "is not a Vertex AI region"),
        (["--endpoint", "1", "--project", "test-project", "--region", "us-central1", "--anonymous"], "--anonymous is only for"),
    ],
)
def test_endpoint_settings_are_checked_before_any_call(args, message, capsys):
    from pipeline.cli import main as taxifare

    assert taxifare(["rollback", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
