"""Per-bucket figures of a day (impressions, duplicates, bad rows) for the manifest and the plot."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from ..aggregate import BUCKET, COUNT, HourlyCounts, day_buckets, tally_counts, top_groups
from ..columns import GROUP, BadRow
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
    """The rejects file, also counting bad rows per bucket as they pass. Given the ``day``,
    those before and after it are tallied as the bucket just before and just after, as
    `tally_counts` does: a run of bad rows an hour apart each (1M took 71 MB) keeps two
    entries, not one an hour."""

    def __init__(self, path: str, limit: BadRowLimit, grain_seconds: int,
                 day: dt.date | None = None) -> None:
        super().__init__(path, limit)
        self.grain_seconds = grain_seconds
        self.per_bucket: dict[int, int] = {}
        self.without_time = 0
        self.day = None if day is None else day_buckets(day, grain_seconds)

    def tally(self, row: BadRow) -> None:
        bucket = bad_row_bucket(row, self.grain_seconds)
        if bucket is None:
            self.without_time += 1
            return
        if self.day is not None:
            bucket = min(max(bucket, self.day[0] - 1), self.day[1])
        self.per_bucket[bucket] = self.per_bucket.get(bucket, 0) + 1

    def __enter__(self) -> TallyingRejects:
        return self


class OutputTally:
    """What the manifest and the plot say of the output, gathered as its rows go by: their
    number, the impressions per bucket (those outside the day in two sums, see
    `tally_counts`) and, for the plot, each group's total."""

    def __init__(self, day: dt.date, grain_seconds: int, *,
                 group_totals: HourlyCounts | None = None) -> None:
        self.day = day_buckets(day, grain_seconds)
        self.rows = 0
        self.impressions = 0
        self.per_bucket: dict[int, int] = {}
        self.group_totals = group_totals

    def observe(self, parts: Iterable[pa.Table]) -> Iterator[pa.Table]:
        """``parts``, unchanged, tallied on the way."""
        for part in parts:
            self.rows += part.num_rows
            self.impressions += int(np.sum(part.column(COUNT).to_numpy()))
            tally_counts(self.per_bucket, part, self.day)
            if self.group_totals is not None:
                self.group_totals.fold_counts(pa.table({
                    GROUP: part.column(GROUP), BUCKET: np.zeros(part.num_rows, np.int64),
                    COUNT: part.column(COUNT)}))
            yield part

    @property
    def outside_day(self) -> int:
        """Impressions whose bucket lies outside the day."""
        first, last = self.day
        return sum(n for b, n in self.per_bucket.items() if not first <= b < last)

    def top_groups(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` groups with the most impressions over the day, most first (ties by name)."""
        return [] if self.group_totals is None else top_groups(self.group_totals, n)


def hourly_section(day: dt.date, grain_seconds: int, impressions: dict[int, int],
                   clean_per_bucket: dict[int, int], duplicates: int,
                   bad_per_bucket: dict[int, int], bad_without_time: int) -> dict[str, Any]:
    """The manifest's ``hourly`` object: every bucket of the day, then what fell outside it.

    Duplicates per bucket are the rows that passed validation minus the first occurrences
    counted there (a duplicate shares its key's instant, hence its bucket); every engine reports
    its clean rows per bucket.
    """
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
