"""Vertex AI Experiments: a submitted run joins the experiment, against a local Vertex API on 127.0.0.1."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from _metadata_fake import ExperimentServer
from _vertex_fake import self_signed

from base.errors import InputError
from pipeline import experiments

TEMPLATE = str(Path(__file__).resolve().parents[1] / "compiled" / "taxifare_pipeline.yaml")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    key, cert, path = self_signed(str(tmp_path_factory.mktemp("tls")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", path)
        s = ExperimentServer(key, cert)
        yield s
        s.stop()


def test_a_submitted_run_joins_the_experiment(server, gcs):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    credentials = AnonymousCredentials()
    aiplatform.init(project="test-project", location="us-central1", api_endpoint=server.endpoint, credentials=credentials)
    job = aiplatform.PipelineJob(
        display_name="taxifare",
        template_path=TEMPLATE,
        job_id="taxifare-exp-1",
        pipeline_root=f"gs://root-{uuid.uuid4().hex[:12]}/pipeline",
        parameter_values={"train_steps": 300},
        credentials=credentials,
        project="test-project",
        location="us-central1",
    )
    # A service account, so the SDK does not ask Cloud Resource Manager for the project number.
    link = experiments.submit_in_experiment(job, "taxifare-nightly", service_account="runner@test-project.iam.gserviceaccount.com")
    assert link == (
        "https://console.cloud.google.com/vertex-ai/experiments/locations/us-central1/experiments/taxifare-nightly/runs?project=test-project"
    )
    store = "projects/test-project/locations/us-central1/metadataStores/default"
    experiment = server.contexts[f"{store}/contexts/taxifare-nightly"]
    assert experiment.schema_title == "system.Experiment"
    assert server.children[experiment.name] == [f"{store}/contexts/taxifare-exp-1"]
    [create] = [r for m, r in server.received if m == "CreatePipelineJob"]
    assert create.pipeline_job.runtime_config.parameter_values["train_steps"] == 300


@pytest.mark.parametrize("name", ["Taxifare", "-x", "a_b", "x" * 129])
def test_bad_experiment_names_are_refused_before_any_call(name):
    with pytest.raises(InputError, match="lowercase letters, digits and hyphens"):
        experiments.check_experiment(name)


def test_taxifare_submit_experiment_joins_the_run_to_it(server, gcs, tmp_path, capsys):
    from pipeline import cli
    from pipeline.compile import compile_pipeline

    template = compile_pipeline(str(tmp_path / "taxifare_vertex.yaml"), image="us-docker.pkg.dev/p/r/taxifare:0.1.0", target="vertex")
    argv = ["submit", "--project", "test-project", "--region", "us-central1", "--template", template]
    argv += ["--pipeline-root", f"gs://root-{uuid.uuid4().hex[:12]}/pipeline", "--api-endpoint", server.endpoint, "--anonymous"]
    argv += ["--service-account", "runner@test-project.iam.gserviceaccount.com", "--experiment", "taxifare-cli"]
    assert cli.main(argv) == 0, capsys.readouterr()
    store = "projects/test-project/locations/us-central1/metadataStores/default"
    experiment = server.contexts[f"{store}/contexts/taxifare-cli"]
    [job] = [
        r.pipeline_job for m, r in server.received if m == "CreatePipelineJob" and r.pipeline_job_id in server.children[experiment.name][0]
    ]
    assert job.service_account == "runner@test-project.iam.gserviceaccount.com"


def test_taxifare_submit_refuses_a_bad_experiment_name_in_one_line(capsys):
    from pipeline import cli

    argv = ["submit", "--project", "test-project", "--region", "us-central1", "--pipeline-root", "gs://bucket-x/p"]
    assert cli.main([*argv, "--image", "us-docker.pkg.dev/p/r/taxifare:0.1.0", "--experiment", "Bad_Name"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lowercase letters, digits and hyphens" in err[0]
