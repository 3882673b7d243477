"""Hash-partitioned spill files: key fingerprints go to disk, each partition de-duplicated alone."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from ..budget import Budget
from ..errors import StorageError
from .base import Deduper, KeySetState, Later, Prepared
from .kept import MAX_SEGMENTS, KeptSegments
from .partition import PartitionWriters, bits_of, ordered_by_partition
from .pieces import SPLIT_BITS, Done, HotPiece, PieceSplitter
from .rows import HIGH, lane

MAX_PARTITIONS = 256
# Bytes of a spilled row: two fingerprint lanes, the bucket and the group (its offset and a
# few characters). Partitions cost per batch written (64 cost twice the CPU of 32), so the
# count is the fewest whose de-duplication fits.
SPILLED_ROW_BYTES = 29
# ... each filling at most 80% of its budget: hash partitions differ a little and the rows are
# estimated from the first file, and a partition that does not fit is cut again.
PARTITION_HEADROOM = 1.25
# Rows a spill message should hold at least, on average per partition (see PartitionWriters);
# within the writer's share of the budget, which bounds what it holds either way. 4,096, not
# 2,048: half the messages to write and read back (spill write 0.33 CPU s, not 0.37, on the
# adlog day; writing 1.3M rows into 64 partitions 32 ms, not 40).
SPILL_MESSAGE_ROWS = 4096
__all__ = ["MAX_PARTITIONS", "MAX_SEGMENTS", "SpillDeduper"]


class SpillDeduper(Deduper):
    """Keys are hash-partitioned on their fingerprint into spill files; a partition fits in
    memory. Each partition's later occurrences are found once every row is spilled, a few
    partitions at a time."""

    files = "spill files"
    _kept: KeptSegments | None = None
    _writers: PartitionWriters | None = None

    def _open(self) -> None:
        budget = Budget.of(self.memory_limit)
        self.threads = budget.spill_threads
        self._buffer_bytes = budget.spill_buffer_bytes
        self._pieces = PieceSplitter(self.folder, budget.spill_partition_bytes,
                                     self.grain_seconds, keep=self.state is not None)
        self.row_schema = self._pieces.schema
        self._kept = KeptSegments(self.state) if self.state is not None else None
        self._sizing = threading.Lock()
        self.partitions = 0  # chosen at the first batch (`_partition_bits`)
        self._bits = 0
        if self.state is not None and self.state.resume:
            # New keys must meet the stored ones: the stored partitioning decides.
            self._start(int(self.state.record["partitions"]))

    def _start(self, partitions: int) -> None:
        self._bits = partitions.bit_length() - 1
        self._writers = PartitionWriters(self.folder, "p", partitions, self._pieces.schema,
                                         min_rows=SPILL_MESSAGE_ROWS,
                                         max_pending_bytes=self._buffer_bytes)
        self.partitions = partitions  # last: another reader thread goes by it

    def _partition_bits(self) -> int:
        """The partition count is chosen at the first batch, once a reader has seen the size of
        the first file's rows: the day's rows, so its spill, are estimated better than from
        its bytes alone (the mixed benchmark day's rows are 2.3 times the adlog day's)."""
        if not self.partitions:
            with self._sizing:
                if not self.partitions:
                    # `work_per_byte` reads `pieces` when called: a test that changes it
                    # changes it here.
                    work = (self.expected_rows() * SPILLED_ROW_BYTES
                            * self._pieces.work_per_byte * PARTITION_HEADROOM)
                    wanted = int(work // self.partition_budget) + 1
                    self._start(min(MAX_PARTITIONS, 1 << max(2, int(wanted - 1).bit_length())))
        return self._bits

    @property
    def partition_budget(self) -> int:
        """Bytes of working memory one partition (or piece) may take while de-duplicated."""
        return self._pieces.partition_budget

    def _arrange(self, rows: pa.RecordBatch) -> Prepared:
        bits = self._partition_bits()
        where = bits_of(lane(rows, HIGH), 64 - bits, bits)
        ordered, counts = ordered_by_partition(rows, where, self.partitions)
        return Prepared(ordered, counts)

    def _add(self, prepared: Prepared) -> None:
        assert prepared.partition_rows is not None and self._writers is not None, \
            "prepared by another backend"
        self._writers.write_ordered(prepared.rows, prepared.partition_rows)

    def _later(self) -> Iterator[Later]:
        self._partition_bits()  # a day of no rows has partitions too, for the kept state
        for done in self._done():
            yield done.later

    def _done(self) -> Iterator[Done]:
        """What de-duplicating each partition found, partition by partition."""
        if self.state is not None and self.state.resume:
            yield from self._resumed(self.state)
            return
        paths = self._written()
        shift = 64 - self._bits - SPLIT_BITS
        # Partitions are independent and numpy's sorts release the GIL: a few at once, in a
        # window as wide as the pool so no more than that are in memory.
        with ThreadPoolExecutor(max_workers=self.threads,
                                thread_name_prefix="streamagg-dedup") as pool:
            window: deque[tuple[str, Future[list[Done | HotPiece]]]] = deque()
            for path in paths:
                window.append((path, pool.submit(self._pieces.first_of, path, shift, top=True)))
                if len(window) >= self.threads:
                    yield from self._collect(*window.popleft())
            while window:
                yield from self._collect(*window.popleft())
        if self._kept is not None:
            self._kept.finish(self.partitions, {})

    def _collect(self, path: str, future: Future[list[Done | HotPiece]]) -> Iterator[Done]:
        for item in future.result():
            # A hot piece is de-duplicated here, slice by slice, as it is consumed: its later
            # occurrences never pile up.
            for done in (item if isinstance(item, HotPiece) else (item,)):
                self._keep(done, _partition_index(path))
                yield done

    def _keep(self, done: Done, index: int) -> None:
        if self._kept is not None and done.kept is not None and done.kept.num_rows:
            self._kept.write(index, done.kept)

    def _resumed(self, state: KeySetState) -> Iterator[Done]:
        """New rows against the stored keys, partition by partition."""
        kept = self._kept
        assert kept is not None
        stored = {int(i): [list(r) for r in ranges]
                  for i, ranges in state.record["segments"].items()}
        shift = 64 - self._bits - SPLIT_BITS
        for path in self._written():
            index = _partition_index(path)
            ranges = stored.get(index, [])
            merge = len(ranges) + 1 > MAX_SEGMENTS
            if self._new_rows_fit(os.path.getsize(path)):
                cuts = [path]
            else:
                # More new rows than fit at once (the state's partitions were sized for a
                # smaller day): cut them by the next bits, as a full run would, and hold each
                # piece against the stored keys in turn. Equal keys share a piece.
                cuts = self._pieces.split_on_disk(path, lambda batch: bits_of(
                    lane(batch, HIGH), shift, SPLIT_BITS))
            for piece in cuts:
                with pa.ipc.open_stream(pa.OSFile(piece)) as stream:
                    table = stream.read_all()
                os.unlink(piece)
                # One piece: the stored batches are merged while they are read anyway.
                copy = merge and len(cuts) == 1
                done = kept.against_stored(index, table, ranges, copy=copy)
                del table
                self._keep(done, index)
                yield done
            if merge:
                if len(cuts) > 1:
                    for stored_batch in kept.stored_batches(ranges):
                        kept.write(index, stored_batch)
                kept.merged.add(index)
        kept.finish(self.partitions, stored)

    def _written(self) -> list[str]:
        """Close the spill files (the batches their writer held are written now): their paths."""
        assert self._writers is not None
        try:
            return self._writers.close()
        except OSError as err:
            raise StorageError(f"cannot write spill files: {err.strerror or err}",
                               uri=self.folder) from err

    def _new_rows_fit(self, size: int) -> bool:
        """Whether a partition's new rows (``size`` bytes spilled) can be held at once."""
        return self._pieces.fits(size)

    def _close(self) -> None:
        try:
            if self._kept is not None:
                self._kept.close()
        finally:
            if self._writers is not None:
                self._writers.close()


def _partition_index(path: str) -> int:
    """The top-level partition of a spill file named ``pNNNN.arrow``."""
    return int(os.path.basename(path)[1:5])
