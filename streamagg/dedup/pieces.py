"""First occurrences of a spill partition, on fixed-width fingerprints; too-big pieces re-split."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..columns import BUCKET, GROUP
from .base import Later
from .partition import PartitionWriters, bits_of, by_partition, regrouped, sliced, write_table
from .rows import HIGH, LOW, STATE_SCHEMA, column, lane, spill_schema, state_rows

# Working memory of one partition's de-duplication per byte spilled (the table, its lanes as
# numpy arrays, the sorted lane, run flags, and for the kept state its sorted copy), measured
# and rounded up: 3.7 keeping the state (4, this figure); 1.8 without (2.5, `UNKEPT_SHARE` of
# it: a 100M-row day's 13 MB partitions then fit whole, where cutting each into 16 pieces had
# taken twice as long as de-duplicating them).
WORK_PER_SPILLED_BYTE = 4
UNKEPT_SHARE = 0.625
SPLIT_BITS = 4
SPLIT_FANOUT = 1 << SPLIT_BITS
# A partition file is made of many small batches (one slice of every batch the day spilled);
# splitting them one by one cost more than the de-duplication itself on a 100M-row day.
SPLIT_BATCH_ROWS = 65_536


@dataclass
class Done:
    """What de-duplicating one piece found."""

    later: Later  # its later occurrences
    kept: pa.RecordBatch | None = None  # first occurrences as `STATE_SCHEMA` rows, if kept


class PieceSplitter:
    """First occurrences of spill files, each cut (by further bits of the fingerprint) into
    pieces that fit ``partition_budget``; the pieces' files go into ``folder``. Counts are of
    ``grain_seconds``; with ``keep`` the first occurrences are returned for the kept state."""

    def __init__(self, folder: str, partition_budget: int, grain_seconds: int = 3600,
                 keep: bool = False) -> None:
        self.folder = folder
        self.partition_budget = partition_budget
        self.grain_seconds = grain_seconds
        self.keep = keep
        self.schema = spill_schema(grain_seconds)

    @property
    def work_per_byte(self) -> float:
        """Working memory of de-duplicating a piece, per byte of it spilled."""
        return WORK_PER_SPILLED_BYTE * (1 if self.keep else UNKEPT_SHARE)

    def fits(self, size: int) -> bool:
        """Whether a piece of ``size`` bytes spilled can be de-duplicated at once."""
        return size * self.work_per_byte <= self.partition_budget

    def first_of(self, path: str, shift: int, *,
                 top: bool = False) -> list[Done | HotPiece]:
        """First occurrences of the spill file at ``path`` (removed), whose rows share the
        fingerprint's bits above ``shift + SPLIT_BITS``; ``top`` for a whole partition. A
        piece that only streaming can take is returned as a `HotPiece`, for its consumer to
        run."""
        size = os.path.getsize(path)
        if self.fits(size):
            with pa.ipc.open_stream(pa.OSFile(path)) as stream:
                table = stream.read_all()
            os.unlink(path)
            return [self.done(table)]
        if top:
            pieces = self._split_in_memory(path, size, shift)
            if pieces is not None:
                return pieces
        if shift >= 0:
            paths = self.split_on_disk(
                path, lambda batch: bits_of(lane(batch, HIGH), shift, SPLIT_BITS))
            if len(paths) > 1:
                return [done for piece in paths
                        for done in self.first_of(piece, shift - SPLIT_BITS)]
            if not paths:
                return []
            path = paths[0]  # no progress: the rows share these bits too
        # Pieces that kept together this far share many bits (one hot key, as a rule): cut at
        # the highest bit in which the piece's fingerprints differ, which always makes
        # progress, or stream the piece when they are all one.
        lowest, highest = _high_range(path)
        if lowest == highest:
            return [HotPiece(self, path)]
        cut = max(0, (lowest ^ highest).bit_length() - SPLIT_BITS)
        paths = self.split_on_disk(path, lambda batch: bits_of(lane(batch, HIGH), cut,
                                                               SPLIT_BITS))
        return [done for piece in paths for done in self.first_of(piece, cut - SPLIT_BITS)]

    def split_on_disk(self, path: str,
                      where: Callable[[pa.RecordBatch], np.ndarray]) -> list[str]:
        """The rows of ``path`` cut into pieces by ``where``, each in its own file; order
        within each piece is kept, so first occurrences stay first."""
        writers = PartitionWriters(self.folder, f"{os.path.basename(path)}.", SPLIT_FANOUT,
                                    self.schema)
        # Read, not mapped: the pages of a mapped file stay resident until it is unmapped, and
        # a 22 MB partition took a 128MB budget over.
        with pa.ipc.open_stream(pa.OSFile(path)) as stream:
            for batch in regrouped(stream, SPLIT_BATCH_ROWS):
                writers.write(batch, where(batch))
        paths = writers.close()
        os.unlink(path)
        return paths

    def done(self, table: pa.Table | pa.RecordBatch) -> Done:
        """First occurrences of one piece held in memory, and what they dropped."""
        return self._first(table, survivors=False)[0]

    def _first(self, rows: pa.Table | pa.RecordBatch, *,
               survivors: bool) -> tuple[Done, pa.Table | pa.RecordBatch]:
        """What de-duplicating ``rows`` among themselves found, and (with ``survivors``, or
        when the state is kept) their first occurrences; else ``rows`` as given."""
        groups = column(rows, GROUP)
        keep, duplicates, conflicts = first_occurrences(lane(rows, HIGH), lane(rows, LOW),
                                                        groups)
        later = Later.none()
        if duplicates:
            dropped = pa.array(~keep)
            later = later_rows(rows, dropped, conflicts)
            if survivors or self.keep:
                rows = rows.filter(pa.array(keep))
        return Done(later, state_rows(rows) if self.keep else None), rows

    def streamed(self, path: str) -> Iterator[Done]:
        """First occurrences of a piece too big for memory whose rows all share the high lane
        (one key, whatever its count): read in slices that fit, keeping the distinct low
        lanes seen so far, sorted, with the group each first had. Exact whatever the piece
        holds; its memory is one slice plus those keys, and each slice's later occurrences
        are yielded as it is done. The kept first occurrences come last."""
        seen = np.zeros(0, np.uint64)
        seen_groups = pa.array([], pa.string())
        kept: list[pa.RecordBatch] = []
        slice_bytes = max(int(self.partition_budget // (2 * self.work_per_byte)), 1)
        with pa.ipc.open_stream(pa.OSFile(path)) as stream:
            for rows in sliced(stream, slice_bytes):
                low, groups = lane(rows, LOW), rows.column(GROUP)
                spot = np.minimum(np.searchsorted(seen, low), max(len(seen) - 1, 0))
                old = (seen[spot] == low) if len(seen) else np.zeros(len(low), bool)
                if old.any():
                    mask = pa.array(old)
                    first = seen_groups.take(pa.array(spot[old]))
                    yield Done(later_rows(rows, mask, differing(groups.filter(mask), first)))
                    rows = rows.filter(pa.array(~old))
                if not rows.num_rows:
                    continue
                done, rows = self._first(rows, survivors=True)
                yield Done(done.later)
                if done.kept is not None:
                    kept.append(done.kept)
                merged = np.concatenate([seen, lane(rows, LOW)])
                order = np.argsort(merged, kind="stable")
                seen = merged[order]
                seen_groups = pa.concat_arrays([seen_groups, rows.column(GROUP)]).take(
                    pa.array(order))
        os.unlink(path)
        if kept:
            yield Done(Later.none(), state_rows(pa.Table.from_batches(kept, STATE_SCHEMA)))

    def _split_in_memory(self, path: str, size: int,
                         shift: int) -> list[Done | HotPiece] | None:
        """First occurrences of a partition whose rows fit in memory but whose de-duplication
        does not: cut by the next bits into pieces held in memory, each de-duplicated alone; a
        piece still too big goes to disk to be cut again. None when the partition's rows with
        one piece's work would not fit.

        On a 100M-row day every partition is like this; writing all its pieces to disk and
        reading them back took as long as de-duplicating them.
        """
        if size + size // SPLIT_FANOUT * 2 * self.work_per_byte > self.partition_budget:
            return None
        pieces: list[list[pa.RecordBatch]] = [[] for _ in range(SPLIT_FANOUT)]
        # Read, not mapped: mapped pages would stay resident beside the pieces' copies.
        with pa.ipc.open_stream(pa.OSFile(path)) as stream:
            for batch in regrouped(stream, SPLIT_BATCH_ROWS):
                where = bits_of(lane(batch, HIGH), shift, SPLIT_BITS)
                for index, rows in by_partition(batch, where, SPLIT_FANOUT):
                    pieces[index].append(rows)
        os.unlink(path)
        done: list[Done | HotPiece] = []
        for index, batches in enumerate(pieces):
            if not batches:
                continue
            table = pa.Table.from_batches(batches, schema=self.schema)
            pieces[index] = []  # held once, by the table, and freed with it
            if size + table.nbytes * self.work_per_byte > self.partition_budget:
                piece = os.path.join(self.folder, f"{os.path.basename(path)}.{index:04d}.arrow")
                write_table(piece, table)
                done.extend(self.first_of(piece, shift - SPLIT_BITS))
            else:
                done.append(self.done(table))
        return done


@dataclass(frozen=True)
class HotPiece:
    """A piece whose rows all share the high lane, too big for memory: de-duplicated slice by
    slice (`PieceSplitter.streamed`) where it is consumed, so that its later occurrences,
    which may be nearly all of its rows, never pile up in a worker's result."""

    splitter: PieceSplitter
    path: str

    def __iter__(self) -> Iterator[Done]:
        return self.splitter.streamed(self.path)


def later_rows(rows: pa.Table | pa.RecordBatch, mask: pa.Array, conflicts: int) -> Later:
    """The rows of ``mask`` as later occurrences: their groups and buckets."""
    buckets = lane(rows, BUCKET)[mask.to_numpy(zero_copy_only=False)]
    return Later(column(rows, GROUP).filter(mask), buckets.astype(np.int64, copy=False),
                 conflicts)


def _high_range(path: str) -> tuple[int, int]:
    """The smallest and largest high lane in the spill file at ``path``."""
    lowest, highest = 2**64, -1
    with pa.ipc.open_stream(pa.OSFile(path)) as stream:
        for batch in stream:
            if batch.num_rows:
                high = lane(batch, HIGH)
                lowest, highest = min(lowest, int(high.min())), max(highest, int(high.max()))
    return lowest, highest


def first_occurrences(high: np.ndarray, low: np.ndarray,
                      groups: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int, int]:
    """Mask of first occurrences of each fingerprint (high, low) in row order, the number of
    later occurrences, and how many of those name another group than the first."""
    later, first = later_occurrences(high, low)
    keep = np.ones(len(high), dtype=bool)
    if not len(later):
        return keep, 0, 0
    keep[later] = False
    if isinstance(groups, pa.ChunkedArray):
        groups = groups.combine_chunks()
    # Only the later occurrences and their firsts are compared: a few percent of the rows.
    return keep, len(later), differing(groups.take(pa.array(later)),
                                       groups.take(pa.array(first)))


def differing(groups: pa.Array, others: pa.Array) -> int:
    """How many rows name another group in ``others`` than in ``groups``: conflicts."""
    return int(pc.sum(pc.not_equal(groups, others).cast(pa.int64())).as_py() or 0)


def first_rows(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """For each row, the row number of the first row with its fingerprint (high, low)."""
    first = np.arange(len(high), dtype=np.int64)
    later, first_of_later = later_occurrences(high, low)
    first[later] = first_of_later
    return first


def later_occurrences(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows that repeat an earlier row's fingerprint (high, low), in order, and the first
    row of each one's fingerprint.

    The rows are put in order of the low lane's top 32 bits (a well-mixed hash on its own,
    which no partitioning has used) by two stable sorts on 16 bits each, which numpy does as
    radix sorts: equal values fall in runs with their row numbers ascending. Only rows in runs
    (the duplicates, a few percent) are looked at further: a run whose rows all carry its
    first row's two lanes is one key; a run that holds several keys (top bits alike by chance,
    or a weak lane) is sorted exactly on both lanes. The two radix passes took 0.6x the time
    of numpy's value sort of the lane (4 ms, not 6.4, for 156k rows), and that sort had been
    3.5 times faster than an argsort.
    """
    n = len(low)
    none = np.zeros(0, dtype=np.int64)
    if n < 2:
        return none, none
    # The top 32 bits as two 16-bit halves; which half is sorted first does not matter: equal
    # values end up together, in row order, either way. Held as 4 bytes a row, and the row
    # numbers too (a partition fits in memory, far below 2**31 rows): 20 bytes a row at the
    # peak, where the value sort took 17 and the same passes on 8-byte values 26.
    top = (low >> np.uint64(32)).astype(np.uint32)
    halves = top.view(np.uint16).reshape(n, 2)
    rows = np.argsort(halves[:, 0], kind="stable").astype(np.int32 if n < 2**31 else np.int64)
    rows = rows[np.argsort(halves[rows, 1], kind="stable")]
    del halves
    top = top[rows]
    same = top[1:] == top[:-1]  # the same top bits as the row before
    del top
    if not same.any():
        return none, none
    follows = np.zeros(n, dtype=bool)  # a row whose run started before it
    follows[1:] = same
    in_run = follows.copy()
    in_run[:-1] |= same
    rows = rows[in_run]
    starts = ~follows[in_run]
    run = np.cumsum(starts) - 1
    heads = rows[starts][run]
    exact = (low[rows] == low[heads]) & (high[rows] == high[heads])
    later = ~starts
    if not exact.all():
        mixed = np.isin(run, np.unique(run[~exact]))
        later &= ~mixed
        more, more_first = _exactly_later(rows[mixed], high, low)
        rows = np.concatenate([rows[later], more])
        heads = np.concatenate([heads[later], more_first])
    else:
        rows, heads = rows[later], heads[later]
    order = np.argsort(rows)
    return rows[order].astype(np.int64), heads[order].astype(np.int64)


def _exactly_later(rows: np.ndarray, high: np.ndarray,
                   low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`later_occurrences` among ``rows`` only, sorted on both lanes and the row number."""
    rows = rows[np.lexsort((rows, low[rows], high[rows]))]
    sorted_high, sorted_low = high[rows], low[rows]
    starts = np.ones(len(rows), dtype=bool)
    starts[1:] = (sorted_high[1:] != sorted_high[:-1]) | (sorted_low[1:] != sorted_low[:-1])
    heads = rows[starts][np.cumsum(starts) - 1]
    return rows[~starts], heads[~starts]
