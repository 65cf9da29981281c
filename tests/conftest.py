"""Shared fixtures: paths to the real samples, small data sets, one trained model per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("TAXIFARE_SAMPLES", ROOT.parent / "shared" / "data" / "taxifare"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Fixtures of the local GCS emulator (fake-gcs-server): gcs_server, gcs; of headless Chromium: browser; of the
#: local Vertex API server over gRPC: vertex.
pytest_plugins = ["_gcs", "_browser", "_vertex_fake"]


def real(name: str) -> Path:
    path = REAL_DATA / name
    if not path.exists():
        pytest.fail(f"real sample {path} is missing: the shared/ folder must sit beside the checkout")
    return path


@pytest.fixture(scope="session")
def real_train() -> Path:
    return real("taxi-train.csv")


@pytest.fixture(scope="session")
def real_valid() -> Path:
    return real("taxi-valid.csv")


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory, real_train: Path, real_valid: Path) -> dict[str, Path]:
    """A few hundred real rows for training, the real valid set for evaluation."""
    out = tmp_path_factory.mktemp("small")
    lines = real_train.read_text().splitlines(keepends=True)
    (out / "train.csv").write_text("".join(lines[:600]))
    return {"train": out / "train.csv", "valid": real_valid}


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, small_data: dict[str, Path]):
    """One short training run shared by the tests that only need an exported model."""
    from trainer.model import TrainConfig, train_and_evaluate

    out = tmp_path_factory.mktemp("trained")
    config = TrainConfig(
        train_data_paths=str(small_data["train"]),
        eval_data_paths=str(small_data["valid"]),
        output_dir=str(out),
        train_steps=300,
        batch_size=128,
        seed=1,
    )
    return train_and_evaluate(config, progress=lambda line: None)


def stage(source: str, out_paths: dict[str, str], *, bigquery_export_prefix: str = "", **settings):
    """``components.stage_data.logic.stage`` as the pipeline calls it: the pipeline's defaults for the settings not given."""
    import dataclasses

    from components.stage_data import logic as stage_data
    from pipeline import parameters

    defaults = parameters.defaults()
    given = {f.name: defaults[f.name] for f in dataclasses.fields(stage_data.StageSettings)} | settings | {"source": source}
    return stage_data.stage(stage_data.StageSettings(**given), out_paths, bigquery_export_prefix=bigquery_export_prefix)


def run_python(code: str, *args: str, timeout: float = 120.0):
    """Run ``code`` in a fresh interpreter (same environment), returning the CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials that cannot be found, and no cloud settings in the environment.

    GOOGLE_APPLICATION_CREDENTIALS names a missing file, so google.auth fails at once (without
    it, it would ask the GCE metadata server: tests/test_cloud_validation.py runs that case in a
    fresh process with the probe pointed at a closed loopback port).
    """
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    for name in ("GOOGLE_CLOUD_PROJECT", "TAXIFARE_REGION", "TAXIFARE_PIPELINE_ROOT", "TAXIFARE_BUCKET", "TAXIFARE_KFP_HOST"):
        monkeypatch.delenv(name, raising=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with whole-pipeline runs first, then files with slow tests, then the rest (stable order).

    The suite runs in two workers, one file at a time each (pyproject's addopts): a long file
    started last would finish alone while the other worker idles.
    """

    def rank(marker: str) -> set[Path]:
        return {Path(item.path) for item in items if item.get_closest_marker(marker)}

    e2e, slow = rank("e2e"), rank("slow")
    items.sort(key=lambda item: 0 if Path(item.path) in e2e else 1 if Path(item.path) in slow else 2)
