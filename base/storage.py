"""File globs and reads for local paths and ``gs://`` URIs, with clear errors.

Local paths use the standard library. ``gs://`` goes through google-cloud-storage, which
honours ``STORAGE_EMULATOR_HOST`` (TensorFlow's own GCS filesystem does not), so staging
can be tested against a local emulator.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import gzip
import os
import re
from collections.abc import Iterable, Iterator
from typing import IO, Any

from base.errors import InputError


def is_gcs(path: str) -> bool:
    """Whether ``path`` is a ``gs://`` URI."""
    return path.startswith("gs://")


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket:
        raise InputError(f"{uri!r} names no bucket: write gs://BUCKET/path")
    return bucket, name


#: Cloud Storage bucket names: lowercase letters, digits, '-', '_' and '.', starting and ending
#: with a letter or digit; 3-63 characters, or up to 222 when dotted (each part at most 63).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")


def check_bucket_name(bucket: str, *, what: str = "bucket") -> str:
    """Check a Cloud Storage bucket name locally (no request) and return it.

    Raises:
        InputError: when it is not a valid bucket name (a space, upper case, an IP address...).
    """
    valid = (
        bool(_BUCKET_NAME.fullmatch(bucket))
        and 3 <= len(bucket) <= (222 if "." in bucket else 63)
        and ".." not in bucket
        and not bucket.startswith("goog")
        and not re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket)
        and all(0 < len(part) <= 63 for part in bucket.split("."))
    )
    if not valid:
        raise InputError(
            f"{what}: {bucket!r} is not a valid Cloud Storage bucket name: use 3-63 lowercase letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (e.g. gs://my-project-taxifare/path)"
        )
    return bucket


def gcs_client() -> Any:
    """The one Cloud Storage client (google-cloud-storage; anonymous against ``STORAGE_EMULATOR_HOST`` when set)."""
    from google.cloud import storage  # heavy; only for gs://

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    return storage.Client()


def _expand_one(pattern: str) -> list[str]:
    if is_gcs(pattern):
        bucket, name = split_gcs(pattern)
        prefix = name.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
        blobs = gcs_client().list_blobs(bucket, prefix=prefix)
        matches = [b.name for b in blobs if fnmatch.fnmatchcase(b.name, name) and not b.name.endswith("/")]
        return [f"gs://{bucket}/{m}" for m in sorted(matches)]
    pattern = os.path.expanduser(pattern)
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*")
    return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))


def expand(patterns: str | Iterable[str], *, what: str = "data") -> list[str]:
    """Expand comma-separated or listed file globs into a sorted list of files.

    Args:
        patterns: one glob, several separated by commas, or a list of them. A directory
            stands for every file in it.
        what: what the files are, for the error message (``"training data"``...).

    Returns:
        The matching files, each pattern's matches sorted, duplicates removed.

    Raises:
        InputError: when a pattern matches no file.
    """
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",")]
    files: list[str] = []
    for raw in patterns:
        pattern = raw.strip()
        if not pattern:
            continue
        matches = _expand_one(pattern)
        if not matches:
            raise InputError(
                f"no file matches the {what} pattern {pattern!r}: check the path "
                "(a glob such as data/train*.csv, or gs://BUCKET/path/*.csv)"
            )
        files.extend(m for m in matches if m not in files)
    if not files:
        raise InputError(f"no {what} given: pass a file, a glob or a directory")
    return files


def open_binary(path: str) -> IO[bytes]:
    """Open a local file or a ``gs://`` object for binary reading."""
    if is_gcs(path):
        bucket, name = split_gcs(path)
        blob = gcs_client().bucket(bucket).blob(name)
        return blob.open("rb")  # type: ignore[no-any-return]
    return open(path, "rb")


def is_gzip_name(path: str) -> bool:
    """Whether ``path`` names a gzip-compressed file (``.gz``, any case); TF reads the same files as GZIP."""
    return path.lower().endswith(".gz")


@contextlib.contextmanager
def open_data(path: str) -> Iterator[IO[bytes]]:
    """Open a data file for binary reading, decompressing it when its name ends in ``.gz``.

    Local or ``gs://``; the trainer's tf.data input reads the same files with
    ``compression_type="GZIP"`` by the same rule (:func:`is_gzip_name`).
    """
    with open_binary(path) as raw:
        if not is_gzip_name(path):
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            yield unzipped  # type: ignore[misc]


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _probe_writable(directory: str, flag: str, path: str) -> None:
    """Create and remove a file in ``directory``: the only sure test (root ignores modes, mounts can be read-only)."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".taxifare-write-check-")
    except OSError as exc:
        raise InputError(f"{flag} {path} is not writable ({exc.strerror} in {directory}): pass a path you can write to") from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str, flag: str) -> None:
    """Refuse, before anything is written, a local directory the command could not create or write to.

    Nothing is created (the probe file is removed). ``gs://`` paths are not checked here.

    Raises:
        InputError: ``path`` or one of its parents is a file, or the place is read-only.
    """
    if is_gcs(path):
        return
    target = os.path.abspath(os.path.expanduser(path))
    existing = _nearest_existing(target)
    if not os.path.isdir(existing):
        if existing == target:
            raise InputError(f"{flag} {path} is a file, not a directory: pass a directory (or move the file away)")
        raise InputError(f"{flag} {path} cannot be created: {existing} is a file, not a directory")
    _probe_writable(existing, flag, path)


def check_output_file(path: str, flag: str) -> None:
    """Refuse, before anything is written, a local file path the command could not write.

    An existing file may be replaced; nothing is created by the check.

    Raises:
        InputError: ``path`` is a directory, a parent is a file, or the place is read-only.
    """
    if is_gcs(path):
        return
    target = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(target):
        raise InputError(f"{flag} {path} is a directory: pass a file name")
    existing = _nearest_existing(os.path.dirname(target))
    if not os.path.isdir(existing):
        raise InputError(f"{flag} {path} cannot be written: {existing} is a file, not a directory")
    _probe_writable(existing, flag, path)
