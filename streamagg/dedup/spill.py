"""Hash-partitioned spill files: keys go to disk, then each partition is de-duplicated alone."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..aggregate import HourlyCounts
from ..budget import Budget
from ..reader import CLEAN_SCHEMA, GROUP, INSTANT, KEY
from . import DedupStats, exact_keys

# Working memory of one partition's de-duplication per byte spilled (key strings, dictionary
# hash table, codes, masks), measured on generated days and rounded up.
WORK_PER_SPILLED_BYTE = 4
MAX_PARTITIONS = 256
SPLIT_FANOUT = 16
# A partition file is made of many small batches (one slice of every batch the day spilled);
# splitting them one by one cost more than the de-duplication itself on a 100M-row day.
SPLIT_BATCH_ROWS = 65_536
_Done = tuple[pa.RecordBatch, int, int]  # first occurrences, duplicates, conflicts
_GROUP_OUT = pa.schema([(GROUP, pa.string()), (INSTANT, pa.int64())])


class SpillDeduper:
    """Keys are hash-partitioned on their id into spill files; a partition fits in memory."""

    def __init__(self, *, tmp_dir: str | None, memory_limit: int, expected_bytes: int = 0,
                 grain_seconds: int = 3600) -> None:  # the grain: `fold_into`'s counts carry it
        self.stats = DedupStats()
        # mkdtemp creates the folder 0700: spilled keys are customer data.
        self.folder = tempfile.mkdtemp(prefix="streamagg-spill-", dir=tmp_dir)
        budget = Budget.of(memory_limit)
        self.threads = budget.spill_threads
        self.partition_budget = budget.spill_partition_bytes
        wanted = expected_bytes * WORK_PER_SPILLED_BYTE // self.partition_budget + 1
        self.partitions = min(MAX_PARTITIONS, 1 << max(2, int(wanted - 1).bit_length()))
        self._writers = _PartitionWriters(self.folder, "p", self.partitions, CLEAN_SCHEMA)

    def __enter__(self) -> SpillDeduper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, batch: pa.RecordBatch) -> None:
        self._writers.write(batch, partition_by_instant(batch.column(INSTANT), self.partitions))

    def survivors(self) -> Iterator[pa.RecordBatch]:
        paths = self._writers.close()
        # Partitions are independent and Arrow's kernels release the GIL: a few at once, in a
        # window as wide as the pool so no more than that are in memory.
        with ThreadPoolExecutor(max_workers=self.threads,
                                thread_name_prefix="streamagg-dedup") as pool:
            window: deque[Future[list[_Done]]] = deque()
            for path in paths:
                window.append(pool.submit(self._partition_survivors, path, 1))
                if len(window) >= self.threads:
                    yield from self._collect(window.popleft().result())
            while window:
                yield from self._collect(window.popleft().result())

    def fold_into(self, counts: HourlyCounts) -> None:
        for batch in self.survivors():
            counts.fold(batch)

    def _collect(self, done: list[_Done]) -> Iterator[pa.RecordBatch]:
        for batch, duplicates, conflicts in done:
            self.stats.duplicates += duplicates
            self.stats.conflicting_duplicates += conflicts
            if batch.num_rows:
                yield batch

    def _partition_survivors(self, path: str, depth: int) -> list[_Done]:
        size = os.path.getsize(path)
        if size * WORK_PER_SPILLED_BYTE <= self.partition_budget or depth >= 4:
            with pa.ipc.open_stream(pa.memory_map(path)) as stream:
                table = stream.read_all()
            os.unlink(path)
            return [_survivors_of(table)]
        if depth == 1:
            pieces = self._split_in_memory(path, size)
            if pieces is not None:
                return pieces
        # Too big for memory (a skewed or larger-than-estimated day): split it again on disk;
        # order within each piece is kept, so first occurrences stay first.
        writers = _PartitionWriters(self.folder, f"{os.path.basename(path)}.", SPLIT_FANOUT,
                                    CLEAN_SCHEMA)
        # Read, not mapped: the pages of a mapped file stay resident until it is unmapped, and
        # a 22 MB partition took a 128MB budget over.
        with pa.ipc.open_stream(pa.OSFile(path)) as stream:
            for batch in _regrouped(stream, SPLIT_BATCH_ROWS):
                # Again by instant first (cheap; a big day puts hundreds of seconds in a
                # partition), then by id for what is left: one hot second.
                where = (partition_by_instant(batch.column(INSTANT), SPLIT_FANOUT, seed=depth)
                         if depth == 1 else
                         partition_of(batch.column(KEY), SPLIT_FANOUT, seed=depth))
                writers.write(batch, where)
        paths = writers.close()
        os.unlink(path)
        return [done for piece in paths for done in self._partition_survivors(piece, depth + 1)]

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
    kept = table.select([GROUP, INSTANT]).filter(pa.array(keep)).combine_chunks()
    batch = (kept.to_batches()[0] if kept.num_rows
             else pa.RecordBatch.from_pylist([], schema=_GROUP_OUT))
    return batch, duplicates, conflicts


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
