"""Hash-partitioned spill files: keys go to disk, then each partition is de-duplicated alone."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..aggregate import HourlyCounts
from ..budget import Budget
from ..columns import CLEAN_SCHEMA, GROUP, INSTANT, KEY
from . import DedupStats, KeySetState, exact_keys

# Working memory of one partition's de-duplication per byte spilled (key strings, dictionary
# hash table, codes, masks), measured on generated days and rounded up.
WORK_PER_SPILLED_BYTE = 4
MAX_PARTITIONS = 256
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
# A kept partition's segment files: the exact key (see `exact_keys`) and its first group.
STATE_SCHEMA = pa.schema([("k", pa.binary()), (GROUP, pa.string())])
# A partition's runs of kept batches are merged into one when a refresh would add one more
# than this: each refresh reads them all anyway, so the merge costs only the write.
MAX_SEGMENTS = 8


class SpillDeduper:
    """Keys are hash-partitioned on their id into spill files; a partition fits in memory."""

    def __init__(self, *, tmp_dir: str | None, memory_limit: int, expected_bytes: int = 0,
                 grain_seconds: int = 3600,  # the grain: `fold_into`'s counts carry it
                 state: KeySetState | None = None) -> None:
        self.stats = DedupStats()
        self._state = state
        self._generation: tuple[pa.NativeFile, pa.ipc.RecordBatchFileWriter] | None = None
        self._batches = 0  # written to this run's state file so far
        self._ranges: dict[int, list[list[Any]]] = {}  # this run's batches of each partition
        self._readers: dict[str, tuple[pa.NativeFile, pa.ipc.RecordBatchFileReader]] = {}
        self._merged: set[int] = set()  # partitions whose new batches hold the stored rows
        # mkdtemp creates the folder 0700: spilled keys are customer data.
        self.folder = tempfile.mkdtemp(prefix="streamagg-spill-", dir=tmp_dir)
        budget = Budget.of(memory_limit)
        self.threads = budget.spill_threads
        self.partition_budget = budget.spill_partition_bytes
        wanted = expected_bytes * WORK_PER_SPILLED_BYTE // self.partition_budget + 1
        self.partitions = min(MAX_PARTITIONS, 1 << max(2, int(wanted - 1).bit_length()))
        if state is not None and state.resume:
            # New keys must meet the stored ones: the stored partitioning decides.
            self.partitions = int(state.record["partitions"])
        self._writers = _PartitionWriters(self.folder, "p", self.partitions, CLEAN_SCHEMA)

    def __enter__(self) -> SpillDeduper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, batch: pa.RecordBatch) -> None:
        self._writers.write(batch, partition_by_instant(batch.column(INSTANT), self.partitions))

    def survivors(self) -> Iterator[pa.RecordBatch]:
        if self._state is not None and self._state.resume:
            yield from self._resumed_survivors(self._state)
            return
        paths = self._writers.close()
        # Partitions are independent and Arrow's kernels release the GIL: a few at once, in a
        # window as wide as the pool so no more than that are in memory.
        with ThreadPoolExecutor(max_workers=self.threads,
                                thread_name_prefix="streamagg-dedup") as pool:
            window: deque[tuple[str, Future[list[_Done]]]] = deque()
            for path in paths:
                window.append((path, pool.submit(self._partition_survivors, path, 1)))
                if len(window) >= self.threads:
                    done_path, done = window.popleft()
                    yield from self._collect(done.result(), done_path)
            while window:
                done_path, done = window.popleft()
                yield from self._collect(done.result(), done_path)
        if self._state is not None:
            self._finish_kept(self._state, {})

    def fold_into(self, counts: HourlyCounts) -> None:
        for batch in self.survivors():
            counts.fold(batch)

    def _collect(self, done: list[_Done], path: str) -> Iterator[pa.RecordBatch]:
        for batch, duplicates, conflicts in done:
            self.stats.duplicates += duplicates
            self.stats.conflicting_duplicates += conflicts
            if batch.num_rows:
                if self._state is not None:
                    self._keep(_partition_index(path), batch)
                yield batch

    # The kept state: each partition's first occurrences as (exact key, group) batches. A run
    # writes one Arrow file (one upload, one fsync); the record lists, per partition, its runs
    # of batches in such files: [file, first batch, batch count].

    def _write_kept(self, index: int, batch: pa.RecordBatch) -> None:
        """Add rows of partition ``index``, in the state's form, to this run's file."""
        state = self._state
        assert state is not None
        name = f"{state.generation}.arrow"
        if self._generation is None:
            sink = _private_file(os.path.join(state.folder, name))
            self._generation = (sink, pa.ipc.new_file(sink, STATE_SCHEMA))
            state.written.append(name)
        ranges = self._ranges.setdefault(index, [])
        if not ranges or ranges[-1][0] != name or ranges[-1][1] + ranges[-1][2] != self._batches:
            ranges.append([name, self._batches, 0])
        self._generation[1].write_batch(batch)
        ranges[-1][2] += 1
        self._batches += 1

    def _keep(self, index: int, batch: pa.RecordBatch) -> None:
        """Add first occurrences of partition ``index`` to the kept state."""
        self._write_kept(index, _state_batch(batch))

    def _finish_kept(self, state: KeySetState, stored: dict[int, list[list[Any]]]) -> None:
        """Close this run's file; record every partition's batches for the next run."""
        self._close_kept()
        segments = dict(stored)
        for index, ranges in self._ranges.items():
            # A merged partition's batches hold its stored rows too; else they add to them.
            segments[index] = (ranges if index in self._merged
                               else [*segments.get(index, []), *ranges])
        self._ranges = {}
        state.record = {"partitions": self.partitions, "seed": 0,
                        "segments": {str(i): segments[i] for i in sorted(segments)}}

    def _close_kept(self) -> None:
        if self._generation is not None:
            sink, writer = self._generation
            self._generation = None
            writer.close()
            sink.close()
        for path, (source, _) in self._readers.items():
            source.close()
            if self._state is not None:
                self._state.release(path)
        self._readers = {}

    def _stored_batches(self, state: KeySetState,
                        ranges: list[list[Any]]) -> Iterator[pa.RecordBatch]:
        """A partition's stored batches, read (not mapped) one at a time."""
        for name, first, count in ranges:
            local = state.stored_path(name)
            entry = self._readers.get(local)
            if entry is None:
                source = pa.OSFile(local)
                entry = self._readers[local] = (source, pa.ipc.open_file(source))
            for number in range(first, first + count):
                yield entry[1].get_batch(number)

    def _resumed_survivors(self, state: KeySetState) -> Iterator[pa.RecordBatch]:
        """First occurrences among the new rows that no stored key already holds."""
        stored = {int(i): [list(r) for r in ranges]
                  for i, ranges in state.record["segments"].items()}
        for path in self._writers.close():
            index = _partition_index(path)
            ranges = stored.get(index, [])
            merge = len(ranges) + 1 > MAX_SEGMENTS
            if self._new_rows_fit(os.path.getsize(path)):
                pieces = [path]
            else:
                # More new rows than fit at once (the state's partitions were sized for a
                # smaller day): cut them by instant, as a full run would, and hold each piece
                # against the stored keys in turn. Equal keys share an instant, hence a piece.
                pieces = self._split_on_disk(path, lambda batch: partition_by_instant(
                    batch.column(INSTANT), SPLIT_FANOUT, seed=1))
            for piece in pieces:
                with pa.ipc.open_stream(pa.OSFile(piece)) as stream:
                    table = stream.read_all()
                os.unlink(piece)
                # One piece: the stored batches are merged while they are read anyway.
                copy = merge and len(pieces) == 1
                batch, duplicates, conflicts = self._against_stored(state, index, table, ranges,
                                                                    copy=copy)
                del table
                self.stats.duplicates += duplicates
                self.stats.conflicting_duplicates += conflicts
                if batch.num_rows:
                    self._keep(index, batch)
                    yield batch
            if merge:
                if len(pieces) > 1:
                    for kept in self._stored_batches(state, ranges):
                        self._write_kept(index, kept)
                self._merged.add(index)
        self._finish_kept(state, stored)

    def _new_rows_fit(self, size: int) -> bool:
        """Whether a partition's new rows (``size`` bytes spilled) can be held at once."""
        return size * WORK_PER_SPILLED_BYTE <= self.partition_budget

    def _against_stored(self, state: KeySetState, index: int, table: pa.Table,
                        ranges: list[list[Any]], *, copy: bool = False) -> _Done:
        """De-duplicate one partition's new rows against themselves and its stored keys
        (copying the stored batches into this run's file when ``copy``: a merge).

        The hash table is over the new rows only; stored batches are streamed past it, so
        memory follows the new rows, however large the day's key set has grown. A stored key
        came first (new files sort after every recorded one), so a new row holding it is a
        duplicate, conflicting when its group differs from the stored group.
        """
        if not table.num_rows:
            if copy:
                for kept in self._stored_batches(state, ranges):
                    self._write_kept(index, kept)
            return pa.RecordBatch.from_pylist([], schema=_GROUP_OUT), 0, 0
        encoded = pc.dictionary_encode(exact_keys(table.column(KEY), table.column(INSTANT)))
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        unique = encoded.dictionary
        _, first_row = np.unique(codes, return_index=True)
        matched_codes: list[np.ndarray] = []
        matched_groups: list[pa.Array] = []
        for stored in self._stored_batches(state, ranges):
            if copy:
                self._write_kept(index, stored)
            found = pc.index_in(stored.column(0), value_set=unique)
            hit = found.is_valid()
            if pc.any(hit).as_py():
                matched_codes.append(
                    found.filter(hit).to_numpy(zero_copy_only=False).astype(np.int64))
                matched_groups.append(stored.column(1).filter(hit))
        groups = table.column(GROUP).combine_chunks()
        first_group = groups.take(pa.array(first_row))
        matched = np.zeros(len(unique), dtype=bool)
        if matched_codes:
            hits = np.concatenate(matched_codes)
            matched[hits] = True
            # The group a key first had: the stored one where the key was stored.
            where = np.arange(len(unique), dtype=np.int64)
            where[hits] = len(unique) + np.arange(len(hits), dtype=np.int64)
            first_group = pa.concat_arrays([first_group, *matched_groups]).take(pa.array(where))
        keep = np.zeros(len(codes), dtype=bool)
        keep[first_row] = True
        keep &= ~matched[codes]
        dropped = ~keep
        duplicates = int(dropped.sum())
        conflicts = 0
        if duplicates:
            mask = pa.array(dropped)
            conflicts = int(pc.sum(pc.not_equal(
                groups.filter(mask), first_group.take(pa.array(codes[dropped])))).as_py() or 0)
        kept = table.select([GROUP, INSTANT, KEY]).filter(pa.array(keep)).combine_chunks()
        batch = (kept.to_batches()[0] if kept.num_rows
                 else pa.RecordBatch.from_pylist([], schema=_GROUP_OUT))
        return batch, duplicates, conflicts

    def _partition_survivors(self, path: str, depth: int) -> list[_Done]:
        size = os.path.getsize(path)
        if size * WORK_PER_SPILLED_BYTE <= self.partition_budget:
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
            paths = self._split_on_disk(path, lambda batch: (
                partition_by_instant(batch.column(INSTANT), SPLIT_FANOUT, seed=depth)
                if depth == 1 else partition_of(batch.column(KEY), SPLIT_FANOUT, seed=depth)))
            if len(paths) > 1:
                return [done for piece in paths
                        for done in self._partition_survivors(piece, depth + 1)]
            if not paths:
                return []
            path = paths[0]  # no progress (one instant, or ids the hash cannot tell apart)
        # A piece that hashing did not split: cut it by ranges of the exact key, which parts
        # any two different keys; a piece of a single key is streamed instead.
        bounds = _range_bounds(path)
        if bounds is None:
            return [self._streamed_survivors(path)]
        paths = self._split_on_disk(path, lambda batch: _range_of(batch, bounds))
        return [done for piece in paths
                for done in self._partition_survivors(piece, max(depth + 1, HASH_SPLIT_DEPTHS))]

    def _split_on_disk(self, path: str,
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
                done.extend(self._partition_survivors(piece, 2))
            else:
                done.append(_survivors_of(table))
        return done

    def close(self) -> None:
        try:
            self._close_kept()
        except OSError:
            pass  # the run failed; its state file is never published
        try:
            self._writers.close()
        except OSError:
            pass  # the files are discarded anyway (a full disk fails here too)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


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


def _partition_index(path: str) -> int:
    """The top-level partition of a spill file named ``pNNNN.arrow``."""
    return int(os.path.basename(path)[1:5])


def _state_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """First occurrences as a kept segment's rows: exact key and group."""
    return pa.RecordBatch.from_arrays(
        [exact_keys(batch.column(KEY), batch.column(INSTANT)), batch.column(GROUP)],
        schema=STATE_SCHEMA)


def _by_partition(batch: pa.RecordBatch, partition: np.ndarray,
                  partitions: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The rows of each partition that has any, in their order, as slices of one copy."""
    if batch.num_rows == 0:
        return
    # Stable, so rows keep their order within a partition; radix sort on small integers.
    order = np.argsort(partition.astype(np.uint16, copy=False), kind="stable")
    counts = np.bincount(partition, minlength=partitions)
    ordered = batch.take(pa.array(order))
    start = 0
    for index in np.flatnonzero(counts):
        count = int(counts[index])
        yield int(index), ordered.slice(start, count)
        start += count


def _private_file(path: str) -> pa.OSFile:
    """A new spill file for writing, created 0600 first whatever the umask: spilled keys are
    customer data."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    return pa.OSFile(path, "wb")


def _write_table(path: str, table: pa.Table) -> None:
    """A spill file of its own holding ``table``."""
    with _private_file(path) as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def _regrouped(batches: Iterator[pa.RecordBatch] | pa.ipc.RecordBatchStreamReader,
               rows: int) -> Iterator[pa.RecordBatch]:
    """The same rows, in order, in batches of at least ``rows`` (but the last)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.concat_batches(pending)
            pending, count = [], 0
    if pending:
        yield pa.concat_batches(pending)


def _sliced(stream: pa.ipc.RecordBatchStreamReader, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """The stream's rows, in order, in batches of about ``max_bytes`` (at least one row)."""
    for batch in stream:
        if not batch.num_rows:
            continue
        rows = max(1, batch.num_rows * max_bytes // max(batch.nbytes, 1))
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


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


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def partition_by_instant(instants: pa.Array | pa.ChunkedArray, partitions: int, *,
                         seed: int = 0) -> np.ndarray:
    """A spill partition per row from the key's instant alone.

    Equal keys have equal instants, so they meet in one partition; a day's instants spread
    over tens of thousands of distinct seconds, which a good mix scatters evenly. It costs a
    few integer operations per row where hashing the id bytes costs many. A partition that
    still comes out too large is split again, first on the instant with another ``seed`` (a
    100M-row day puts hundreds of seconds in each), then on the id (one hot second), see
    `partition_of`.
    """
    if isinstance(instants, pa.ChunkedArray):
        instants = instants.combine_chunks()
    values = instants.to_numpy(zero_copy_only=False).view(np.uint64)
    with np.errstate(over="ignore"):
        salt = _GOLDEN * np.uint64(seed + 1)
    return (_mix(values ^ salt) % np.uint64(partitions)).astype(np.uint16)


def partition_of(keys: pa.Array | pa.ChunkedArray, partitions: int, *, seed: int) -> np.ndarray:
    """A spill partition per row from the key's length, first and last eight bytes.

    Only decides where a key is stored, never whether two keys are equal, so it needs to spread
    keys, not to be collision-free; equal keys always land in the same partition.
    """
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    buffers = keys.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32)[keys.offset:keys.offset + n + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(
        1, np.uint8)
    if len(data) == 0:
        data = np.zeros(1, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    lengths = (offsets[1:] - offsets[:-1]).astype(np.int64)
    head = np.zeros(n, dtype=np.uint64)
    tail = np.zeros(n, dtype=np.uint64)
    last = len(data) - 1
    for k in range(8):
        present = lengths > k
        head |= np.where(present, data[np.minimum(starts + k, last)], 0).astype(np.uint64) << (
            np.uint64(8 * k))
        tail |= np.where(present, data[np.clip(starts + lengths - 1 - k, 0, last)], 0).astype(
            np.uint64) << np.uint64(8 * k)
    with np.errstate(over="ignore"):
        h = head * _GOLDEN ^ _mix(tail ^ np.uint64(seed + 1)) ^ (lengths.astype(np.uint64) * _M1)
        h = _mix(h)
    return (h % np.uint64(partitions)).astype(np.uint16)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit flips about half the output bits."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        mixed: np.ndarray = x ^ (x >> np.uint64(31))
        return mixed


class _PartitionWriters:
    """One Arrow IPC stream file per partition, opened when first written."""

    def __init__(self, folder: str, prefix: str, count: int, schema: pa.Schema) -> None:
        self.paths = [os.path.join(folder, f"{prefix}{i:04d}.arrow") for i in range(count)]
        self.schema = schema
        self._sinks: dict[int, tuple[pa.NativeFile, pa.ipc.RecordBatchStreamWriter]] = {}
        self._closed = False

    def write(self, batch: pa.RecordBatch, partition: np.ndarray) -> None:
        for index, rows in _by_partition(batch, partition, len(self.paths)):
            self._writer(index).write_batch(rows)

    def _writer(self, index: int) -> pa.ipc.RecordBatchStreamWriter:
        entry = self._sinks.get(index)
        if entry is None:
            sink = _private_file(self.paths[index])
            entry = (sink, pa.ipc.new_stream(sink, self.schema))
            self._sinks[index] = entry
        return entry[1]

    def close(self) -> list[str]:
        """Finish every file; the paths of those that hold rows, in partition order."""
        if not self._closed:
            self._closed = True
            for sink, writer in self._sinks.values():
                writer.close()
                sink.close()
        return [self.paths[i] for i in sorted(self._sinks)]
