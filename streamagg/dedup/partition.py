"""Where a spilled row goes: hash partitions, and the private Arrow stream files that hold them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa


def by_partition(batch: pa.RecordBatch, partition: np.ndarray,
                 partitions: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The rows of each partition that has any, in their order, as slices of one copy."""
    if batch.num_rows == 0:
        return
    yield from slices(*ordered_by_partition(batch, partition, partitions))


def slices(ordered: pa.RecordBatch,
           counts: np.ndarray) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Rows grouped by partition (`ordered_by_partition`) as each partition's slice."""
    start = 0
    for index in np.flatnonzero(counts).tolist():
        count = int(counts[index])
        yield index, ordered.slice(start, count)
        start += count


def private_file(path: str) -> pa.OSFile:
    """A new spill file for writing, created 0600 first whatever the umask: spilled keys are
    customer data.

    Opened to append, not to truncate: ext4 flushes a file truncated to nothing when it is
    closed (its guard for programs that rewrite a file in place), so every spill file went to
    the disk, closing one took 4 to 9 ms, and removing it later waited for the write. Created
    empty here (``O_TRUNC`` empties a file left at this path; a new one is not truncated), so
    appending writes the same bytes.
    """
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    return pa.OSFile(path, "ab")


def write_table(path: str, table: pa.Table) -> None:
    """A spill file of its own holding ``table``."""
    with private_file(path) as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def regrouped(batches: Iterator[pa.RecordBatch] | pa.ipc.RecordBatchStreamReader,
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


def sliced(stream: pa.ipc.RecordBatchStreamReader, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """The stream's rows, in order, in batches of about ``max_bytes`` (at least one row)."""
    for batch in stream:
        if not batch.num_rows:
            continue
        rows = max(1, batch.num_rows * max_bytes // max(batch.nbytes, 1))
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def bits_of(high: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """The partition of each row: ``bits`` bits of the fingerprint's high lane from ``shift``.

    The high lane is a well-mixed hash of the whole key, so any of its bits spread any day's
    keys evenly, however skewed their ids or instants; equal keys always share a partition.
    Each level of splitting takes the next bits down.
    """
    mask = np.uint64((1 << bits) - 1)
    return ((high >> np.uint64(shift)) & mask).astype(np.uint16)


def ordered_by_partition(batch: pa.RecordBatch, partition: np.ndarray,
                         partitions: int) -> tuple[pa.RecordBatch, np.ndarray]:
    """The rows grouped by partition (in their order within each) and each partition's count."""
    # Stable, so rows keep their order within a partition; radix sort on small integers.
    order = np.argsort(partition, kind="stable")
    return batch.take(pa.array(order)), np.bincount(partition, minlength=partitions)


# What a batch held by `PartitionWriters` costs besides its buffers (measured, jemalloc).
HELD_BATCH_BYTES = 4096


class PartitionWriters:
    """One Arrow IPC stream file per partition, opened when first written.

    `write_ordered` may hold batches, up to ``max_pending_bytes``, until each partition's share
    of them is ``min_rows`` rows on average: an IPC message costs about 50 us however small, and
    a 100M-row day cut into 256 partitions gave slices of 256 rows, 20 s of the main thread.
    """

    def __init__(self, folder: str, prefix: str, count: int, schema: pa.Schema, *,
                 min_rows: int = 1, max_pending_bytes: int = 0) -> None:
        self.paths = [os.path.join(folder, f"{prefix}{i:04d}.arrow") for i in range(count)]
        self.schema = schema
        self._sinks: dict[int, tuple[pa.NativeFile, pa.ipc.RecordBatchStreamWriter]] = {}
        self._closed = False
        self._flush_rows = min_rows * count
        self._max_pending_bytes = max_pending_bytes
        self._pending: list[tuple[pa.RecordBatch, np.ndarray]] = []
        self._pending_rows = self._pending_bytes = 0

    def write(self, batch: pa.RecordBatch, partition: np.ndarray) -> None:
        for index, rows in by_partition(batch, partition, len(self.paths)):
            self._writer(index).write_batch(rows)

    def write_ordered(self, batch: pa.RecordBatch, counts: np.ndarray) -> None:
        """Write rows already grouped by partition, ``counts[i]`` of them for partition i."""
        self._pending.append((batch, counts))
        self._pending_rows += batch.num_rows
        # A held batch costs its Arrow objects besides its bytes: 3.7 KB each measured for
        # one-row batches, whose 8,192 held (the rows threshold of 4 partitions) took 30 MB on
        # a day of one-row files (issue 22.1).
        self._pending_bytes += batch.nbytes + HELD_BATCH_BYTES
        if self._pending_rows >= self._flush_rows or self._pending_bytes >= self._max_pending_bytes:
            self.flush()

    def flush(self) -> None:
        """Write every batch held, each partition's rows of them as one message, in order."""
        pending, self._pending = self._pending, []
        self._pending_rows = self._pending_bytes = 0
        cut = [dict(slices(batch, counts)) for batch, counts in pending]
        for index in sorted(set().union(*cut)):
            parts = [slices[index] for slices in cut if index in slices]
            self._writer(index).write_batch(
                parts[0] if len(parts) == 1 else pa.concat_batches(parts))

    def _writer(self, index: int) -> pa.ipc.RecordBatchStreamWriter:
        entry = self._sinks.get(index)
        if entry is None:
            sink = private_file(self.paths[index])
            entry = (sink, pa.ipc.new_stream(sink, self.schema))
            self._sinks[index] = entry
        return entry[1]

    def close(self) -> list[str]:
        """Finish every file; the paths of those that hold rows, in partition order."""
        if not self._closed:
            self._closed = True
            try:
                self.flush()
            finally:
                for sink, writer in self._sinks.values():
                    writer.close()
                    sink.close()
        return [self.paths[i] for i in sorted(self._sinks)]
