"""Sizes and durations as people read them: binary units, named as such."""

from __future__ import annotations

import datetime as dt


def human_bytes(size: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``83`` -> ``1:23``, ``3723`` -> ``1:02:03``."""
    whole = max(0, int(round(seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def count_of(number: int, noun: str, plural: str | None = None) -> str:
    """``1 file``, ``1,024 files``: a count with thousands separators and its noun agreeing."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def human_time(moment: object) -> str:
    """The one timestamp format people read: ``2021-01-30T10:00:00Z``, in UTC (a naive time is
    taken as UTC); anything that is not an ISO 8601 time (read from a manifest, say) is shown
    as it is."""
    if moment is None:
        return "?"
    if isinstance(moment, str):
        text = moment
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            return text
    if not isinstance(moment, dt.datetime):
        return str(moment)
    if moment.utcoffset() is not None:
        moment = moment.astimezone(dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}Z"
