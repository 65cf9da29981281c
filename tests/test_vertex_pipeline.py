"""The Vertex AI variant: compiled spec, worker pools, deploy chain, and the plain functions behind it."""

import json
import re

import pytest
import yaml
from conftest import ROOT
from google.auth.credentials import AnonymousCredentials
from kfp import dsl

from components.verify_export.logic import verify
from components.vertex_steps import logic as vertex
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


def group(spec: dict, tasks: dict, name: str) -> tuple[dict, dict]:
    """The condition group named ``name`` among ``tasks`` (or inside their If/Else branches): its task and its tasks."""
    for task in tasks.values():
        inner = spec["components"][task["componentRef"]["name"]].get("dag", {}).get("tasks", {})
        if task["taskInfo"]["name"] == name:
            return task, inner
        if task["taskInfo"]["name"].startswith("condition-branches"):
            with_name = [t for t in inner.values() if t["taskInfo"]["name"] == name]
            if with_name:
                return with_name[0], spec["components"][with_name[0]["componentRef"]["name"]]["dag"]["tasks"]
    raise AssertionError(f"no condition group {name!r} among {sorted(tasks)}")


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
        "condition-branches-5",  # blessed (the deploy chain) or not (batch prediction with the served model)
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
    cond, blessed = group(spec, steps(spec), "blessed")
    assert cond["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--verify-export-Output'] == true"
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
    assert {t["taskInfo"]["name"] for t in inner.values()} == {
        "Prepare upload",
        "condition-branches-7",
        "condition-branches-10",
        "Import evaluation",
        "batch-deployed",
    }
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


def test_the_evaluation_is_imported_into_the_uploaded_version(spec):
    """verify_export's evaluation (overall and per slice) goes into the Model Registry with ModelImportEvaluationOp."""
    task = spec["components"]["comp-condition-6"]["dag"]["tasks"]["model-evaluation-import"]
    artifacts = task["inputs"]["artifacts"]
    assert artifacts["regression_metrics"]["taskOutputArtifact"] == {"outputArtifactKey": "evaluation", "producerTask": "prepare-upload"}
    assert artifacts["model"]["taskOutputArtifact"]["producerTask"] == "condition-branches-7"  # the uploaded version, either branch
    outputs = spec["components"]["comp-prepare-upload"]["outputDefinitions"]["artifacts"]
    assert outputs["evaluation"]["artifactType"]["schemaTitle"] == "google.RegressionMetrics"


def test_the_evaluation_file_is_what_vertex_imports(tmp_path):
    """The file prepare_upload writes, read by google-cloud-pipeline-components' own importer into the official protos."""
    import numpy as np
    from google.cloud.aiplatform_v1.types import ModelEvaluation, ModelEvaluationSlice
    from google_cloud_pipeline_components.container._implementation.model_evaluation import import_model_evaluation as importer

    from components.contracts import Verification
    from components.verify_export import slices

    rng = np.random.default_rng(0)
    n = 400
    feats = {
        "pickuplon": rng.uniform(-74.0, -73.9, n).astype(np.float32), "pickuplat": rng.uniform(40.7, 40.8, n).astype(np.float32),
        "dropofflon": rng.uniform(-74.0, -73.9, n).astype(np.float32), "dropofflat": rng.uniform(40.7, 40.8, n).astype(np.float32),
        "passengers": rng.integers(1, 5, n).astype(np.float32),
    }  # fmt: skip
    label = rng.uniform(3, 40, n)
    results = slices.compare(feats, label, label + rng.normal(0, 2, n), label + rng.normal(0, 3, n))
    verdict = Verification(True, "ok", {"test_rmse": results[0].candidate.rmse}, {"slices": [r.to_dict() for r in results]})
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(vertex.evaluation_metrics(Verification.from_metadata(verdict.to_metadata()))))
    overall, sliced = importer.read_metrics_from_file(str(path), "regression")
    evaluation = ModelEvaluation(metrics=overall["metrics"], metrics_schema_uri=importer.PROBLEM_TYPE_TO_SCHEMA_URI["regression"])
    assert evaluation.metrics["rootMeanSquaredError"] == pytest.approx(results[0].candidate.rmse)
    assert evaluation.metrics["meanAbsoluteError"] == pytest.approx(results[0].candidate.mae)
    named = {}
    for one in sliced:
        piece = ModelEvaluationSlice(slice_=importer.to_slice(one["singleOutputSlicingSpec"]), metrics=one["metrics"])
        named[piece.slice_.value] = piece.metrics["rootMeanSquaredError"]
    expected = {r.name: r.candidate.rmse for r in results[1:] if r.count}
    assert named.keys() == expected.keys() and "1 passenger" in named
    assert all(named[k] == pytest.approx(v) for k, v in expected.items())


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
ENDPOINT = "projects/test-project/locations/us-central1/endpoints/7"


def lookup(server, capsys) -> tuple[dict, str]:
    """lookup_deployment as the pipeline runs it (the kfp component's own function, real artifacts): its outputs and its line."""
    from google_cloud_pipeline_components.types.artifact_types import VertexEndpoint, VertexModel

    from components.vertex_steps.component import lookup_deployment

    capsys.readouterr()
    parent, endpoint = VertexModel(uri=""), VertexEndpoint(uri="")
    outputs = lookup_deployment.python_func(
        project="test-project",
        location="us-central1",
        model_display_name="taxifare",
        endpoint_display_name="taxifare",
        traffic_percentage=100,
        parent_model=parent,
        endpoint=endpoint,
    )
    line = capsys.readouterr().out.strip()
    assert "\n" not in line
    result = outputs._asdict() | {"parent": parent.metadata.get("resourceName"), "endpoint": endpoint.metadata.get("resourceName")}
    return result, line


def recheck(deployed_model_uri: str, candidate_rmse: float, capsys) -> tuple[bool, str]:
    """recheck_deployment as the pipeline runs it: whether the chain below runs, and its line."""
    from components.contracts import Verification
    from components.vertex_steps.component import recheck_deployment

    capsys.readouterr()
    verification = dsl.Metrics(uri="")
    verification.metadata.update(Verification(True, "blessed", {"test_rmse": candidate_rmse}).to_metadata())
    out = recheck_deployment.python_func(
        project="test-project",
        location="us-central1",
        endpoint_display_name="taxifare",
        deployed_model_uri=deployed_model_uri,
        verification=verification,
    )
    line = capsys.readouterr().out.strip()
    assert "\n" not in line
    return out == "true", line


@pytest.mark.parametrize(
    ("meanwhile", "candidate", "deploys", "message"),
    [
        (
            None,
            3.50,
            True,
            f"still the one verify_export compared with, {MODEL}@1 (deployed model 111, 100% of the traffic, gs://b/run-a/model)",
        ),
        (
            3200,
            3.50,
            False,
            f"not deployed: model {MODEL}@2 (deployed model 222, 100% of the traffic, gs://b/run-b/model) now serves with RMSE $3.20 "
            "(candidate $3.50)",
        ),
        (3500, 3.50, False, "now serves with RMSE $3.50"),  # a tie is not better
        (3900, 3.50, True, "beats model"),  # a worse model deployed meanwhile: the candidate still wins
        ("", 3.50, False, "no recorded RMSE"),
        (
            "undeployed",
            3.50,
            True,
            "deploying: nothing is deployed on endpoint taxifare now (verify_export compared with gs://b/run-a/model)",
        ),
    ],
)
def test_recheck_reads_the_deployed_model_again_right_before_deploying(vertex_api, capsys, meanwhile, candidate, deploys, message):
    # lookup_deployment saw run A's model (RMSE $4.00) serving; the candidate was blessed against it
    vertex_api.upload_model(MODEL, "taxifare", "gs://b/run-a/model", vertex.upload_labels(4.0, "abc"))
    vertex_api.add_endpoint(ENDPOINT, [("111", "taxifare", 300, f"{MODEL}@1")], {"111": 100})
    looked_up, _ = lookup(vertex_api, capsys)
    assert looked_up["deployed_model_uri"] == "gs://b/run-a/model" and looked_up["deployed_rmse"] == 4.0
    if meanwhile == "undeployed":  # the model was undeployed meanwhile: the blessing stands
        vertex_api.add_endpoint(ENDPOINT, [], {})
    elif meanwhile is not None:  # run B uploads a new version and deploys it with all the traffic while this run verifies
        labels = {vertex.RMSE_LABEL: str(meanwhile)} if meanwhile else {}
        vertex_api.upload_model(MODEL, "taxifare", "gs://b/run-b/model", labels)
        vertex_api.add_endpoint(ENDPOINT, [("111", "taxifare", 300, f"{MODEL}@1"), ("222", "taxifare", 10, f"{MODEL}@2")], {"222": 100})
    deploy, why = recheck(looked_up["deployed_model_uri"], candidate, capsys)
    assert deploy is deploys and message in why and why.startswith("deploying: " if deploys else "not deployed: ")
    assert vertex_api.requests("ListEndpoints")[-1].filter == 'display_name="taxifare"'
    read = "1" if meanwhile in (None, "undeployed") else "2"  # the version read last: run B's when it serves
    assert vertex_api.requests("GetModel")[-1].name == f"{MODEL}@{read}"


def rolled_back(server, state: str) -> None:
    """Version 1 (RMSE $3.00) serves all the traffic; version 2, the newest and default (RMSE $4.00), does not."""
    server.upload_model(MODEL, "taxifare", "gs://b/v1/model", vertex.upload_labels(3.0, "abc"))
    server.upload_model(MODEL, "taxifare", "gs://b/v2/model", vertex.upload_labels(4.0, "abc"))
    both = [("111", "taxifare", 300, f"{MODEL}@1"), ("222", "taxifare", 100, f"{MODEL}@2")]
    if state == "rolled back (0%)":  # `taxifare rollback` leaves the bad model deployed with 0%
        server.add_endpoint(ENDPOINT, both, {"111": 100, "222": 0})
    elif state == "rolled back (not in the split)":  # a deployed model missing from the split gets no traffic
        server.add_endpoint(ENDPOINT, both, {"111": 100})
    else:  # "deploy failed": version 2 was uploaded, never deployed
        server.add_endpoint(ENDPOINT, both[:1], {"111": 100})


@pytest.mark.parametrize("state", ["rolled back (0%)", "rolled back (not in the split)", "deploy failed"])
def test_lookup_compares_with_the_model_serving_the_traffic_not_the_newest(vertex_api, capsys, state):
    rolled_back(vertex_api, state)
    assert vertex.find_model("test-project", "us-central1", "taxifare")["uri"] == "gs://b/v2/model"  # the newest, the old comparison
    found, line = lookup(vertex_api, capsys)
    assert found["deployed_model_uri"] == "gs://b/v1/model" and found["deployed_rmse"] == 3.0
    assert found["has_model"] == "true" and found["parent"] == MODEL  # the new version's parent: still by display name
    assert found["has_endpoint"] == "true" and found["endpoint"] == ENDPOINT
    assert line == (
        f"the candidate is compared with model {MODEL}@1 (deployed model 111, 100% of the traffic, gs://b/v1/model) "
        "on endpoint taxifare, test RMSE $3.00 recorded"
    )
    assert vertex_api.requests("GetModel")[-1].name == f"{MODEL}@1"


def test_after_a_rollback_a_candidate_worse_than_the_serving_model_is_not_deployed(vertex_api, capsys):
    """Lookup saw version 2 serving (RMSE $4.00), a $3.50 candidate was blessed; a rollback then gave version 1 ($3.00) the traffic."""
    from serving.vertex_endpoint import rollback

    vertex_api.upload_model(MODEL, "taxifare", "gs://b/v1/model", vertex.upload_labels(3.0, "abc"))
    vertex_api.upload_model(MODEL, "taxifare", "gs://b/v2/model", vertex.upload_labels(4.0, "abc"))
    vertex_api.add_endpoint(ENDPOINT, [("111", "taxifare", 300, f"{MODEL}@1"), ("222", "taxifare", 100, f"{MODEL}@2")], {"222": 100})
    before, _ = lookup(vertex_api, capsys)
    assert before["deployed_model_uri"] == "gs://b/v2/model" and before["deployed_rmse"] == 4.0
    rollback(ENDPOINT, project="test-project", region="us-central1", api_endpoint=vertex_api.endpoint, credentials=AnonymousCredentials())
    assert dict(vertex_api.endpoints[ENDPOINT].traffic_split) == {"111": 100}
    deploy, why = recheck(before["deployed_model_uri"], 3.5, capsys)
    assert not deploy and why == (
        f"not deployed: model {MODEL}@1 (deployed model 111, 100% of the traffic, gs://b/v1/model) "
        "now serves with RMSE $3.00 (candidate $3.50)"
    )
    after, _ = lookup(vertex_api, capsys)  # the next run's look-up: the same model
    assert after["deployed_model_uri"] == "gs://b/v1/model" and after["deployed_rmse"] == 3.0
    deploy, why = recheck(after["deployed_model_uri"], 2.5, capsys)  # a better candidate, blessed against it, goes ahead
    assert deploy and "still the one verify_export compared with" in why


def test_verify_refuses_a_candidate_worse_than_the_serving_model_but_better_than_the_newest(vertex_api, capsys, trained_model, tmp_path):
    """The whole gate after a rollback: lookup_deployment's outputs into verify_export, which compares with the serving model's RMSE."""
    from conftest import stage

    outs = {s: str(tmp_path / s) for s in ("train", "eval", "test")}
    stage("synthetic", outs, synthetic_rows=1500, seed=4)
    common = {"train_fare_mean": 11.0, "max_rmse": 1000.0, "model_name": "taxifare"}
    candidate = verify(trained_model.export_dir, outs["test"], **common).metrics["test_rmse"]
    serving, newest = candidate - 0.5, candidate + 1.0
    vertex_api.upload_model(MODEL, "taxifare", "gs://no-such-bucket/v1", vertex.upload_labels(serving, "abc"))
    vertex_api.upload_model(MODEL, "taxifare", "gs://no-such-bucket/v2", vertex.upload_labels(newest, "abc"))
    vertex_api.add_endpoint(
        ENDPOINT, [("111", "taxifare", 300, f"{MODEL}@1"), ("222", "taxifare", 100, f"{MODEL}@2")], {"111": 100, "222": 0}
    )
    found, _ = lookup(vertex_api, capsys)
    verdict = verify(
        trained_model.export_dir,
        outs["test"],
        deployed_model_uri=found["deployed_model_uri"],
        deployed_rmse=found["deployed_rmse"],
        **common,
    )
    assert found["deployed_rmse"] == pytest.approx(serving, abs=1e-3)
    assert not verdict.blessed and "recorded at deploy" in verdict.reason


@pytest.mark.parametrize("state", ["no endpoint", "nothing deployed", "no traffic"])
def test_nothing_deployed_when_no_deployed_model_takes_traffic(vertex_api, capsys, state):
    vertex_api.upload_model(MODEL, "taxifare", "gs://b/v1/model", vertex.upload_labels(3.0, "abc"))  # uploaded; its deploy failed
    if state == "nothing deployed":
        vertex_api.add_endpoint(ENDPOINT, [], {})
    elif state == "no traffic":  # deployed, but the endpoint takes no traffic (an empty split)
        vertex_api.add_endpoint(ENDPOINT, [("111", "taxifare", 300, f"{MODEL}@1")], {})
    found, line = lookup(vertex_api, capsys)
    assert (found["deployed_model_uri"], found["deployed_rmse"]) == ("", -1.0)
    assert found["has_model"] == "true" and found["parent"] == MODEL
    assert found["has_endpoint"] == ("false" if state == "no endpoint" else "true")
    assert line == "nothing deployed on endpoint taxifare: the candidate is judged by max_rmse alone"
    deploy, why = recheck("", 9.0, capsys)
    assert deploy and why == "deploying: nothing is deployed on endpoint taxifare now (as when verify_export looked)"
    assert not vertex_api.requests("GetModel")


@pytest.mark.parametrize(("ages", "serving"), [((300, 100), "2"), ((100, 300), "1")])
def test_on_a_traffic_tie_the_model_deployed_last_serves(vertex_api, ages, serving):
    vertex_api.upload_model(MODEL, "taxifare", "gs://b/v1/model", vertex.upload_labels(3.0, "abc"))
    vertex_api.upload_model(MODEL, "taxifare", "gs://b/v2/model", vertex.upload_labels(4.0, "abc"))
    # "222" deployed the default version (2, named without a version); a later upload moves the default to 3
    vertex_api.add_endpoint(
        ENDPOINT, [("111", "taxifare", ages[0], f"{MODEL}@1"), ("222", "taxifare", ages[1], MODEL)], {"111": 50, "222": 50}
    )
    vertex_api.upload_model(MODEL, "taxifare", "gs://b/v3/model", vertex.upload_labels(5.0, "abc"))
    found = vertex.find_deployed_model("test-project", "us-central1", vertex.read_endpoint("test-project", "us-central1", "taxifare"))
    assert found is not None and (found["version"], found["traffic"]) == (serving, 50)
    assert found["uri"] == f"gs://b/v{serving}/model" and found["resource_name"] == MODEL


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


def test_batch_predict_is_a_vertex_batch_prediction_job_of_the_new_version_or_the_served_one(spec):
    _, blessed = group(spec, steps(spec), "blessed")
    still = spec["components"][blessed["condition-6"]["componentRef"]["name"]]["dag"]["tasks"]
    when, deployed = group(spec, still, "batch-deployed")
    assert when["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--batch_source'] != ''"
    job = deployed["model-batch-predict"]
    assert job["taskInfo"]["name"] == "Batch predict (Vertex batch prediction job)"
    model = job["inputs"]["artifacts"]["model"]
    assert "condition-branches-7-oneof" in model["componentInputArtifact"]  # the uploaded version (new version or new model)
    params = job["inputs"]["parameters"]
    for name, source in {
        "gcs_source_uris": "gcs_source_uris",
        "instances_format": "instances_format",
        "bigquery_source_input_uri": "bigquery_source_input_uri",
        "excluded_fields": "excluded_fields",
    }.items():
        assert params[name]["taskOutputParameter"] == {"producerTask": "batch-inputs", "outputParameterKey": source}  # fmt: skip
    assert params["gcs_destination_output_uri_prefix"]["runtimeValue"]["constant"] == "{{$.pipeline_root}}"
    assert params["machine_type"]["componentInputParameter"] == "pipelinechannel--batch_machine_type"
    assert params["starting_replica_count"]["componentInputParameter"] == "pipelinechannel--batch_starting_replica_count"
    assert params["max_replica_count"]["componentInputParameter"] == "pipelinechannel--batch_max_replica_count"
    assert params["key_field"]["runtimeValue"]["constant"] == "key" and params["instance_type"]["runtimeValue"]["constant"] == "object"
    assert params["project"]["runtimeValue"]["constant"] == "{{$.pipeline_google_cloud_project_id}}"
    executor = spec["deploymentSpec"]["executors"]["exec-model-batch-predict"]["container"]
    assert "google_cloud_pipeline_components.container.v1.batch_prediction_job.launcher" in " ".join(executor["command"] + executor["args"])

    _, not_blessed = group(spec, steps(spec), "not-blessed")
    when, served = group(spec, not_blessed, "batch-served")
    assert set(served) == {"served-model", "batch-inputs-2", "model-batch-predict-2"}
    assert served["model-batch-predict-2"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "producerTask": "served-model", "outputArtifactKey": "model"
    }  # fmt: skip
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["batch_source"]["defaultValue"] == "" and params["batch_machine_type"]["defaultValue"] == "n1-standard-2"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("gs://b-1/a.jsonl, gs://b-1/b.jsonl", ("jsonl", ["gs://b-1/a.jsonl", "gs://b-1/b.jsonl"], "", [])),
        ("bq://my-project.trips.valid", ("bigquery", [], "bq://my-project.trips.valid", ["fare_amount"])),
    ],
)
def test_batch_inputs_split_the_source(source, expected):
    from components.vertex_batch.component import batch_inputs

    out = batch_inputs.python_func(source)
    assert (out.instances_format, out.gcs_source_uris, out.bigquery_source_input_uri, out.excluded_fields) == expected


def test_batch_inputs_refuse_local_files_with_one_line():
    from base.errors import InputError
    from components.vertex_batch.component import batch_inputs

    with pytest.raises(InputError, match=r"batch_source data/trips\.csv: a Vertex AI job reads gs:// files"):
        batch_inputs.python_func("data/trips.csv")


def test_a_new_signature_never_replaces_the_endpoints_contract(vertex_api, capsys, tmp_path, real_valid):
    """The contract gate on Vertex: the endpoint serves a lab-layout model; a datetime-layout candidate is refused by name."""
    import shutil

    import keras

    from components.verify_export.gate import GateSettings
    from trainer.model import TrainConfig, build_model, export_model
    from trainer.schema import Variant

    def untrained(variant: Variant, out: str) -> str:
        keras.utils.set_random_seed(5)
        return export_model(build_model(variant, TrainConfig("unused", "unused", "unused")), variant, out, {"seed": 5})

    served = untrained(Variant.LAB, str(tmp_path / "served"))
    candidate = untrained(Variant.DATETIME, str(tmp_path / "candidate"))
    test = tmp_path / "test"
    test.mkdir()
    shutil.copy(real_valid.parent / "taxi-datetime-valid.csv", test / "data.csv")
    vertex_api.upload_model(MODEL, "taxifare", served, vertex.upload_labels(4.0, "abc"))  # its artifact, read as /gcs/ would be
    vertex_api.add_endpoint(ENDPOINT, [("111", "taxifare", 300, f"{MODEL}@1")], {"111": 100})
    found, _ = lookup(vertex_api, capsys)
    assert found["deployed_model_uri"] == served
    args = {"train_fare_mean": 11.0, "max_rmse": 1000.0, "model_name": "taxifare", "deployed_model_uri": served}
    verdict = verify(candidate, str(test), deployed_rmse=found["deployed_rmse"], **args)
    assert not verdict.blessed and verdict.reason.startswith(
        "incompatible signature: adds input pickup_datetime (the endpoint's model, taking"
    )
    assert "--allow-signature-change" in verdict.reason
    allowed = verify(candidate, str(test), deployed_rmse=found["deployed_rmse"], gate=GateSettings(allow_signature_change=True), **args)
    contract = next((ok, detail) for name, ok, detail in allowed.checks if name.startswith("keeps the served signature"))
    assert contract[0] and "adds input pickup_datetime" in contract[1] and "allowed by allow_signature_change" in contract[1]


def test_project_and_location_placeholders_are_vertex_s():
    """The pinned placeholders are what GCPC's public ops default to (GCPC's own constants are private)."""
    from google_cloud_pipeline_components.v1.custom_job import CustomTrainingJobOp

    from pipeline import vertex_pipeline

    inputs = CustomTrainingJobOp.component_spec.inputs
    assert (inputs["project"].default, inputs["location"].default) == (vertex_pipeline.PROJECT, vertex_pipeline.LOCATION)
