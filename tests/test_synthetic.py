import hashlib
from pathlib import Path

import numpy as np
import pytest

from trainer import synthetic, validation
from trainer.schema import Variant


def digest(paths: dict[str, str]) -> dict[str, str]:
    return {k: hashlib.sha256(Path(p).read_bytes()).hexdigest() for k, p in paths.items()}


def test_same_seed_same_bytes_whatever_the_chunking(tmp_path):
    a = synthetic.generate(5000, str(tmp_path / "a"), seed=7)
    b = synthetic.generate(5000, str(tmp_path / "b"), seed=7)
    assert digest(a.paths) == digest(b.paths)
    c = synthetic.generate(5000, str(tmp_path / "c"), seed=8)
    assert digest(a.paths) != digest(c.paths)


def test_splits_cover_every_row_once(tmp_path):
    g = synthetic.generate(3000, str(tmp_path), seed=1)
    assert sum(g.rows.values()) == 3000
    keys = [int(line.rsplit(",", 1)[1]) for p in g.paths.values() for line in Path(p).read_text().splitlines()]
    assert sorted(keys) == list(range(3000))
    assert 0.75 < g.rows["train"] / 3000 < 0.85


@pytest.mark.parametrize("variant", list(Variant))
def test_generated_rows_are_all_valid(tmp_path, variant):
    g = synthetic.generate(4000, str(tmp_path), seed=3, variant=variant)
    report = validation.scan(g.paths["train"], max_bad_fraction=0.0)
    assert report.variant is variant and report.bad == 0


def test_distributions_are_calibrated_against_the_real_sample(tmp_path, real_train):
    g = synthetic.generate(40_000, str(tmp_path), seed=5)
    fake = np.loadtxt(g.paths["train"], delimiter=",")
    real = np.loadtxt(real_train, delimiter=",")

    def summary(a):
        km = synthetic._haversine_km(a[:, 1], a[:, 2], a[:, 3], a[:, 4])
        jfk = synthetic._haversine_km(a[:, 1], a[:, 2], np.full(len(a), synthetic.JFK[0]), np.full(len(a), synthetic.JFK[1])) < 2
        return np.median(km), np.median(a[:, 0]), np.mean(a[:, 5] == 1), np.mean(jfk)

    f, r = summary(fake), summary(real)
    assert abs(f[0] - r[0]) / r[0] < 0.15  # median trip length
    assert abs(f[1] - r[1]) / r[1] < 0.10  # median fare
    assert abs(f[2] - r[2]) < 0.05  # share of single passengers
    assert 0.005 < f[3] < 0.03  # JFK pickups


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least 10"):
        synthetic.generate(5, str(tmp_path), seed=1)
    with pytest.raises(ValueError, match="summing to 1"):
        synthetic.generate(100, str(tmp_path), seed=1, fractions=(0.5, 0.2, 0.2))


def test_no_temporary_files_left_behind(tmp_path):
    synthetic.generate(100, str(tmp_path), seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.csv", "train.csv", "valid.csv"]
