"""Where a spilled row goes: hash partitions, and the private Arrow stream files that hold them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa


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
