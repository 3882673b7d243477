"""Spill partitions too big for memory: re-split by hash, cut by key range, or streamed."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..columns import CLEAN_SCHEMA, GROUP, INSTANT, KEY
from . import exact_keys
from .partition import (
    _by_partition,
    _PartitionWriters,
    _regrouped,
    _sliced,
    _write_table,
    partition_by_instant,
    partition_of,
)

# Working memory of one partition's de-duplication per byte spilled (key strings, dictionary
# hash table, codes, masks), measured on generated days and rounded up.
WORK_PER_SPILLED_BYTE = 4
SPLIT_FANOUT = 16
# Levels split by hashing (instant, then id twice); below them, or when a hash split made no
# progress, pieces are cut by ranges of the exact key (see `_range_bounds`).
HASH_SPLIT_DEPTHS = 4
# Keys sampled from a piece to choose its ranges.
RANGE_SAMPLE = 4096
# A partition file is made of many small batches (one slice of every batch the day spilled);
# splitting them one by one cost more than the de-duplication itself on a 100M-row day.
SPLIT_BATCH_ROWS = 65_536
_Done = tuple[pa.RecordBatch, int, int]  # first occurrences, duplicates, conflicts
_GROUP_OUT = pa.schema([(GROUP, pa.string()), (INSTANT, pa.int64()), (KEY, pa.string())])


class PieceSplitter:
    """First occurrences of spill files, each cut (by instant, id, then key range) into pieces
    that fit ``partition_budget``; the pieces' files go into ``folder``."""

    def __init__(self, folder: str, partition_budget: int) -> None:
        self.folder = folder
        self.partition_budget = partition_budget

    def fits(self, size: int) -> bool:
        """Whether a piece of ``size`` bytes spilled can be de-duplicated at once."""
        return size * WORK_PER_SPILLED_BYTE <= self.partition_budget

    def survivors(self, path: str, depth: int) -> list[_Done]:
        """First occurrences of the spill file at ``path`` (removed), split ``depth`` times so
        far, in pieces: each piece's rows keep their order."""
        size = os.path.getsize(path)
        if self.fits(size):
            with pa.ipc.open_stream(pa.memory_map(path)) as stream:
                table = stream.read_all()
            os.unlink(path)
            return [_survivors_of(table)]
        if depth == 1:
            pieces = self._split_in_memory(path, size)
            if pieces is not None:
                return pieces
        if depth < HASH_SPLIT_DEPTHS:
            # Too big for memory (a skewed or larger-than-estimated day): split it again on
            # disk, by instant first (cheap; a big day puts hundreds of seconds in a
            # partition), then by id for what is left: one hot second.
            paths = self.split_on_disk(path, lambda batch: (
                partition_by_instant(batch.column(INSTANT), SPLIT_FANOUT, seed=depth)
                if depth == 1 else partition_of(batch.column(KEY), SPLIT_FANOUT, seed=depth)))
            if len(paths) > 1:
                return [done for piece in paths
                        for done in self.survivors(piece, depth + 1)]
            if not paths:
                return []
            path = paths[0]  # no progress (one instant, or ids the hash cannot tell apart)
        # A piece that hashing did not split: cut it by ranges of the exact key, which parts
        # any two different keys; a piece of a single key is streamed instead.
        bounds = _range_bounds(path)
        if bounds is None:
            return [self._streamed_survivors(path)]
        paths = self.split_on_disk(path, lambda batch: _range_of(batch, bounds))
        return [done for piece in paths
                for done in self.survivors(piece, max(depth + 1, HASH_SPLIT_DEPTHS))]

    def split_on_disk(self, path: str,
                       where: Callable[[pa.RecordBatch], np.ndarray]) -> list[str]:
        """The rows of ``path`` cut into pieces by ``where``, each in its own file; order
        within each piece is kept, so first occurrences stay first."""
        writers = _PartitionWriters(self.folder, f"{os.path.basename(path)}.", SPLIT_FANOUT,
                                    CLEAN_SCHEMA)
        # Read, not mapped: the pages of a mapped file stay resident until it is unmapped, and
        # a 22 MB partition took a 128MB budget over.
        with pa.ipc.open_stream(pa.OSFile(path)) as stream:
            for batch in _regrouped(stream, SPLIT_BATCH_ROWS):
                writers.write(batch, where(batch))
        paths = writers.close()
        os.unlink(path)
        return paths

    def _streamed_survivors(self, path: str) -> _Done:
        """First occurrences of a piece too big for memory that no split can cut (one key, as
        far as a sample tells): read in slices that fit, keeping only the distinct keys seen so
        far and the group each first had. Exact whatever the piece holds; its memory is one
        slice plus those keys."""
        seen_keys = pa.array([], pa.binary())
        seen_groups = pa.array([], pa.string())
        kept: list[pa.RecordBatch] = []
        duplicates = conflicts = 0
        slice_bytes = max(self.partition_budget // (2 * WORK_PER_SPILLED_BYTE), 1)
        with pa.ipc.open_stream(pa.OSFile(path)) as stream:
            for rows in _sliced(stream, slice_bytes):
                keys = exact_keys(rows.column(KEY), rows.column(INSTANT))
                groups = rows.column(GROUP)
                earlier = pc.index_in(keys, value_set=seen_keys)
                old = earlier.is_valid()
                if pc.any(old).as_py():
                    duplicates += pc.sum(old.cast(pa.int64())).as_py()
                    first = seen_groups.take(earlier.filter(old))
                    conflicts += pc.sum(pc.not_equal(groups.filter(old), first)
                                        .cast(pa.int64())).as_py()
                    new = pc.invert(old)
                    rows, keys, groups = rows.filter(new), keys.filter(new), groups.filter(new)
                if not rows.num_rows:
                    continue
                keep, dropped, clashes = first_occurrences(rows.column(KEY),
                                                           rows.column(INSTANT), groups)
                duplicates, conflicts = duplicates + dropped, conflicts + clashes
                mask = pa.array(keep)
                seen_keys = pa.concat_arrays([seen_keys, keys.filter(mask)])
                seen_groups = pa.concat_arrays([seen_groups, groups.filter(mask)])
                kept.append(pa.RecordBatch.from_arrays(
                    [groups.filter(mask), rows.column(INSTANT).filter(mask),
                     rows.column(KEY).filter(mask)], schema=_GROUP_OUT))
        os.unlink(path)
        batch = (pa.Table.from_batches(kept, schema=_GROUP_OUT).combine_chunks().to_batches()[0]
                 if kept
                 else pa.RecordBatch.from_pylist([], schema=_GROUP_OUT))
        return batch, duplicates, conflicts

    def _split_in_memory(self, path: str, size: int) -> list[_Done] | None:
        """Survivors of a partition whose rows fit in memory but whose de-duplication does not:
        cut by instant (another seed) into pieces held in memory, each de-duplicated alone; a
        piece still too big (one hot second) goes to disk for the id split. None when the
        partition's rows with one piece's work would not fit.

        On a 100M-row day every partition is like this; writing all its pieces to disk and
        reading them back took as long as de-duplicating them.
        """
        if size + size // SPLIT_FANOUT * 2 * WORK_PER_SPILLED_BYTE > self.partition_budget:
            return None
        pieces: list[list[pa.RecordBatch]] = [[] for _ in range(SPLIT_FANOUT)]
        # Read, not mapped: mapped pages would stay resident beside the pieces' copies.
        with pa.ipc.open_stream(pa.OSFile(path)) as stream:
            for batch in _regrouped(stream, SPLIT_BATCH_ROWS):
                where = partition_by_instant(batch.column(INSTANT), SPLIT_FANOUT, seed=1)
                for index, rows in _by_partition(batch, where, SPLIT_FANOUT):
                    pieces[index].append(rows)
        os.unlink(path)
        done: list[_Done] = []
        for index, batches in enumerate(pieces):
            if not batches:
                continue
            table = pa.Table.from_batches(batches, schema=CLEAN_SCHEMA)
            pieces[index] = []  # held once, by the table, and freed with it
            if size + table.nbytes * WORK_PER_SPILLED_BYTE > self.partition_budget:
                piece = os.path.join(self.folder, f"{os.path.basename(path)}.{index:04d}.arrow")
                _write_table(piece, table)
                done.extend(self.survivors(piece, 2))
            else:
                done.append(_survivors_of(table))
        return done


def _survivors_of(table: pa.Table) -> _Done:
    """First occurrences of one partition (or piece) held in memory, and what they dropped."""
    if not table.num_rows:
        return pa.RecordBatch.from_pylist([], schema=_GROUP_OUT), 0, 0
    keep, duplicates, conflicts = first_occurrences(
        table.column(KEY), table.column(INSTANT), table.column(GROUP))
    kept = table.select([GROUP, INSTANT, KEY]).filter(pa.array(keep)).combine_chunks()
    batch = (kept.to_batches()[0] if kept.num_rows
             else pa.RecordBatch.from_pylist([], schema=_GROUP_OUT))
    return batch, duplicates, conflicts


def _range_bounds(path: str) -> pa.Array | None:
    """Sorted exact keys that cut the piece at ``path`` into up to `SPLIT_FANOUT` ranges of
    about equal rows, from an evenly spaced sample of its rows; None when the sample holds a
    single key (the piece cannot be cut).

    Each bound is paired with the next larger string (itself and a zero byte), so a key that
    fills many rows gets a range of its own, and any two sampled keys land in different
    ranges: every cut makes progress, whatever the keys look like.
    """
    sample: list[pa.Array] = []
    sampled, stride, position = 0, 1, 0
    with pa.ipc.open_stream(pa.OSFile(path)) as stream:
        for batch in stream:
            # The rows at multiples of the stride; when the sample is full, every other one is
            # dropped (those at odd multiples) and the stride doubles.
            offset = (-position) % stride
            position += batch.num_rows
            if offset >= batch.num_rows:
                continue
            picked = pa.array(np.arange(offset, batch.num_rows, stride))
            sample.append(exact_keys(batch.column(KEY).take(picked),
                                     batch.column(INSTANT).take(picked)))
            sampled += len(picked)
            while sampled >= 2 * RANGE_SAMPLE:
                every = pa.concat_arrays(sample)
                sample = [every.take(pa.array(np.arange(0, len(every), 2)))]
                sampled, stride = len(sample[0]), stride * 2
    if not sample:
        return None
    every = pa.concat_arrays(sample)
    ordered = every.take(pc.sort_indices(every))
    if pc.count_distinct(ordered).as_py() < 2:
        return None
    picks = SPLIT_FANOUT // 2 - 1
    quantiles = ordered.take(pa.array(
        [len(ordered) * (i + 1) // (picks + 1) for i in range(picks)])).to_pylist()
    return pa.array(sorted({b for q in quantiles for b in (q, q + b"\x00")}), pa.binary())


def _range_of(batch: pa.RecordBatch, bounds: pa.Array) -> np.ndarray:
    """The range of each row: how many bounds its exact key is at or above."""
    keys = exact_keys(batch.column(KEY), batch.column(INSTANT))
    where = np.zeros(batch.num_rows, dtype=np.uint16)
    for bound in bounds:
        where += pc.greater_equal(keys, bound).to_numpy(zero_copy_only=False)
    return where


def first_occurrences(
    keys: pa.ChunkedArray | pa.Array, instants: pa.ChunkedArray | pa.Array,
    groups: pa.ChunkedArray | pa.Array,
) -> tuple[np.ndarray, int, int]:
    """Mask of first occurrences of (key, instant) in row order, duplicates and conflicts.

    Exact: `exact_keys` gives one string per row that two rows share only when they share the
    key. Dictionary encoding numbers distinct strings in order of first appearance, so
    a row is a first occurrence exactly when its code is larger than every code before it.
    """
    combined = exact_keys(keys, instants)
    codes = _codes(combined)
    if len(codes) == 0:
        return np.zeros(0, dtype=bool), 0, 0
    seen_max = np.maximum.accumulate(codes)
    keep = np.empty(len(codes), dtype=bool)
    keep[0] = True
    keep[1:] = codes[1:] > seen_max[:-1]
    duplicates = int(len(codes) - keep.sum())
    conflicts = 0
    if duplicates:
        group_codes = _codes(groups)
        first_group = np.empty(int(seen_max[-1]) + 1, dtype=group_codes.dtype)
        first_group[codes[keep]] = group_codes[keep]
        dropped = ~keep
        conflicts = int((group_codes[dropped] != first_group[codes[dropped]]).sum())
    return keep, duplicates, conflicts


def _codes(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dictionary codes numbered in order of first appearance."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    codes: np.ndarray = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes

