"""The parameter table: one row per parameter drives both pipelines, the run flags and the front-door checks."""

import math

import pytest
import yaml
from conftest import ROOT

from pipeline import parameters
from pipeline.cli import main
from trainer import checks
from trainer.errors import InputError


def test_every_row_has_help_and_a_default_that_passes_its_check():
    for p in parameters.PARAMETERS:
        assert p.help.strip(), p.name
        for target in p.targets:
            default = p.default_for(target)
            assert isinstance(default, p.type), (p.name, target)
            p.check(p.name, default)
    parameters.check_params({}, parameters.LOCAL)
    parameters.check_params({}, parameters.VERTEX)


def test_defaults_differ_between_targets_only_where_the_row_says_so():
    local, vertex = parameters.defaults(parameters.LOCAL), parameters.defaults(parameters.VERTEX)
    assert (local["train_steps"], vertex["train_steps"]) == (2000, 20_000)
    differing = {n for n in local.keys() & vertex.keys() if local[n] != vertex[n]}
    assert differing == {p.name for p in parameters.PARAMETERS if p.vertex_default is not parameters._SAME}


@pytest.mark.parametrize(("target", "path"), [("local", "compiled/taxifare_pipeline.yaml"), ("vertex", "compiled/taxifare_vertex.yaml")])
def test_compiled_pipeline_parameters_are_the_table_rows(target, path):
    with open(ROOT / path, encoding="utf-8") as fh:
        spec = yaml.safe_load(fh)
    compiled = spec["root"]["inputDefinitions"]["parameters"]
    rows = {p.name: p for p in parameters.for_target(target)}
    assert set(compiled) == set(rows)
    for name, p in rows.items():
        assert compiled[name]["description"] == p.help
        assert compiled[name]["defaultValue"] == p.default_for(target)


# (values, the start of the one-line error)
BAD_PARAMS = [
    ({"train_steps": "-5"}, "train_steps must be a positive integer"),
    ({"train_steps": "1.5"}, "train_steps must be an integer"),
    ({"hidden_units": "abc"}, "hidden_units must be positive layer sizes"),
    ({"hidden_units": "64,0"}, "hidden_units must be positive layer sizes"),
    ({"learning_rate": "nan"}, "learning_rate must be a finite number"),
    ({"learning_rate": math.inf}, "learning_rate must be a finite number"),
    ({"max_rmse": "-1"}, "max_rmse must be a positive number of dollars"),
    ({"max_rmse": math.nan}, "max_rmse must be a finite number"),
    ({"eval_fraction": "nan"}, "eval_fraction must be a finite number"),
    ({"eval_fraction": 0.45, "test_fraction": 0.45}, "eval_fraction + test_fraction must leave rows"),
    ({"source": ""}, "source is empty"),
    ({"source": "bigquery"}, "source 'bigquery' needs window_days of at least 1"),
    ({"synthetic_rows": 50}, "synthetic_rows must be at least 100"),
    ({"datetime_layout": "maybe"}, "datetime_layout must be true or false"),
    ({"model_name": "../../etc"}, "model_name '../../etc' must be letters"),
    ({"model_name": ".hidden"}, "model_name '.hidden' must be letters"),
    ({"scheduled_time": "not-a-time"}, "scheduled_time 'not-a-time' is not an RFC 3339 time"),
    ({"hidden_units": "100000000"}, "hidden_units 100000000 makes a model of 2,600,002,450 parameters"),
    ({"no_such": 1}, "unknown pipeline parameter 'no_such'"),
]


@pytest.mark.parametrize(("values", "message"), BAD_PARAMS, ids=[next(iter(v)) + "=" + str(next(iter(v.values()))) for v, _ in BAD_PARAMS])
def test_check_params_refuses_with_one_line(values, message):
    with pytest.raises(InputError) as info:
        parameters.check_params(values)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"traffic_percentage": "101"}, "traffic_percentage must be a whole percentage"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas (3) is above max_replicas (2)"),
        ({"replica_count": "0"}, "replica_count must be a positive integer"),
        ({"machine_type": "N1 standard"}, "machine_type must be a machine type such as n1-standard-4"),
        ({"endpoint_display_name": " "}, "endpoint_display_name must be 1 to 128 characters"),
        ({"model_display_name": "x" * 129}, "model_display_name must be 1 to 128 characters"),
        ({"scheduled_time": "2026-01-01T00:00:00Z"}, "unknown pipeline parameter 'scheduled_time'"),
        ({"hidden_units": "100000000"}, "hidden_units 100000000 makes a model"),
    ],
)
def test_vertex_rows_are_checked_too(values, message):
    with pytest.raises(InputError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
        parameters.check_params(values, parameters.VERTEX)


def test_checked_converts_param_strings_to_their_types():
    assert parameters.checked({"train_steps": "500", "learning_rate": "0.01", "datetime_layout": "true", "hidden_units": "8 4"}) == {
        "train_steps": 500,
        "learning_rate": 0.01,
        "datetime_layout": True,
        "hidden_units": "8 4",
    }


def test_the_size_limit_is_a_setting_not_a_pipeline_parameter():
    parameters.check_params({"hidden_units": "100000", "max_model_params": 10**9})
    assert "max_model_params" not in parameters.defaults(parameters.LOCAL)
    assert parameters.pipeline_arguments({"max_model_params": 5, "seed": 1}) == {"seed": 1}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-rmse", "nan"], "error: max_rmse must be a finite number (got nan)"),
        (["--learning-rate", "inf"], "error: learning_rate must be a finite number (got inf)"),
        (["--model-name", "../../etc"], "error: model_name '../../etc' must be letters"),
        (["--scheduled-time", "not-a-time"], "error: scheduled_time 'not-a-time' is not an RFC 3339 time"),
        (["--hidden-units", "100000000"], "error: hidden_units 100000000 makes a model of 2,600,002,450 parameters (about 38.7 GiB"),
        (["--hidden-units", "100000", "--max-model-params", "1000"], "error: hidden_units 100000 makes a model"),
        (["--train-steps", "0"], "error: train_steps must be a positive integer (got 0)"),
    ],
)
def test_taxifare_run_refuses_before_the_first_step(tmp_path, capsys, flags, message):
    root = tmp_path / "runs"
    code = main(["run", "--pipeline-root", str(root), "--serving-root", str(tmp_path / "serving"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert "--max-model-params" in err or "makes a model" not in err  # the flag to raise the limit is named
    assert not root.exists() and not (tmp_path / "serving").exists()


def test_model_size_estimate_matches_the_keras_model():
    from trainer.model import TrainConfig, build_model
    from trainer.schema import Variant

    for variant in Variant:
        for hidden in ((64, 32), (7,), (16, 8, 4)):
            config = TrainConfig("x", "y", "z", hidden_units=hidden)
            expected = build_model(variant, config).count_params()
            assert checks.model_size(hidden, datetime_layout=variant is Variant.DATETIME) == expected, (variant, hidden)
        crossed = TrainConfig("x", "y", "z", embedding_dim=3, cross_embedding_dim=5)  # the cell cross, off by default
        expected = build_model(variant, crossed).count_params()
        size = checks.model_size((64, 32), datetime_layout=variant is Variant.DATETIME, embedding_dim=3, cross_embedding_dim=5)
        assert size == expected > checks.model_size((64, 32), datetime_layout=variant is Variant.DATETIME), variant


def test_batch_source_files_are_checked_before_the_run(tmp_path):
    with pytest.raises(InputError, match="no file matches the batch_source pattern"):
        parameters.check_params({"batch_source": str(tmp_path / "missing-*.csv")})
    (tmp_path / "trips.csv").write_text("7.5,-73.99,40.75,-73.98,40.76,1,k\n")
    parameters.check_params({"batch_source": str(tmp_path / "trips.csv")})
    parameters.check_params({"batch_source": "gs://b-1/trips.jsonl"})  # read by the step (no request here)
