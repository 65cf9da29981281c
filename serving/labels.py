"""Operator commands on a model base path: list versions, set labels, roll back (no TensorFlow).

The labels file and the version layout are :mod:`base.layout`'s; a running ``taxifare
serve`` re-reads them every poll interval and moves its routes without failing a request.
Labels are changed under the deploy lock, so they never interleave with a deploy.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from base import layout
from base.layout import LayoutError


@dataclasses.dataclass
class VersionRow:
    """One line of ``taxifare versions``."""

    version: int
    complete: bool
    problem: str
    rmse: float | None
    rmse_split: str
    #: The id of the rows the RMSE was measured on (the test split's content hash, shortened; '' when unknown).
    rows_id: str
    labels: list[str]
    default: bool
    loaded: str
    deployed_at: str

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values."""
        return dataclasses.asdict(self)


def check_base_path(model_dir: str) -> None:
    """Refuse a base path that does not exist.

    Raises:
        LayoutError: naming the path and the fix.
    """
    if not os.path.isdir(model_dir):
        raise LayoutError(f"--model-base-path {model_dir} is not a directory: pass the model's directory (the one holding 1/, 2/, ...)")


def _eval_rmse(path: str) -> float | None:
    try:
        with open(os.path.join(path, layout.METRICS_FILE), encoding="utf-8") as fh:
            value = json.load(fh).get("rmse")
        return float(value) if value is not None else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def rows(model_dir: str, server_states: dict[int, str] | None = None) -> list[VersionRow]:
    """Every numbered version, newest first, with its RMSE, labels, route and load state.

    Args:
        model_dir: the model base path.
        server_states: version -> state from a running server (``None``: say which versions a
            server keeps loaded, i.e. those a route names).
    """
    check_base_path(model_dir)
    labels = layout.read_labels(model_dir)
    found = layout.scan(model_dir)
    default = layout.default_version([v.version for v in found if v.complete], labels)
    routed = {default, *labels.values()}
    out = []
    for info in reversed(found):
        rmse, split, rows_id = info.test_rmse, "test", info.test_data_hash[:8]
        if rmse is None and info.complete:
            rmse, split, rows_id = _eval_rmse(info.path), "eval", ""
        if server_states is not None:
            loaded = server_states.get(info.version, "-")
        else:
            loaded = "yes" if info.complete and info.version in routed else "no"
        out.append(
            VersionRow(
                version=info.version,
                complete=info.complete,
                problem=info.problem,
                rmse=rmse,
                rmse_split=split if rmse is not None else "",
                rows_id=rows_id if rmse is not None else "",
                labels=sorted(name for name, v in labels.items() if v == info.version),
                default=info.version == default,
                loaded=loaded,
                deployed_at=str(info.record.get("deployed_at", "")),
            )
        )
    return out


def format_rows(found: list[VersionRow], asked_server: bool) -> str:
    """The ``taxifare versions`` table."""
    if not found:
        return "no versions (directories named 1, 2, ... holding saved_model.pb)"
    lines = [f"{'VERSION':>7}  {'RMSE':<9} {'ROWS':<9} {'LABELS':<12} {'DEFAULT':<7}  {'LOADED':<9} {'DEPLOYED':<20} PROBLEM"]
    for row in found:
        rmse = f"${row.rmse:.3f}" if row.rmse is not None else "-"
        rows_id = (row.rows_id or "?") if row.rmse_split == "test" else row.rmse_split if row.rmse is not None else "-"
        lines.append(
            f"{row.version:>7}  {rmse:<9} {rows_id:<9} {','.join(row.labels) or '-':<12} {'*' if row.default else '':<7}  "
            f"{row.loaded:<9} {row.deployed_at or '-':<20} {row.problem}".rstrip()
        )
    ids = {row.rows_id or row.rmse_split for row in found if row.rmse is not None}
    if len(ids) > 1:
        lines.append(
            "ROWS: the test set each RMSE was measured on; figures on different rows are not comparable: "
            "`taxifare versions --score FILE` scores every version on the same rows."
        )
    lines.append("DEFAULT: what a request naming no version or label gets (`stable` when set, else the newest version).")
    if not asked_server:
        lines.append("LOADED: what a server watching this path keeps loaded; pass --url to ask a running server.")
    return "\n".join(lines)


def parse_assignments(items: list[str]) -> dict[str, int | None]:
    """``["stable=3", "canary="]`` -> ``{"stable": 3, "canary": None}`` (``None`` removes the label).

    Raises:
        LayoutError: for an item that is not ``NAME=VERSION`` or ``NAME=``.
    """
    out: dict[str, int | None] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise LayoutError(f"{item!r} is not NAME=VERSION: write e.g. stable=3 (or canary= to remove a label)")
        layout.check_label(name)
        if value == "":
            out[name] = None
        elif layout.is_version_name(value):
            out[name] = int(value)
        else:
            raise LayoutError(f"{item!r}: {value!r} is not a version number (a positive integer)")
    return out


def _describe(model_dir: str, before: dict[str, int], after: dict[str, int]) -> list[str]:
    versions = layout.list_versions(model_dir)
    lines = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old != new:
            lines.append(f"label {name}: {old if old is not None else '(none)'} -> {new if new is not None else '(removed)'}")
    old_default, new_default = layout.default_version(versions, before), layout.default_version(versions, after)
    if old_default != new_default:
        lines.append(f"default route: version {old_default} -> version {new_default}")
    else:
        lines.append(f"default route: version {new_default} (unchanged)")
    return lines


def set_labels(model_dir: str, assignments: dict[str, int | None]) -> list[str]:
    """Apply label assignments under the deploy lock; the lines saying what changed.

    Raises:
        LayoutError: when a label would name a version that is not complete on disk.
    """
    check_base_path(model_dir)
    with layout.locked(model_dir):
        versions = layout.list_versions(model_dir)
        before = layout.read_labels(model_dir)
        after = dict(before)
        for name, version in assignments.items():
            if version is None:
                after.pop(name, None)
                continue
            if version not in versions:
                have = ", ".join(map(str, sorted(versions))) or "none"
                raise LayoutError(f"{name}={version}: version {version} is not a complete version in {model_dir} (complete: {have})")
            after[name] = version
        if after != before:
            layout.write_labels(model_dir, after)
    return _describe(model_dir, before, after)


def rollback(model_dir: str, to: int | None = None) -> list[str]:
    """Point the default route (the ``stable`` label) at the previous good version, or at ``to``.

    The previous good version is the newest complete version older than the one the default
    route serves now whose deploy record does not say it failed verification.

    Raises:
        LayoutError: when there is nothing to roll back to, or ``to`` is not a complete version.
    """
    check_base_path(model_dir)
    with layout.locked(model_dir):
        found = layout.scan(model_dir)
        complete = {v.version: v for v in found if v.complete}
        labels = layout.read_labels(model_dir)
        current = layout.default_version(list(complete), labels)
        if current is None:
            raise LayoutError(f"{model_dir} holds no complete version: nothing to roll back")
        if to is None:
            older = [v for v in sorted(complete, reverse=True) if v < current and _good(complete[v])]
            if not older:
                raise LayoutError(f"the default route serves version {current}, the oldest good version: nothing to roll back to")
            target = older[0]
        elif to not in complete:
            have = ", ".join(map(str, sorted(complete)))
            raise LayoutError(f"--to {to}: version {to} is not a complete version in {model_dir} (complete: {have})")
        else:
            target = to
        after = {**labels, layout.STABLE: target}
        if after != labels:
            layout.write_labels(model_dir, after)
    return _describe(model_dir, labels, after)


def _good(info: layout.VersionInfo) -> bool:
    verification = info.record.get("verification") or {}
    return verification.get("blessed") is not False
