"""What each artifact carries between steps, written down once (standard library only).

A step writes an artifact's metadata with ``to_metadata()`` and the next step reads it with
``from_metadata()``, so a key such as ``content_hash`` or ``columns.fare_amount.mean`` is
spelled in one place:

* :class:`DatasetStats`: each staged split (``Dataset``) from stage_data;
* :class:`ModelInfo`: the trained model (``Model``) from smoke_train and full_train;
* :class:`Verification`: the verdict (``Metrics``) from verify_export, read by deploy and by
  the Vertex upload;
* :class:`StepSummary` and the other step records: what a step reports to ``taxifare run``
  (started, progress, its one-line summary and key figures, how it ended), appended as JSON
  lines to the run's events file, which the runner reads (nothing travels through log text).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from trainer.schema import LABEL

#: The environment variable naming the folder of this run's step records (set by ``taxifare run``).
SUMMARY_DIR_ENV = "TAXIFARE_STEP_SUMMARIES"
#: The run's events file in that folder: one JSON object per line, appended by the steps' processes.
EVENTS_FILE = "events.jsonl"


@dataclasses.dataclass
class DatasetStats:
    """A staged split's statistics (the ``Dataset`` artifact's metadata)."""

    split: str
    rows: int
    variant: str
    source: str
    source_rows: int = 0
    dropped_rows: int = 0
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    dropped_examples: list[str] = dataclasses.field(default_factory=list)
    #: Per column: ``{"min": .., "mean": .., "max": ..}`` (see trainer.validation).
    columns: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    content_hash: str = ""
    file_pattern: str = "data.csv"

    def to_metadata(self) -> dict[str, Any]:
        """The artifact metadata."""
        return dataclasses.asdict(self)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> DatasetStats:
        """Read it back (unknown keys, e.g. ones kfp adds, are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in metadata.items() if k in names})

    def mean(self, column: str = LABEL) -> float:
        """The mean of ``column`` (the label by default)."""
        return float(self.columns[column]["mean"])


class Hyperparameters(NamedTuple):
    """The set the tune step hands to full training: its outputs, full_train's inputs, the model's metadata.

    kfp reads the field names as the tune components' output names.
    """

    hidden_units: str
    learning_rate: float
    batch_size: int


@dataclasses.dataclass
class ModelInfo:
    """A trained model (the ``Model`` artifact's metadata)."""

    rmse: float
    steps: int
    variant: str = ""
    framework: str = "tensorflow"
    smoke: bool = False
    #: The hyperparameters it trained with (``hidden_units``, ``learning_rate``, ``batch_size``:
    #: the tune step's best set when tuning is on).
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        """The artifact metadata (``variant``, ``smoke`` and ``hyperparameters`` only when set)."""
        out: dict[str, Any] = {"framework": self.framework, "rmse": self.rmse, "steps": self.steps}
        if self.variant:
            out["variant"] = self.variant
        if self.smoke:
            out["smoke"] = True
        if self.hyperparameters:
            out["hyperparameters"] = dict(self.hyperparameters)
        return out

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ModelInfo:
        """Read it back."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in metadata.items() if k in names})


@dataclasses.dataclass
class Verification:
    """verify_export's verdict (the ``Metrics`` artifact: its metrics plus ``blessed`` and ``reason``)."""

    blessed: bool
    reason: str
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    #: What deploy and the records need beyond the figures: the candidate's ``signature``, the
    #: ``champion`` it was judged against (``champion_version`` locally), an allowed
    #: ``signature_change``, the ``gate`` settings and the per-``slices`` comparison.
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def finite_metrics(self) -> dict[str, float]:
        """The metrics a ``Metrics`` artifact can hold (non-finite ones dropped)."""
        return {k: float(v) for k, v in self.metrics.items() if math.isfinite(float(v))}

    def to_metadata(self) -> dict[str, Any]:
        """The artifact metadata: the finite metrics, ``blessed``, ``reason`` and ``details`` (JSON-safe)."""
        return {**self.finite_metrics(), "blessed": self.blessed, "reason": self.reason, "details": _json_safe(self.details)}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Verification:
        """Read it back."""
        metrics = {k: float(v) for k, v in metadata.items() if k not in ("blessed", "reason") and isinstance(v, int | float)}
        details = metadata.get("details")
        return cls(
            blessed=bool(metadata.get("blessed", False)),
            reason=str(metadata.get("reason", "")),
            metrics=metrics,
            details=dict(details) if isinstance(details, Mapping) else {},
        )

    @property
    def test_rmse(self) -> float:
        """The candidate's test RMSE (NaN when it was not measured)."""
        return float(self.metrics.get("test_rmse", math.nan))


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as ``None`` (artifact metadata is JSON: no NaN or infinity)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclasses.dataclass
class StepSummary:
    """A step's one-line summary and key figures, for the console of ``taxifare run`` (a ``summary`` record)."""

    step: str
    text: str
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)

    def write(self, directory: str) -> str:
        """Append it to ``<directory>/events.jsonl``; returns the path."""
        return append_event(directory, {"event": "summary", **dataclasses.asdict(self)})

    @classmethod
    def read(cls, directory: str, step: str) -> StepSummary | None:
        """The last summary ``step`` wrote in ``directory``, or ``None``."""
        written = [r for r in read_events(directory)[0] if r.get("event") == "summary" and r.get("step") == step]
        if not written:
            return None
        return cls(step=step, text=str(written[-1].get("text", "")), figures=dict(written[-1].get("figures") or {}))


def append_event(directory: str, record: Mapping[str, Any]) -> str:
    """Append ``record`` (with ``time`` and ``pid``) as one JSON line to ``<directory>/events.jsonl``; returns the path.

    One ``write`` of one line on a file opened for appending: records of several processes never
    interleave, and a reader sees whole lines (it leaves a line without its end for the next read).
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, EVENTS_FILE)
    line = json.dumps({**record, "time": time.time(), "pid": os.getpid()}, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    return path


def read_events(directory: str, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The complete records of ``<directory>/events.jsonl`` after byte ``offset``, and the offset after them."""
    try:
        with open(os.path.join(directory, EVENTS_FILE), "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    records = []
    for line in complete.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, offset + len(complete)
