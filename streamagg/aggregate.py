"""Pure folding of first occurrences into counts per (group, time bucket)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .columns import GROUP, INSTANT

BUCKET, COUNT = "bucket", "count"
# Partial counts are re-folded once they outgrow twice the last fold (and at least this many
# rows), so memory follows the distinct pairs, not the number of batches folded.
_MIN_REFOLD_ROWS = 65_536
# Below this many (group, bucket) cells, or twice the rows, pairs are counted on a dense grid.
_MIN_DENSE_CELLS = 1 << 16
# ASCII digits only: int() would also take "٣", which no other engine or reader calls a number.
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class HourlyRow:
    """One output row: the group, the bucket's start (seconds since the epoch, UTC), the count."""

    group: str
    bucket_start: int
    count: int


class HourlyCounts:
    """Counts per (group, bucket) folded batch by batch; the grain is a parameter."""

    def __init__(self, grain_seconds: int = 3600) -> None:
        self.grain_ns = grain_seconds * 10**9
        self.grain_seconds = grain_seconds
        self._parts: list[pa.Table] = []
        self._pending_rows = 0
        self._folded_rows = 0

    def fold(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add a batch of (group, instant) rows."""
        if batch.num_rows:
            self._add(count_pairs(batch, self.grain_seconds))

    def fold_counts(self, table: pa.Table) -> None:
        """Add rows counted elsewhere (e.g. on Spark): group (string), bucket and count (int64).
        A negative count takes rows out again; pairs left at zero are not output."""
        if table.num_rows:
            self._add(table.select([GROUP, BUCKET, COUNT]))

    def take_out(self, groups: pa.Array, buckets: np.ndarray) -> None:
        """Take one row out per (group, bucket index) given: the later occurrences that
        de-duplication found among rows already folded."""
        if len(groups):
            self._add(sum_per_pair(groups, np.asarray(buckets, np.int64),
                                   np.full(len(groups), -1, np.int64)))

    def _add(self, part: pa.Table) -> None:
        self._parts.append(part)
        self._pending_rows += part.num_rows
        if self._pending_rows > max(_MIN_REFOLD_ROWS, 2 * self._folded_rows):
            self._parts = [self._refold()]
            self._folded_rows = self._pending_rows = self._parts[0].num_rows

    def _refold(self) -> pa.Table:
        table = pa.concat_tables(self._parts)
        summed = sum_per_pair(table.column(GROUP),
                              table.column(BUCKET).to_numpy().astype(np.int64, copy=False),
                              table.column(COUNT).to_numpy().astype(np.int64, copy=False))
        # Counts taken out (the sqlite backend's dropped rows) can leave a pair at zero.
        return summed.filter(pc.not_equal(summed.column(COUNT), 0))

    def table(self) -> pa.Table:
        """The folded counts: one row per (group, bucket), in no set order."""
        if not self._parts:
            return pa.table({GROUP: pa.array([], pa.string()), BUCKET: pa.array([], pa.int64()),
                             COUNT: pa.array([], pa.int64())})
        return self._refold()

    def rows(self) -> list[HourlyRow]:
        """Output rows sorted by bucket, then group: numerically when every group is an integer."""
        table = self.table()
        groups = table.column(GROUP).to_pylist()
        buckets = table.column(BUCKET).to_pylist()
        counts = table.column(COUNT).to_pylist()
        numeric = all(_INTEGER.fullmatch(g) for g in groups)
        rows = [HourlyRow(g, b * self.grain_seconds, c)
                for g, b, c in zip(groups, buckets, counts, strict=True)]
        if numeric:
            rows.sort(key=lambda r: (r.bucket_start, int(r.group), r.group))
        else:
            rows.sort(key=lambda r: (r.bucket_start, r.group))
        return rows

    def outside(self, day: dt.date) -> int:
        """Impressions whose bucket starts outside ``day`` (UTC)."""
        table = self.table()
        if table.num_rows == 0:
            return 0
        start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
        first, last = start // self.grain_seconds, (start + 86400) // self.grain_seconds
        buckets = table.column(BUCKET)
        inside = pc.and_(pc.greater_equal(buckets, pa.scalar(first, pa.int64())),
                         pc.less(buckets, pa.scalar(last, pa.int64())))
        return int(pc.sum(pc.filter(table.column(COUNT), pc.invert(inside))).as_py() or 0)


def count_pairs(batch: pa.RecordBatch | pa.Table, grain_seconds: int) -> pa.Table:
    """Rows per (group, bucket) of a batch of (group, instant) rows: group, bucket and count.
    Pure, so reader threads count their batches in parallel; `HourlyCounts.fold_counts` adds
    the result."""
    instants = batch.column(INSTANT)
    if isinstance(instants, pa.ChunkedArray):
        instants = instants.combine_chunks()
    if not len(instants):
        return HourlyCounts(grain_seconds).table()
    # Floor division, so instants before 1970 land in their own bucket, not the next one.
    buckets = np.floor_divide(instants.to_numpy(zero_copy_only=False), grain_seconds * 10**9)
    return sum_per_pair(batch.column(GROUP), buckets)


def tally_counts(tally: dict[int, int], counts: pa.Table) -> None:
    """Add to ``tally`` the rows that ``counts`` (group, bucket, count) holds per bucket index."""
    if not counts.num_rows:
        return
    buckets = counts.column(BUCKET).to_numpy()
    values, where = np.unique(buckets, return_inverse=True)
    sums = np.bincount(where, weights=counts.column(COUNT).to_numpy()).astype(np.int64)
    for value, count in zip(values.tolist(), sums.tolist(), strict=True):
        tally[value] = tally.get(value, 0) + count


def sum_per_pair(groups: pa.Array | pa.ChunkedArray, buckets: np.ndarray,
                 counts: np.ndarray | None = None) -> pa.Table:
    """Sum ``counts`` (one per row when None) per distinct (group, bucket): a table of group,
    bucket and count.

    Arrow's hash kernels and numpy, not Arrow's group-by: that one lives in Acero, whose
    libraries cost about 10 MB of resident memory once loaded, too much of a 128 MB budget.
    """
    if isinstance(groups, pa.ChunkedArray):
        groups = groups.combine_chunks()
    encoded = pc.dictionary_encode(groups)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    low = int(buckets.min())
    span = int(buckets.max()) - low + 1
    cells = span * len(encoded.dictionary)
    if cells <= max(_MIN_DENSE_CELLS, 2 * len(codes)) and counts is None:
        # Few groups and buckets (a day of hours): count every cell of the grid in one pass
        # and keep the cells that were hit, with no second hash table.
        grid = np.bincount(codes * span + (buckets - low), minlength=cells)
        hit = np.flatnonzero(grid)
        return pa.table({
            GROUP: encoded.dictionary.take(pa.array(hit // span)),
            BUCKET: pa.array(hit % span + low, pa.int64()),
            COUNT: pa.array(grid[hit], pa.int64()),
        })
    if cells < 2**62:
        # One integer per pair, numbered by a hash table in one pass.
        pairs = pc.dictionary_encode(pa.array(codes * span + (buckets - low)))
        slots = pairs.indices.to_numpy(zero_copy_only=False)
        distinct = pairs.dictionary.to_numpy()
        pair_groups, pair_buckets = distinct // span, distinct % span + low
    else:  # buckets spread too far to pack with the group: sort by both
        order = np.lexsort((buckets, codes))
        ordered = np.stack([codes[order], buckets[order]], axis=1)
        first = np.concatenate(([True], (ordered[1:] != ordered[:-1]).any(axis=1)))
        slots = np.empty(len(codes), np.int64)
        slots[order] = np.cumsum(first) - 1
        pair_groups, pair_buckets = ordered[first, 0], ordered[first, 1]
    if counts is None:
        sums = np.bincount(slots, minlength=len(pair_groups)).astype(np.int64)
    else:
        sums = np.zeros(len(pair_groups), np.int64)
        np.add.at(sums, slots, counts)
    return pa.table({
        GROUP: encoded.dictionary.take(pa.array(pair_groups)),
        BUCKET: pa.array(pair_buckets, pa.int64()),
        COUNT: pa.array(sums, pa.int64()),
    })
