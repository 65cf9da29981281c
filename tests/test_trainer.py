import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_python

from base.errors import InputError
from trainer import model as trainer_model
from trainer import schema, synthetic
from trainer.model import TrainConfig, train_and_evaluate
from trainer.schema import Variant


def test_short_run_beats_the_mean_predictor(trained_model, small_data, real_valid):
    train_fares = np.loadtxt(small_data["train"], delimiter=",")[:, 0]
    valid_fares = np.loadtxt(real_valid, delimiter=",")[:, 0]
    mean_rmse = float(np.sqrt(np.mean((valid_fares - train_fares.mean()) ** 2)))
    rmse = trained_model.metrics["rmse"]
    assert math.isfinite(rmse) and rmse < 0.8 * mean_rmse, (rmse, mean_rmse)
    assert trained_model.metrics["steps"] == 300
    assert trained_model.metrics["eval_examples"] == 1665


def test_export_layout_and_metrics_file(trained_model):
    export = Path(trained_model.export_dir)
    assert export.parent.name == "exporter" and export.parent.parent.name == "export"
    assert export.name.isdigit()
    assert (export / "saved_model.pb").exists()
    metrics = json.loads((export / "metrics.json").read_text())
    assert metrics["steps"] == 300 and metrics["rmse"] == pytest.approx(trained_model.metrics["rmse"])
    assert not [p for p in export.parent.iterdir() if p.name.startswith(".tmp")]
    assert list((export.parents[2] / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((export.parents[2] / "checkpoints").glob("ckpt-300.index"))


ROUND_TRIP = """
import json, sys
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
fn = loaded.signatures["serving_default"]
inputs = {name: spec.dtype.name for name, spec in fn.structured_input_signature[1].items()}
outputs = {name: spec.dtype.name for name, spec in fn.structured_outputs.items()}
instance = json.loads(sys.argv[2])
result = fn(**{k: tf.constant([v], tf.string if isinstance(v, str) else tf.float32) for k, v in instance.items()})
print(json.dumps({"inputs": inputs, "outputs": outputs, "fare": float(result["fare_amount"][0])}))
"""


def test_export_round_trip_in_a_fresh_process(trained_model):
    proc = run_python(ROUND_TRIP, trained_model.export_dir, json.dumps(schema.TEST_INSTANCE))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["inputs"] == {name: "float32" for name in schema.NUMERIC_FEATURES}
    assert out["outputs"] == {"fare_amount": "float32"}
    # About 9.7 km from Astoria to the East Village: a real fare is $20-35.
    assert math.isfinite(out["fare"]) and 10 < out["fare"] < 50, out


def test_datetime_variant_trains_and_exports_with_the_timestamp_input(tmp_path):
    data = synthetic.generate(3000, str(tmp_path / "data"), seed=2, variant=Variant.DATETIME)
    result = train_and_evaluate(
        TrainConfig(data.paths["train"], data.paths["valid"], str(tmp_path / "out"), train_steps=50, batch_size=64, seed=0),
        progress=lambda line: None,
    )
    assert result.variant is Variant.DATETIME
    proc = run_python(ROUND_TRIP, result.export_dir, json.dumps(schema.TEST_INSTANCE_DATETIME))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["inputs"]["pickup_datetime"] == "string"
    assert math.isfinite(out["fare"]) and out["fare"] > 0


def trainer_cmd(data: dict[str, Path], out: Path, steps: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "trainer.task",
        "--train_data_paths", str(data["train"]), "--eval_data_paths", str(data["valid"]),
        "--output_dir", str(out), "--train_steps", str(steps), "--train_batch_size", "64", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_resume_after_kill_continues_the_step_count(tmp_path, small_data):
    out = tmp_path / "run"
    cmd = trainer_cmd(small_data, out, 1_000_000, "--steps_per_loop", "20", "--checkpoint_every_steps", "20")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    index = out / "checkpoints" / "checkpoint"

    def latest_step() -> int:  # what the checkpoint index names (written after the checkpoint's own files)
        found = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', index.read_text() if index.exists() else "", re.M)
        return int(found.group(1)) if found else 0

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and latest_step() < 40:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    import tensorflow as tf

    killed_at = int(tf.train.latest_checkpoint(str(out / "checkpoints")).rsplit("-", 1)[1])
    assert killed_at >= 40
    again = subprocess.run(
        trainer_cmd(small_data, out, killed_at + 60, "--steps_per_loop", "20"), cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"at step {killed_at}" in again.stderr
    metrics = json.loads((Path(trainer_model.latest_export(str(out))) / "metrics.json").read_text())
    assert metrics["steps"] == killed_at + 60
    assert metrics["steps_this_run"] == 60


@pytest.mark.slow
def test_cli_names_the_last_step_figure_when_the_eval_data_chose_the_checkpoint(tmp_path, small_data):
    # Early stopping guarantees an exported step before the last: the closing line must say which figure is unbiased.
    flags = ("--learning_rate", "0.03", "--steps_per_loop", "10", "--eval_every_steps", "10", "--early_stopping_patience", "3")
    proc = subprocess.run(
        trainer_cmd(small_data, tmp_path, 5000, *flags, "--seed", "2"), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((Path(trainer_model.latest_export(str(tmp_path))) / "metrics.json").read_text())
    assert m["exported_step"] < m["steps"]
    expected = f"The step was chosen on this same data: the last step's ${m['last_step_rmse']:.2f} is the unbiased figure."
    assert expected in proc.stdout


def test_trial_writes_to_its_own_subdirectory(tmp_path, small_data):
    metric_file = tmp_path / "hypertune" / "output.metrics"
    env = {
        **os.environ,
        "TF_CONFIG": json.dumps({"task": {"type": "master", "index": 0, "trial": "7"}}),
        "CLOUD_ML_HP_METRIC_FILE": str(metric_file),
    }
    proc = subprocess.run(
        trainer_cmd(small_data, tmp_path, 5, "--steps_per_loop", "5"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert trainer_model.latest_export(str(tmp_path / "7"))
    assert "Done: eval RMSE" in proc.stdout and "tensorboard --logdir" in proc.stdout
    (reported,) = [json.loads(line) for line in metric_file.read_text().splitlines()]
    metrics = json.loads((Path(trainer_model.latest_export(str(tmp_path / "7"))) / "metrics.json").read_text())
    assert float(reported["rmse"]) == pytest.approx(metrics["rmse"]) and reported["global_step"] == "5"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train_steps", "0"], "--train_steps must be a positive integer (got 0)"),
        (["--hidden_units", "0"], "--hidden_units must be one or more positive layer sizes"),
        (["--learning_rate", "-1"], "--learning_rate must be a small positive number"),
    ],
)
def test_bad_parameters_give_one_clear_line(tmp_path, small_data, args, message):
    cmd = trainer_cmd(small_data, tmp_path, 5) + args
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert "Traceback" not in proc.stderr


def test_glob_matching_nothing_stops_training(tmp_path, small_data):
    data = {"train": tmp_path / "missing-*.csv", "valid": small_data["valid"]}
    proc = subprocess.run(trainer_cmd(data, tmp_path / "out", 5), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no file matches the training data pattern" in proc.stderr and "missing-*.csv" in proc.stderr


def test_mostly_bad_data_stops_training(tmp_path, small_data):
    bad = tmp_path / "bad.csv"
    bad.write_text("12.0,0,0,0,0,1,0\n" * 50 + small_data["train"].read_text()[:2000])
    with pytest.raises(InputError, match=r"outside_nyc=50.*most in .*bad\.csv"):
        train_and_evaluate(TrainConfig(str(bad), str(small_data["valid"]), str(tmp_path / "out"), train_steps=5), progress=lambda s: None)


def test_help_documents_every_flag():
    proc = subprocess.run([sys.executable, "-m", "trainer.task", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    from trainer.task import build_parser

    for action in build_parser()._actions:
        assert action.help, action.option_strings
        for flag in action.option_strings:
            assert flag in proc.stdout


NO_TF = """
import sys
from trainer.task import main
code = main(sys.argv[1:])
print("tensorflow imported:", "tensorflow" in sys.modules)
sys.exit(code)
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shuffle_buffer", "0"], "--shuffle_buffer must be a positive integer (got 0)"),
        (["--l2", "-1"], "--l2 must be 0 (off) or a small positive penalty"),
        (["--cross_embedding_dim", "-1"], "--cross_embedding_dim must be 0 (no cell cross) or a positive size (got -1)"),
        (["--l2", "nan"], "--l2 must be 0 (off) or a small positive penalty"),
        (["--early_stopping_patience", "-1"], "--early_stopping_patience must be 0 (off)"),
        (["--output_dir", "{file}"], "is a file: pass a directory"),
        (["--output_dir", "{file}/sub"], "which is a file: pass a directory"),
        (["--output_dir", "/sys/taxifare-out"], "is not writable (/sys: Permission denied)"),
        (["--output_dir", "gs://my bucket/out"], "'my bucket' is not a valid Cloud Storage bucket name"),
        (["--output_dir", "gs://UPPER/out"], "'UPPER' is not a valid Cloud Storage bucket name"),
    ],
)
def test_bad_settings_are_refused_before_tensorflow_loads(tmp_path, small_data, args, message):
    (tmp_path / "afile").write_text("x")
    args = [a.replace("{file}", str(tmp_path / "afile")) for a in args]
    base = ["--train_data_paths", str(small_data["train"]), "--eval_data_paths", str(small_data["valid"]), "--output_dir", str(tmp_path)]
    proc = run_python(NO_TF, *base, *args, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("error: ") and message in line, line
    assert "tensorflow imported: False" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing created


def test_eval_curve_has_a_point_every_eval_every_steps_and_runs_named_train_and_eval(trained_model):
    from components.verify_export.logic import read_loss_curve

    out = Path(trained_model.export_dir).parents[2]
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == ["eval", "train"]
    curve = read_loss_curve(str(out))["eval"]
    assert [step for step, _ in curve] == [100, 200, 300]  # default --eval_every_steps 100: 20 points for 2,000 steps


@pytest.mark.slow
def test_best_checkpoint_is_exported_and_early_stopping_stops(tmp_path, small_data):
    from components.verify_export.logic import read_loss_curve

    config = TrainConfig(
        str(small_data["train"]), str(small_data["valid"]), str(tmp_path), train_steps=5000, batch_size=64,
        learning_rate=0.03, steps_per_loop=10, eval_every_steps=10, early_stopping_patience=3, seed=2,
    )  # fmt: skip
    result = train_and_evaluate(config, progress=lambda line: None)
    m = json.loads((Path(result.export_dir) / "metrics.json").read_text())
    curve = read_loss_curve(str(tmp_path))["eval"]
    best_step, best_rmse = min(curve, key=lambda p: p[1])
    assert m["stopped_early"] and m["steps"] < 5000
    assert [step for step, _ in curve][-4:] == [m["steps"] - 30, m["steps"] - 20, m["steps"] - 10, m["steps"]]
    assert min(rmse for _, rmse in curve[-3:]) >= best_rmse  # three evaluations in a row without a better one
    assert m["exported_step"] == best_step == m["steps"] - 30
    assert m["rmse"] == pytest.approx(best_rmse, abs=1e-4)
    assert m["rmse"] <= m["last_step_rmse"]
    assert f"best eval RMSE {m['rmse']:.4f} at step {best_step}; the last step {m['steps']}" in m["export_reason"]
    # The exported model is the best step's: its predictions give the best RMSE on the eval data again.
    from trainer.stock_check import stock_predict

    rows = np.loadtxt(small_data["valid"], delimiter=",", usecols=range(6))
    instances = [dict(zip(schema.NUMERIC_FEATURES, map(float, r[1:]), strict=True)) for r in rows]
    stock = stock_predict(result.export_dir, instances)
    assert stock.ok, stock.error
    assert float(np.sqrt(np.mean((np.array(stock.fares) - rows[:, 0]) ** 2))) == pytest.approx(best_rmse, abs=1e-3)


def test_an_error_after_training_started_exits_2_with_the_line_last(tmp_path, small_data):
    # The training iterator's threads are running when the evaluation finds no valid row: the
    # process must still end with the error line and exit code 2 (not abort with 134).
    bad = tmp_path / "eval.csv"
    bad.write_text("12.0,0,0,0,0,1,0\n" * 20)
    data = {"train": small_data["train"], "valid": bad}
    proc = subprocess.run(
        trainer_cmd(data, tmp_path / "out", 5, "--no_validate", "--steps_per_loop", "5"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: the evaluation data holds no valid row: check --eval_data_paths"
    assert "terminate called" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_full_output_disk_gives_an_error_line_not_a_silent_exit_1(tmp_path, small_data):
    """Writes past a size limit fail (EFBIG, as on a nearly full disk): the trainer says so in one line."""
    import resource

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with an error instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run(
        trainer_cmd(small_data, tmp_path / "out", 20),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write the training output") and "--output_dir" in last, proc.stderr[-2000:]
