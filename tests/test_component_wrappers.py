"""The kfp component modules: light to import, and their wrapper logic (artifacts in, metadata out) tested via ``.python_func``."""

import json
import subprocess
import sys

from conftest import ROOT
from kfp import dsl

from components.contracts import SUMMARY_DIR_ENV, DatasetStats, ModelInfo, StepSummary, Verification

COMPONENT_MODULES = [
    "components.common",
    "components.stage_data.component",
    "components.smoke_train.component",
    "components.full_train.component",
    "components.verify_export.component",
    "components.deploy.component",
    "components.vertex_steps.component",
    "components.contracts",
    "pipeline.parameters",
    "base.checks",
    "trainer.validation",
]
HEAVY = ("tensorflow", "keras", "pandas", "numpy", "pyarrow", "matplotlib", "google.cloud.aiplatform")


def test_component_modules_import_nothing_heavy_at_module_level():
    """kfp imports each component module to compile and to run a step: heavy libraries belong inside the function."""
    code = (
        "import importlib, json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "found = {}\n"
        f"for name in {COMPONENT_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "    new = [h for h in heavy if h in sys.modules and not any(h in v for v in found.values())]\n"
        "    if new:\n"
        "        found[name] = new\n"
        "print(json.dumps(found))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(proc.stdout) == {}, f"heavy imports at module level (module: first heavy modules it pulled in): {proc.stdout}"


def test_the_guard_sees_a_heavy_import(tmp_path):
    """The check itself can fail: a module importing numpy is caught."""
    (tmp_path / "heavy_component.py").write_text("import numpy\n")
    code = "import sys; sys.path.insert(0, sys.argv[1]); import heavy_component; print('numpy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "True"


def artifact(kind, path, **metadata):
    out = kind(uri=str(path))
    out.metadata.update(metadata)
    return out


def test_stage_data_wrapper_writes_each_split_and_its_statistics(tmp_path, monkeypatch):
    from components.stage_data.component import stage_data

    monkeypatch.setenv(SUMMARY_DIR_ENV, str(tmp_path / "summaries"))
    outs = {name: artifact(dsl.Dataset, tmp_path / name) for name in ("train", "eval", "test")}
    stage_data.python_func(
        source="synthetic", eval_source="", test_source="", synthetic_rows=1000, seed=1, datetime_layout=False,
        eval_fraction=0.1, test_fraction=0.1, max_bad_fraction=0.1, window_days=0, scheduled_time="", bigquery_project="",
        data_fingerprint="fp-1",
        train_data=outs["train"], eval_data=outs["eval"], test_data=outs["test"],
    )  # fmt: skip
    stats = {name: DatasetStats.from_metadata(a.metadata) for name, a in outs.items()}
    assert sum(s.rows for s in stats.values()) == 1000
    assert {name: s.split for name, s in stats.items()} == {"train": "train", "eval": "eval", "test": "test"}
    assert all((tmp_path / name / "data.csv").exists() for name in outs)
    assert outs["train"].metadata["data_fingerprint"] == "fp-1"  # what the cache was keyed on
    written = StepSummary.read(str(tmp_path / "summaries"), "stage_data")
    assert written and {k: written.figures[k] for k in outs} == {name: s.rows for name, s in stats.items()}


def test_deploy_wrapper_records_the_verdict_the_model_and_the_data_hash(tmp_path):
    from components.deploy.component import deploy

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "saved_model.pb").write_bytes(b"")
    model = artifact(dsl.Model, model_dir, **ModelInfo(rmse=3.5, steps=100, variant="lab").to_metadata())
    test_data = artifact(dsl.Dataset, tmp_path / "test", split="test", rows=10, variant="lab", source="x", content_hash="ab" * 32)
    train_data = artifact(dsl.Dataset, tmp_path / "train", split="train", rows=80, variant="lab", source="x", content_hash="cd" * 32)
    verification = artifact(dsl.Metrics, tmp_path / "metrics", **Verification(True, "ok", {"test_rmse": 3.4}).to_metadata())
    path = deploy.python_func(
        model=model, train_data=train_data, test_data=test_data, verification=verification, serving_root=str(tmp_path / "serving"),
        model_name="m", run_name="r1", deploy_mode="replace",
    )  # fmt: skip
    assert path == str(tmp_path / "serving" / "m" / "1")
    record = json.loads((tmp_path / "serving" / "m" / "1" / "taxifare_deploy.json").read_text())
    assert record["test_data_hash"] == "ab" * 32 and record["run"] == "r1"
    assert Verification.from_metadata(record["verification"]).test_rmse == 3.4
    assert ModelInfo.from_metadata(record["train_metadata"]) == ModelInfo(rmse=3.5, steps=100, variant="lab")
    stats = json.loads((tmp_path / "serving" / "m" / "1" / "assets.extra" / "taxifare_train_stats.json").read_text())
    assert DatasetStats.from_metadata(stats).content_hash == "cd" * 32


def test_prepare_upload_wrapper_labels_the_model_with_its_rmse_and_data(tmp_path):
    from google_cloud_pipeline_components.types.artifact_types import RegressionMetrics, UnmanagedContainerModel

    from components.vertex_steps.component import prepare_upload
    from components.vertex_steps.logic import rmse_from_labels, serving_container_spec

    unmanaged = UnmanagedContainerModel(uri=str(tmp_path / "unmanaged"))
    evaluation = RegressionMetrics(uri=str(tmp_path / "evaluation"))
    labels = prepare_upload.python_func(
        model=artifact(dsl.Model, "gs://bucket/model"),
        verification=artifact(dsl.Metrics, tmp_path / "m", **Verification(True, "ok", {"test_rmse": 2.345}).to_metadata()),
        test_data=artifact(dsl.Dataset, tmp_path / "t", **DatasetStats("test", 9, "lab", "x", content_hash="CD" * 32).to_metadata()),
        serving_image="us-docker.pkg.dev/x/y:1",
        unmanaged_model=unmanaged,
        evaluation=evaluation,
    )
    assert json.loads((tmp_path / "evaluation").read_text())["slicedMetrics"][0]["metrics"] == {
        "regression": {"rootMeanSquaredError": 2.345}
    }
    assert rmse_from_labels(labels) == 2.345 and labels["taxifare-test-data"] == "cd" * 8
    assert unmanaged.uri == "gs://bucket/model"
    assert unmanaged.metadata["containerSpec"] == serving_container_spec("us-docker.pkg.dev/x/y:1")
    assert unmanaged.metadata["containerSpec"]["command"] == ["taxifare", "serve"]


def test_contracts_round_trip():
    stats = DatasetStats("train", 5, "lab", "a.csv", columns={"fare_amount": {"min": 1.0, "mean": 7.5, "max": 9.0}}, content_hash="h")
    assert DatasetStats.from_metadata({**stats.to_metadata(), "added_by_kfp": 1}) == stats and stats.mean() == 7.5
    verdict = Verification(False, "worse", {"test_rmse": 4.0, "deployed_rmse": float("inf")})
    assert Verification.from_metadata(verdict.to_metadata()) == Verification(False, "worse", {"test_rmse": 4.0})
    assert ModelInfo.from_metadata(ModelInfo(1.0, 10, smoke=True).to_metadata()) == ModelInfo(1.0, 10, smoke=True)
