"""Hash-partitioned spill files: keys go to disk, then each partition is de-duplicated alone."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from ..aggregate import HourlyCounts
from ..budget import Budget
from ..columns import CLEAN_SCHEMA, INSTANT
from . import DedupStats, KeySetState, pieces
from .kept import MAX_SEGMENTS, STATE_SCHEMA, KeptSegments
from .partition import _PartitionWriters, partition_by_instant, partition_of
from .pieces import SPLIT_FANOUT, WORK_PER_SPILLED_BYTE, PieceSplitter, _Done, first_occurrences

MAX_PARTITIONS = 256
# Importable from here as before the module was split. `pieces` owns the working-memory factor:
# set `pieces.WORK_PER_SPILLED_BYTE`, not this copy, to change it.
__all__ = ["MAX_PARTITIONS", "MAX_SEGMENTS", "SPLIT_FANOUT", "STATE_SCHEMA",
           "WORK_PER_SPILLED_BYTE", "SpillDeduper", "first_occurrences", "partition_by_instant",
           "partition_of"]


class SpillDeduper:
    """Keys are hash-partitioned on their id into spill files; a partition fits in memory."""

    def __init__(self, *, tmp_dir: str | None, memory_limit: int, expected_bytes: int = 0,
                 grain_seconds: int = 3600,  # the grain: `fold_into`'s counts carry it
                 state: KeySetState | None = None) -> None:
        self.stats = DedupStats()
        self._state = state
        self._kept = KeptSegments(state) if state is not None else None
        # mkdtemp creates the folder 0700: spilled keys are customer data.
        self.folder = tempfile.mkdtemp(prefix="streamagg-spill-", dir=tmp_dir)
        budget = Budget.of(memory_limit)
        self.threads = budget.spill_threads
        self._pieces = PieceSplitter(self.folder, budget.spill_partition_bytes)
        # Read from `pieces` when called: a test that changes the factor changes it everywhere.
        wanted = expected_bytes * pieces.WORK_PER_SPILLED_BYTE // self.partition_budget + 1
        self.partitions = min(MAX_PARTITIONS, 1 << max(2, int(wanted - 1).bit_length()))
        if state is not None and state.resume:
            # New keys must meet the stored ones: the stored partitioning decides.
            self.partitions = int(state.record["partitions"])
        self._writers = _PartitionWriters(self.folder, "p", self.partitions, CLEAN_SCHEMA)

    @property
    def partition_budget(self) -> int:
        """Bytes of working memory one partition (or piece) may take while de-duplicated."""
        return self._pieces.partition_budget

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
                window.append((path, pool.submit(self._pieces.survivors, path, 1)))
                if len(window) >= self.threads:
                    done_path, done = window.popleft()
                    yield from self._collect(done.result(), done_path)
            while window:
                done_path, done = window.popleft()
                yield from self._collect(done.result(), done_path)
        if self._kept is not None:
            self._kept.finish(self.partitions, {})

    def fold_into(self, counts: HourlyCounts) -> None:
        for batch in self.survivors():
            counts.fold(batch)

    def _collect(self, done: list[_Done], path: str) -> Iterator[pa.RecordBatch]:
        for batch, duplicates, conflicts in done:
            self.stats.duplicates += duplicates
            self.stats.conflicting_duplicates += conflicts
            if batch.num_rows:
                if self._kept is not None:
                    self._kept.keep(_partition_index(path), batch)
                yield batch

    def _resumed_survivors(self, state: KeySetState) -> Iterator[pa.RecordBatch]:
        """First occurrences among the new rows that no stored key already holds."""
        kept = self._kept
        assert kept is not None
        stored = {int(i): [list(r) for r in ranges]
                  for i, ranges in state.record["segments"].items()}
        for path in self._writers.close():
            index = _partition_index(path)
            ranges = stored.get(index, [])
            merge = len(ranges) + 1 > MAX_SEGMENTS
            if self._new_rows_fit(os.path.getsize(path)):
                cuts = [path]
            else:
                # More new rows than fit at once (the state's partitions were sized for a
                # smaller day): cut them by instant, as a full run would, and hold each piece
                # against the stored keys in turn. Equal keys share an instant, hence a piece.
                cuts = self._pieces.split_on_disk(path, lambda batch: partition_by_instant(
                    batch.column(INSTANT), SPLIT_FANOUT, seed=1))
            for piece in cuts:
                with pa.ipc.open_stream(pa.OSFile(piece)) as stream:
                    table = stream.read_all()
                os.unlink(piece)
                # One piece: the stored batches are merged while they are read anyway.
                copy = merge and len(cuts) == 1
                batch, duplicates, conflicts = kept.against_stored(index, table, ranges,
                                                                   copy=copy)
                del table
                self.stats.duplicates += duplicates
                self.stats.conflicting_duplicates += conflicts
                if batch.num_rows:
                    kept.keep(index, batch)
                    yield batch
            if merge:
                if len(cuts) > 1:
                    for stored_batch in kept.stored_batches(ranges):
                        kept.write(index, stored_batch)
                kept.merged.add(index)
        kept.finish(self.partitions, stored)

    def _new_rows_fit(self, size: int) -> bool:
        """Whether a partition's new rows (``size`` bytes spilled) can be held at once."""
        return self._pieces.fits(size)

    def close(self) -> None:
        try:
            if self._kept is not None:
                self._kept.close()
        except OSError:
            pass  # the run failed; its state file is never published
        try:
            self._writers.close()
        except OSError:
            pass  # the files are discarded anyway (a full disk fails here too)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _partition_index(path: str) -> int:
    """The top-level partition of a spill file named ``pNNNN.arrow``."""
    return int(os.path.basename(path)[1:5])

