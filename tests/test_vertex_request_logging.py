"""Vertex AI request-response logging: off by default, turned on after a deploy, only that field of the endpoint changed.

Against the local Vertex API server (tests/_vertex_fake.py) with the SDK's own calls, and in
the compiled spec.
"""

from __future__ import annotations

import pytest
from google_cloud_pipeline_components.types.artifact_types import VertexEndpoint
from test_vertex_pipeline import ENDPOINT, spec, vertex_api  # noqa: F401 - fixtures

from base.errors import InputError
from components.vertex_steps.component import enable_request_logging


def _config(server):
    return server.endpoints[ENDPOINT].predict_request_response_logging_config


def test_the_step_turns_logging_on_and_leaves_the_traffic_alone(vertex_api, capsys):  # noqa: F811
    vertex_api.add_endpoint(ENDPOINT, [("111", "taxifare", 100), ("222", "taxifare", 10)], {"111": 90, "222": 10})
    endpoint = VertexEndpoint(uri="")
    endpoint.metadata["resourceName"] = ENDPOINT
    out = enable_request_logging.python_func(
        project="test-project",
        location="us-central1",
        endpoint=endpoint,
        request_logging_sampling_rate=0.25,
        request_logging_bigquery="bq://test-project.logs.taxi",
    )
    assert out == "bq://test-project.logs.taxi"
    config = _config(vertex_api)
    assert config.enabled and config.sampling_rate == 0.25 and config.bigquery_destination.output_uri == "bq://test-project.logs.taxi"
    (update,) = vertex_api.requests("UpdateEndpoint")
    assert list(update.update_mask.paths) == ["predict_request_response_logging_config"]
    assert dict(vertex_api.endpoints[ENDPOINT].traffic_split) == {"111": 90, "222": 10}
    assert capsys.readouterr().out.strip() == (
        f"request-response logging of endpoint {ENDPOINT}: 0.25 of the predictions to bq://test-project.logs.taxi"
    )
    # no destination: the run's project, where Vertex AI creates the dataset
    assert (
        enable_request_logging.python_func(
            project="test-project",
            location="us-central1",
            endpoint=endpoint,
            request_logging_sampling_rate=1.0,
            request_logging_bigquery="",
        )
        == "bq://test-project"
    )
    assert _config(vertex_api).bigquery_destination.output_uri == "bq://test-project" and _config(vertex_api).sampling_rate == 1.0


@pytest.mark.parametrize(
    ("rate", "destination", "message"),
    [
        (0.0, "", "must be above 0"),
        (1.5, "", "request_logging_sampling_rate"),
        (0.1, "test-project.logs", "is not a BigQuery destination: pass bq://PROJECT"),
    ],
)
def test_bad_settings_are_refused_before_any_call(vertex_api, rate, destination, message):  # noqa: F811
    from components.vertex_steps.logic import enable_request_logging as enable

    with pytest.raises(InputError, match=message):
        enable("test-project", "us-central1", ENDPOINT, rate, destination)
    assert vertex_api.requests("GetEndpoint") == [] and vertex_api.requests("UpdateEndpoint") == []


def test_compiled_spec_logs_only_when_asked_after_each_deploy(spec):  # noqa: F811
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["request_logging_sampling_rate"]["defaultValue"] == 0.0
    assert params["request_logging_bigquery"]["defaultValue"] == ""
    components = spec["components"]
    found = []
    for name, comp in components.items():
        for task_name, task in comp.get("dag", {}).get("tasks", {}).items():
            if task_name.startswith("condition-") and task["taskInfo"]["name"] == "request-logging":
                assert task["triggerPolicy"]["condition"] == (
                    "inputs.parameter_values['pipelinechannel--request_logging_sampling_rate'] > double(0)"
                )
                (step,) = components[task["componentRef"]["name"]]["dag"]["tasks"].values()
                deploy = next(t for t in comp["dag"]["tasks"] if t.startswith("model-deploy"))
                assert deploy in task["dependentTasks"]  # once the deploy is done
                assert step["inputs"]["artifacts"]["endpoint"] and step["cachingOptions"] == {}  # on every run, never cached
                found.append(name)
    assert len(found) == 2  # the existing endpoint and the new one
