"""submit / schedule / setup against local servers speaking the real protocols.

Vertex AI: the SDK's gRPC transport against tests/_vertex_fake.VertexServer (TLS on 127.0.0.1),
and its REST transport against tests/_vertex_fake.VertexRestServer (plain HTTP). Kubeflow:
kfp.Client against tests/_vertex_fake.KfpServer (v2beta1 REST). GCS: fake-gcs-server. With a
loopback endpoint, submit skips the SDK's pipeline-root bucket check (it would ask
storage.googleapis.com and Cloud Resource Manager), so no storage is involved.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest
from _vertex_fake import KfpServer, VertexRestServer, VertexServer, self_signed

from base.errors import InputError
from pipeline import cli
from pipeline.cloud import cron as cloud_cron
from pipeline.cloud import kubeflow, vertex_jobs
from pipeline.cloud.template import load_template
from pipeline.cloud.vertex_jobs import Location, Run, Schedule

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = str(ROOT / "compiled" / "taxifare_pipeline.yaml")
SA = "runner@test-project.iam.gserviceaccount.com"
IMAGE = "us-central1-docker.pkg.dev/test-project/taxifare/taxifare:0.1.0"


@pytest.fixture(scope="module")
def vertex_template(tmp_path_factory) -> str:
    """The Vertex pipeline compiled for an image in a registry (the committed one names taxifare:0.1.0)."""
    from pipeline.compile import compile_pipeline

    return compile_pipeline(str(tmp_path_factory.mktemp("tpl") / "taxifare_vertex.yaml"), image=IMAGE, target="vertex")


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
def where(vertex_server) -> Location:
    """A Vertex location on the local server; no Google Cloud credentials around."""
    from google.auth.credentials import AnonymousCredentials

    vertex_server.received.clear()
    return Location("test-project", "us-central1", api_endpoint=vertex_server.endpoint, credentials=AnonymousCredentials())


def _root() -> str:
    return f"gs://root-{uuid.uuid4().hex[:12]}/pipeline"


def _run(template: str, **settings) -> Run:
    return Run(template=load_template(template), pipeline_root=settings.pop("pipeline_root", _root()), **settings)


def test_submit_sends_template_root_parameters_account_labels(vertex_server, where, vertex_template):
    out = io.StringIO()
    root = _root()
    params = {"train_steps": 300, "learning_rate": 0.01, "source": "gs://data/taxi/*.csv", "datetime_layout": True}
    run = _run(
        vertex_template,
        pipeline_root=root,
        parameters=params,
        service_account=SA,
        enable_caching=False,
        labels={"team": "fares"},
        network="projects/123/global/networks/vpc",
        display_name="nightly",
    )
    job = vertex_jobs.submit(where, run, job_id="taxifare-test-1", out=out)
    (request,) = vertex_server.requests("CreatePipelineJob")
    sent = request.pipeline_job
    assert request.parent == "projects/test-project/locations/us-central1"
    assert request.pipeline_job_id == "taxifare-test-1"
    assert sent.display_name == "nightly"
    assert sent.pipeline_spec["pipelineInfo"]["name"] == "taxifare-vertex"
    spec = type(sent).to_dict(sent)["pipeline_spec"]
    steps = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]  # the steps run inside the exit handler
    assert "full-train" in steps and "run-summary" in spec["root"]["dag"]["tasks"]
    assert sent.runtime_config.gcs_output_directory == root
    sent_params = dict(sent.runtime_config.parameter_values)
    assert sent_params["train_steps"] == 300 and sent_params["learning_rate"] == 0.01
    assert sent_params["source"] == "gs://data/taxi/*.csv" and sent_params["datetime_layout"] is True
    assert sent.service_account == SA
    assert sent.network == "projects/123/global/networks/vpc"
    assert sent.labels["team"] == "fares"
    # caching off reaches every task of the spec
    tasks = [*spec["root"]["dag"]["tasks"].values(), *steps.values()]
    assert all(not t.get("cachingOptions", {}).get("enableCache") for t in tasks)
    assert job.resource_name.endswith("/pipelineJobs/taxifare-test-1")
    assert "console.cloud.google.com/vertex-ai/locations/us-central1/pipelines/runs/taxifare-test-1?project=test-project" in out.getvalue()


def test_wait_streams_step_states_until_the_end(vertex_server, where, vertex_template):
    job = vertex_jobs.submit(where, _run(vertex_template, service_account=SA), out=io.StringIO())
    out = io.StringIO()
    state = vertex_jobs.watch(job, poll_seconds=0, out=out, sleep=lambda s: None)
    assert state == "PIPELINE_STATE_SUCCEEDED"
    lines = out.getvalue().splitlines()
    assert "  step stage-data: RUNNING" in lines and "  step stage-data: SUCCEEDED" in lines
    assert (
        lines.index("  step stage-data: RUNNING") < lines.index("  step smoke-train: RUNNING") < lines.index("  step full-train: SUCCEEDED")
    )
    assert lines[-1] == "pipeline: PIPELINE_STATE_SUCCEEDED"
    assert len(vertex_server.requests("GetPipelineJob")) >= 4


def _submit_argv(endpoint: str, *more: str) -> list[str]:
    return [
        "submit",
        "--project",
        "test-project",
        "--region",
        "us-central1",
        "--pipeline-root",
        _root(),
        "--api-endpoint",
        endpoint,
        *more,
    ]


def test_cli_submit_end_to_end(vertex_server, where, vertex_template, capsys):
    argv = _submit_argv(vertex_server.endpoint, "--template", vertex_template, "--param", "train_steps=50", "--label", "env=test")
    code = cli.main([*argv, "--service-account", SA, "--no-cache", "--anonymous", "--wait", "--poll-seconds", "0.01"])
    out = capsys.readouterr().out
    assert code == 0, out
    (request,) = vertex_server.requests("CreatePipelineJob")
    assert dict(request.pipeline_job.runtime_config.parameter_values)["train_steps"] == 50
    assert "pipeline: PIPELINE_STATE_SUCCEEDED" in out and "console: https://console.cloud.google.com/" in out


def test_cli_submit_with_a_batch_source_sends_the_batch_step_its_parameters(vertex_server, where, vertex_template, capsys):
    more = ["--param", "batch_source=gs://b-1/trips/a.jsonl,gs://b-1/trips/b.jsonl", "--param", "batch_max_replica_count=4"]
    assert cli.main([*_submit_argv(vertex_server.endpoint, "--template", vertex_template, *more), "--anonymous"]) == 0, capsys.readouterr()
    (request,) = vertex_server.requests("CreatePipelineJob")
    job = type(request.pipeline_job).to_dict(request.pipeline_job)
    values = job["runtime_config"]["parameter_values"]
    assert values["batch_source"] == "gs://b-1/trips/a.jsonl,gs://b-1/trips/b.jsonl" and values["batch_max_replica_count"] == 4
    executors = job["pipeline_spec"]["deploymentSpec"]["executors"]
    assert executors["exec-model-batch-predict"]["container"]["args"][:2] == ["--type", "BatchPredictionJob"]


def test_cli_submit_with_notify_email_compiles_the_email_variant_and_sends_the_recipients(vertex_server, where, capsys):
    """--image --notify-email: the run is the pipeline inside VertexNotificationEmailOp's exit handler, recipients a parameter."""
    argv = _submit_argv(vertex_server.endpoint, "--image", IMAGE, "--notify-email", "ops@example.com", "--notify-email", "ml@example.com")
    assert cli.main([*argv, "--anonymous"]) == 0, capsys.readouterr()
    (request,) = vertex_server.requests("CreatePipelineJob")
    job = type(request.pipeline_job).to_dict(request.pipeline_job)
    assert job["runtime_config"]["parameter_values"]["notify_emails"] == ["ops@example.com", "ml@example.com"]
    root = job["pipeline_spec"]["root"]["dag"]["tasks"]
    email = root["vertex-pipelines-notification-email"]
    assert email["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert email["inputs"]["parameters"]["recipients"]["componentInputParameter"] == "notify_emails"


def test_cli_submit_over_rest_to_a_plain_http_endpoint(capsys, monkeypatch, vertex_template):
    """--api-transport rest: the SDK's REST transport reaches a plain-HTTP local endpoint (no --anonymous needed there)."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    server = VertexRestServer()
    try:
        argv = _submit_argv(server.url, "--template", vertex_template, "--api-transport", "rest", "--param", "train_steps=70")
        assert cli.main(argv) == 0, capsys.readouterr()
        ((path, body),) = server.created
        assert path.startswith("/v1/projects/test-project/locations/us-central1/pipelineJobs")
        assert body["runtimeConfig"]["parameterValues"]["train_steps"] == 70
        assert body["pipelineSpec"]["pipelineInfo"]["name"] == "taxifare-vertex"
        assert "submitted projects/test-project/locations/us-central1/pipelineJobs/" in capsys.readouterr().out
    finally:
        server.stop()


def test_schedule_lifecycle_on_vertex(vertex_server, where, vertex_template):
    root = _root()
    run = _run(vertex_template, pipeline_root=root, parameters={"train_steps": 1000}, service_account=SA)
    when = Schedule(
        cron="TZ=America/New_York 0 6 * * 1-5",
        display_name="weekday-retrain",
        max_concurrent_runs=2,
        start_time="2026-12-01T06:00:00Z",
        end_time="2027-05-31T22:00:00Z",
        max_run_count=100,
    )
    sched = vertex_jobs.create_schedule(where, run, when)
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
    assert job.pipeline_spec["pipelineInfo"]["name"] == "taxifare-vertex"

    schedule_id = sched.resource_name.rsplit("/", 1)[1]
    listed = vertex_jobs.list_schedules(where)
    assert [(i.display_name, i.state, i.cron) for i in listed] == [("weekday-retrain", "ACTIVE", "TZ=America/New_York 0 6 * * 1-5")]
    vertex_jobs.change_schedule(where, schedule_id, "pause")
    assert vertex_jobs.list_schedules(where)[0].state == "PAUSED"
    vertex_jobs.change_schedule(where, sched.resource_name, "resume", catch_up=False)
    (resume,) = vertex_server.requests("ResumeSchedule")
    assert resume.name == sched.resource_name and resume.catch_up is False
    assert vertex_jobs.list_schedules(where)[0].state == "ACTIVE"
    vertex_jobs.change_schedule(where, schedule_id, "delete")
    assert vertex_server.requests("DeleteSchedule")[0].name == sched.resource_name
    assert vertex_jobs.list_schedules(where) == []


def test_cli_schedule_create_and_list(vertex_server, where, vertex_template, capsys):
    base = ["--project", "test-project", "--region", "us-central1", "--api-endpoint", vertex_server.endpoint, "--anonymous"]
    create = ["schedule", "create", "--image", IMAGE, "--cron", "30 5 * * *", "--pipeline-root", _root()]
    code = cli.main([*create, "--max-concurrent-runs", "1", "--start-time", "2026-12-01T01:00:00+01:00", *base])
    assert code == 0, capsys.readouterr()
    sent = vertex_server.requests("CreateSchedule")[0].schedule
    assert sent.cron == "30 5 * * *" and sent.start_time.isoformat().startswith("2026-12-01T00:00:00")
    spec = type(sent.create_pipeline_job_request.pipeline_job).to_dict(sent.create_pipeline_job_request.pipeline_job)["pipeline_spec"]
    assert spec["deploymentSpec"]["executors"]["exec-stage-data"]["container"]["image"] == IMAGE  # compiled for --image
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
    result = kubeflow.submit(
        kubeflow.connect(kfp_server.url),
        kfp_server.url,
        load_template(TEMPLATE),
        {"train_steps": 70, "source": "gs://d/*.csv"},
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


def test_submit_to_kubeflow_with_image_compiles_the_local_pipeline_for_it(kfp_server, capsys):
    assert cli.main(["submit", "--kfp-host", kfp_server.url, "--image", "taxifare:0.2.0", "--param", "train_steps=5"]) == 0, (
        capsys.readouterr()
    )
    run = next(b for m, p, b in kfp_server.received if m == "POST" and p == "/apis/v2beta1/runs")
    images = {e["container"]["image"] for e in run["pipeline_spec"]["deploymentSpec"]["executors"].values()}
    assert images == {"taxifare:0.2.0"} and run["pipeline_spec"]["pipelineInfo"]["name"] == "taxifare"
    assert run["runtime_config"]["parameters"]["train_steps"] == 5


def test_submit_passes_the_fingerprint_of_the_data_the_sources_hold_now(kfp_server, tmp_path, capsys):
    """Changed files change the data_fingerprint parameter, so stage_data's cache misses (issue 12)."""
    fingerprint = pytest.importorskip("components.stage_data.fingerprint")  # comes with the data_fingerprint parameter
    if "data_fingerprint" not in load_template(TEMPLATE).parameter_types:
        pytest.skip("the pipeline has no data_fingerprint parameter yet")
    data = tmp_path / "trips.csv"
    data.write_text("12.5,-73.99,40.75,-73.98,40.76,1,k1\n")
    argv = ["submit", "--kfp-host", kfp_server.url, "--param", f"source={data}"]

    def sent() -> str:
        assert cli.main(argv) == 0, capsys.readouterr()
        run = [b for m, p, b in kfp_server.received if m == "POST" and p == "/apis/v2beta1/runs"][-1]
        return run["runtime_config"]["parameters"]["data_fingerprint"]

    first = sent()
    assert first == fingerprint.data_fingerprint({"source": str(data)}) and sent() == first
    data.write_text("37.5,-73.99,40.75,-73.98,40.76,1,k1\n")  # the fares tripled: same size, new time
    assert sent() != first


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
    assert cloud_cron.cron_to_kfp(cron) == kfp


def test_kfp_refuses_a_zone_the_controller_does_not_use():
    with pytest.raises(InputError, match="controller's time zone"):
        cloud_cron.cron_to_kfp("TZ=America/New_York 0 6 * * *")
    assert cloud_cron.cron_to_kfp("TZ=America/New_York 0 6 * * *", controller_timezone="America/New_York") == "0 0 6 * * *"


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
        cloud_cron.validate_cron(cron)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ setup


def test_setup_plan_is_bucket_level_and_least_privilege(capsys, no_credentials):
    code = cli.main(
        [
            "setup",
            "--project",
            "test-project",
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

    from pipeline.cloud import setup as cloud_setup

    proxy = _IamProxy(gcs_server.url)
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        client = storage.Client(project="p", credentials=AnonymousCredentials())
        name = f"setup-{uuid.uuid4().hex[:10]}"
        plan = cloud_setup.plan_setup(
            "test-project", "us-central1", name, "runner@p.iam.gserviceaccount.com", "trainer@p.iam.gserviceaccount.com"
        )
        done = cloud_setup.apply_setup(plan, project="test-project", client=client)
        assert done[0] == f"created bucket gs://{name} in US"
        assert client.bucket(name).exists()
        (policy,) = proxy.set_calls
        assert [(b["role"], sorted(b["members"])) for b in policy["bindings"]] == [
            (
                "roles/storage.objectUser",
                ["serviceAccount:runner@p.iam.gserviceaccount.com", "serviceAccount:trainer@p.iam.gserviceaccount.com"],
            )
        ]
        again = cloud_setup.apply_setup(plan, project="test-project", client=client)  # idempotent
        assert again[0] == f"bucket gs://{name} exists: kept as it is"
        assert all("already has" in line for line in again[1:])
        assert len(proxy.set_calls) == 1
    finally:
        proxy.stop()
