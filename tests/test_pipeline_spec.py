"""The compiled pipeline: committed YAML is fresh, and the DAG has the expected shape."""

import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from pipeline import parameters
from pipeline.compile import LOCAL_YAML, compile_pipeline


def normalise(text: str) -> str:
    return re.sub(r"sdkVersion: kfp-[\w.]+", "sdkVersion: kfp-X", text)


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("compiled") / "p.yaml"
    compile_pipeline(str(out))
    committed = ROOT / LOCAL_YAML
    assert committed.exists(), "compiled/taxifare_pipeline.yaml is missing: run `taxifare compile` and commit it"
    assert normalise(out.read_text()) == normalise(committed.read_text()), (
        "compiled/taxifare_pipeline.yaml is stale: run `taxifare compile` and commit the result"
    )
    return yaml.safe_load(out.read_text())


def steps(spec: dict) -> dict:
    """The tasks inside the exit handler (the pipeline's steps)."""
    group = spec["root"]["dag"]["tasks"]["exit-handler-1"]
    return spec["components"][group["componentRef"]["name"]]["dag"]["tasks"]


def test_the_steps_run_inside_an_exit_handler_whose_exit_step_summarizes_the_run(spec):
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"exit-handler-1", "run-summary"}
    summary = tasks["run-summary"]
    assert summary["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED" and summary["dependentTasks"] == ["exit-handler-1"]
    assert summary["inputs"]["parameters"]["status"]["taskFinalStatus"]["producerTask"] == "exit-handler-1"
    assert summary["inputs"]["parameters"]["notify_webhook"]["componentInputParameter"] == "notify_webhook"
    assert summary["cachingOptions"] == {}


def producer(task: dict, input_name: str) -> tuple[str, str]:
    art = task["inputs"]["artifacts"][input_name]["taskOutputArtifact"]
    return art["producerTask"], art["outputArtifactKey"]


def test_the_steps_with_the_expected_data_edges(spec):
    tasks = steps(spec)
    assert set(tasks) == {"stage-data", "check-drift", "smoke-train", "tune", "full-train", "verify-export", "condition-branches-2"}
    assert producer(tasks["check-drift"], "train_data") == ("stage-data", "train_data")
    assert "check-drift" in tasks["smoke-train"]["dependentTasks"]  # the drift gate stops the run before any training
    assert tasks["check-drift"]["cachingOptions"] == {}  # compares with what is deployed now
    assert producer(tasks["smoke-train"], "train_data") == ("stage-data", "train_data")
    assert producer(tasks["full-train"], "train_data") == ("stage-data", "train_data")
    assert producer(tasks["full-train"], "eval_data") == ("stage-data", "eval_data")
    assert "smoke-train" in tasks["tune"]["dependentTasks"]
    for name in ("hidden_units", "learning_rate", "batch_size"):  # full training takes the tune step's set
        assert tasks["full-train"]["inputs"]["parameters"][name]["taskOutputParameter"] == {
            "producerTask": "tune",
            "outputParameterKey": name,
        }
    assert tasks["stage-data"]["inputs"]["parameters"]["data_fingerprint"] == {
        "componentInputParameter": "pipelinechannel--data_fingerprint"
    }
    assert producer(tasks["verify-export"], "model") == ("full-train", "model")
    assert producer(tasks["verify-export"], "test_data") == ("stage-data", "test_data")
    assert producer(tasks["verify-export"], "tensorboard") == ("full-train", "tensorboard")
    assert tasks["full-train"]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["verify-export"]["cachingOptions"] == {}


def branches(spec: dict) -> dict:
    """The If/Else groups after verify_export, by name (``blessed``, ``not-blessed``)."""
    group = steps(spec)["condition-branches-2"]  # condition-1 is the exit handler
    assert "verify-export" in group["dependentTasks"]
    tasks = spec["components"][group["componentRef"]["name"]]["dag"]["tasks"]
    return {t["taskInfo"]["name"]: t for t in tasks.values()}


def inner(spec: dict, task: dict) -> dict:
    return spec["components"][task["componentRef"]["name"]]["dag"]["tasks"]


def test_deploy_runs_only_when_blessed(spec):
    condition = branches(spec)["blessed"]
    assert "pipelinechannel--verify-export-Output" in condition["triggerPolicy"]["condition"]
    assert condition["triggerPolicy"]["condition"].endswith("== true")
    tasks = inner(spec, condition)
    assert {t["taskInfo"]["name"] for t in tasks.values()} == {"Deploy", "batch-deployed"}
    assert tasks["deploy"]["cachingOptions"] == {}


def test_batch_predict_runs_last_when_batch_source_is_set(spec):
    groups = branches(spec)
    assert set(groups) == {"blessed", "not-blessed"}
    assert groups["not-blessed"]["triggerPolicy"]["condition"].endswith("== true)")  # the negation of blessed
    for branch, deployed_path in (("blessed", {"taskOutputParameter": {"producerTask": "deploy", "outputParameterKey": "Output"}}),
                                  ("not-blessed", {"runtimeValue": {"constant": ""}})):  # fmt: skip
        [when] = [t for t in inner(spec, groups[branch]).values() if t["taskInfo"]["name"].startswith("batch-")]
        assert when["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--batch_source'] != ''"
        [step] = inner(spec, when).values()
        assert step["taskInfo"]["name"] == "Batch predict" and step["cachingOptions"] == {}
        params = step["inputs"]["parameters"]
        assert params["batch_source"]["componentInputParameter"] == "pipelinechannel--batch_source"
        if "taskOutputParameter" in deployed_path:  # inside the blessed group, deploy's output reaches it as a channel
            assert params["deployed_path"] == {"componentInputParameter": "pipelinechannel--deploy-Output"}
            assert when["dependentTasks"] == ["deploy"]  # after deploy: scores the version it published
        else:
            assert params["deployed_path"] == deployed_path


def test_every_parameter_has_a_default_and_a_description(spec):
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {p.name for p in parameters.for_target(parameters.LOCAL)}
    for name, p in params.items():
        assert p.get("isOptional") and "defaultValue" in p, name
        assert p.get("description"), name


def test_steps_run_the_project_image_without_installing_anything(spec):
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        assert container["image"] == "taxifare:0.1.0", name
        assert "pip install" not in " ".join(container["command"]), name


def test_display_names(spec):
    tasks = steps(spec)
    assert tasks["stage-data"]["taskInfo"]["name"] == "Stage data"
    assert tasks["full-train"]["taskInfo"]["name"] == "Full training"


def test_image_is_a_compile_time_setting(tmp_path):
    out = tmp_path / "p.yaml"
    compile_pipeline(str(out), image="registry.example/taxifare:1.2")
    images = {e["container"]["image"] for e in yaml.safe_load(out.read_text())["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/taxifare:1.2"}


def test_no_machine_paths_in_the_committed_spec():
    text = Path(ROOT / LOCAL_YAML).read_text()
    assert "/work/" not in text and "/home/" not in text and "/tmp/" not in text
