"""Version management: watch the model base path, its labels, and serve what they name.

The layout of a base path (what a version is, the labels file) is :mod:`serving.layout`'s.
The policy is TF Serving's, with version labels:

* a directory of the base path counts as a version when its name is all digits and it
  holds ``saved_model.pb`` (temporary ``.tmp-*`` directories and anything else are ignored);
* a version is loaded only once its directory has not changed (file names, sizes and
  modification times) for one poll interval, so a directory still being written is never
  loaded, even when the writer does not use the temporary-directory-and-rename protocol;
* the **routes** are the default route (no version, no label) and one per label of
  ``labels.json``. The default route serves the ``stable`` label when it is set, else the
  newest version; each label serves the version it names. Every version a route names is
  loaded and warmed up *beside* the serving ones, then the routes switch to it atomically;
  versions no route names any more are unloaded (requests in flight finish on them);
* a route keeps its old version until the new one is available, so moving a label (a
  rollback, a promotion) never fails a request;
* a version that fails to load or warm up is reported (state ``END`` with its error) and the
  routes keep their previous versions; it is retried when its directory changes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from serving import layout
from serving.layout import list_versions
from serving.payload import RequestError

__all__ = ["ModelManager", "VersionState", "list_versions", "snapshot"]

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


@dataclasses.dataclass(frozen=True)
class Routes:
    """What each route serves now; replaced as a whole, never changed in place."""

    default: int | None = None
    labels: dict[str, int] = dataclasses.field(default_factory=dict)
    servables: dict[int, Any] = dataclasses.field(default_factory=dict)


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


class ModelManager:
    """Loads, warms up and switches versions of one model; answers which version a route serves.

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
        self._routes = Routes()
        self._states: dict[int, VersionState] = {}
        self._seen: dict[int, Snapshot] = {}
        self._failed: dict[int, Snapshot] = {}
        self._labels: dict[str, int] = {}
        self._labels_problem = ""
        self._unreadable: set[int] = set()  # versions reported as unreadable (once each)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the watcher thread (scans immediately)."""
        self._thread = threading.Thread(target=self._run, name="version-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the serving versions stay loaded until the object goes)."""
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
    def _scan(self) -> tuple[dict[int, str], dict[int, Snapshot]]:
        """The complete versions on disk, and those unchanged since the last scan."""
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
        self._report_unreadable(on_disk)
        return on_disk, stable

    def _report_unreadable(self, on_disk: dict[int, str]) -> None:
        """One log line for each numbered directory this process may not read (it is skipped)."""
        try:
            names = [n for n in os.listdir(self.model_dir) if layout.is_version_name(n) and int(n) not in on_disk]
        except OSError:
            return
        unreadable = set()
        for name in names:
            path = os.path.join(self.model_dir, name)
            if os.path.isdir(path) and "permission denied" in (problem := layout.missing_model_problem(path)):
                unreadable.add(int(name))
                if int(name) not in self._unreadable:
                    log.warning("version %s of %s in %s is skipped: %s", name, self.model_name, path, problem)
        self._unreadable = unreadable

    def _read_labels(self) -> dict[str, int]:
        """The labels file; on a bad file, the last good labels (and one log line per new problem)."""
        try:
            labels = layout.read_labels(self.model_dir)
        except layout.LayoutError as exc:
            if str(exc) != self._labels_problem:
                log.error("%s; the routes keep their versions", exc)
            self._labels_problem = str(exc)
            return self._labels
        if labels != self._labels:
            log.info("labels of %s: %s", self.model_name, ", ".join(f"{k} -> {v}" for k, v in sorted(labels.items())) or "none")
        self._labels, self._labels_problem = labels, ""
        return labels

    def poll_once(self) -> None:
        """Scan the base path and labels once; load what the routes name, switch, unload the rest."""
        on_disk, stable = self._scan()
        labels = self._read_labels()
        old = self._routes
        loadable = {v for v, snap in stable.items() if self._failed.get(v) != snap}
        servables = dict(old.servables)

        def resolve(wanted: int | None, previous: int | None) -> int | None:
            """``wanted`` once it is loaded (loading it if it can be), else what the route had."""
            if wanted is not None and wanted not in servables and wanted in loadable:
                servable = self._load(wanted, on_disk[wanted], stable[wanted])
                if servable is not None:
                    servables[wanted] = servable
            if wanted is not None and wanted in servables:
                return wanted
            return previous if previous in servables else None

        # the default route: `stable` when it names a version on disk, else the newest version that can serve
        # (trying older ones when a newer one fails to load, down to the one serving now)
        default = None
        if labels.get(layout.STABLE) in on_disk:
            default = resolve(labels[layout.STABLE], old.default)
        else:
            for candidate in sorted(loadable | {v for v in servables if v in on_disk}, reverse=True):
                default = resolve(candidate, None)
                if default is not None:
                    break
            default = default if default is not None else (old.default if old.default in servables else None)
        routed = {name: resolve(version, old.labels.get(name)) for name, version in sorted(labels.items())}
        new_labels = {name: version for name, version in routed.items() if version is not None}
        keep = {v for v in (default, *new_labels.values()) if v is not None}
        new = Routes(default, new_labels, {v: servables[v] for v in keep})
        if new.default == old.default and new.labels == old.labels and new.servables.keys() == old.servables.keys():
            return
        with self._available:
            self._routes = new
            for version in new.servables:
                self._states[version] = VersionState("AVAILABLE")
            for version in set(servables) - keep:
                self._states[version] = VersionState("UNLOADING")
            self._available.notify_all()
        for version in sorted(set(new.servables) - set(old.servables)):
            log.info("version %d of %s is AVAILABLE", version, self.model_name)
        if new.default != old.default or new.labels != old.labels:
            routes = ", ".join(f"{name} -> {v}" for name, v in sorted(new.labels.items()))
            log.info("%s: the default route serves version %s%s", self.model_name, new.default, f"; labels {routes}" if routes else "")
        for version in sorted(set(servables) - keep):
            servables.pop(version)  # requests in flight keep their own reference and finish on it
            with self._lock:
                self._states[version] = VersionState("END")
            log.info("unloaded version %d of %s", version, self.model_name)

    def _load(self, version: int, path: str, snap: Snapshot) -> Any:
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
            current = self._routes.default
            serving = f"version {current} keeps serving" if current is not None else "no version is serving"
            log.error("version %d of %s failed to load: %s (%s)", version, self.model_name, message, serving)
            return None
        self._failed.pop(version, None)
        log.info("version %d of %s is loaded and warmed up in %.2fs", version, self.model_name, time.monotonic() - started)
        return servable

    # -- queries ------------------------------------------------------------------------------
    def get(self, version: int | None = None, label: str | None = None) -> Any:
        """The servable for ``version`` or ``label`` (neither: the default route's).

        Raises:
            RequestError: 404 when that version or label is not available, 503 when no version is yet.
        """
        routes = self._routes  # one consistent view, whatever the watcher switches meanwhile
        if label is not None:
            labelled = routes.labels.get(label)
            if labelled is None:
                assigned = ", ".join(f"{k} -> {v}" for k, v in sorted(routes.labels.items())) or "none"
                raise RequestError(
                    f"version label {label!r} of model {self.model_name} is not assigned to an available version "
                    f"(labels: {assigned}); set it with `taxifare label`",
                    status=404,
                )
            return routes.servables[labelled]
        if version is None:
            if routes.default is None:
                raise RequestError(f"model {self.model_name} has no available version yet: {self._summary()}", status=503)
            return routes.servables[routes.default]
        if version in routes.servables:
            return routes.servables[version]
        state = self._states.get(version)
        serving = f"version {routes.default} is serving" if routes.default is not None else "no version is serving yet"
        if state is None:
            raise RequestError(f"version {version} of model {self.model_name} does not exist; {serving}", status=404)
        detail = f": {state.error_message}" if state.error_message else ""
        raise RequestError(
            f"version {version} of model {self.model_name} is not available (state {state.state}{detail}); {serving}", status=404
        )

    def resolve(self, label: str) -> int:
        """The version ``label`` serves now.

        Raises:
            RequestError: 404 when the label is not assigned to an available version.
        """
        return int(self.get(label=label).version)

    def _summary(self) -> str:
        if not self._states:
            return f"no version found in {self.model_dir} (versions are directories named 1, 2, ... holding saved_model.pb)"
        return "; ".join(
            f"version {v} {s.state}{': ' + s.error_message if s.error_message else ''}" for v, s in sorted(self._states.items())
        )

    @property
    def current_version(self) -> int | None:
        """The version the default route serves, if any."""
        return self._routes.default

    @property
    def labels(self) -> dict[str, int]:
        """The labels the server routes now (only those naming an available version)."""
        return dict(self._routes.labels)

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
            return self._available.wait_for(lambda: self._routes.default is not None, timeout=timeout)


def _load_and_warm_up(path: str, version: int) -> Any:
    from serving import warmup
    from serving.servable import LoadError, Servable

    servable = Servable(path, version)
    servable.warm_up()
    started = time.monotonic()
    try:
        count = warmup.replay(servable, path)
    except ValueError as exc:
        raise LoadError(f"version {version} failed its warm-up: {exc}") from None
    servable.warmup_seconds += time.monotonic() - started  # the warm-up metric covers the file's requests too
    if count:
        log.info("version %d: replayed %d warm-up requests from %s", version, count, layout.WARMUP_FILE)
    return servable
