"""Version management: watch the model base path and serve the latest complete version.

The policy is TF Serving's ``latest`` with one version:

* a directory of the base path counts as a version when its name is all digits and it
  holds ``saved_model.pb`` (temporary ``.tmp-*`` directories and anything else are ignored);
* a version is loaded only once its directory has not changed (file names, sizes and
  modification times) for one poll interval, so a directory still being written is never
  loaded, even when the writer does not use the temporary-directory-and-rename protocol;
* the highest such version is loaded and warmed up *beside* the serving one, then requests
  switch to it atomically and the old version is unloaded (requests in flight finish on it);
* a version that fails to load or warm up is reported (state ``END`` with its error) and the
  previous version keeps serving; it is retried when its directory changes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from serving.payload import RequestError

log = logging.getLogger("serving")

Snapshot = tuple[tuple[str, int, int], ...]


@dataclasses.dataclass
class VersionState:
    """What TF Serving reports for a version."""

    state: str = "START"
    error_code: str = "OK"
    error_message: str = ""

    def as_dict(self, version: int) -> dict[str, Any]:
        """The ``model_version_status`` entry of the REST API."""
        return {
            "version": str(version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


def snapshot(path: str) -> Snapshot | None:
    """File names, sizes and mtimes under ``path`` (``None`` when it vanished meanwhile)."""
    entries = []
    try:
        for root, _dirs, files in os.walk(path):
            for name in files:
                full = os.path.join(root, name)
                st = os.stat(full)
                entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    except OSError:
        return None
    return tuple(sorted(entries))


def list_versions(model_dir: str) -> dict[int, str]:
    """Version number -> directory for every ``<digits>/saved_model.pb`` under ``model_dir``."""
    try:
        names = os.listdir(model_dir)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.isdigit() and name.isascii() and int(name) > 0:
            path = os.path.join(model_dir, name)
            if os.path.isfile(os.path.join(path, "saved_model.pb")):
                out[int(name)] = path
    return out


class ModelManager:
    """Loads, warms up and switches versions of one model; answers which version serves.

    Args:
        model_dir: the model's base path (the directory holding the numbered versions).
        model_name: the name clients use.
        poll_interval: seconds between scans; also how long a directory must stay unchanged.
        loader: builds a ready servable from ``(path, version)`` (default: load and warm up a
            :class:`serving.servable.Servable`).
    """

    def __init__(
        self, model_dir: str, model_name: str, poll_interval: float = 1.0, loader: Callable[[str, int], Any] | None = None
    ) -> None:
        self.model_dir = model_dir
        self.model_name = model_name
        self.poll_interval = poll_interval
        self._loader = loader or _load_and_warm_up
        self._lock = threading.Lock()
        self._available = threading.Condition(self._lock)
        self._current: Any = None
        self._states: dict[int, VersionState] = {}
        self._seen: dict[int, Snapshot] = {}
        self._failed: dict[int, Snapshot] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the watcher thread (scans immediately)."""
        self._thread = threading.Thread(target=self._run, name="version-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the serving version stays loaded until the object goes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # never let the watcher die: the serving version must keep serving
                log.exception("version watcher: scan of %s failed", self.model_dir)
            self._stop.wait(self.poll_interval)

    # -- policy -------------------------------------------------------------------------------
    def poll_once(self) -> None:
        """Scan the base path once and load the version the policy wants, if it changed."""
        on_disk = list_versions(self.model_dir)
        stable: dict[int, Snapshot] = {}
        seen: dict[int, Snapshot] = {}
        for version, path in on_disk.items():
            snap = snapshot(path)
            if snap is None:
                continue
            seen[version] = snap
            if self._seen.get(version) == snap:
                stable[version] = snap
            elif version not in self._states:
                log.info(
                    "version %d of %s found in %s: loading it once it has not changed for %.1fs",
                    version,
                    self.model_name,
                    path,
                    self.poll_interval,
                )
        self._seen = seen
        current = self._current.version if self._current is not None else None
        candidates = [v for v, snap in stable.items() if self._failed.get(v) != snap]
        if not candidates:
            return
        target = max(candidates)
        if target == current:
            return
        if current is not None and target < current and current in on_disk:
            return  # never go back while the newer version is still published
        self._load(target, on_disk[target], stable[target])

    def _load(self, version: int, path: str, snap: Snapshot) -> None:
        with self._lock:
            self._states[version] = VersionState("LOADING")
        log.info("loading version %d of %s from %s", version, self.model_name, path)
        started = time.monotonic()
        try:
            servable = self._loader(path, version)
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            with self._lock:
                self._states[version] = VersionState("END", "UNKNOWN", message)
                self._failed[version] = snap
            serving = f"version {self._current.version} keeps serving" if self._current is not None else "no version is serving"
            log.error("version %d of %s failed to load: %s (%s)", version, self.model_name, message, serving)
            return
        with self._available:
            old = self._current
            self._current = servable
            self._states[version] = VersionState("AVAILABLE")
            self._failed.pop(version, None)
            if old is not None:
                self._states[old.version] = VersionState("UNLOADING")
            self._available.notify_all()
        log.info("version %d of %s is AVAILABLE (loaded and warmed up in %.2fs)", version, self.model_name, time.monotonic() - started)
        if old is not None:
            old_version = old.version
            del old  # requests in flight keep their own reference and finish on the old version
            with self._lock:
                self._states[old_version] = VersionState("END")
            log.info("unloaded version %d of %s", old_version, self.model_name)

    # -- queries ------------------------------------------------------------------------------
    def get(self, version: int | None = None) -> Any:
        """The servable for ``version`` (``None``: the serving one).

        Raises:
            RequestError: 404 when that version is not available, 503 when none is yet.
        """
        current = self._current
        if version is None or (current is not None and version == current.version):
            if current is None:
                raise RequestError(f"model {self.model_name} has no available version yet: {self._summary()}", status=503)
            return current
        state = self._states.get(version)
        serving = f"version {current.version} is serving" if current is not None else "no version is serving yet"
        if state is None:
            raise RequestError(f"version {version} of model {self.model_name} does not exist; {serving}", status=404)
        detail = f": {state.error_message}" if state.error_message else ""
        raise RequestError(
            f"version {version} of model {self.model_name} is not available (state {state.state}{detail}); {serving}", status=404
        )

    def _summary(self) -> str:
        if not self._states:
            return f"no version found in {self.model_dir} (versions are directories named 1, 2, ... holding saved_model.pb)"
        return "; ".join(
            f"version {v} {s.state}{': ' + s.error_message if s.error_message else ''}" for v, s in sorted(self._states.items())
        )

    @property
    def current_version(self) -> int | None:
        """The serving version, if any."""
        current = self._current
        return current.version if current is not None else None

    def status(self, version: int | None = None) -> list[dict[str, Any]]:
        """``model_version_status`` entries, newest first (one version when asked).

        Raises:
            RequestError: 404 for a version never seen.
        """
        with self._lock:
            states = dict(self._states)
        if version is not None:
            if version not in states:
                raise RequestError(f"version {version} of model {self.model_name} does not exist ({self._summary()})", status=404)
            return [states[version].as_dict(version)]
        return [states[v].as_dict(v) for v in sorted(states, reverse=True)]

    def wait_available(self, timeout: float) -> bool:
        """Block until a version is available (or ``timeout`` seconds pass)."""
        with self._available:
            return self._available.wait_for(lambda: self._current is not None, timeout=timeout)


def _load_and_warm_up(path: str, version: int) -> Any:
    from serving.servable import Servable

    servable = Servable(path, version)
    servable.warm_up()
    return servable
