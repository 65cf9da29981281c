"""base/atomic.py: write elsewhere then rename, and the one rule for stale temporaries."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from base import atomic


def test_a_failed_write_leaves_neither_a_temporary_nor_a_change(tmp_path):
    target = tmp_path / "page.html"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.replacing(str(target)) as tmp:
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["page.html"]


def test_writes_replace_whole_and_keep_the_extension(tmp_path):
    target = tmp_path / "out.yaml"
    seen = []
    with atomic.replacing(str(target)) as tmp:
        seen.append(tmp)
        with open(tmp, "w") as fh:
            fh.write("a: 1\n")
    assert seen[0].endswith(".yaml") and os.path.basename(seen[0]).startswith(f".tmp-{os.getpid()}-")
    atomic.write_json(str(target), {"a": 2}, durable=True, indent=1)
    assert target.read_text() == '{\n "a": 2\n}\n'
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_a_folder_replaces_a_placeholder_folder_but_a_file_never_replaces_a_folder(tmp_path):
    target = tmp_path / "model"
    (target / "old").mkdir(parents=True)
    with atomic.replacing(str(target)) as tmp:
        os.makedirs(os.path.join(tmp, "variables"))
    assert os.listdir(target) == ["variables"]
    with pytest.raises(OSError):
        atomic.write_text(str(target), "not a folder")
    assert os.listdir(target) == ["variables"]


def test_publish_without_replace_never_replaces_a_folder_that_holds_something(tmp_path):
    held, empty = tmp_path / "1", tmp_path / "2"
    held.mkdir()
    (held / "saved_model.pb").write_text("version 1")
    empty.mkdir()
    for target in (held, empty):
        tmp = atomic.temp_path(str(target))
        os.mkdir(tmp)
        (tmp_path / tmp / "saved_model.pb").write_text("new")
        if target == held:
            with pytest.raises(OSError):
                atomic.publish(tmp, str(target), replace=False)
            assert (held / "saved_model.pb").read_text() == "version 1"
        else:
            atomic.publish(tmp, str(target), replace=False)
            assert (empty / "saved_model.pb").read_text() == "new"


def test_a_url_keeps_its_scheme_in_the_temporary_name():
    tmp = atomic.temp_path("gs://bucket/run/best/best.json")
    assert tmp.startswith("gs://bucket/run/best/.tmp-") and tmp.endswith("-best.json")


def test_stale_means_old_and_its_writer_gone(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f".tmp-{gone.pid}-1-x"
    mine = tmp_path / f".tmp-{os.getpid()}-1-x"  # an old temporary with our id: a dead process whose id we reuse
    live = tmp_path / f".tmp-{os.getppid()}-1-x"  # another running process: its writer may still be at work
    for path in (dead, mine, live):
        path.write_text("x")
    time.sleep(0.05)
    started = time.time()  # stands for this process's start: ctime cannot be set back
    time.sleep(0.05)
    young = tmp_path / f".tmp-{gone.pid}-2-x"
    young.write_text("x")
    (tmp_path / "kept.json").write_text("{}")
    assert atomic.remove_stale(str(tmp_path), started) == sorted([dead.name, mine.name])
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, young.name, "kept.json"])
    assert atomic.remove_stale(str(tmp_path)) == []  # against the real start time: everything here is younger


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
