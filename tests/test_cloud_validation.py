"""Bad input to setup / submit / schedule stops at the front door: one line, exit 2, nothing sent.

Each case runs with credentials that cannot be found and no endpoint of ours: had a check let
the value through, the command would have gone on to the credential look-up and said so
instead. Cases that need a reachable engine use the local servers of tests/_vertex_fake.py and
check that they received nothing. The fresh-process tests watch a stand-in metadata server and
a stand-in storage API: a loopback --api-endpoint must reach neither.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _vertex_fake import KfpServer, VertexRestServer

from base import cloud_checks
from pipeline import cli
from pipeline.cloud.template import check_image, load_template

ROOT = Path(__file__).resolve().parents[1]
LOCAL_TEMPLATE = str(ROOT / "compiled" / "taxifare_pipeline.yaml")
COMMITTED_VERTEX = str(ROOT / "compiled" / "taxifare_vertex.yaml")
IMAGE = "us-central1-docker.pkg.dev/test-project/taxifare/taxifare:0.1.0"
WHERE = ["--project", "test-project", "--region", "us-central1"]
SUBMIT = ["submit", *WHERE, "--pipeline-root", "gs://test-bucket/root"]
CREATE = ["schedule", "create", "--cron", "0 6 * * *", *WHERE, "--pipeline-root", "gs://test-bucket/root"]
SETUP = ["setup", *WHERE, "--bucket", "test-bucket", "--service-account", "runner@test-project.iam.gserviceaccount.com"]


@pytest.fixture(scope="module")
def vertex_template(tmp_path_factory) -> str:
    from pipeline.compile import compile_pipeline

    return compile_pipeline(str(tmp_path_factory.mktemp("tpl") / "taxifare_vertex.yaml"), image=IMAGE, target="vertex")


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("odd")
    (folder / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (folder / "notes.yaml").write_text("just: a mapping\n")
    return {"binary": str(folder / "binary.yaml"), "dir": str(folder), "notes": str(folder / "notes.yaml")}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CASES = [
    # --param: the same checks as taxifare run
    ([*SUBMIT, "--param", "train_steps=-5"], "train_steps must be a positive integer"),
    ([*SUBMIT, "--param", "hidden_units=abc"], "hidden_units must be positive layer sizes"),
    ([*SUBMIT, "--param", "learning_rate=nan"], ("learning_rate", "finite number")),
    ([*SUBMIT, "--param", "max_rmse=inf"], ("max_rmse", "finite number")),
    ([*SUBMIT, "--param", "max_rmse=-1"], "max_rmse must be a positive number"),
    ([*SUBMIT, "--param", "source="], "source is empty"),
    ([*SUBMIT, "--param", "eval_fraction=0.7"], "eval_fraction must be between 0 and 0.5"),
    ([*SUBMIT, "--param", "train_steps=many"], ("train_steps", "'many'")),
    ([*SUBMIT, "--param", "nope=1"], "no parameter 'nope'"),
    ([*SUBMIT, "--param", "x"], "is not NAME=VALUE"),
    ([*SUBMIT, "--param", "replica_count=0"], "replica_count must be a positive integer"),
    ([*SUBMIT, "--param", "traffic_percentage=101"], ("traffic_percentage", "101")),
    ([*SUBMIT, "--param", "min_replicas=3", "--param", "max_replicas=2"], ("min_replicas (3)", "max_replicas (2)")),
    ([*SUBMIT, "--param", "batch_source=data/trips.csv"], "batch_source data/trips.csv: a Vertex AI job reads gs:// files"),
    ([*SUBMIT, "--param", "batch_source=bq://nope"], "give one BigQuery table as bq://PROJECT.DATASET.TABLE"),
    ([*SUBMIT, "--param", "batch_starting_replica_count=3"], ("batch_starting_replica_count (3)", "batch_max_replica_count (2)")),
    # names and formats
    (["submit", "--region", "us-central1", "--pipeline-root", "gs://b-1/r"], "missing project: pass --project or set GOOGLE_CLOUD_PROJECT"),
    (["submit", "--project", "test-project", "--pipeline-root", "gs://b-1/r"], "missing region: pass --region or set TAXIFARE_REGION"),
    (["submit", *WHERE], "missing pipeline root: pass --pipeline-root or set TAXIFARE_PIPELINE_ROOT"),
    ([*SUBMIT, "--project", "BAD PROJECT"], "--project 'BAD PROJECT' is not a project id"),
    ([*SUBMIT, "--project", "p"], "is not a project id"),
    ([*SUBMIT, "--region", "us-central1/../x"], "is not a Vertex AI region"),
    ([*SUBMIT, "--region", "mars-north1"], "--region 'mars-north1' is not a Vertex AI region"),
    ([*SUBMIT, "--pipeline-root", "/tmp/root"], "is not on Cloud Storage"),
    ([*SUBMIT, "--pipeline-root", "gs://192.168.1.1/root"], "'192.168.1.1' is not a valid bucket name"),
    ([*SUBMIT, "--pipeline-root", "gs://Bad_Bucket!/root"], "is not a valid bucket name"),
    ([*SUBMIT, "--service-account", "nope"], "--service-account 'nope' is not a service account e-mail"),
    ([*SUBMIT, "--network", "bad"], "--network 'bad' is not a network path"),
    ([*SUBMIT, "--network", "projects/my-project/global/networks/vpc"], "is not a network path"),
    ([*SUBMIT, "--label", "Team=x"], "not a valid label"),
    ([*SUBMIT, "--poll-seconds", "-1"], "--poll-seconds must be a positive number"),
    ([*SUBMIT, "--poll-seconds", "nan"], "--poll-seconds must be a positive number"),
    ([*SUBMIT, "--api-endpoint", "bad host/x"], "is not HOST:PORT"),
    ([*SUBMIT, "--anonymous"], "--anonymous is only for"),
    # templates and images
    ([*SUBMIT, "--template", LOCAL_TEMPLATE], "is the local/Kubeflow pipeline"),
    ([*SUBMIT, "--template", COMMITTED_VERTEX], "runs its steps in 'taxifare:0.1.0', which names no registry host"),
    ([*SUBMIT, "--template", "compiled/none.yaml"], "compile it first"),
    ([*SUBMIT, "--template", "{binary}"], "is not a text file"),
    ([*SUBMIT, "--template", "{dir}"], "is a directory"),
    ([*SUBMIT, "--template", "{notes}"], "is not a compiled pipeline"),
    ([*SUBMIT, "--image", "taxifare:0.1.0"], "--image 'taxifare:0.1.0' names no registry host"),
    ([*SUBMIT, "--image", "us-docker.pkg.dev/p/r/taxifare:latest"], "is not pinned to a version"),
    ([*SUBMIT, "--image", "us-docker.pkg.dev/p/r/taxifare"], "is not pinned to a version"),
    ([*SUBMIT, "--image", IMAGE, "--template", "{vertex}"], "pass --template or --image, not both"),
    # e-mail notification (Vertex AI's VertexNotificationEmailOp)
    ([*SUBMIT, "--notify-email", "ops@example.com"], ("has no e-mail notification", "pass --image")),
    ([*SUBMIT, "--param", "notify_emails=ops@example.com"], "has no e-mail notification"),
    ([*SUBMIT, "--image", IMAGE, "--notify-email", "ops"], "notify_emails: 'ops' is not an e-mail address"),
    ([*SUBMIT, "--image", IMAGE, *[f"--notify-email=a{i}@example.com" for i in range(4)]], ("4 recipients", "at most 3")),
    ([*CREATE, "--image", IMAGE, "--notify-email", "a b@example.com"], "is not an e-mail address"),
    (["submit", "--kfp-host", "http://127.0.0.1:{closed}", "--notify-email", "ops@example.com"], "on Kubeflow pass --param notify_webhook"),
    # Kubeflow
    (["submit", "--kfp-host", "localhost:8080"], "is not a URL"),
    (["submit", "--kfp-host", "http://127.0.0.1:{closed}"], "cannot be reached"),
    (["schedule", "list", "--kfp-host", "http://127.0.0.1:{closed}"], "cannot be reached"),
    (["submit", "--kfp-host", "http://127.0.0.1:{closed}", "--template", "{vertex}"], "is the Vertex AI pipeline"),
    (["submit", "--kfp-host", "http://127.0.0.1:{closed}", "--param", "train_steps=0"], "train_steps must be a positive integer"),
    # schedules
    (["schedule", "create", "--cron", "0 6 * *", *WHERE, "--pipeline-root", "gs://b-1/r"], "not 5"),
    (["schedule", "create", "--cron", "0 6 31 2 *", *WHERE], "never runs: no chosen month has day 31"),
    (["schedule", "create", "--cron", "0 6 30 FEB *", *WHERE], "never runs"),
    (["schedule", "create", "--cron", "0 6 31 4,6,9,11 *", *WHERE], "never runs"),
    ([*CREATE, "--max-concurrent-runs", "0"], "--max-concurrent-runs must be at least 1"),
    ([*CREATE, "--max-runs", "0"], "--max-runs must be at least 1"),
    ([*CREATE, "--start-time", "2027-01-01T00:00:00Z", "--end-time", "2026-01-01T00:00:00Z"], "is not after --start-time"),
    ([*CREATE, "--start-time", "tomorrow"], "not an RFC 3339 time"),
    ([*CREATE, "--image", "taxifare:0.1.0"], "names no registry host"),
    ([*CREATE, "--param", "learning_rate=-0.1"], "learning_rate must be a small positive number"),
    (["schedule", "pause", "", *WHERE], "missing schedule"),
    (["schedule", "pause", "two words", *WHERE], "is not an id"),
    (["schedule", "delete", "projects/p/elsewhere/1", *WHERE], "is not an id"),
    (["schedule", "resume", "s1", "--region", "us-central1"], "missing project"),
    (["schedule", "list", "--project", "test-project", "--region", "mars-north1"], "is not a Vertex AI region"),
    # setup
    (["setup", *WHERE], "missing bucket: pass --bucket or set TAXIFARE_BUCKET"),
    ([*SETUP, "--bucket", "192.168.1.1"], "--bucket '192.168.1.1' is not a valid bucket name"),
    ([*SETUP, "--bucket", "Bad_Bucket!"], "is not a valid bucket name"),
    ([*SETUP, "--bucket", "my-google-bucket"], "is not a valid bucket name"),
    ([*SETUP, "--region", "mars-north1"], "is not a Vertex AI region"),
    ([*SETUP, "--project", "BAD PROJECT"], "is not a project id"),
    (["setup", *WHERE, "--bucket", "test-bucket", "--project-number", "abc"], "--project-number 'abc' is not a project number"),
    ([*SETUP, "--location", "MARS"], "--location 'MARS' is not a bucket location"),
    (["setup", *WHERE, "--bucket", "b-1"], "missing service account"),
    ([*SETUP, "--service-account", "x"], "is not a service account e-mail"),
    ([*SETUP, "--training-service-account", "trainer"], "--training-service-account 'trainer' is not a service account e-mail"),
    # a hostile pass: paths that climb out of the bucket, local data, odd images and names
    (["submit", *WHERE, "--pipeline-root", "gs://my-bucket/../x"], "'..' path segment"),
    (["submit", *WHERE, "--pipeline-root", "gs://my-bucket/./a"], "'.' or '..' path segment"),
    (["submit", *WHERE, "--pipeline-root", "gs://my-bucket/ /a"], "blank"),
    (["submit", *WHERE, "--pipeline-root", "gs:///root"], "names no bucket: write gs://BUCKET/pipeline-root"),
    ([*SUBMIT, "--param", "source=/gcs/my-bucket/../x/*.csv"], "'..' path segment"),
    ([*SUBMIT, "--param", "source=data/*.csv"], "is a path on this machine, which Vertex AI cannot read"),
    ([*SUBMIT, "--param", "eval_source=/home/me/valid.csv"], "is a path on this machine"),
    ([*SUBMIT, "--image", "us-central1-docker.pkg.dev/my-proj/Taxi/taxifare:0.1.0"], "has capitals in its repository path"),
    ([*SUBMIT, "--display-name", "x" * 200], "--display-name has 200 characters: Vertex AI takes 1 to 128"),
    ([*CREATE, "--display-name", "x" * 129], "--display-name has 129 characters"),
    # last of all: the credentials
    ([*SUBMIT], "no Google Cloud credentials found: run `gcloud auth application-default login`"),
    (["schedule", "list", *WHERE], "no Google Cloud credentials found"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[f"{i:02d}-{' '.join(a[:1] + a[-2:])}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_before_any_request(argv, message, vertex_template, odd_files, no_credentials, capsys):
    values = {**odd_files, "vertex": vertex_template, "closed": _closed_port()}
    argv = [a.format(**values) if "{" in a else a for a in argv]
    sends = argv[0] == "submit" or argv[:2] == ["schedule", "create"]
    if sends and "--template" not in argv and "--image" not in argv and "--kfp-host" not in argv:
        argv = [*argv, "--template", vertex_template]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in (message,) if isinstance(message, str) else message:
        assert fragment in err, err


def test_nothing_reaches_a_reachable_engine(vertex_template, no_credentials, capsys):
    """With the engines up and anonymous access allowed, a bad value still sends nothing."""
    kfp = KfpServer()
    rest = VertexRestServer()
    try:
        on_vertex = [*SUBMIT, "--api-endpoint", rest.url, "--api-transport", "rest", "--anonymous", "--template", vertex_template]
        for extra in (["--param", "train_steps=-5"], ["--template", LOCAL_TEMPLATE], ["--network", "bad"]):
            assert cli.main([*on_vertex, *extra]) == 2
        on_kfp = ["submit", "--kfp-host", kfp.url]
        for extra in (["--param", "learning_rate=nan"], ["--template", vertex_template]):
            assert cli.main([*on_kfp, *extra]) == 2
        assert cli.main(["schedule", "create", "--cron", "0 6 31 2 *", "--kfp-host", kfp.url]) == 2
        assert cli.main(["schedule", "pause", "", "--kfp-host", kfp.url]) == 2
        assert rest.created == [] and kfp.received == []
        assert capsys.readouterr().err.count("\n") == 7
    finally:
        kfp.stop()
        rest.stop()


class _Recorder:
    """An HTTP server on loopback that answers 404 and records every request (a stand-in metadata or storage API)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _any(self):
                owner.paths.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_PATCH = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _fresh(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)


@pytest.mark.slow  # two fresh processes importing the Vertex SDK, and google-auth's probe retries: ~20 s here
def test_a_local_endpoint_asks_neither_the_metadata_server_nor_storage(tmp_path, vertex_template):
    """The probe and the SDK's bucket check would go to these recorders; with a loopback endpoint they stay silent."""
    metadata, storage = _Recorder(), _Recorder()
    rest = VertexRestServer()
    env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "NO_GCE_CHECK")}
    env.update(
        CLOUDSDK_CONFIG=str(tmp_path),
        GCE_METADATA_HOST=metadata.address,
        GCE_METADATA_IP=metadata.address,
        STORAGE_EMULATOR_HOST=f"http://{storage.address}",
    )
    try:
        local = _fresh([*SUBMIT, "--template", vertex_template, "--api-endpoint", rest.url, "--api-transport", "rest"], env)
        assert local.returncode == 0, local.stderr
        assert len(rest.created) == 1 and metadata.paths == [] and storage.paths == []
        # The control: without a local endpoint the same environment does reach the stand-in metadata server.
        remote = _fresh(["schedule", "list", *WHERE], env)
        assert remote.returncode == 2 and remote.stderr.count("\n") == 1, remote.stderr
        assert metadata.paths, "the credential look-up did not probe the (stand-in) metadata server"
    finally:
        for server in (metadata, storage, rest):
            server.stop()


def test_no_credentials_at_all_in_a_fresh_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    # No gcloud configuration, and no metadata server: the check and the fallback stay on this machine.
    env.update(CLOUDSDK_CONFIG=str(tmp_path), NO_GCE_CHECK="true", GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9")
    proc = _fresh(["schedule", "list", *WHERE], env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: no Google Cloud credentials found: run `gcloud auth application-default login`")
    assert proc.stderr.count("\n") == 1


# ------------------------------------------------------------------ the checks themselves


def test_region_list_is_inside_the_sdks():
    from google.cloud.aiplatform import constants

    assert cloud_checks.VERTEX_REGIONS <= constants.base.SUPPORTED_REGIONS
    assert "us-central1" in cloud_checks.VERTEX_REGIONS and "global" not in cloud_checks.VERTEX_REGIONS


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("my-bucket", True),
        ("my_bucket.example.com", True),
        ("abc", True),
        ("ab", False),
        ("a" * 64, False),
        ("192.168.1.1", False),
        ("goog-bucket", False),
        ("my-google-data", False),
        ("-dash", False),
        ("UPPER", False),
        ("a..b", False),
        ("gs://ok-bucket/", True),
    ],
)
def test_bucket_names(value, ok):
    if ok:
        assert cloud_checks.check_bucket_name(value) == value.removeprefix("gs://").rstrip("/")
    else:
        with pytest.raises(cloud_checks.InputError, match="is not a valid bucket name"):
            cloud_checks.check_bucket_name(value)


@pytest.mark.parametrize(
    ("image", "ok"),
    [
        (IMAGE, True),
        ("gcr.io/p/taxifare:1.2.3", True),
        ("localhost:5000/taxifare:0.1.0", True),
        ("us-docker.pkg.dev/p/r/taxifare@sha256:" + "a" * 64, True),
        ("taxifare:0.1.0", False),
        ("library/taxifare:0.1.0", False),
        ("gcr.io/p/taxifare", False),
        ("gcr.io/p/taxifare:latest", False),
        ("localhost:5000/taxifare", False),
        ("gcr.io/p/taxifare@sha256:abc", False),
    ],
)
def test_images_need_a_registry_and_a_version(image, ok):
    if ok:
        assert check_image(image) == image
    else:
        with pytest.raises(cloud_checks.InputError):
            check_image(image)


def test_kubeflow_images_need_a_version_but_no_registry():
    assert check_image("taxifare:0.2.0", registry=False) == "taxifare:0.2.0"
    for image in ("taxifare", "taxifare:latest"):
        with pytest.raises(cloud_checks.InputError, match="not pinned"):
            check_image(image, registry=False)


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("127.0.0.1:8080", True),
        ("http://localhost:1", True),
        ("[::1]:443", True),
        ("us-central1-aiplatform.googleapis.com", False),
        (None, False),
    ],
)
def test_loopback_endpoints(endpoint, local):
    assert cloud_checks.is_loopback(endpoint) is local


def test_template_kinds():
    assert load_template(LOCAL_TEMPLATE).kind == "kubeflow"
    committed = load_template(COMMITTED_VERTEX)
    assert committed.kind == "vertex" and committed.step_images() == ["taxifare:0.1.0"]


def test_image_compile_leaves_nothing_behind_when_a_later_check_fails(tmp_path, monkeypatch, no_credentials, capsys):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main([*SUBMIT, "--image", IMAGE, "--param", "train_steps=-5"]) == 2
    assert "train_steps must be a positive integer" in capsys.readouterr().err
    assert cli.main([*SUBMIT, "--image", IMAGE]) == 2  # compiled, then no credentials
    assert "no Google Cloud credentials found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
