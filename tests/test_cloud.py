"""submit / schedule / setup against local servers speaking the real protocols.

Vertex AI: the SDK's gRPC transport against tests/_vertex_fake.VertexServer (TLS on 127.0.0.1).
Kubeflow: kfp.Client against tests/_vertex_fake.KfpServer (v2beta1 REST). GCS: fake-gcs-server.
The SDK checks the pipeline root's bucket through google-cloud-storage on submit, so every
submit uses a fresh bucket name on the emulator (an existing bucket would make the SDK ask
Cloud Resource Manager for the project number, which must not leave this machine).
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest
from _vertex_fake import KfpServer, VertexServer, self_signed

from pipeline import cli, vertex
from trainer.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = str(ROOT / "compiled" / "taxifare_pipeline.yaml")
SA = "runner@test-project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def vertex_server(tmp_path_factory):
    key, cert, path = self_signed(str(tmp_path_factory.mktemp("tls")))
    with pytest.MonkeyPatch.context() as mp:
        # gRPC reads its default roots once per process, when it first opens a TLS channel.
        mp.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", path)
        server = VertexServer(key, cert)
        yield server
        server.stop()


@pytest.fixture
def cloud(vertex_server, gcs, monkeypatch):
    """Settings of a Vertex call on the local servers; no Google Cloud credentials around."""
    from google.auth.credentials import AnonymousCredentials

    vertex_server.received.clear()
    return {
        "project": "test-project",
        "region": "us-central1",
        "api_endpoint": vertex_server.endpoint,
        "credentials": AnonymousCredentials(),
    }


def _root() -> str:
    return f"gs://root-{uuid.uuid4().hex[:12]}/pipeline"


def test_submit_sends_template_root_parameters_account_labels(vertex_server, cloud):
    out = io.StringIO()
    root = _root()
    job = vertex.submit(
        TEMPLATE,
        pipeline_root=root,
        parameters={"train_steps": "300", "learning_rate": "0.01", "source": "gs://data/taxi/*.csv", "datetime_layout": "true"},
        service_account=SA,
        enable_caching=False,
        labels={"team": "fares"},
        network="projects/123/global/networks/vpc",
        display_name="nightly",
        job_id="taxifare-test-1",
        out=out,
        **cloud,
    )
    (request,) = vertex_server.requests("CreatePipelineJob")
    sent = request.pipeline_job
    assert request.parent == "projects/test-project/locations/us-central1"
    assert request.pipeline_job_id == "taxifare-test-1"
    assert sent.display_name == "nightly"
    assert sent.pipeline_spec["pipelineInfo"]["name"] == "taxifare"
    spec = type(sent).to_dict(sent)["pipeline_spec"]
    steps = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]  # the steps run inside the exit handler
    assert "full-train" in steps and "run-summary" in spec["root"]["dag"]["tasks"]
    assert sent.runtime_config.gcs_output_directory == root
    params = dict(sent.runtime_config.parameter_values)
    assert params["train_steps"] == 300 and params["learning_rate"] == 0.01
    assert params["source"] == "gs://data/taxi/*.csv" and params["datetime_layout"] is True
    assert sent.service_account == SA
    assert sent.network == "projects/123/global/networks/vpc"
    assert sent.labels["team"] == "fares"
    # caching off reaches every task of the spec
    tasks = [*spec["root"]["dag"]["tasks"].values(), *steps.values()]
    assert all(not t.get("cachingOptions", {}).get("enableCache") for t in tasks)
    assert job.resource_name.endswith("/pipelineJobs/taxifare-test-1")
    assert "console.cloud.google.com/vertex-ai/locations/us-central1/pipelines/runs/taxifare-test-1?project=test-project" in out.getvalue()


def test_wait_streams_step_states_until_the_end(vertex_server, cloud):
    job = vertex.submit(TEMPLATE, pipeline_root=_root(), service_account=SA, out=io.StringIO(), **cloud)
    out = io.StringIO()
    state = vertex.watch(job, poll_seconds=0, out=out, sleep=lambda s: None)
    assert state == "PIPELINE_STATE_SUCCEEDED"
    lines = out.getvalue().splitlines()
    assert "  step stage-data: RUNNING" in lines and "  step stage-data: SUCCEEDED" in lines
    assert (
        lines.index("  step stage-data: RUNNING") < lines.index("  step smoke-train: RUNNING") < lines.index("  step full-train: SUCCEEDED")
    )
    assert lines[-1] == "pipeline: PIPELINE_STATE_SUCCEEDED"
    assert len(vertex_server.requests("GetPipelineJob")) >= 4


def test_cli_submit_end_to_end(vertex_server, cloud, capsys):
    code = cli.main(
        [
            "submit",
            "--template",
            TEMPLATE,
            "--project",
            "test-project",
            "--region",
            "us-central1",
            "--pipeline-root",
            _root(),
            "--param",
            "train_steps=50",
            "--label",
            "env=test",
            "--service-account",
            SA,
            "--no-cache",
            "--api-endpoint",
            vertex_server.endpoint,
            "--anonymous",
            "--wait",
            "--poll-seconds",
            "0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    (request,) = vertex_server.requests("CreatePipelineJob")
    assert dict(request.pipeline_job.runtime_config.parameter_values)["train_steps"] == 50
    assert "pipeline: PIPELINE_STATE_SUCCEEDED" in out and "console: https://console.cloud.google.com/" in out


def test_schedule_lifecycle_on_vertex(vertex_server, cloud):
    root = _root()
    sched = vertex.create_schedule(
        TEMPLATE,
        pipeline_root=root,
        cron="TZ=America/New_York 0 6 * * 1-5",
        parameters={"train_steps": "1000"},
        display_name="weekday-retrain",
        service_account=SA,
        max_concurrent_runs=2,
        start_time="2026-12-01T06:00:00Z",
        end_time="2027-06-01T00:00:00+02:00",
        max_run_count=100,
        **cloud,
    )
    (request,) = vertex_server.requests("CreateSchedule")
    s = request.schedule
    assert s.cron == "TZ=America/New_York 0 6 * * 1-5"
    assert s.display_name == "weekday-retrain"
    assert s.max_concurrent_run_count == 2 and s.max_run_count == 100
    assert s.start_time.isoformat().startswith("2026-12-01T06:00:00")
    assert s.end_time.isoformat().startswith("2027-05-31T22:00:00")
    job = s.create_pipeline_job_request.pipeline_job
    assert s.create_pipeline_job_request.parent == "projects/test-project/locations/us-central1"
    assert job.runtime_config.gcs_output_directory == root
    assert dict(job.runtime_config.parameter_values)["train_steps"] == 1000
    assert job.service_account == SA
    assert job.pipeline_spec["pipelineInfo"]["name"] == "taxifare"

    schedule_id = sched.resource_name.rsplit("/", 1)[1]
    listed = vertex.list_schedules(**cloud)
    assert [(i.display_name, i.state, i.cron) for i in listed] == [("weekday-retrain", "ACTIVE", "TZ=America/New_York 0 6 * * 1-5")]
    vertex.pause_schedule(schedule_id, **cloud)
    assert vertex.list_schedules(**cloud)[0].state == "PAUSED"
    vertex.resume_schedule(sched.resource_name, catch_up=False, **cloud)
    (resume,) = vertex_server.requests("ResumeSchedule")
    assert resume.name == sched.resource_name and resume.catch_up is False
    assert vertex.list_schedules(**cloud)[0].state == "ACTIVE"
    vertex.delete_schedule(schedule_id, **cloud)
    assert vertex_server.requests("DeleteSchedule")[0].name == sched.resource_name
    assert vertex.list_schedules(**cloud) == []


def test_cli_schedule_create_and_list(vertex_server, cloud, capsys):
    base = ["--project", "test-project", "--region", "us-central1", "--api-endpoint", vertex_server.endpoint, "--anonymous"]
    code = cli.main(
        [
            "schedule",
            "create",
            "--template",
            TEMPLATE,
            "--cron",
            "30 5 * * *",
            "--pipeline-root",
            _root(),
            "--max-concurrent-runs",
            "1",
            *base,
        ]
    )
    assert code == 0, capsys.readouterr()
    assert vertex_server.requests("CreateSchedule")[0].schedule.cron == "30 5 * * *"
    assert cli.main(["schedule", "list", *base]) == 0
    assert "'30 5 * * *'" in capsys.readouterr().out


# ------------------------------------------------------------------ Kubeflow Pipelines


@pytest.fixture
def kfp_server():
    server = KfpServer()
    yield server
    server.stop()


def test_submit_to_kubeflow(kfp_server):
    out = io.StringIO()
    result = vertex.submit_kfp(
        TEMPLATE,
        kfp_server.url,
        {"train_steps": "70", "source": "gs://d/*.csv"},
        pipeline_root="gs://kfp-root/p",
        enable_caching=False,
        service_account="pipeline-runner",
        out=out,
    )
    assert result.run_id == "run-1"
    posts = [(path, body) for method, path, body in kfp_server.received if method == "POST"]
    assert [p for p, _ in posts] == ["/apis/v2beta1/experiments", "/apis/v2beta1/runs"]
    assert posts[0][1]["display_name"] == "taxifare"
    run = posts[1][1]
    assert run["experiment_id"] == "exp-1"
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "taxifare"
    assert run["runtime_config"]["parameters"] == {"train_steps": 70, "source": "gs://d/*.csv"}
    assert run["runtime_config"]["pipeline_root"] == "gs://kfp-root/p"
    assert run["service_account"] == "pipeline-runner"
    assert f"{kfp_server.url}/#/runs/details/run-1" in out.getvalue()


def test_recurring_run_on_kubeflow_with_six_field_cron(kfp_server, capsys):
    base = ["--kfp-host", kfp_server.url]
    code = cli.main(
        [
            "schedule",
            "create",
            "--template",
            TEMPLATE,
            "--cron",
            "TZ=UTC 15 4 * * 5-7",
            "--max-concurrent-runs",
            "3",
            "--start-time",
            "2026-12-01T00:00:00Z",
            "--param",
            "train_steps=90",
            *base,
        ]
    )
    assert code == 0, capsys.readouterr()
    body = next(b for m, p, b in kfp_server.received if m == "POST" and p == "/apis/v2beta1/recurringruns")
    assert body["trigger"]["cron_schedule"]["cron"] == "0 15 4 * * 5-6,0"
    assert body["trigger"]["cron_schedule"]["start_time"].startswith("2026-12-01T00:00:00")
    assert int(body["max_concurrency"]) == 3
    assert body["runtime_config"]["parameters"] == {"train_steps": 90}
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "taxifare"
    assert body["no_catchup"] is True
    assert cli.main(["schedule", "list", *base]) == 0
    assert "rr-1" in capsys.readouterr().out
    for verb in ("pause", "resume", "delete"):
        assert cli.main(["schedule", verb, "rr-1", *base]) == 0
    actions = [(m, p) for m, p, _ in kfp_server.received if "rr-1" in p]
    assert actions == [
        ("POST", "/apis/v2beta1/recurringruns/rr-1:disable"),
        ("POST", "/apis/v2beta1/recurringruns/rr-1:enable"),
        ("DELETE", "/apis/v2beta1/recurringruns/rr-1"),
    ]


# ------------------------------------------------------------------ cron


@pytest.mark.parametrize(
    ("cron", "kfp"),
    [
        ("0 6 * * *", "0 0 6 * * *"),
        ("*/15 8-18 * * MON-FRI", "0 */15 8-18 * * MON-FRI"),
        ("0 0 1,15 JAN,JUL 7", "0 0 0 1,15 JAN,JUL 0"),
        ("0 3 * * 0-7", "0 0 3 * * 0-6"),
        ("TZ=Etc/UTC 5 4 * * *", "0 5 4 * * *"),
        ("CRON_TZ=UTC 5 4 ? * *", "0 5 4 ? * *"),
    ],
)
def test_cron_to_kfp(cron, kfp):
    assert vertex.cron_to_kfp(cron) == kfp


def test_kfp_refuses_a_zone_the_controller_does_not_use():
    with pytest.raises(InputError, match="controller's time zone"):
        vertex.cron_to_kfp("TZ=America/New_York 0 6 * * *")
    assert vertex.cron_to_kfp("TZ=America/New_York 0 6 * * *", controller_timezone="America/New_York") == "0 0 6 * * *"


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("", "the cron is empty"),
        ("0 6 * *", "has 4 fields, not 5"),
        ("0 0 6 * * *", "has 6 fields, not 5"),
        ("60 6 * * *", "minute 60 is outside 0-59"),
        ("0 24 * * *", "hour 24 is outside 0-23"),
        ("0 6 0 * *", "day of month 0 is outside 1-31"),
        ("0 6 * 13 *", "month 13 is outside 1-12"),
        ("0 6 * * FUNDAY", "day of week has 'FUNDAY'"),
        ("0 6 * * 5-1", "runs backwards"),
        ("*/0 6 * * *", "step '0' must be a positive number"),
        ("@daily", "macros"),
        ("TZ=Mars/Olympus 0 6 * * *", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_malformed_cron_is_one_clear_line(cron, message):
    with pytest.raises(InputError, match=message) as info:
        vertex.validate_cron(cron)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ bad input, before any request


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """Credentials that cannot be found: GOOGLE_APPLICATION_CREDENTIALS names a missing file.

    (google.auth then fails at once; without the variable it would ask the GCE metadata
    server, whose address it reads at import time: that case runs in a fresh process below.)
    """
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    for name in ("GOOGLE_CLOUD_PROJECT", "TAXIFARE_REGION", "TAXIFARE_PIPELINE_ROOT", "TAXIFARE_BUCKET", "TAXIFARE_KFP_HOST"):
        monkeypatch.delenv(name, raising=False)


_SUBMIT = ["submit", "--project", "p", "--region", "r", "--pipeline-root", "gs://bkt/r"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["submit", "--region", "us-central1", "--pipeline-root", "gs://bkt/r"],
            "missing project: pass --project or set GOOGLE_CLOUD_PROJECT",
        ),
        (["submit", "--project", "p", "--pipeline-root", "gs://bkt/r"], "missing region: pass --region or set TAXIFARE_REGION"),
        (["submit", "--project", "p", "--region", "r"], "missing pipeline root: pass --pipeline-root or set TAXIFARE_PIPELINE_ROOT"),
        (["submit", "--project", "p", "--region", "r", "--pipeline-root", "/tmp/root"], "is not on Cloud Storage"),
        ([*_SUBMIT, "--param", "nope=1"], "no parameter 'nope'"),
        (
            [*_SUBMIT, "--param", "train_steps=many"],
            "train_steps='many' is not an integer",
        ),
        ([*_SUBMIT, "--param", "x"], "is not NAME=VALUE"),
        ([*_SUBMIT, "--label", "Team=x"], "not a valid label"),
        (_SUBMIT, "gcloud auth application-default login"),
        ([*_SUBMIT, "--anonymous"], "--anonymous is only for"),
        (["schedule", "create", "--cron", "0 6 * *", "--project", "p", "--region", "r", "--pipeline-root", "gs://bkt/r"], "not 5"),
        (
            ["schedule", "create", "--cron", "0 6 * * *", "--start-time", "2027-01-01T00:00:00Z", "--end-time", "2026-01-01T00:00:00Z"],
            "is not after --start-time",
        ),
        (["schedule", "create", "--cron", "0 6 * * *", "--start-time", "tomorrow"], "not an RFC 3339 time"),
        (["schedule", "list", "--project", "p", "--region", "r"], "gcloud auth application-default login"),
        (["schedule", "pause", "s1", "--region", "r"], "missing project"),
        (["submit", "--kfp-host", "localhost:8080"], "is not a URL"),
        (["setup", "--project", "p", "--region", "us-central1"], "missing bucket: pass --bucket or set TAXIFARE_BUCKET"),
        (["setup", "--project", "p", "--region", "us-central1", "--bucket", "Bad_Bucket!"], "not a valid bucket name"),
        (["setup", "--project", "p", "--region", "us-central1", "--bucket", "b-1"], "missing service account"),
        (["setup", "--project", "p", "--region", "us-central1", "--bucket", "b-1", "--service-account", "x"], "not an e-mail"),
    ],
)
def test_bad_input_is_one_line_before_any_request(argv, message, no_credentials, capsys):
    if "--template" not in argv and (argv[0] == "submit" or argv[1:2] == ["create"]):
        argv = [*argv, "--template", TEMPLATE]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_no_credentials_at_all_in_a_fresh_process(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    # No gcloud configuration, and no metadata server: the check and the fallback stay on this machine.
    env.update(CLOUDSDK_CONFIG=str(tmp_path), NO_GCE_CHECK="true", GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9")
    argv = ["schedule", "list", "--project", "p", "--region", "us-central1"]
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: no Google Cloud credentials found: run `gcloud auth application-default login`")
    assert proc.stderr.count("\n") == 1


def test_missing_template_names_the_fix(no_credentials, capsys):
    assert cli.main(["submit", "--template", "compiled/none.yaml", "--project", "p", "--region", "r", "--pipeline-root", "gs://bkt/r"]) == 2
    assert "compile it first" in capsys.readouterr().err


# ------------------------------------------------------------------ setup


def test_setup_plan_is_bucket_level_and_least_privilege(capsys, no_credentials):
    code = cli.main(
        [
            "setup",
            "--project",
            "p",
            "--region",
            "europe-west4",
            "--bucket",
            "gs://p-taxifare/",
            "--project-number",
            "123",
            "--training-service-account",
            "trainer@p.iam.gserviceaccount.com",
            "--dry-run",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "taxifare setup would:",
        "  create bucket gs://p-taxifare in EU (if missing; uniform bucket-level access, public access prevention enforced)",
        "  grant roles/storage.objectUser on gs://p-taxifare to serviceAccount:123-compute@developer.gserviceaccount.com",
        "  grant roles/storage.objectUser on gs://p-taxifare to serviceAccount:trainer@p.iam.gserviceaccount.com",
    ]


class _IamProxy:
    """fake-gcs-server has no bucket IAM: this HTTP front answers /b/NAME/iam and forwards the rest."""

    def __init__(self, upstream: str):
        import threading
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.policies: dict[str, dict] = {}
        self.set_calls: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=()):
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                path = self.path.split("?", 1)[0]
                if path.startswith("/storage/v1/b/") and path.endswith("/iam"):
                    bucket = path.split("/")[4]
                    if self.command == "PUT":
                        policy = json.loads(data)
                        owner.set_calls.append(policy)
                        owner.policies[bucket] = {**policy, "etag": "CAI=", "version": 1}
                    policy = owner.policies.get(bucket, {"kind": "storage#policy", "bindings": [], "etag": "CAE=", "version": 1})
                    return self._send(200, json.dumps(policy).encode(), [("Content-Type", "application/json")])
                req = urllib.request.Request(upstream + self.path, data=data, method=self.command, headers=dict(self.headers))
                try:
                    with urllib.request.urlopen(req) as resp:
                        self._send(resp.status, resp.read(), resp.headers.items())
                except urllib.error.HTTPError as exc:
                    self._send(exc.code, exc.read(), exc.headers.items())

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_setup_creates_the_bucket_and_grants_on_it(gcs_server, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from pipeline import cloud_setup

    proxy = _IamProxy(gcs_server.url)
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        client = storage.Client(project="p", credentials=AnonymousCredentials())
        name = f"setup-{uuid.uuid4().hex[:10]}"
        plan = cloud_setup.plan_setup("p", "us-central1", name, "runner@p.iam.gserviceaccount.com", "trainer@p.iam.gserviceaccount.com")
        done = cloud_setup.apply_setup(plan, project="p", client=client)
        assert done[0] == f"created bucket gs://{name} in US"
        assert client.bucket(name).exists()
        (policy,) = proxy.set_calls
        assert [(b["role"], sorted(b["members"])) for b in policy["bindings"]] == [
            (
                "roles/storage.objectUser",
                ["serviceAccount:runner@p.iam.gserviceaccount.com", "serviceAccount:trainer@p.iam.gserviceaccount.com"],
            )
        ]
        again = cloud_setup.apply_setup(plan, project="p", client=client)  # idempotent
        assert again[0] == f"bucket gs://{name} exists: kept as it is"
        assert all("already has" in line for line in again[1:])
        assert len(proxy.set_calls) == 1
    finally:
        proxy.stop()
