"""Request validation shared by the REST and gRPC front ends (no TensorFlow here).

Every request, whatever its wire format, ends up as columns: one 1-D numpy array per raw
feature of the model's ``serving_default`` signature. This module checks those columns
against :mod:`trainer.schema` (names, types, finiteness, valid ranges) and the server's
limits, and raises :class:`RequestError` with a message that names the problem and the fix.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import operator
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from serving import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES
from trainer import schema

_DATETIME_RE = re.compile(schema.DATETIME_REGEX)


class RequestError(ValueError):
    """A request the server refuses; ``status`` is the HTTP status (400, 404, 413...)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the server accepts."""

    max_batch: int = DEFAULT_MAX_BATCH
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    check_ranges: bool = True


@dataclasses.dataclass(frozen=True)
class Feature:
    """One input of the serving signature: its name and kind (``"float"`` or ``"string"``)."""

    name: str
    kind: str


def features_for(names: Sequence[str]) -> tuple[Feature, ...]:
    """The schema's description of the signature inputs ``names``.

    Raises:
        ValueError: when an input is not a raw feature of :mod:`trainer.schema` (the model
            was not exported by this project's trainer).
    """
    out = []
    for name in names:
        if name in schema.NUMERIC_FEATURES:
            out.append(Feature(name, "float"))
        elif name == schema.DATETIME:
            out.append(Feature(name, "string"))
        else:
            raise ValueError(
                f"the model's serving signature takes {name!r}, which is not a feature of trainer/schema.py "
                f"({', '.join((*schema.NUMERIC_FEATURES, schema.DATETIME))}): export the model with trainer.model.export_model"
            )
    order = {n: i for i, n in enumerate((*schema.NUMERIC_FEATURES, schema.DATETIME))}
    return tuple(sorted(out, key=lambda f: order[f.name]))


def _describe(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | type(None)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _expect(feature: Feature) -> str:
    if feature.kind == "float":
        return "a number"
    return f"a string like {json.dumps(schema.TEST_INSTANCE_DATETIME[schema.DATETIME])}"


def _where(index: int | None) -> str:
    return f"instance {index}: " if index is not None else ""


def check_column(feature: Feature, values: Sequence[Any] | np.ndarray, limits: Limits, row_offset: int = 0) -> np.ndarray:
    """Validate one column of raw values and return it as a float32 or object (str) array.

    Raises:
        RequestError: naming the feature, the instance and the problem.
    """
    if feature.kind == "float":
        if isinstance(values, np.ndarray):
            arr = values
            if arr.dtype.kind not in "fiu":
                raise RequestError(f"{feature.name} must hold numbers, got a tensor of {arr.dtype.name}")
        else:
            for i, v in enumerate(values):
                if type(v) is not float and type(v) is not int:
                    raise RequestError(f"{_where(i + row_offset)}{feature.name} must be a number, got {_type_name(v)} ({_describe(v)})")
            try:
                arr = np.asarray(values, dtype=np.float64)
            except OverflowError:
                raise RequestError(f"{feature.name} holds an integer too large for a float") from None
        if arr.ndim != 1:
            raise RequestError(f"{feature.name} must be a 1-D list of numbers (one per instance), got shape {list(arr.shape)}")
        finite = np.isfinite(arr)
        if not finite.all():
            i = int(np.argmin(finite))
            raise RequestError(f"{_where(i + row_offset)}{feature.name} is {arr[i]}: NaN and infinite values are not accepted")
        if limits.check_ranges and feature.name in schema.RANGES:
            rng = schema.RANGES[feature.name]
            bad = (arr < rng.low) | (arr > rng.high)
            if bad.any():
                i = int(np.argmax(bad))
                raise RequestError(
                    f"{_where(i + row_offset)}{feature.name}={float(arr[i])!r} is outside the valid range {rng.low}..{rng.high} "
                    "(the model knows New York trips only; fix the value or start the server with --allow-out-of-range)"
                )
        return arr.astype(np.float32, copy=False)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(f"{_where(i + row_offset)}{feature.name} is not valid UTF-8") from None
        if not isinstance(v, str):
            raise RequestError(f"{_where(i + row_offset)}{feature.name} must be {_expect(feature)}, got {_type_name(v)} ({_describe(v)})")
        if not _DATETIME_RE.match(v):
            raise RequestError(
                f"{_where(i + row_offset)}{feature.name}={_describe(v)} is not a date-time: write it as "
                f"{json.dumps(schema.TEST_INSTANCE_DATETIME[schema.DATETIME])}"
            )
        out[i] = v
    return out


def check_batch_size(count: int, limits: Limits) -> None:
    """Reject empty batches and batches over the limit.

    Raises:
        RequestError: for 0 instances or more than ``limits.max_batch``.
    """
    if count == 0:
        raise RequestError("the request holds no instance: send at least one")
    if count > limits.max_batch:
        raise RequestError(f"the request holds {count} instances, more than the limit of {limits.max_batch}: split it into smaller batches")


def check_names(given: Sequence[str] | set[str], features: Sequence[Feature], where: str = "") -> None:
    """Reject missing or unknown feature names.

    Raises:
        RequestError: naming the missing and the unexpected features.
    """
    expected = {f.name for f in features}
    given_set = set(given)
    missing = [f.name for f in features if f.name not in given_set]
    extra = sorted(str(n) for n in given_set - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing feature{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        if extra:
            parts.append(f"unknown feature{'s' if len(extra) > 1 else ''} {', '.join(extra)}")
        raise RequestError(f"{where}{' and '.join(parts)}: the model takes exactly {', '.join(f.name for f in features)}")


def columns_from_instances(instances: Any, features: Sequence[Feature], limits: Limits) -> dict[str, np.ndarray]:
    """Columns from the row format: a list of ``{feature: value}`` objects.

    Valid numeric batches take a vectorised path (one type check over all values, one
    ``np.array`` call, range checks per column in numpy); anything else falls back to the
    per-value checks, which name the instance and the problem.

    Raises:
        RequestError: for anything that is not a valid batch of instances.
    """
    if not isinstance(instances, list):
        raise RequestError(f'"instances" must be a list of objects (one per trip), got {_type_name(instances)}')
    check_batch_size(len(instances), limits)
    names = [f.name for f in features]
    expected_set = set(names)
    if all(f.kind == "float" for f in features):
        fast = _numeric_rows(instances, tuple(names), limits)
        if fast is not None:
            return {name: fast[j] for j, name in enumerate(names)}
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise RequestError(f"instance {i} must be an object like {json.dumps(schema.TEST_INSTANCE)}, got {_type_name(row)}")
        if row.keys() != expected_set:
            check_names(list(row.keys()), features, where=f"instance {i}: ")
    return {f.name: check_column(f, [row[f.name] for row in instances], limits) for f in features}


_NUMBER_TYPES = frozenset((int, float))
_BOUNDS: dict[tuple[tuple[str, ...], bool], tuple[np.ndarray, np.ndarray, Any]] = {}


def _bounds(names: tuple[str, ...], check_ranges: bool) -> tuple[np.ndarray, np.ndarray, Any]:
    """Per-feature low and high bounds (infinite when unchecked) and an item getter, cached."""
    key = (names, check_ranges)
    if key not in _BOUNDS:
        low = np.array([schema.RANGES[n].low if check_ranges and n in schema.RANGES else -np.inf for n in names])
        high = np.array([schema.RANGES[n].high if check_ranges and n in schema.RANGES else np.inf for n in names])
        _BOUNDS[key] = (low, high, operator.itemgetter(*names))
    return _BOUNDS[key]


def _numeric_rows(instances: list[Any], names: tuple[str, ...], limits: Limits) -> np.ndarray | None:
    """Valid numeric rows as a C-contiguous ``(features, n)`` float32 array, checked in numpy.

    ``None`` when anything is off (a row that is not an object of exactly ``names``, a value
    that is not a number, NaN, a value out of range): the caller's per-value checks then find
    the problem and name it.
    """
    low, high, getter = _bounds(names, limits.check_ranges)
    try:
        if set(map(len, instances)) != {len(names)}:
            return None
        rows = list(map(getter, instances)) if len(names) > 1 else [(v,) for v in map(getter, instances)]
    except (KeyError, TypeError):
        return None
    if set(map(type, instances)) != {dict}:
        return None
    flat = list(itertools.chain.from_iterable(rows))
    if not _NUMBER_TYPES.issuperset(map(type, flat)):
        return None
    try:
        arr = np.fromiter(flat, dtype=np.float64, count=len(flat)).reshape(len(rows), len(names))
    except OverflowError:
        return None
    if not ((arr >= low) & (arr <= high)).all():  # also False for NaN
        return None
    return np.ascontiguousarray(arr.T, dtype=np.float32)


def columns_from_inputs(inputs: Any, features: Sequence[Feature], limits: Limits) -> dict[str, np.ndarray]:
    """Columns from the columnar format: ``{feature: [values...]}``.

    Raises:
        RequestError: for anything that is not a valid set of equal-length columns.
    """
    if not isinstance(inputs, dict):
        raise RequestError(f'"inputs" must be an object mapping each feature to a list of values, got {_type_name(inputs)}')
    check_names(list(inputs.keys()), features)
    lengths = {}
    for f in features:
        col = inputs[f.name]
        if not isinstance(col, list):
            raise RequestError(f'inputs["{f.name}"] must be a list of values (one per instance), got {_type_name(col)}')
        lengths[f.name] = len(col)
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise RequestError(f"the input lists have different lengths ({detail}): send one value per instance for every feature")
    check_batch_size(next(iter(lengths.values())), limits)
    return {f.name: check_column(f, inputs[f.name], limits) for f in features}


def parse_json(body: bytes) -> Any:
    """Decode a JSON request body, rejecting NaN/Infinity literals.

    orjson parses valid bodies (about 5x faster than the standard library here); a body it
    refuses is parsed again by the standard library, whose errors are the ones users read.

    Raises:
        RequestError: for a body that is not JSON.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    except RecursionError:  # pragma: no cover - orjson limits nesting itself
        raise RequestError("the JSON body is nested too deeply") from None
    return _parse_json_slow(body)


def _parse_json_slow(body: bytes) -> Any:
    def no_constants(name: str) -> Any:
        raise RequestError(f"the body holds {name}, which is not JSON: NaN and infinite values are not accepted")

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the body is not UTF-8 text (byte {exc.start}): send JSON encoded as UTF-8") from None
    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise RequestError("the JSON body is nested too deeply") from None
    except ValueError as exc:  # Python's limit on digits in an integer (int_max_str_digits)
        if "digits" in str(exc):
            raise RequestError("a number in the body has too many digits (over 4300): send coordinates as plain decimals") from None
        raise RequestError(f"malformed JSON: {str(exc)[:200]}") from None


def parse_predict_body(
    body: Any, features: Sequence[Feature], limits: Limits, *, vertex: bool = False
) -> tuple[dict[str, np.ndarray], bool, str | None]:
    """Columns from a decoded REST predict body.

    Returns:
        ``(columns, row_format, signature_name)``; ``row_format`` says whether the answer
        goes under ``predictions`` (row format) or ``outputs`` (columnar).

    Raises:
        RequestError: for a body that is not a valid predict request.
    """
    if not isinstance(body, dict):
        raise RequestError(f'the body must be a JSON object like {{"instances": [...]}}, got {_type_name(body)}')
    allowed = {"instances", "parameters"} if vertex else {"instances", "inputs", "signature_name", "parameters"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in the body: use {', '.join(sorted(allowed))}"
        )
    signature = body.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise RequestError(f'"signature_name" must be a string, got {_type_name(signature)}')
    params = body.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise RequestError(f'"parameters" must be an object, got {_type_name(params)}')
    if "instances" in body and "inputs" in body:
        raise RequestError('send either "instances" (row format) or "inputs" (columnar format), not both')
    if "instances" in body:
        return columns_from_instances(body["instances"], features, limits), True, signature
    if "inputs" in body:
        return columns_from_inputs(body["inputs"], features, limits), False, signature
    raise RequestError('the body has no "instances": send {"instances": [{...one trip...}, ...]}')


def read_json_instances(path: str) -> list[dict[str, Any]]:
    """Instances from a ``--json-instances`` file: one JSON object per line (blank lines skipped).

    Raises:
        RequestError: naming the file and line of a bad instance.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise RequestError(f"cannot read --json-instances {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RequestError(f"{path} is not UTF-8 text: write one JSON object per line") from None
    out: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RequestError(f"{path}:{number}: malformed JSON ({exc.msg}): write one JSON object per line") from None
        if not isinstance(value, dict):
            raise RequestError(f"{path}:{number}: an instance must be a JSON object like {json.dumps(schema.TEST_INSTANCE)}")
        out.append(value)
    if not out:
        raise RequestError(f"{path} holds no instance: write one JSON object per line")
    return out
