"""The Vertex AI variant: compiled spec, worker pools, deploy chain, and the plain functions behind it."""

import json
import re

import pytest
import yaml
from conftest import ROOT

from components.impl import vertex_steps as vertex
from components.impl.verify_export import verify
from pipeline.compile import VERTEX_EMAIL_YAML, VERTEX_YAML, compile_pipeline


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("vertex") / "v.yaml"
    compile_pipeline(str(out), target="vertex")
    committed = ROOT / VERTEX_YAML
    norm = lambda text: re.sub(r"sdkVersion: kfp-[\w.]+", "", text)  # noqa: E731
    assert committed.exists() and norm(out.read_text()) == norm(committed.read_text()), (
        "compiled/taxifare_vertex.yaml is stale: run `taxifare compile` and commit the result"
    )
    return yaml.safe_load(out.read_text())


def steps(spec: dict) -> dict:
    """The tasks inside the exit handler (the pipeline's steps; run-summary is the exit task)."""
    assert set(spec["root"]["dag"]["tasks"]) == {"exit-handler-1", "run-summary"}
    return spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]


def test_steps_and_edges(spec):
    tasks = steps(spec)
    assert {
        "stage-data",
        "check-drift",
        "smoke-train",
        "condition-branches-2",  # tuning (a Vertex hyperparameter tuning job) or the given set
        "training-worker-pools",
        "full-train",
        "lookup-deployment",
        "verify-export",
        "condition-5",  # blessed
    } == set(tasks)
    assert set(tasks["full-train"]["dependentTasks"]) == {"smoke-train", "stage-data", "training-worker-pools", "condition-branches-2"}
    drift_inputs = tasks["check-drift"]["inputs"]["parameters"]
    assert drift_inputs["deployed_stats_uri"]["taskOutputParameter"] == {
        "outputParameterKey": "deployed_model_uri",
        "producerTask": "lookup-deployment",
    }
    assert "check-drift" in tasks["smoke-train"]["dependentTasks"] and tasks["check-drift"]["cachingOptions"] == {}
    wps = tasks["full-train"]["inputs"]["parameters"]["worker_pool_specs"]["taskOutputParameter"]
    assert wps == {"outputParameterKey": "Output", "producerTask": "training-worker-pools"}
    verify_inputs = tasks["verify-export"]["inputs"]
    assert verify_inputs["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "full-train"
    assert verify_inputs["parameters"]["deployed_rmse"]["taskOutputParameter"]["producerTask"] == "lookup-deployment"


def test_full_train_is_a_custom_job_running_the_component_in_the_project_image(spec):
    executor = spec["deploymentSpec"]["executors"]["exec-full-train"]["container"]
    assert executor["image"].startswith("gcr.io/ml-pipeline/google-cloud-pipeline-components")
    assert "google_cloud_pipeline_components.container.v1.custom_job.launcher" in " ".join(executor["command"] + executor["args"])
    params = spec["components"]["comp-full-train"]["inputDefinitions"]["parameters"]
    (pool,) = params["worker_pool_specs"]["defaultValue"]
    assert pool["container_spec"]["image_uri"] == "taxifare:0.1.0"
    assert "def full_train(" in pool["container_spec"]["command"][-1]
    assert {"service_account", "tensorboard", "restart_job_on_worker_restart", "train_steps"} <= set(params)
    inputs = steps(spec)["full-train"]["inputs"]["parameters"]
    assert inputs["service_account"]["componentInputParameter"] == "pipelinechannel--training_service_account"  # inside the exit handler
    assert inputs["tensorboard"]["componentInputParameter"] == "pipelinechannel--tensorboard"
    assert inputs["restart_job_on_worker_restart"]["componentInputParameter"] == "pipelinechannel--restart_job_on_worker_restart"


def test_machine_settings_are_pipeline_parameters(spec):
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name, default in {"machine_type": "n1-standard-4", "accelerator_type": "", "accelerator_count": 0.0, "replica_count": 1.0}.items():
        assert params[name]["defaultValue"] == default and params[name]["description"], name
    pools = steps(spec)["training-worker-pools"]["inputs"]["parameters"]
    assert pools["machine_type"]["componentInputParameter"] == "pipelinechannel--machine_type"
    assert json.loads(pools["template"]["runtimeValue"]["constant"])[0]["container_spec"]["image_uri"] == "taxifare:0.1.0"


def test_deploy_chain_is_under_the_blessed_condition(spec):
    cond = steps(spec)["condition-5"]
    assert cond["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--verify-export-Output'] == true"
    blessed = spec["components"]["comp-condition-5"]["dag"]["tasks"]
    # compare-and-publish: the deployed model is read again, and the upload/deploy chain runs only while the candidate still wins
    assert set(blessed) == {"recheck-deployment", "condition-6"}
    still = blessed["condition-6"]
    assert still["taskInfo"]["name"] == "still-better" and still["dependentTasks"] == ["recheck-deployment"]
    assert still["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--recheck-deployment-Output'] == 'true'"
    recheck_inputs = blessed["recheck-deployment"]["inputs"]
    assert (
        recheck_inputs["parameters"]["deployed_model_uri"]["componentInputParameter"]
        == "pipelinechannel--lookup-deployment-deployed_model_uri"
    )
    inner = spec["components"]["comp-condition-6"]["dag"]["tasks"]
    assert set(inner) == {"prepare-upload", "condition-branches-7", "condition-branches-10"}
    tasks = lambda name: set(spec["components"][name]["dag"]["tasks"])  # noqa: E731
    assert tasks("comp-condition-branches-7") == {"condition-8", "condition-9"}  # the two uploads, under still-better
    assert "model-upload" in tasks("comp-condition-8") and "model-upload-2" in tasks("comp-condition-9")
    uploads = [c for name, c in spec["components"].items() if name.startswith("comp-model-upload")]
    deploys = [c for name, c in spec["components"].items() if name.startswith("comp-model-deploy")]
    assert len(uploads) == 2 and len(deploys) == 2 and "comp-endpoint-create" in spec["components"]
    nested = {name: c for name, c in spec["components"].items() if name.startswith("comp-condition-")}
    conditions = {
        t.get("triggerPolicy", {}).get("condition", "") for c in nested.values() for t in c.get("dag", {}).get("tasks", {}).values()
    }
    assert any("lookup-deployment-has_model" in c and "== 'true'" in c for c in conditions)
    assert any("lookup-deployment-has_endpoint" in c for c in conditions)
    # The upload with parent_model (a new version) exists in one branch.
    parents = [
        t
        for c in nested.values()
        for t in c.get("dag", {}).get("tasks", {}).values()
        if "parent_model" in t.get("inputs", {}).get("artifacts", {})
    ]
    assert len(parents) == 1


def test_tuning_is_a_vertex_tuning_job_whose_best_trial_feeds_the_training_job(spec):
    branches = spec["components"]["comp-condition-branches-2"]["dag"]
    tuning, given = branches["tasks"]["condition-3"], branches["tasks"]["condition-4"]
    assert tuning["triggerPolicy"]["condition"] == "int(inputs.parameter_values['pipelinechannel--tuning_trials']) > 0"
    assert "tune" in spec["components"]["comp-condition-4"]["dag"]["tasks"] and given["triggerPolicy"]["condition"].startswith("!(")
    inner = spec["components"]["comp-condition-3"]["dag"]["tasks"]
    job = inner["hyperparameter-tuning-job"]["inputs"]["parameters"]
    assert job["max_trial_count"] == {"componentInputParameter": "pipelinechannel--tuning_trials"}
    assert job["parallel_trial_count"] == {"componentInputParameter": "pipelinechannel--tuning_parallel_trials"}
    for name in ("worker_pool_specs", "study_spec_parameters", "study_spec_metrics"):
        assert job[name]["taskOutputParameter"] == {"outputParameterKey": name, "producerTask": "tuning-job-spec"}
    assert inner["tuning-job-spec"]["inputs"]["parameters"]["image"]["runtimeValue"]["constant"] == "taxifare:0.1.0"  # the trainer's image
    assert (
        inner["best-trial"]["inputs"]["parameters"]["gcp_resources"]["taskOutputParameter"]["producerTask"] == "hyperparameter-tuning-job"
    )
    executor = spec["deploymentSpec"]["executors"]["exec-hyperparameter-tuning-job"]["container"]
    assert "google_cloud_pipeline_components.container.v1.hyperparameter_tuning_job.launcher" in " ".join(executor["command"])
    oneofs = branches["outputs"]["parameters"]
    for i, name in enumerate(("hidden_units", "learning_rate", "batch_size"), start=1):
        selectors = oneofs[f"pipelinechannel--condition-branches-2-oneof-{i}"]["valueFromOneof"]["parameterSelectors"]
        assert [s["outputParameterKey"] for s in selectors] == [f"pipelinechannel--best-trial-{name}", f"pipelinechannel--tune-{name}"]
        given_to_job = steps(spec)["full-train"]["inputs"]["parameters"][name]["taskOutputParameter"]
        assert given_to_job == {
            "outputParameterKey": f"pipelinechannel--condition-branches-2-oneof-{i}",
            "producerTask": "condition-branches-2",
        }
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["tuning_trials"]["defaultValue"] == 0 and params["tuning_parallel_trials"]["defaultValue"] == 1


def test_no_project_ids_or_credentials_baked_in(spec):
    text = (ROOT / VERTEX_YAML).read_text()
    assert "{{$.pipeline_google_cloud_project_id}}" in text and "{{$.pipeline_google_cloud_location}}" in text

    def values(node):  # every value but the ops' own documentation
        if isinstance(node, dict):
            for key, value in node.items():
                if key != "description":
                    yield from values(value)
        elif isinstance(node, list):
            for item in node:
                yield from values(item)
        else:
            yield str(node)

    assert not [v for v in values(spec) if re.search(r"projects/[a-z][\w-]+/locations", v)]
    for secret in ("private_key", "client_secret", "AIza", "ya29.", "/work/", "/home/"):
        assert secret not in text


def test_worker_pools_from_machine_settings():
    template = json.dumps([{"machine_spec": {"machine_type": "x"}, "replica_count": 1, "container_spec": {"image_uri": "img"}}])
    (one,) = vertex.worker_pool_specs(template, "n1-highmem-8", "", 0, 1)
    assert one == {"machine_spec": {"machine_type": "n1-highmem-8"}, "replica_count": 1, "container_spec": {"image_uri": "img"}}
    chief, workers = vertex.worker_pool_specs(template, "n1-standard-8", "NVIDIA_TESLA_T4", 2, 4)
    assert chief["machine_spec"] == {"machine_type": "n1-standard-8", "accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 2}
    assert (chief["replica_count"], workers["replica_count"]) == (1, 3) and workers["container_spec"] == chief["container_spec"]
    for args, message in [(("", "", 0, 1), "machine_type"), (("n1", "", 0, 0), "replica_count"), (("n1", "T4", 0, 1), "accelerator_count")]:
        with pytest.raises(ValueError, match=message):
            vertex.worker_pool_specs(template, *args)


@pytest.mark.parametrize(
    ("current", "pct", "expected"),
    [
        ({}, 100, {"0": 100}),
        ({}, 30, {"0": 100}),
        ({"111": 100}, 100, {"0": 100}),
        ({"111": 100}, 20, {"0": 20, "111": 80}),
        ({"111": 50, "222": 50}, 25, {"0": 25, "111": 38, "222": 37}),
        ({"111": 70, "222": 30}, 10, {"0": 10, "111": 63, "222": 27}),
    ],
)
def test_traffic_split_always_sums_to_100(current, pct, expected):
    split = vertex.traffic_split(current, pct)
    assert split == expected and sum(split.values()) == 100


def test_labels_round_trip_the_test_rmse():
    labels = vertex.upload_labels(3.4567, "ABCDEF0123456789ffff")
    assert labels == {vertex.RMSE_LABEL: "3457", vertex.DATA_LABEL: "abcdef0123456789"}
    assert all(re.fullmatch(r"[a-z0-9_-]{1,63}", k) and re.fullmatch(r"[a-z0-9_-]{0,63}", v) for k, v in labels.items())
    assert vertex.rmse_from_labels(labels) == pytest.approx(3.457)
    assert vertex.rmse_from_labels({}) is None


def test_verify_uses_the_recorded_rmse_when_the_deployed_model_is_unreadable(trained_model, tmp_path):
    from conftest import stage

    outs = {s: str(tmp_path / s) for s in ("train", "eval", "test")}
    stage("synthetic", outs, synthetic_rows=1500, seed=4)
    common = {"train_fare_mean": 11.0, "deployed_model_uri": "gs://no-such-bucket/model", "max_rmse": 10.0, "model_name": "taxifare"}
    worse = verify(trained_model.export_dir, outs["test"], deployed_rmse=0.01, **common)
    assert not worse.blessed and "recorded at deploy" in worse.reason
    better = verify(trained_model.export_dir, outs["test"], deployed_rmse=99.0, **common)
    assert better.metrics["deployed_rmse"] == 99.0
    assert "deployed $99.00" in better.reason or not better.blessed


IMAGE = "europe-west4-docker.pkg.dev/p/taxifare/taxifare:0.2.0"


def test_image_recompiles_only_the_images(spec, tmp_path):
    """`submit --image` compiles the pipeline for that image: every image of the project changes, nothing else."""
    from pipeline.cloud.template import compile_for_image, load_template

    committed = load_template(str(ROOT / VERTEX_YAML))
    other = compile_for_image("vertex", IMAGE, str(tmp_path))
    assert set(other.step_images()) == {IMAGE} and set(committed.step_images()) == {"taxifare:0.1.0"}
    changed = [
        name
        for name, e in other.spec["deploymentSpec"]["executors"].items()
        if e["container"]["image"] != committed.spec["deploymentSpec"]["executors"][name]["container"]["image"]
    ]
    assert changed and all(other.spec["deploymentSpec"]["executors"][n]["container"]["image"] == IMAGE for n in changed)
    assert "exec-full-train" not in changed  # the custom-job launcher is google's image; the job's pool runs ours

    def norm(template):  # the whole spec as text, the image written back to the committed one's
        return json.dumps({k: v for k, v in template.spec.items() if k != "sdkVersion"}, sort_keys=True).replace(IMAGE, "taxifare:0.1.0")

    assert norm(other) == norm(committed)


def test_upload_names_the_projects_image_as_a_custom_serving_container(spec):
    (prepare,) = [t for c in spec["components"].values() for n, t in c.get("dag", {}).get("tasks", {}).items() if n == "prepare-upload"]
    serving = prepare["inputs"]["parameters"]["serving_image"]["runtimeValue"]["constant"]
    assert serving == "taxifare:0.1.0"  # the step image, pinned by version
    assert vertex.serving_container_spec(IMAGE) == {
        "imageUri": IMAGE,
        "command": ["taxifare", "serve"],
        "ports": [{"containerPort": 8080}],
        "predictRoute": "/v1/models/taxifare:predict",
        "healthRoute": "/v1/models/taxifare",
    }
    for unpinned in ("gcr.io/p/taxifare", "gcr.io/p/taxifare:latest"):
        with pytest.raises(ValueError, match="not pinned"):
            vertex.serving_container_spec(unpinned)
    assert "tf2-cpu" not in (ROOT / VERTEX_YAML).read_text() and ":latest" not in (ROOT / VERTEX_YAML).read_text()


def test_a_schedules_runs_key_stage_data_on_their_own_scheduled_time(spec):
    """Each scheduled run's stage_data gets the run's scheduled time: windows move with it, and its cache key differs per run."""
    (task,) = [t for c in spec["components"].values() for n, t in c.get("dag", {}).get("tasks", {}).items() if n == "stage-data"]
    stage = task["inputs"]["parameters"]
    assert stage["scheduled_time"]["runtimeValue"]["constant"] == "{{$.pipeline_job_schedule_time_utc}}"
    assert stage["window_days"]["componentInputParameter"].endswith("window_days")
    assert stage["data_fingerprint"]["componentInputParameter"].endswith("data_fingerprint")  # frozen at schedule creation


@pytest.fixture
def vertex_api(tmp_path, monkeypatch):
    """The Vertex AI SDK pointed at the local Vertex API server (tests/_vertex_fake.py), anonymous."""
    from _vertex_fake import VertexServer, self_signed
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    key, cert, path = self_signed(str(tmp_path))
    monkeypatch.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", path)  # read once per process, when gRPC first opens a TLS channel
    server = VertexServer(key, cert)
    aiplatform.init(project="test-project", location="us-central1", api_endpoint=server.endpoint, credentials=AnonymousCredentials())
    yield server
    server.stop()
    aiplatform.initializer.global_config._api_endpoint = None  # the SDK's global settings back for the other tests
    aiplatform.initializer.global_config._credentials = None


MODEL = "projects/test-project/locations/us-central1/models/42"


@pytest.mark.parametrize(
    ("meanwhile", "candidate", "deploys", "message"),
    [
        (None, 3.50, True, "still the one verify_export compared with (gs://b/run-a/model)"),  # nobody deployed meanwhile
        (3200, 3.50, False, f"not deployed: model {MODEL} (gs://b/run-b/model) now serves with RMSE $3.20 (candidate $3.50)"),
        (3500, 3.50, False, "now serves with RMSE $3.50"),  # a tie is not better
        (3900, 3.50, True, "beats model"),  # a worse model deployed meanwhile: the candidate still wins
        ("", 3.50, False, "no recorded RMSE"),
    ],
)
def test_recheck_reads_the_deployed_model_again_right_before_deploying(vertex_api, meanwhile, candidate, deploys, message):
    # lookup_deployment saw run A's model (RMSE $4.00); the candidate was blessed against it
    vertex_api.upload_model(MODEL, "taxifare", "gs://b/run-a/model", vertex.upload_labels(4.0, "abc"))
    lookup = vertex.find_model("test-project", "us-central1", "taxifare")
    assert lookup is not None and lookup["uri"] == "gs://b/run-a/model" and vertex.rmse_from_labels(lookup["labels"]) == 4.0
    if meanwhile is not None:  # run B uploads and deploys its model while this run verifies
        labels = {vertex.RMSE_LABEL: str(meanwhile)} if meanwhile else {}
        vertex_api.upload_model(MODEL, "taxifare", "gs://b/run-b/model", labels)
    deploy, why = vertex.recheck_deployment("test-project", "us-central1", "taxifare", lookup["uri"], candidate)
    assert deploy is deploys and message in why and why.startswith("deploying: " if deploys else "not deployed: ")
    assert vertex_api.requests("ListModels")[-1].filter == 'display_name="taxifare"'


def test_recheck_with_no_model_yet_deploys(vertex_api):
    deploy, why = vertex.recheck_deployment("test-project", "us-central1", "taxifare", "", 3.5)
    assert deploy and "(none)" in why


def test_email_variant_wraps_the_whole_pipeline_in_vertex_notification_email(tmp_path):
    """compiled/taxifare_vertex_email.yaml: VertexNotificationEmailOp is the exit task around the plain pipeline (run_summary inside)."""
    out = tmp_path / "e.yaml"
    compile_pipeline(str(out), target="vertex-email")
    norm = lambda text: re.sub(r"sdkVersion: kfp-[\w.]+", "", text)  # noqa: E731
    assert norm(out.read_text()) == norm((ROOT / VERTEX_EMAIL_YAML).read_text()), (
        "compiled/taxifare_vertex_email.yaml is stale: run `taxifare compile` and commit the result"
    )
    email = yaml.safe_load(out.read_text())
    plain = yaml.safe_load((ROOT / VERTEX_YAML).read_text())
    assert email["pipelineInfo"]["name"] == plain["pipelineInfo"]["name"] == "taxifare-vertex"
    params = email["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(plain["root"]["inputDefinitions"]["parameters"]) | {"notify_emails"}
    assert params["notify_emails"]["parameterType"] == "LIST" and params["notify_emails"]["defaultValue"] == []
    root = email["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "vertex-pipelines-notification-email"}
    notify = root["vertex-pipelines-notification-email"]
    assert notify["dependentTasks"] == ["exit-handler-1"] and notify["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert notify["inputs"]["parameters"]["pipeline_task_final_status"]["taskFinalStatus"]["producerTask"] == "exit-handler-1"
    assert notify["inputs"]["parameters"]["recipients"]["componentInputParameter"] == "notify_emails"
    executor = email["deploymentSpec"]["executors"][email["components"][notify["componentRef"]["name"]]["executorLabel"]]
    assert executor["container"]["args"][:2] == ["--type", "VertexNotificationEmail"]
    # inside: the plain pipeline as one sub-DAG task, every parameter passed through, run_summary still its exit task
    (inner,) = email["components"]["comp-exit-handler-1"]["dag"]["tasks"].values()
    assert set(inner["inputs"]["parameters"]) == set(plain["root"]["inputDefinitions"]["parameters"])
    sub = email["components"][inner["componentRef"]["name"]]["dag"]["tasks"]
    assert set(sub) == set(plain["root"]["dag"]["tasks"]) == {"exit-handler-1", "run-summary"}
