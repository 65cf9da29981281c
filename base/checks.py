"""Value checks shared by the pipeline's front door, its steps and the trainer (standard library only).

Each check takes the name to show (``train_steps``, ``--train_steps``...) and the value, and
returns the value as its type or raises :class:`~base.errors.InputError` with one line
naming the parameter and a valid value. :mod:`pipeline.parameters` names one of these per
pipeline parameter; the CLIs, the steps and the trainer call the same functions where they check
the same thing, so a rule is written once. What depends on the model (its size) is the trainer's
(:mod:`trainer.config`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from base.errors import InputError

_MACHINE_TYPE = re.compile(r"[a-z0-9][a-z0-9-]*")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_EMAIL = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[A-Za-z]{2,}")
#: How many recipients Vertex AI's e-mail notification takes (VertexNotificationEmailOp).
MAX_EMAIL_RECIPIENTS = 3


def _valid(name: str, value: Any, out: Any, ok: bool, what: str) -> Any:
    """``out`` when ``ok``, else the one-line error ``NAME must be WHAT (got VALUE)``."""
    if not ok:
        raise InputError(f"{name} must be {what} (got {value!r})")
    return out


def number(name: str, value: Any) -> float:
    """A finite number (NaN and infinities are refused)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number (got {value!r})") from None
    if not math.isfinite(out):
        raise InputError(f"{name} must be a finite number (got {value!r})")
    return out


def integer(name: str, value: Any) -> int:
    """An integer (``3.0`` is accepted as 3; ``3.5``, NaN and text are refused)."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be an integer (got {value!r})")
    if isinstance(value, float) or (isinstance(value, str) and not value.strip().lstrip("+-").isdigit()):
        as_float = number(name, value)
        if not as_float.is_integer():
            raise InputError(f"{name} must be an integer (got {value!r})")
        return int(as_float)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be an integer (got {value!r})") from None


def positive_int(name: str, value: Any) -> int:
    """An integer of at least 1."""
    out = integer(name, value)
    return _valid(name, value, out, out > 0, "a positive integer")


def non_negative_int(name: str, value: Any) -> int:
    """An integer of at least 0."""
    out = integer(name, value)
    return _valid(name, value, out, out >= 0, "0 or a positive integer")


def split_fraction(name: str, value: Any) -> float:
    """A share of rows carved out for a split: strictly between 0 and 0.5."""
    out = number(name, value)
    return _valid(name, value, out, 0 < out < 0.5, "between 0 and 0.5, e.g. 0.1")


def unit_fraction(name: str, value: Any) -> float:
    """A share between 0 and 1 inclusive."""
    out = number(name, value)
    return _valid(name, value, out, 0 <= out <= 1, "between 0 and 1")


def learning_rate(name: str, value: Any) -> float:
    """A small positive step size."""
    out = number(name, value)
    return _valid(name, value, out, 0 < out < 10, "a small positive number such as 0.003")


def dollars(name: str, value: Any) -> float:
    """A positive, finite amount of dollars."""
    out = number(name, value)
    return _valid(name, value, out, out > 0, "a positive number of dollars, e.g. 10")


def non_negative_dollars(name: str, value: Any) -> float:
    """A finite amount of dollars, zero or more."""
    out = number(name, value)
    return _valid(name, value, out, out >= 0, "zero or a positive number of dollars, e.g. 0.01")


def percentage(name: str, value: Any) -> int:
    """A whole percentage, 0 to 100."""
    out = integer(name, value)
    return _valid(name, value, out, 0 <= out <= 100, "a whole percentage from 0 to 100")


def text(name: str, value: Any) -> str:
    """Any string."""
    if not isinstance(value, str):
        raise InputError(f"{name} must be text (got {value!r})")
    return value


def webhook_url(name: str, value: Any) -> str:
    """An http(s) URL, or '' for none."""
    import urllib.parse

    url = text(name, value)
    parts = urllib.parse.urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.netloc):
        raise InputError(f"{name} {url!r} is not an http(s) URL: pass e.g. https://hooks.slack.com/services/...")
    return url


def bigquery_destination(name: str, value: Any) -> str:
    """A BigQuery destination ``bq://PROJECT[.DATASET[.TABLE]]``, or '' for the default."""
    uri = text(name, value)
    if uri and not re.fullmatch(r"bq://[a-z][a-z0-9-]{4,28}[a-z0-9](\.[A-Za-z0-9_]{1,1024}){0,2}", uri):
        raise InputError(
            f"{name} {uri!r} is not a BigQuery destination: pass bq://PROJECT, bq://PROJECT.DATASET or bq://PROJECT.DATASET.TABLE"
        )
    return uri


def email_recipients(name: str, value: Any) -> list[str]:
    """E-mail addresses for Vertex AI's notification: a list or comma-separated text, at most three."""
    items = value if isinstance(value, list | tuple) else text(name, value).split(",")
    out = [str(v).strip() for v in items if str(v).strip()]
    for address in out:
        if not _EMAIL.fullmatch(address):
            raise InputError(f"{name}: {address!r} is not an e-mail address: pass e.g. ops@example.com")
    if len(out) > MAX_EMAIL_RECIPIENTS:
        raise InputError(
            f"{name}: {len(out)} recipients, Vertex AI's e-mail notification takes at most {MAX_EMAIL_RECIPIENTS}: "
            "use a mailing list address"
        )
    return out


def source(name: str, value: Any) -> str:
    """A data source: ``synthetic``, ``bigquery`` or CSV files."""
    out = text(name, value)
    if not out.strip():
        raise InputError(f"{name} is empty: pass 'synthetic' or a CSV glob such as data/*.csv or gs://BUCKET/taxi/*.csv")
    return out


def machine_type(name: str, value: Any) -> str:
    """A Compute Engine machine type name such as ``n1-standard-4``."""
    out = text(name, value)
    return _valid(name, value, out, bool(_MACHINE_TYPE.fullmatch(out)), "a machine type such as n1-standard-4")


def display_name(name: str, value: Any) -> str:
    """A Vertex display name: 1 to 128 characters, not only blanks."""
    out = text(name, value)
    return _valid(name, value, out, bool(out.strip()) and len(out) <= 128, "1 to 128 characters, e.g. taxifare")


def boolean(name: str, value: Any) -> bool:
    """``True``/``False`` (or the words true/false, yes/no, 1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise InputError(f"{name} must be true or false (got {value!r})")


def hidden_units(name: str, value: Any) -> tuple[int, ...]:
    """Hidden layer sizes: ``"64,32"``, ``"64 32"`` or a sequence of positive integers."""
    try:
        items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
        units = tuple(integer(name, u) for u in items)
    except (InputError, TypeError):
        units = ()
    if not units or min(units) <= 0:
        raise InputError(f"{name} must be positive layer sizes separated by commas, e.g. '64,32' (got {value!r})")
    return units


def model_name(name: str, value: Any) -> str:
    """A served model's name: one directory name (letters, digits, ``-``, ``_``, ``.``; not hidden)."""
    out = text(name, value)
    if not _MODEL_NAME.match(out):
        raise InputError(f"{name} {out!r} must be letters, digits, '-', '_' or '.' and not start with '.' (e.g. taxifare)")
    return out


#: How deploy publishes a version (see components/deploy/logic.py and docs/serving.md); the
#: first, the default route moving to the new version, is the default.
REPLACE = "replace"
CANARY = "canary"
DEPLOY_MODES = (REPLACE, CANARY)


def deploy_mode(name: str, value: Any) -> str:
    """``replace`` (the default route moves to the new version) or ``canary`` (published under the canary label)."""
    out = text(name, value)
    return _valid(name, value, out, out in DEPLOY_MODES, "'replace' or 'canary'")


def parse_time(name: str, value: str) -> dt.datetime | None:
    """An RFC 3339 time as an aware UTC datetime; ``None`` for empty or an unresolved placeholder.

    Accepts what Vertex substitutes for the schedule-time placeholder (``2026-11-28T06:00:00Z``,
    possibly with more than six fractional digits).
    """
    stripped = (value or "").strip()
    if not stripped or "{{" in stripped:
        return None
    iso = re.sub(r"(\.\d{6})\d+", r"\1", stripped.replace("Z", "+00:00"))  # Python takes at most microseconds
    try:
        parsed = dt.datetime.fromisoformat(iso)
    except ValueError:
        raise InputError(f"{name} {value!r} is not an RFC 3339 time such as 2026-11-28T06:00:00Z") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def scheduled_time(name: str, value: Any) -> str:
    """Empty (now) or an RFC 3339 time."""
    parse_time(name, text(name, value))
    return str(value)


def split_fractions(eval_fraction: float, test_fraction: float) -> None:
    """The eval and test shares leave rows to train on."""
    if eval_fraction + test_fraction >= 0.9:
        raise InputError(f"eval_fraction + test_fraction must leave rows to train on (got {eval_fraction} + {test_fraction})")


def data_window(source: str, window_days: int) -> None:
    """Source 'bigquery' reads a window of days: it needs one."""
    if source.strip() == "bigquery" and window_days < 1:
        raise InputError("source 'bigquery' needs window_days of at least 1 (the days of trips before the run to train on)")


def synthetic_rows(source: str, rows: int) -> None:
    """Generated data needs enough rows for three splits."""
    if source.strip() == "synthetic" and rows < 100:
        raise InputError(f"synthetic_rows must be at least 100 (got {rows})")
