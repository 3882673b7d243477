"""Pure folding of first occurrences into counts per (group, time bucket), in bounded memory."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .budget import DEFAULT_LIMIT, Budget
from .columns import GROUP, INSTANT
from .order import integer_groups, sort_keys
from .runs import BUCKET, COUNT, KEY, merge_runs, read_run, write_run

__all__ = ["BUCKET", "COUNT", "HourlyCounts", "HourlyRow", "count_pairs", "day_buckets",
           "empty_counts", "sum_per_pair", "tally_counts", "top_groups"]

# Below this many (group, bucket) cells, or twice the rows, pairs are counted on a dense grid.
_MIN_DENSE_CELLS = 1 << 16
# Parts waiting to be folded are merged this many at a time (the newest ones of one size), so a
# day of many small batches (40,000 one-row files) holds a few dozen parts, not one per batch.
_FAN_IN = 16
# Parts are folded into the counts once they hold as many bytes as the counts (at least this).
_MIN_REFOLD_BYTES = 1 << 20
# Of the counts' share: the folded counts, and the parts waiting, each hold at most an eighth
# (folding both at once takes about three times what they hold); past it, the folded counts go
# to disk as a sorted run. A merge reads one batch of up to _FAN_IN runs at a time.
_SHARE_PARTS = 8
# Sorted output is handed on in slices of this many rows.
_OUTPUT_ROWS = 65_536
_COUNTS_SCHEMA = pa.schema([(GROUP, pa.string()), (BUCKET, pa.int64()), (COUNT, pa.int64())])


@dataclass(frozen=True)
class HourlyRow:
    """One output row: the group, the bucket's start (seconds since the epoch, UTC), the count."""

    group: str
    bucket_start: int
    count: int


def empty_counts() -> pa.Table:
    """A table of no (group, bucket, count) rows."""
    return _COUNTS_SCHEMA.empty_table()


class HourlyCounts:
    """Counts per (group, bucket) folded batch by batch; the grain is a parameter.

    Columnar throughout, and bounded by ``memory_bytes`` (`Budget.counts_bytes`): past it the
    folded counts are sorted in the output's order and spilled into ``spill_dir`` (the system's
    temporary folder when None), then merged back in that order. No Python object is made per
    (group, bucket) pair on the way to the output.
    """

    def __init__(self, grain_seconds: int = 3600, *, memory_bytes: int | None = None,
                 spill_dir: str | None = None) -> None:
        self.grain_ns = grain_seconds * 10**9
        self.grain_seconds = grain_seconds
        self.memory_bytes = memory_bytes or Budget.of(DEFAULT_LIMIT).counts_bytes
        self._spill_dir = spill_dir
        self._folder: str | None = None  # made at the first spill
        self._parts: list[tuple[int, pa.Table]] = []  # (merge level, part) waiting to be folded
        self._parts_bytes = 0
        self._folded: pa.Table | None = None
        self._runs: list[tuple[str, bool]] = []  # (path, sorted numerically)
        # Whether the output sorts numerically is a property of the groups left in it: pairs
        # never go below zero, so the net count of rows whose group is not an integer is zero
        # exactly when no such group is left.
        self._text_seen = False
        self._text_net = 0
        self._row_bytes = 64  # of a spilled row, key included: the largest seen
        self._serial = 0

    @property
    def _part_limit(self) -> int:
        return self.memory_bytes // _SHARE_PARTS

    def fold(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add a batch of (group, instant) rows."""
        if batch.num_rows:
            self._add(count_pairs(batch, self.grain_seconds))

    def fold_counts(self, table: pa.Table) -> None:
        """Add rows counted elsewhere (e.g. on Spark): group (string), bucket and count (int64).
        A negative count takes rows out again; pairs left at zero are not output."""
        if table.num_rows:
            self._add(table.select([GROUP, BUCKET, COUNT]))

    def fold_from(self, other: HourlyCounts) -> None:
        """Add every count of ``other`` and leave it empty: its parts and folded counts join
        these, its runs on disk become these counts' runs (moved, not read)."""
        if other.grain_seconds != self.grain_seconds:
            raise ValueError("fold_from: counts of another grain")
        self._text_seen |= other._text_seen
        self._text_net += other._text_net
        waiting = [p for _, p in other._parts]
        if other._folded is not None:
            waiting.insert(0, other._folded)
        for path, numeric in other._runs:
            self._runs.append((self._adopt(path), numeric))
            self._row_bytes = max(self._row_bytes, other._row_bytes)
        other._parts, other._parts_bytes, other._folded, other._runs = [], 0, None, []
        for part in waiting:
            self._queue(part)

    def take_out(self, groups: pa.Array, buckets: np.ndarray) -> None:
        """Take one row out per (group, bucket index) given: the later occurrences that
        de-duplication found among rows already folded."""
        if len(groups):
            self._add(sum_per_pair(groups, np.asarray(buckets, np.int64),
                                   np.full(len(groups), -1, np.int64)))

    def _add(self, part: pa.Table) -> None:
        part = part.cast(_COUNTS_SCHEMA) if part.schema != _COUNTS_SCHEMA else part
        groups = part.column(GROUP)
        integer = integer_groups(groups.combine_chunks() if groups.num_chunks != 1
                                 else groups.chunk(0))
        if not integer.all():
            self._text_seen = True
            self._text_net += int(part.column(COUNT).to_numpy()[~integer].sum())
        self._queue(part)

    def _queue(self, part: pa.Table) -> None:
        self._parts.append((0, part))
        self._parts_bytes += part.nbytes
        while len(self._parts) >= _FAN_IN and len({level for level, _ in
                                                   self._parts[-_FAN_IN:]}) == 1:
            level = self._parts[-1][0]
            merged = _summed([p for _, p in self._parts[-_FAN_IN:]])
            del self._parts[-_FAN_IN:]
            self._parts.append((level + 1, merged))
            self._parts_bytes = sum(p.nbytes for _, p in self._parts)
        folded = self._folded.nbytes if self._folded is not None else 0
        if self._parts_bytes >= min(self._part_limit, max(_MIN_REFOLD_BYTES, folded)):
            self._refold()

    def _refold(self) -> None:
        """Fold the waiting parts into the counts; past their share, spill the counts."""
        tables = [p for _, p in self._parts]
        if self._folded is not None:
            tables.insert(0, self._folded)
        self._parts, self._parts_bytes, self._folded = [], 0, None
        if tables:
            folded = _summed(tables)
            del tables
            if folded.nbytes > self._part_limit:
                self._spill(folded, numeric=not self._text_seen)
            else:
                self._folded = folded

    def _run_path(self) -> str:
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="streamagg-counts-", dir=self._spill_dir)
            weakref.finalize(self, shutil.rmtree, self._folder, True)
        self._serial += 1
        return os.path.join(self._folder, f"run-{self._serial:05d}.arrow")

    def _adopt(self, path: str) -> str:
        """Move another's run into these counts' folder."""
        moved = self._run_path()
        shutil.move(path, moved)
        return moved

    def _spill(self, table: pa.Table, *, numeric: bool) -> None:
        path = self._run_path()
        keyed = _keyed(table, numeric)
        del table
        self._row_bytes = max(self._row_bytes, keyed.nbytes // max(1, keyed.num_rows))
        write_run(keyed, path, self._batch_rows())
        self._runs.append((path, numeric))

    def _batch_rows(self) -> int:
        """Rows per batch of a run: a merge holds one batch of each of _FAN_IN runs, and what
        it makes of them (about three times as much), within half of the share."""
        # At least one row, not 64: 64 rows of 760 KiB campaign ids in each of a few runs
        # peaked at 290 MiB under 192MB.
        return max(1, self.memory_bytes // 2 // (4 * _FAN_IN) // self._row_bytes)

    def sorted_parts(self) -> Iterator[pa.Table]:
        """The counts in the output's order, as (group, bucket, count) tables of up to 65,536
        rows: by bucket, then group, numerically when every group left is an integer (ties
        as text), else as text by code point. Pairs at zero are left out."""
        numeric = self._text_net == 0
        self._refold()
        if not self._runs:
            yield from _in_order(self._folded, numeric)
            return
        if self._folded is not None:
            self._spill(self._folded, numeric=numeric)
            self._folded = None
        for index, (path, run_numeric) in enumerate(self._runs):
            if run_numeric != numeric:  # spilled before the first group that is not an integer
                write_run(_keyed(read_run(path), numeric), path, self._batch_rows())
                self._runs[index] = (path, numeric)
        assert self._folder is not None
        merged = merge_runs([p for p, _ in self._runs], fan_in=_FAN_IN, folder=self._folder,
                            batch_rows=self._batch_rows())
        self._runs = []
        for table in merged:
            yield table.select([GROUP, BUCKET, COUNT])

    def parts(self) -> Iterator[pa.Table]:
        """Every count as (group, bucket, count) tables, in no set order; a pair may come in
        several rows (their counts add up)."""
        if self._folded is not None:
            yield self._folded
        for _, part in self._parts:
            yield part
        for path, _ in self._runs:
            with pa.OSFile(path, "rb") as source:
                reader = pa.ipc.open_file(source)
                for index in range(reader.num_record_batches):
                    yield pa.Table.from_batches([reader.get_batch(index)]).select(
                        [GROUP, BUCKET, COUNT])

    def table(self) -> pa.Table:
        """The folded counts: one row per (group, bucket), in no set order. All in memory: for
        counts known to be small (a partition's later occurrences, tests)."""
        return _summed(list(self.parts())) if self._parts or self._runs or self._folded \
            else empty_counts()

    def rows(self) -> list[HourlyRow]:
        """The output rows as Python objects, in order: for tests and small counts only."""
        return [HourlyRow(g, b * self.grain_seconds, c) for part in self.sorted_parts()
                for g, b, c in zip(part.column(GROUP).to_pylist(), part.column(BUCKET).to_pylist(),
                                   part.column(COUNT).to_pylist(), strict=True)]

    def outside(self, day: dt.date) -> int:
        """Impressions whose bucket starts outside ``day`` (UTC)."""
        first, last = day_buckets(day, self.grain_seconds)
        total = 0
        for part in self.parts():
            buckets = part.column(BUCKET).to_numpy()
            total += int(part.column(COUNT).to_numpy()[(buckets < first) | (buckets >= last)]
                         .sum())
        return total

    def close(self) -> None:
        """Remove the spilled runs (also done when the counts are collected)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
            self._runs = []


def top_groups(counts: HourlyCounts, n: int) -> list[tuple[str, int]]:
    """The ``n`` groups with the most counted over every bucket, most first, ties by group;
    ``counts`` holds each group's total (e.g. under bucket 0)."""
    best: list[tuple[str, int]] = []
    for part in counts.sorted_parts():
        top = part.take(pc.select_k_unstable(
            part, k=min(n, part.num_rows),
            sort_keys=[(COUNT, "descending"), (GROUP, "ascending")]))
        best.extend(zip(top.column(GROUP).to_pylist(), top.column(COUNT).to_pylist(),
                        strict=True))
        best = sorted(best, key=lambda kv: (-kv[1], kv[0]))[:n]
    return best


def day_buckets(day: dt.date, grain_seconds: int) -> tuple[int, int]:
    """The first bucket of ``day`` (UTC) and the first after it."""
    start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
    return start // grain_seconds, (start + 86400) // grain_seconds


def _summed(tables: list[pa.Table]) -> pa.Table:
    """One row per (group, bucket) of ``tables``, counts summed, pairs at zero left out."""
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if table.num_rows == 0:
        return empty_counts()
    summed = sum_per_pair(table.column(GROUP),
                          table.column(BUCKET).to_numpy().astype(np.int64, copy=False),
                          table.column(COUNT).to_numpy().astype(np.int64, copy=False))
    return summed.filter(pc.not_equal(summed.column(COUNT), 0))


def _keyed(table: pa.Table, numeric: bool) -> pa.Table:
    """``table`` sorted by its output key, the key as its first column."""
    table = table.select([GROUP, BUCKET, COUNT]).combine_chunks()
    if table.num_rows == 0:
        return table.add_column(0, KEY, pa.array([], pa.binary()))
    keys = sort_keys(table.column(GROUP).chunk(0), table.column(BUCKET).to_numpy(),
                     numeric=numeric)
    order = pc.sort_indices(keys)
    return table.take(order).add_column(0, KEY, keys.take(order))


def _in_order(table: pa.Table | None, numeric: bool) -> Iterator[pa.Table]:
    if table is None or table.num_rows == 0:
        return
    table = table.combine_chunks()
    keys = sort_keys(table.column(GROUP).chunk(0), table.column(BUCKET).to_numpy(),
                     numeric=numeric)
    order = pc.sort_indices(keys)
    del keys
    for start in range(0, len(order), _OUTPUT_ROWS):
        yield table.take(order.slice(start, _OUTPUT_ROWS))


def count_pairs(batch: pa.RecordBatch | pa.Table, grain_seconds: int) -> pa.Table:
    """Rows per (group, bucket) of a batch of (group, instant) rows: group, bucket and count.
    Pure, so reader threads count their batches in parallel; `HourlyCounts.fold_counts` adds
    the result."""
    instants = batch.column(INSTANT)
    if isinstance(instants, pa.ChunkedArray):
        instants = instants.combine_chunks()
    if not len(instants):
        return empty_counts()
    # Floor division, so instants before 1970 land in their own bucket, not the next one.
    buckets = np.floor_divide(instants.to_numpy(zero_copy_only=False), grain_seconds * 10**9)
    return sum_per_pair(batch.column(GROUP), buckets)


def tally_counts(tally: dict[int, int], counts: pa.Table,
                 day: tuple[int, int] | None = None) -> None:
    """Add to ``tally`` the rows that ``counts`` (group, bucket, count) holds per bucket index.

    Given the ``day``'s buckets (`day_buckets`), those before it are tallied as the one just
    before, those after as the one just after: the manifest gives only their sum, and a day
    whose rows fall in millions of other hours keeps two entries for them, not millions.
    """
    if not counts.num_rows:
        return
    buckets = counts.column(BUCKET).to_numpy()
    if day is not None:
        buckets = np.clip(buckets, day[0] - 1, day[1])
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
