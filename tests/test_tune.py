"""The tune step: the search space and its checks, the local Optuna search, the Vertex tuning job's request and best trial."""

from __future__ import annotations

import json
import math
import tempfile

import pytest

from base.errors import InputError
from components.contracts import SUMMARY_DIR_ENV, read_events
from components.tune import logic as tune


def test_default_space():
    space = tune.parse_space("")
    assert space.hidden_units == ("32,16", "64,32", "128,64", "256,128,64")
    assert space.learning_rate == (0.0003, 0.03)
    assert space.batch_size == (128, 256, 512, 1024)


def test_partial_space_keeps_the_other_defaults_and_normalises():
    space = tune.parse_space("hidden_units=64 32|128,64|64,32; batch_size=256")
    assert space.hidden_units == ("64,32", "128,64") and space.batch_size == (256,)
    assert space.learning_rate == tune.parse_space("").learning_rate


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate=0.1..0.01", "learning_rate '0.1..0.01' leaves no valid value"),
        ("learning_rate=0..0.01", "leaves no valid value"),
        ("learning_rate=nan..1", "leaves no valid value"),
        ("learning_rate=fast", "is not a range"),
        ("batch_size=0|-5", "batch_size leaves no valid value"),
        ("batch_size=big", "is not a whole number"),
        ("hidden_units=|", "hidden_units leaves no choice"),
        ("hidden_units=64,-1", "is not layer sizes"),
        ("dropout=0.1", "is not hidden_units=..."),
    ],
)
def test_space_with_no_valid_value_is_one_line(text, message):
    with pytest.raises(InputError, match=r"^tuning_space: ") as err:
        tune.parse_space(text)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("trials", [1, -1, "abc", 2.5])
def test_tuning_with_one_trial_or_nonsense_is_refused(trials):
    with pytest.raises(InputError, match="tuning_trials must be 0 \\(no tuning\\) or at least 2"):
        tune.check_tuning(trials, "")


def test_valid_tuning_settings_pass():
    tune.check_tuning(0, "")
    tune.check_tuning(8, "batch_size=256|512", 4)
    with pytest.raises(InputError, match="tuning_parallel_trials"):
        tune.check_tuning(8, "", 0)


def test_trial_steps_are_a_tenth_with_a_floor():
    assert tune.trial_steps(2000) == 200
    assert tune.trial_steps(100) == 50
    assert tune.trial_steps(20) == 20


def test_off_returns_the_given_set_without_training(tmp_path):
    tuned = tune.tune_local("nowhere", "nowhere", trials=0, space="", train_steps=2000, seed=0, given=("64,32", 0.003, 512))
    assert (tuned.hidden_units, tuned.learning_rate, tuned.batch_size, tuned.tuned) == ("64,32", 0.003, 512, False)


@pytest.mark.slow  # three short trainings: about 15 s on a quiet 2-core machine, 40 s on a busy one
def test_local_search_runs_the_trials_and_returns_the_best(tmp_path, small_data, monkeypatch):
    split = {name: tmp_path / name for name in ("train", "eval")}
    for name, src in (("train", small_data["train"]), ("eval", small_data["valid"])):
        split[name].mkdir()
        (split[name] / "data.csv").write_text(src.read_text())
    (tmp_path / "work").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "work"))  # where the trials' scratch folders go
    monkeypatch.setenv(SUMMARY_DIR_ENV, str(tmp_path / "records"))  # as `taxifare run` sets it
    lines: list[str] = []
    tuned = tune.tune_local(
        str(split["train"]),
        str(split["eval"]),
        trials=3,
        space="hidden_units=16|32,16; learning_rate=0.001..0.03; batch_size=64|128",
        train_steps=100,
        seed=1,
        given=("32,16", 0.003, 128),
        progress=lines.append,
    )
    assert tuned.tuned and len(tuned.trials) == 3
    assert tuned.trials[0]["hidden_units"] == "32,16" and tuned.trials[0]["learning_rate"] == 0.003  # the given set first
    assert tuned.rmse == min(t["rmse"] for t in tuned.trials) and math.isfinite(tuned.rmse)
    best = next(t for t in tuned.trials if t["rmse"] == tuned.rmse)
    assert (tuned.hidden_units, tuned.learning_rate, tuned.batch_size) == (best["hidden_units"], best["learning_rate"], best["batch_size"])
    assert [line.split(":")[0] for line in lines] == ["trial 1/3", "trial 2/3", "trial 3/3"]
    assert all("best so far $" in line for line in lines)
    trials = [r for r in read_events(str(tmp_path / "records"))[0] if r["event"] == "progress"]  # what `taxifare run` shows
    assert [(r["step"], r["trial"], r["of"], r["text"]) for r in trials] == [("tune", i + 1, 3, line) for i, line in enumerate(lines)]
    assert not list((tmp_path / "work").glob("taxifare-trial-*"))  # trials leave no scratch folder behind
    tune.write_record(tuned, str(tmp_path / "record.json"))
    assert json.loads((tmp_path / "record.json").read_text())["hidden_units"] == tuned.hidden_units


def test_vertex_study_and_pool_make_a_valid_tuning_job_request():
    from google.cloud import aiplatform_v1

    pools = tune.vertex_worker_pool_specs(
        "europe-docker.pkg.dev/p/r/taxifare:1",
        "gs://b/run/stage/train_data",
        "gs://b/run/stage/eval_data",
        train_steps=200,
        seed=3,
        machine_type="n1-standard-4",
    )
    job = aiplatform_v1.HyperparameterTuningJob(
        {
            "display_name": "taxifare-tune",
            "study_spec": {"metrics": tune.vertex_study_metrics(), "parameters": tune.vertex_study_parameters("")},
            "max_trial_count": 8,
            "parallel_trial_count": 2,
            "trial_job_spec": {"worker_pool_specs": pools, "base_output_directory": {"output_uri_prefix": "gs://b/run/tune"}},
        }
    )
    params = {p.parameter_id: p for p in job.study_spec.parameters}
    assert set(params) == {"hidden_units", "learning_rate", "batch_size"}  # the trainer's own flags
    assert list(params["hidden_units"].categorical_value_spec.values) == ["32,16", "64,32", "128,64", "256,128,64"]
    assert params["learning_rate"].scale_type == aiplatform_v1.StudySpec.ParameterSpec.ScaleType.UNIT_LOG_SCALE
    assert job.study_spec.metrics[0].metric_id == "rmse"
    assert job.study_spec.metrics[0].goal == aiplatform_v1.StudySpec.MetricSpec.GoalType.MINIMIZE
    args = list(job.trial_job_spec.worker_pool_specs[0].container_spec.args)
    assert args[:4] == ["--train_data_paths", "/gcs/b/run/stage/train_data/*.csv", "--eval_data_paths", "/gcs/b/run/stage/eval_data/*.csv"]
    assert list(job.trial_job_spec.worker_pool_specs[0].container_spec.command) == ["python", "-m", "trainer.task"]


def test_trainer_takes_the_values_as_the_tuning_service_passes_them():
    from trainer.task import build_parser

    args = build_parser().parse_args(
        ["--train_data_paths", "a", "--eval_data_paths", "b", "--output_dir", "o", "--hidden_units=128,64", "--batch_size=256"]
    )
    assert [u for group in args.hidden_units for u in group] == [128, 64] and args.batch_size == 256
    lab = build_parser().parse_args(["--train_data_paths", "a", "--eval_data_paths", "b", "--train_batch_size", "128"])
    assert lab.batch_size == 128  # the lab's spelling of the same flag


def test_best_of_vertex_trials():
    def trial(tid, rmse, units, rate, batch, state="SUCCEEDED"):
        t = {
            "id": tid,
            "state": state,
            "parameters": [
                {"parameter_id": "hidden_units", "value": units},
                {"parameter_id": "learning_rate", "value": rate},
                {"parameter_id": "batch_size", "value": batch},
            ],
        }
        if rmse is not None:
            t["final_measurement"] = {"metrics": [{"metric_id": "rmse", "value": rmse}]}
        return t

    trials = [trial("1", 5.1, "64,32", 0.003, 512.0), trial("2", 4.7, "128,64", 0.01, 256.0), trial("3", None, "32,16", 0.02, 128.0)]
    best = tune.best_of_trials(trials)
    assert (best.hidden_units, best.learning_rate, best.batch_size, best.rmse) == ("128,64", 0.01, 256, 4.7)
    assert len(best.trials) == 2
    with pytest.raises(RuntimeError, match="no trial of the tuning job reported the metric 'rmse'"):
        tune.best_of_trials([trial("3", None, "32,16", 0.02, 128.0)])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--tuning-trials", "1"],
            "error: tuning_trials must be 0 (no tuning) or at least 2 trials to compare (got 1): e.g. --tuning-trials 8",
        ),
        (["--tuning-trials", "4", "--tuning-space", "learning_rate=0.1..0.01"], "error: tuning_space: learning_rate '0.1..0.01' leaves"),
        (["--tuning-space", "batch_size=0"], "error: tuning_space: batch_size leaves no valid value"),
        (["--tuning-trials", "2", "--tuning-space", "hidden_units=100000,100000"], "error: tuning_space: hidden_units 100000,100000 makes"),
        (["--max-drift", "-1"], "error: max_drift must be 0 (off) or a Jensen-Shannon divergence between 0 and 1"),
        (["--max-drift", "nan"], "error: max_drift must be 0 (off)"),
    ],
)
def test_bad_tuning_or_drift_flags_stop_taxifare_run_in_one_line(tmp_path, capsys, flags, message):
    from pipeline.cli import main

    assert main(["run", "--pipeline-root", str(tmp_path / "root"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "root").exists()  # nothing ran, nothing was created


def test_vertex_params_are_checked_the_same_way():
    from pipeline import parameters

    with pytest.raises(InputError, match="tuning_trials must be 0"):
        parameters.check_params({"tuning_trials": "1"}, target=parameters.VERTEX)
    with pytest.raises(InputError, match="tuning_parallel_trials must be a positive"):
        parameters.check_params({"tuning_parallel_trials": "0"}, target=parameters.VERTEX)
    with pytest.raises(InputError, match="max_drift must be 0"):
        parameters.check_params({"max_drift": "lots"}, target=parameters.VERTEX)
    with pytest.raises(InputError, match=r"tuning_parallel_trials \(4\) is above tuning_trials \(2\)"):
        parameters.check_params({"tuning_trials": "2", "tuning_parallel_trials": "4"}, target=parameters.VERTEX)
    parameters.check_params({"tuning_trials": "8", "tuning_parallel_trials": "2", "max_drift": "0.1"}, target=parameters.VERTEX)


def test_best_trial_reads_the_tuning_job_from_a_vertex_job_service_on_loopback():
    """The best_trial step's read: GetHyperparameterTuningJob over gRPC with the official message types."""
    from concurrent import futures

    import grpc
    from google.cloud import aiplatform_v1
    from google.cloud.aiplatform_v1.services.job_service.transports import JobServiceGrpcTransport
    from google.cloud.aiplatform_v1.types import job_service

    name = "projects/p/locations/europe-west4/hyperparameterTuningJobs/123"
    pools = tune.vertex_worker_pool_specs(
        "taxifare:1", "gs://b/r/train_data", "gs://b/r/eval_data", train_steps=100, seed=1, machine_type="n1-standard-4"
    )
    job = aiplatform_v1.HyperparameterTuningJob(
        {
            "name": name,
            "display_name": "taxifare-tune",
            "study_spec": {"metrics": tune.vertex_study_metrics(), "parameters": tune.vertex_study_parameters("")},
            "max_trial_count": 3,
            "parallel_trial_count": 1,
            "trial_job_spec": {"worker_pool_specs": pools},
            "trials": [
                {
                    "id": str(i),
                    "state": "SUCCEEDED",
                    "parameters": [
                        {"parameter_id": "hidden_units", "value": units},
                        {"parameter_id": "learning_rate", "value": rate},
                        {"parameter_id": "batch_size", "value": batch},
                    ],
                    "final_measurement": {"step_count": 100, "metrics": [{"metric_id": "rmse", "value": rmse}]},
                }
                for i, (units, rate, batch, rmse) in enumerate(
                    [("64,32", 0.003, 512.0, 5.2), ("128,64", 0.0071, 256.0, 4.9), ("32,16", 0.02, 1024.0, 5.6)], start=1
                )
            ],
        }
    )
    asked: list[str] = []

    def get(request, context):
        asked.append(request.name)
        if request.name != name:
            context.abort(grpc.StatusCode.NOT_FOUND, request.name)
        return job

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(
        get,
        request_deserializer=job_service.GetHyperparameterTuningJobRequest.deserialize,
        response_serializer=aiplatform_v1.HyperparameterTuningJob.serialize,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("google.cloud.aiplatform.v1.JobService", {"GetHyperparameterTuningJob": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = aiplatform_v1.JobServiceClient(transport=JobServiceGrpcTransport(channel=grpc.insecure_channel(f"127.0.0.1:{port}")))
        # what HyperparameterTuningJobRunOp writes to its gcp_resources output
        resources = json.dumps(
            {
                "resources": [
                    {"resourceType": "HyperparameterTuningJob", "resourceUri": f"https://europe-west4-aiplatform.googleapis.com/v1/{name}"}
                ]
            }
        )
        best = tune.best_of_trials(tune.fetch_trials(resources, client=client))
    finally:
        server.stop(grace=None)
    assert asked == [name]
    assert (best.hidden_units, best.learning_rate, best.batch_size, best.rmse) == ("128,64", 0.0071, 256, pytest.approx(4.9))
    assert [t["trial"] for t in best.trials] == ["1", "2", "3"]


def test_taxifare_run_shows_every_trial_line(tmp_path):
    from pipeline import local_run

    console: list[str] = []
    tracker = local_run.StepTracker(console.append)
    tracker.add({"event": "started", "step": "tune", "time": 1.0})
    for trial, rmse, units in ((1, 5.093, "64,32"), (2, 4.670, "128,64")):  # the records tune_local writes (the text as printed)
        text = f"trial {trial}/2: eval RMSE ${rmse:.3f} (hidden_units {units}, ...); best so far ${rmse:.3f} (trial {trial})"
        tracker.add({"event": "progress", "step": "tune", "trial": trial, "of": 2, "rmse": rmse, "text": text})
    assert console[1:] == [
        "  ... tune           trial 1/2: eval RMSE $5.093 (hidden_units 64,32, ...); best so far $5.093 (trial 1)",
        "  ... tune           trial 2/2: eval RMSE $4.670 (hidden_units 128,64, ...); best so far $4.670 (trial 2)",
    ]
