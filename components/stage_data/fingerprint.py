"""A cheap fingerprint of the data a run's sources resolve to, for the pipeline cache.

kfp's cache keys a step on its inputs. ``stage_data``'s inputs are the source *strings*
(``data/*.csv``, ``gs://b/taxi/*.csv``), so the same glob over changed files would be a cache
hit and a retraining run would reuse the old splits and the old model. The runners (``taxifare
run``, ``submit``, ``schedule``) therefore compute :func:`data_fingerprint` when they start a
run and pass it as the pipeline parameter ``data_fingerprint``, which ``stage_data`` takes:
changed data changes the key, unchanged data keeps it.

What is fingerprinted, per source (``source``, ``eval_source``, ``test_source``), resolved by
the same code ``stage_data`` uses (:mod:`base.storage`, :mod:`components.stage_data.sources`):

* local files: each file's path, size and modification time (nanoseconds);
* ``gs://`` objects: each object's name, generation and size (one listing per folder, through
  google-cloud-storage; honours ``STORAGE_EMULATOR_HOST``);
* a ``dt=YYYY-MM-DD`` window (``window_days`` > 0): the window's first and last day, and its files
  as above;
* ``bigquery``: the window's first and last day (the table's content is not read);
* ``synthetic``: nothing more than the name (the generator's parameters are pipeline
  parameters already).

No file is read: the cost is one ``stat`` per local file or one listing per ``gs://`` folder.
TF-free; no kfp.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from base import storage

SYNTHETIC = "synthetic"
BIGQUERY = "bigquery"


def describe_sources(params: Mapping[str, Any], *, now: dt.datetime | None = None) -> dict[str, Any]:
    """What each source resolves to now, as a JSON-ready dict (the fingerprint's input).

    Args:
        params: the run's pipeline parameters; read are ``source`` (the train source, as
            ``stage_data`` takes it), ``eval_source`` and ``test_source`` (empty or absent when
            carved out of ``source``), ``window_days`` (days of a ``dt=`` or ``bigquery``
            window before ``scheduled_time``; 0 or absent for none) and ``scheduled_time``
            (empty, absent or a placeholder means now).
        now: the clock, for tests.

    Returns:
        ``{"source": {...}, "eval_source": {...}, "test_source": {...}}``.

    Raises:
        InputError: a source that resolves to no file, or a bad window (the same message
            ``stage_data`` would give, before anything runs).
    """
    from components.stage_data import sources

    window_days = int(params.get("window_days") or 0)
    scheduled_time = params.get("scheduled_time") or ""
    described: dict[str, Any] = {}
    for name in ("source", "eval_source", "test_source"):
        text = str(params.get(name) or "").strip()
        if not text:
            described[name] = None
        elif text == SYNTHETIC and name == "source":
            described[name] = {"kind": SYNTHETIC}
        elif text == BIGQUERY and name == "source":
            days = sources.window_days(window_days, scheduled_time, now=now)
            described[name] = {"kind": BIGQUERY, "first_day": days[0].isoformat(), "last_day": days[-1].isoformat()}
        elif window_days > 0 and name == "source":
            days = sources.window_days(window_days, scheduled_time, now=now)
            files = sources.dated_files(text, window_days, scheduled_time, now=now)
            described[name] = {
                "kind": "window",
                "first_day": days[0].isoformat(),
                "last_day": days[-1].isoformat(),
                "files": file_states(files),
            }
        else:
            from base import storage

            what = "training data" if name == "source" else name.replace("_source", "") + " data"
            described[name] = {"kind": "files", "pattern": text, "files": file_states(storage.expand(text, what=what))}
    return described


def data_fingerprint(params: Mapping[str, Any], *, now: dt.datetime | None = None) -> str:
    """A short hex digest of what the sources of the pipeline parameters ``params`` resolve to now (see :func:`describe_sources`).

    The same files in the same state give the same value; a file added, removed, rewritten
    (new size, modification time or ``gs://`` generation) or a window that moved gives another.

    Raises:
        InputError: as :func:`describe_sources`.
    """
    text = json.dumps(describe_sources(params, now=now), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_states(files: list[str]) -> list[list[Any]]:
    """``[path, size, version]`` per file: the modification time in ns locally, the generation on ``gs://``.

    ``gs://`` objects are listed once per folder (not fetched one by one).
    """
    states: list[list[Any]] = []
    listed: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    for path in files:
        if storage.is_gcs(path):
            bucket, name = storage.split_gcs(path)
            folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
            if (bucket, folder) not in listed:
                blobs = storage.gcs_client().list_blobs(bucket, prefix=folder)
                listed[bucket, folder] = {b.name: (int(b.generation or 0), int(b.size or 0)) for b in blobs}
            generation, size = listed[bucket, folder].get(name, (0, -1))
            states.append([path, size, generation])
        else:
            st = os.stat(path)
            states.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    return states
