"""Deploy is a compare-and-publish: two runs can never leave the worse model served.

Real SavedModels (untrained, seeded: their answers and RMSEs differ), a real staged test split
for re-scoring, real threads racing on the real lock.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from _serving_helpers import export_untrained

from base import atomic, layout, process
from base.errors import InputError
from components.deploy import logic as deploy

HASH = "sha256:same-test-split"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("race-exports")
    return [export_untrained(out, seed) for seed in (11, 12)]


@pytest.fixture(scope="module")
def test_split(tmp_path_factory, real_valid):
    split = tmp_path_factory.mktemp("test-split")
    (split / "data.csv").write_text("".join(real_valid.read_text().splitlines(keepends=True)[:300]))
    return str(split)


def candidate(export: str, root: Path, rmse: float, test_hash: str = HASH, **kw):
    info = {"run": f"rmse-{rmse}", "verification": {"test_rmse": rmse, "blessed": True}, "test_data_hash": test_hash}
    return deploy.publish(export, str(root), "taxifare", info, candidate_rmse=rmse, test_data_hash=test_hash, **kw)


def test_the_worse_candidate_publishing_second_is_not_deployed(exports, tmp_path):
    # both verified while nothing was deployed; A publishes first, B (worse) second
    a = candidate(exports[0], tmp_path, 3.53)
    b = candidate(exports[1], tmp_path, 3.65)
    assert a.deployed and a.version == 1
    assert not b.deployed and b.version is None and b.path == ""
    assert "not better than version 1's $3.530" in b.reason
    model_dir = str(tmp_path / "taxifare")
    assert sorted(layout.list_versions(model_dir)) == [1]
    assert layout.served_version_dir(model_dir) == a.path
    # a strictly better one still goes in
    c = candidate(exports[1], tmp_path, 3.40)
    assert c.deployed and c.version == 2 and "beats version 1's $3.530" in c.reason
    assert json.loads((Path(c.path) / layout.DEPLOY_FILE).read_text())["compared_with"] == {"version": 1, "test_rmse": 3.53}


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_racing_candidates_leave_the_better_one_served(exports, tmp_path, order):
    rmses = (3.53, 3.65)
    start = threading.Barrier(2)
    results: dict[int, deploy.Published] = {}

    def run(i: int) -> None:
        start.wait()
        if i == order[1]:
            time.sleep(0.05)  # the second to take the lock
        results[i] = candidate(exports[i], tmp_path, rmses[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    served = layout.served_version_dir(str(tmp_path / "taxifare"))
    assert served is not None
    assert json.loads((Path(served) / layout.DEPLOY_FILE).read_text())["verification"]["test_rmse"] == 3.53
    assert results[0].deployed


def test_broken_versions_are_ignored_and_reported_and_rescoring_is_used(exports, tmp_path, test_split):
    model_dir = tmp_path / "taxifare"
    first = deploy.publish(exports[0], str(tmp_path), "taxifare", {"run": "manual"})  # no RMSE recorded: re-scored
    (model_dir / "2").mkdir()  # a version without saved_model.pb
    (model_dir / "3").mkdir()
    (model_dir / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")  # complete by name, not loadable
    score = deploy.rescorer(test_split)
    rmse_v1 = score(first.path)
    rmse_b = score(exports[1])
    published = candidate(exports[1], tmp_path, rmse_b, test_hash="sha256:another-split", rescore=score)
    assert any(b.startswith("version 2: no saved_model.pb") for b in published.broken)
    assert any(b.startswith("version 3: cannot be scored") for b in published.broken)
    assert published.compared_with == 1 and published.reference_rmse == pytest.approx(rmse_v1)
    assert "inf" not in published.reason
    assert published.deployed is (rmse_b < rmse_v1)
    if published.deployed:
        assert published.version == 4  # broken numbers are never reused


def test_stale_temporaries_are_removed_fresh_ones_kept_and_stats_kept(exports, tmp_path):
    import subprocess
    import sys

    model_dir = tmp_path / "taxifare"
    model_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a writer that is gone
    stale = model_dir / f".tmp-{dead.pid}-1"
    stale.mkdir()
    waiting = model_dir / f".tmp-{os.getppid()}-1"  # a live process's copy, waiting for the lock: kept
    waiting.mkdir()
    (stale / "saved_model.pb").write_bytes(b"half")
    old = process.start_time() - 60
    os.utime(stale / "saved_model.pb", (old, old))
    # ctime cannot be set back: make the writer look dead by checking against a later "process start"
    removed = atomic.remove_stale(str(model_dir), older_than=time.time() + 1)
    assert removed == [stale.name] and not stale.exists() and waiting.exists()
    fresh = model_dir / ".tmp-998-2"
    fresh.mkdir()
    assert atomic.remove_stale(str(model_dir), older_than=process.start_time()) == []
    assert fresh.exists()  # created after this process started: a writer may still be at work
    stats = {"rows": 123, "columns": {"fare_amount": {"mean": 11.5}}}
    published = candidate(exports[0], tmp_path, 3.5, train_stats=stats)
    assert json.loads((Path(published.path) / layout.TRAIN_STATS_FILE).read_text()) == stats
    assert layout.deployed_train_stats(str(model_dir)) == stats
    assert layout.deployed_train_stats(str(tmp_path / "nothing")) is None


def test_canary_mode_keeps_stable_and_replace_moves_it(exports, tmp_path):
    model_dir = str(tmp_path / "taxifare")
    one = candidate(exports[0], tmp_path, 3.6)
    two = candidate(exports[1], tmp_path, 3.5, mode="canary")
    assert two.deployed and layout.read_labels(model_dir) == {"stable": 1, "canary": 2}
    assert layout.served_version_dir(model_dir) == one.path  # the default route did not move
    three = candidate(exports[0], tmp_path, 3.4)  # replace: stable follows the new version
    assert layout.read_labels(model_dir) == {"stable": 3, "canary": 2}
    assert layout.served_version_dir(model_dir) == three.path


def test_bad_settings_and_labels_file(exports, tmp_path):
    with pytest.raises(InputError, match="deploy_mode must be 'replace' or 'canary'"):
        candidate(exports[0], tmp_path, 3.0, mode="blue")
    (tmp_path / "taxifare").mkdir()
    (tmp_path / "taxifare" / layout.LABELS_FILE).write_text("{not json")
    with pytest.raises(InputError, match=r"labels\.json is not readable JSON"):
        candidate(exports[0], tmp_path, 3.0)
    assert layout.list_versions(str(tmp_path / "taxifare")) == {}


def test_the_deploy_component_compares_publishes_and_keeps_the_train_stats(exports, tmp_path, test_split, capsys):
    """The kfp component's own function (``python_func``) with real artifacts: what the pipeline runs."""
    from kfp import dsl

    from components.contracts import DatasetStats
    from components.deploy.component import deploy as deploy_component

    test_data = dsl.Dataset(uri=test_split, metadata={"split": "test", "rows": 300, "variant": "lab", "source": "x", "content_hash": "t"})
    stats = DatasetStats("train", 500, "lab", "x", columns={"fare_amount": {"mean": 11.0}}, content_hash="h").to_metadata()
    train_data = dsl.Dataset(uri=str(tmp_path / "train"), metadata=stats)

    def run(export: str, rmse: float, mode: str = "replace", judged_against: int | None = None) -> str:
        details = {"champion_version": judged_against, "gate": {}} if judged_against else {}
        verification = dsl.Metrics(uri=str(tmp_path / "metrics"), metadata={"test_rmse": rmse, "blessed": True, "details": details})
        return deploy_component.python_func(
            model=dsl.Model(uri=export, metadata={"rmse": rmse, "steps": 100}),
            train_data=train_data,
            test_data=test_data,
            verification=verification,
            serving_root=str(tmp_path / "serving"),
            model_name="taxifare",
            run_name=f"run-{rmse}",
            deploy_mode=mode,
        )

    first = run(exports[0], 3.5)
    assert first.endswith("/taxifare/1")
    assert run(exports[0], 3.5) == ""  # the same model again is not better than the served version: nothing deployed
    out = capsys.readouterr().err
    # the verification carries no judgement (no champion): deploy judges it against the served version on the test rows
    assert "not deployed: against version 1, served now: not better overall" in out and "$inf" not in out
    # blessed by verify_export against version 1, which still serves the default route: that judgement stands
    assert run(exports[1], 3.4, mode="canary", judged_against=1).endswith("/taxifare/2")
    model_dir = str(tmp_path / "serving" / "taxifare")
    assert layout.read_labels(model_dir) == {"stable": 1, "canary": 2}
    assert layout.deployed_train_stats(model_dir) == stats


def test_a_stray_file_named_like_a_version_is_reported_and_skipped(exports, tmp_path, capsys):
    """A regular file ``2`` beside version 1: deploy numbers past it, `taxifare versions` reports it."""
    from pipeline.cli import main as taxifare

    first = deploy.publish(exports[0], str(tmp_path), "taxifare", {"run": "manual"})
    assert first.version == 1
    (tmp_path / "taxifare" / "2").write_text("not a version")
    second = deploy.publish(exports[1], str(tmp_path), "taxifare", {"run": "manual"})
    assert second.version == 3 and os.path.isdir(second.path)
    assert any("version 2: a file, not a version directory" in b for b in second.broken), second.broken
    assert taxifare(["versions", "--model-base-path", str(tmp_path / "taxifare")]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.split()[:1] == ["2"])
    assert "a file, not a version directory" in line, out


def test_an_unreadable_version_directory_is_reported_as_permission_denied():
    """A version directory this user cannot read (mode 000) is named as such, not as 'no saved_model.pb'."""
    import shutil
    import subprocess
    import sys
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="taxifare-mode000-"))  # readable by the unprivileged user
    tmp_path.chmod(0o755)
    version = tmp_path / "taxifare" / "1"
    version.mkdir(parents=True)
    (version / layout.SAVED_MODEL).write_bytes(b"x")
    version.chmod(0)
    try:
        code = "import sys; from base import layout; print([v.problem for v in layout.scan(sys.argv[1])])"
        # root reads any mode: run the scan as an unprivileged user when this is root
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        probe_env = {**os.environ, "PYTHONPATH": root}
        probe = subprocess.run([*prefix, sys.executable, "-c", "import serving"], capture_output=True, env=probe_env)
        if probe.returncode != 0:  # e.g. a checkout in a private folder (mktemp -d): the other user cannot even start Python
            pytest.skip(f"the unprivileged user cannot run this checkout's interpreter: {probe.stderr.decode()[-200:]}")
        out = subprocess.run(
            [*prefix, sys.executable, "-c", code, str(tmp_path / "taxifare")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": root},
            timeout=60,
        )
        code = (
            "import logging, sys; logging.basicConfig(); from serving.manager import ModelManager; "
            "ModelManager(sys.argv[1], 'taxifare').poll_once()"
        )
        server = subprocess.run(
            [*prefix, sys.executable, "-c", code, str(tmp_path / "taxifare")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "2"},
            timeout=120,
        )
    finally:
        version.chmod(0o755)
        shutil.rmtree(tmp_path)
    assert "permission denied" in out.stdout, (out.stdout, out.stderr[-500:])
    assert "version 1 of taxifare" in server.stderr and "is skipped: permission denied" in server.stderr, server.stderr[-800:]
