"""Bad output paths get one line and create nothing; runs leave nothing behind in /tmp.

Covers ``data generate --out``, ``compile --output`` and ``taxifare run``'s folders (a file
where a folder should be, a folder where a file should be, a read-only place), the failing
step's own error line, the per-run scratch folder, and stale ``.tmp-*`` exports.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.lib
import pytest

from base.errors import InputError
from components.common import error_line
from pipeline import scratch
from pipeline.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
LAB = "12.0,-73.987625,40.750617,-73.971163,40.78518,1,{}"
DATETIME = "11.3,2011-01-28 20:42:59 UTC,-73.999022,40.739146,-73.990369,40.717866,1,{}"


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody can write to; as root (modes do not apply), a path under sysfs."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        tempfile.mkstemp(dir=folder)
    except OSError:
        yield folder
        folder.chmod(0o755)
        return
    folder.chmod(0o755)
    try:
        os.close(tempfile.mkstemp(dir="/sys")[0])
    except OSError:
        yield Path("/sys")
        return
    pytest.skip("no read-only place on this machine")


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def cases(tmp: Path, ro: Path) -> dict[str, tuple[list[str], str]]:
    """Command line and the start of its one error line, by case."""
    afile, adir = tmp / "afile", tmp / "adir"
    run = ["run", "--pipeline-root", str(tmp / "pr"), "--serving-root", str(tmp / "sr")]
    gen = ["data", "generate", "--rows", "100", "--out"]
    comp = ["compile", "--target", "local", "--output"]
    return {
        "generate_read_only": (
            [*gen, str(ro / "data")],
            f"error: --out {ro / 'data'} is not writable",
        ),
        "generate_on_a_file": ([*gen, str(afile)], f"error: --out {afile} is a file"),
        "generate_under_a_file": (
            ["data", "generate", "--out", str(afile / "d")],
            f"error: --out {afile / 'd'} cannot be created: {afile} is a",
        ),
        "generate_split_is_a_dir": (
            [*gen, str(adir)],
            f"error: {adir / 'train.csv'} is a directory",
        ),
        "compile_read_only": (
            [*comp, str(ro / "p.yaml")],
            f"error: --output {ro / 'p.yaml'} is not writable",
        ),
        "compile_on_a_dir": ([*comp, str(adir)], f"error: --output {adir} is a directory"),
        "compile_under_a_file": (
            ["compile", "--target", "vertex", "--output", str(afile / "p.yaml")],
            f"error: --output {afile / 'p.yaml'} cannot",
        ),
        "run_root_is_a_file": (["run", "--pipeline-root", str(afile)], f"error: --pipeline-root {afile} is a file"),
        "run_root_read_only": (["run", "--pipeline-root", str(ro / "pr")], f"error: --pipeline-root {ro / 'pr'} is not writable"),
        "run_cache_root_is_a_file": ([*run, "--cache-root", str(afile)], f"error: --cache-root {afile} is a file"),
        "run_log_is_a_dir": ([*run, "--log-file", str(adir)], f"error: --log-file {adir} is a directory"),
        "run_serving_root_under_a_file": (
            ["run", "--pipeline-root", str(tmp / "pr"), "--serving-root", str(afile / "s")],
            f"error: --serving-root {afile / 's'} cannot be created",
        ),
    }


@pytest.mark.parametrize("case", list(cases(Path("/x"), Path("/y"))))
def test_bad_output_paths_get_one_line_exit_2_and_create_nothing(tmp_path, read_only, capsys, case, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep me\n")
    (tmp_path / "adir" / "train.csv").mkdir(parents=True)
    before = listing(tmp_path)
    argv, expected = cases(tmp_path, read_only)[case]
    assert cli_main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith(expected), err
    assert err.count("\n") == 1 and "Traceback" not in err and not out
    assert listing(tmp_path) == before
    assert not (read_only / "data").exists() and not (read_only / "pr").exists() and not (read_only / "p.yaml").exists()
    assert (tmp_path / "afile").read_text() == "keep me\n"


def test_compile_and_generate_write_files_others_can_read(tmp_path):
    from pipeline.compile import compile_pipeline
    from trainer import synthetic

    old = os.umask(0o022)
    try:
        out = compile_pipeline(str(tmp_path / "p.yaml"), target="local")
        gen = synthetic.generate(100, str(tmp_path / "data"), seed=1)
    finally:
        os.umask(old)
    assert os.stat(out).st_mode & 0o777 == 0o644
    assert {os.stat(p).st_mode & 0o777 for p in gen.paths.values()} == {0o644}
    assert sorted(os.listdir(tmp_path)) == ["data", "p.yaml"]  # no .compile-* left


def _chained() -> BaseException:
    try:
        try:
            raise ValueError("a taxi CSV row has 7 columns")
        except ValueError as exc:
            raise InputError("/data/x.csv fits no taxi layout: none of its first 1 rows does\n  (details)") from exc
    except InputError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_chained(), "InputError: /data/x.csv fits no taxi layout: none of its first 1 rows does"),
        (pyarrow.lib.ArrowInvalid("straddling object"), "ArrowInvalid: straddling object"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (RuntimeError("x" * 600), "RuntimeError: " + "x" * 486),
    ],
)
def test_the_failing_steps_own_error_line(exc, expected):
    """What a step records when an exception ends it: the exception that escaped, its type and first line."""
    assert error_line(exc) == expected


def test_run_prints_the_steps_error_line_and_leaves_nothing_in_tmp(tmp_path):
    """A real kfp.local run whose stage_data fails on a glob of mixed layouts."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("\n".join(LAB.format(i) for i in range(200)) + "\n")
    (data / "b.csv").write_text("\n".join(DATETIME.format(i) for i in range(200)) + "\n")
    own_tmp = tmp_path / "tmp"
    own_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(own_tmp), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "pipeline.cli", "run", "--source", str(data), "--pipeline-root", "pr", "--serving-root", "sr"]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    failed = next(line for line in lines if line.startswith("FAILED at stage_data: "))
    assert failed.startswith(f"FAILED at stage_data: InputError: mixed layouts in the train data: {data / 'a.csv'} is in the lab layout")
    assert any(line.startswith("  FAIL stage_data") and "InputError: mixed layouts" in line for line in lines)
    assert os.listdir(own_tmp) == []  # no tmp.*/ephemeral_component.py, no kfp-workspace-*
    assert os.listdir(tmp_path / "pr" / scratch.SCRATCH_DIR) == []


def test_scratch_folders_of_dead_runs_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "outer"))
    base = tmp_path / scratch.SCRATCH_DIR
    dead, live, young = base / "run-1-dead", base / "run-2-live", base / "run-3-young"
    for folder in (dead, live, young):
        (folder / "tmp" / "tmp.abc").mkdir(parents=True)
        (folder / "tmp" / "tmp.abc" / "ephemeral_component.py").write_text("x")
        (folder / scratch.LOCK_FILE).write_text("")
    old = time.time() - 3600
    for folder in (dead, live):
        os.utime(folder / scratch.LOCK_FILE, (old, old))
    with open(live / scratch.LOCK_FILE) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running `taxifare run` holds it
        with scratch.run_scratch(str(tmp_path)) as folder:
            assert os.environ["TMPDIR"] == os.path.join(folder, "tmp")
            assert sorted(os.listdir(base)) == sorted([live.name, young.name, os.path.basename(folder)])
        assert os.environ["TMPDIR"] == str(tmp_path / "outer")
        assert sorted(os.listdir(base)) == [live.name, young.name]


def test_stale_tmp_exports_are_removed_on_the_next_export(tmp_path):
    from trainer import model

    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a pid that is surely gone once it exits
    gone.wait()
    base = tmp_path / "export" / "exporter"
    stale = base / f".tmp-{gone.pid}-100"
    mine = base / f".tmp-{os.getpid()}-200"  # our own id on an old temporary: a dead process whose id we reuse
    live = base / f".tmp-{os.getppid()}-250"  # a running process's export: kept
    recent = base / f".tmp-{gone.pid}-300"
    done = base / "100"
    for folder in (stale, mine, live, done):
        (folder / "variables").mkdir(parents=True)
    time.sleep(0.05)
    started = time.time()  # ctime cannot be set back: stand for "this process started" between the two groups
    time.sleep(0.05)
    (recent / "variables").mkdir(parents=True)
    assert model.remove_stale_exports(str(base), older_than=started) == sorted([str(stale), str(mine)])
    assert sorted(os.listdir(base)) == sorted([live.name, recent.name, done.name])
