"""Per-bucket figures of a day (impressions, duplicates, bad rows) for the manifest and the plot."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from ..aggregate import HourlyRow
from ..columns import BadRow
from ..config import BadRowLimit
from ..errors import StorageError
from ..read import parse_instant
from .csv import format_bucket
from .rejects import RejectsFile


def bad_row_bucket(row: BadRow, grain_seconds: int) -> int | None:
    """The bucket of a bad row whose time field parses (e.g. an empty CAMPAIGN_ID), else None.

    Rows with the wrong number of fields carry no parsed fields: their time cannot be trusted.
    """
    if row.fields is None or len(row.fields) < 2:
        return None
    try:
        text = row.fields[1].decode("utf-8").strip(" \t")
    except UnicodeDecodeError:
        return None
    ns = parse_instant(text)
    return None if ns is None else ns // (grain_seconds * 10**9)


class TallyingRejects(RejectsFile):
    """The rejects file, also counting bad rows per bucket as they pass (they are rare)."""

    def __init__(self, path: str, limit: BadRowLimit, grain_seconds: int) -> None:
        super().__init__(path, limit)
        self.grain_seconds = grain_seconds
        self.per_bucket: dict[int, int] = {}
        self.without_time = 0

    def tally(self, row: BadRow) -> None:
        bucket = bad_row_bucket(row, self.grain_seconds)
        if bucket is None:
            self.without_time += 1
        else:
            self.per_bucket[bucket] = self.per_bucket.get(bucket, 0) + 1

    def __enter__(self) -> TallyingRejects:
        return self


def hourly_section(day: dt.date, grain_seconds: int, rows: Iterable[HourlyRow],
                   clean_per_bucket: dict[int, int], duplicates: int,
                   bad_per_bucket: dict[int, int], bad_without_time: int) -> dict[str, Any]:
    """The manifest's ``hourly`` object: every bucket of the day, then what fell outside it.

    Duplicates per bucket are the rows that passed validation minus the first occurrences
    counted there (a duplicate shares its key's instant, hence its bucket); every engine reports
    its clean rows per bucket.
    """
    impressions: dict[int, int] = {}
    for row in rows:
        bucket = row.bucket_start // grain_seconds
        impressions[bucket] = impressions.get(bucket, 0) + row.count
    if sum(clean_per_bucket.values()) != sum(impressions.values()) + duplicates:
        raise StorageError("internal check failed: clean rows per bucket do not add up; "
                           "nothing written")
    first = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
    first //= grain_seconds
    inside = range(first, first + 86400 // grain_seconds)

    def figures(buckets: Iterable[int]) -> dict[str, int]:
        chosen = list(buckets)
        return {
            "impressions": sum(impressions.get(b, 0) for b in chosen),
            "duplicates": sum(clean_per_bucket.get(b, 0) - impressions.get(b, 0) for b in chosen),
            "bad_rows": sum(bad_per_bucket.get(b, 0) for b in chosen),
        }

    every = set(impressions) | set(clean_per_bucket) | set(bad_per_bucket)
    return {
        "grain_seconds": grain_seconds,
        "buckets": [{"start": format_bucket(b * grain_seconds), **figures([b])} for b in inside],
        "outside_day": figures(b for b in every if b not in inside),
        "bad_rows_without_time": bad_without_time,
    }
