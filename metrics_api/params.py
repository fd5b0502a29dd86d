"""Request parameters: times, durations, steps, pages, label names; errors name the parameter (400)."""

from __future__ import annotations

import math
import re
from datetime import datetime

import promql_parser


class BadRequest(ValueError):
    """A parameter is missing or invalid; the message names it and says why."""


_LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_time(value: str, name: str) -> float:
    """Unix seconds or RFC 3339, as Prometheus accepts them."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
        try:
            number = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise BadRequest(f"{name}: {value!r} is not a unix timestamp or RFC 3339 time") from None
    if not math.isfinite(number) or abs(number) > 1e11:
        raise BadRequest(f"{name}: {value!r} is out of range")
    return number


def parse_duration(value: str, name: str) -> float:
    """Seconds, or a Prometheus duration such as 30s, 5m, 1h30m; must be positive."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = promql_parser.parse_duration(value).total_seconds()
        except (ValueError, OverflowError):
            raise BadRequest(f"{name}: {value!r} is not a duration such as 30s or 5m") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadRequest(f"{name}: must be a positive duration")
    return seconds


def format_seconds(seconds: float) -> str:
    """Seconds as a Prometheus duration (whole milliseconds) for use inside PromQL."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def parse_int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name}: {value!r} is not an integer") from None
    if not low <= number <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}")
    return number


def label_name(value: str, name: str) -> str:
    if not _LABEL_RE.match(value):
        raise BadRequest(f"{name}: {value!r} is not a label name")
    return value
