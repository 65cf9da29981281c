"""The cron of a schedule: checked once for both engines, and converted for Kubeflow.

Vertex AI schedules take five unix-cron fields, optionally after ``TZ=Area/City`` (or
``CRON_TZ=``); Kubeflow's recurring runs take six, seconds first (robfig/cron), and evaluate
them in the controller's time zone. :func:`validate_cron` refuses what either engine would
refuse, and a cron that can never fire (``0 6 31 2 *``: no February has a 31st).
"""

from __future__ import annotations

import dataclasses
import zoneinfo
from collections.abc import Mapping

from base.errors import InputError

_MONTHS = {m: i + 1 for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_CRON_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
#: The most days each month has (February 29 in leap years).
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
_CRON_HELP = (
    "write five fields 'MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK', e.g. '0 6 * * *' for 06:00 every day, "
    "optionally after 'TZ=Area/City ' (e.g. 'TZ=America/New_York 0 6 * * 1-5')"
)


@dataclasses.dataclass(frozen=True)
class Cron:
    """A checked five-field cron with its optional time zone."""

    fields: tuple[str, str, str, str, str]
    timezone: str | None = None

    def __str__(self) -> str:
        text = " ".join(self.fields)
        return f"TZ={self.timezone} {text}" if self.timezone else text


def _value(token: str, name: str, low: int, high: int, names: Mapping[str, int], cron: str) -> int:
    value = names.get(token.upper()) if token.isalpha() else None
    if value is None:
        if not token.isdigit():
            raise InputError(f"cron {cron!r}: {name} has {token!r}, not a number; {_CRON_HELP}")
        value = int(token)
    if not low <= value <= high:
        raise InputError(f"cron {cron!r}: {name} {value} is outside {low}-{high}; {_CRON_HELP}")
    return value


def _expand(field: str, name: str, low: int, high: int, names: Mapping[str, int], cron: str) -> set[int] | None:
    """The values a field allows, or ``None`` for a bare ``*``/``?`` (any value)."""
    if field in ("*", "?") if name.startswith("day") else field == "*":
        return None
    values: set[int] = set()
    for item in field.split(","):
        base, slash, step_text = item.partition("/")
        if slash and (not step_text.isdigit() or int(step_text) == 0):
            raise InputError(f"cron {cron!r}: {name} step {step_text!r} must be a positive number; {_CRON_HELP}")
        step = int(step_text) if slash else 1
        if base in ("*", "?") if name.startswith("day") else base == "*":
            first, last = low, high
        else:
            first_text, dash, last_text = base.partition("-")
            first = _value(first_text, name, low, high, names, cron)
            last = _value(last_text, name, low, high, names, cron) if dash else (high if slash else first)
            if last < first:
                raise InputError(f"cron {cron!r}: {name} range {base!r} runs backwards; {_CRON_HELP}")
        values.update(range(first, last + 1, step))
    return values


def validate_cron(cron: str) -> Cron:
    """Check a schedule's cron: five unix-cron fields, optionally after ``TZ=`` or ``CRON_TZ=``.

    Each field is ``*``, a value, a range ``a-b``, any of those with a step ``/n``, or a
    comma-separated list of them; months and weekdays may be names (``JAN``, ``MON``). A day of
    month that no chosen month has (with any day of week) is refused: the schedule would never run.

    Returns:
        The parsed cron.

    Raises:
        InputError: naming the bad field and showing the expected form.
    """
    if not cron or not cron.strip():
        raise InputError(f"the cron is empty; {_CRON_HELP}")
    parts = cron.split()
    timezone = None
    if parts[0].upper().startswith(("TZ=", "CRON_TZ=")):
        timezone = parts.pop(0).split("=", 1)[1]
        _check_timezone(timezone, cron)
    if parts and parts[0].startswith("@"):
        raise InputError(f"cron {cron!r}: macros such as {parts[0]} are not accepted by both engines; {_CRON_HELP}")
    if len(parts) != 5:
        raise InputError(f"cron {cron!r} has {len(parts)} fields, not 5; {_CRON_HELP}")
    allowed = [_expand(field, *spec, cron) for field, spec in zip(parts, _CRON_FIELDS, strict=True)]
    _check_some_day_exists(cron, allowed[2], allowed[3], allowed[4])
    return Cron(fields=tuple(parts), timezone=timezone)  # type: ignore[arg-type]


def _check_some_day_exists(cron: str, days: set[int] | None, months: set[int] | None, weekdays: set[int] | None) -> None:
    # With both day of month and day of week restricted, cron fires when either matches.
    if days is None or weekdays is not None:
        return
    if not any(day <= _MONTH_DAYS[month] for day in days for month in (months or _MONTH_DAYS)):
        raise InputError(
            f"cron {cron!r} never runs: no chosen month has day {min(days)}; pick a day every chosen month has "
            "(at most 28 for February, 30 for April, June, September and November)"
        )


def _check_timezone(timezone: str, cron: str) -> None:
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(f"cron {cron!r}: unknown time zone {timezone!r}; use an IANA name such as America/New_York or UTC") from exc


def cron_to_kfp(cron: str, *, controller_timezone: str = "UTC") -> str:
    """Convert a Vertex (unix) cron to a Kubeflow Pipelines recurring-run cron.

    Kubeflow's recurring runs take six fields, seconds first (robfig/cron), and weekdays 0-6
    only; so ``0 6 * * 1-5`` becomes ``0 0 6 * * 1-5`` and a weekday 7 (Sunday) becomes 0.

    Time zones: a Kubeflow recurring run has no time zone of its own; the ScheduledWorkflow
    controller evaluates every cron in its zone (``CRON_SCHEDULE_TIMEZONE``, UTC unless the
    cluster operator changed it). A ``TZ=`` prefix equal to ``controller_timezone`` is
    therefore dropped; any other zone is refused rather than silently shifted (daylight
    saving makes a fixed hour offset wrong half the year).

    Raises:
        InputError: for a malformed cron or a time zone the controller does not use.
    """
    parsed = validate_cron(cron)
    if parsed.timezone and not _same_zone(parsed.timezone, controller_timezone):
        raise InputError(
            f"cron {cron!r}: Kubeflow recurring runs use the controller's time zone ({controller_timezone}), "
            f"not {parsed.timezone}: write the hours in {controller_timezone} without TZ=, or pass the controller's zone"
        )
    fields = list(parsed.fields)
    fields[4] = _weekday_seven_to_zero(fields[4])
    return " ".join(["0", *fields])


def _same_zone(a: str, b: str) -> bool:
    utc = {"UTC", "ETC/UTC", "ETC/UCT", "UCT", "ZULU", "ETC/ZULU", "GMT", "ETC/GMT"}
    return a.upper() == b.upper() or (a.upper() in utc and b.upper() in utc)


def _weekday_seven_to_zero(field: str) -> str:
    items = []
    for item in field.split(","):
        base, slash, step = item.partition("/")
        first, dash, last = base.partition("-")
        if base == "7":
            items.append("0" + slash + step)
        elif dash and last == "7":
            items.append(f"{first}-6{slash}{step}")
            if not slash and first != "0":
                items.append("0")
        else:
            items.append(item)
    return ",".join(dict.fromkeys(items))
