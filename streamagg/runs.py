"""Sorted runs of counts on disk, merged back in key order with the counts of equal pairs summed."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .columns import BUCKET, GROUP

COUNT, KEY = "count", "key"
RUN_SCHEMA = pa.schema([(KEY, pa.binary()), (GROUP, pa.string()), (BUCKET, pa.int64()),
                        (COUNT, pa.int64())])


def write_run(table: pa.Table, path: str, batch_rows: int) -> None:
    """Write ``table`` (`RUN_SCHEMA`, sorted by key, one row per key) in batches of
    ``batch_rows``, so that a merge holds one batch of each run at a time."""
    # The folder is private (mkdtemp, 0700): campaigns are the customer's data.
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, RUN_SCHEMA) as writer:
        writer.write_table(table.cast(RUN_SCHEMA), max_chunksize=max(1, batch_rows))


def read_run(path: str) -> pa.Table:
    """A whole run (it was written from memory, so it fits there again)."""
    with pa.OSFile(path, "rb") as source:
        return pa.ipc.open_file(source).read_all()


def sum_sorted(table: pa.Table) -> pa.Table:
    """Rows sorted by key, with the counts of equal keys summed into the first of them and the
    pairs left at zero dropped."""
    rows = table.num_rows
    if rows == 0:
        return table
    keys = table.column(KEY).combine_chunks()
    counts = table.column(COUNT).to_numpy()
    if rows > 1:
        same = np.asarray(pc.equal(keys.slice(1), keys.slice(0, rows - 1))
                          .to_numpy(zero_copy_only=False), dtype=bool)
        if same.any():
            starts = np.flatnonzero(np.concatenate(([True], ~same)))
            counts = np.add.reduceat(counts, starts)
            table = table.take(pa.array(starts))
            table = table.set_column(table.schema.get_field_index(COUNT), COUNT,
                                     pa.array(counts, pa.int64()))
    nonzero = counts != 0
    return table if nonzero.all() else table.filter(pa.array(nonzero))


class _Keys:
    """A batch's keys as a sequence of bytes, for `bisect`."""

    def __init__(self, keys: pa.Array) -> None:
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> bytes:
        value: bytes = self.keys[index].as_py()
        return value


class _Cursor:
    """One run read a batch at a time."""

    def __init__(self, path: str) -> None:
        self._source = pa.OSFile(path, "rb")
        self._reader = pa.ipc.open_file(self._source)
        self._next = 0
        self.batch: pa.RecordBatch | None = None
        self.position = 0
        self.advance()

    def advance(self) -> None:
        while self._next < self._reader.num_record_batches:
            batch = self._reader.get_batch(self._next)
            self._next += 1
            if batch.num_rows:
                self.batch, self.position = batch, 0
                return
        self.batch = None
        self._source.close()

    def last_key(self) -> bytes:
        assert self.batch is not None
        value: bytes = self.batch.column(0)[self.batch.num_rows - 1].as_py()
        return value

    def take_through(self, bound: bytes) -> pa.RecordBatch:
        """The rows of the current batch up to ``bound`` (included) not taken yet."""
        assert self.batch is not None
        batch = self.batch
        end = bisect.bisect_right(_Keys(batch.column(0)), bound, lo=self.position)
        piece = batch.slice(self.position, end - self.position)
        self.position = end
        if end == batch.num_rows:
            self.advance()
        return piece

    def close(self) -> None:
        self._source.close()


def merge_runs(paths: list[str], *, fan_in: int, folder: str, batch_rows: int
               ) -> Iterator[pa.Table]:
    """The rows of every run in key order, equal keys summed, zeros dropped (`RUN_SCHEMA`
    tables). At most ``fan_in`` runs are read at once, a batch of each: more runs are first
    merged ``fan_in`` at a time into larger runs in ``folder`` (removing those merged)."""
    paths = list(paths)
    fan_in = max(2, fan_in)
    serial = 0
    while len(paths) > fan_in:
        group, paths = paths[:fan_in], paths[fan_in:]
        serial += 1
        merged = os.path.join(folder, f"merged-{serial:05d}-{os.path.basename(group[0])}")
        with pa.OSFile(merged, "wb") as sink, pa.ipc.new_file(sink, RUN_SCHEMA) as writer:
            for table in _merge_once(group):
                writer.write_table(table, max_chunksize=max(1, batch_rows))
        for path in group:
            os.unlink(path)
        paths.append(merged)
    yield from _merge_once(paths)


def _merge_once(paths: Iterable[str]) -> Iterator[pa.Table]:
    """Each step takes, from every run's current batch, the rows up to the smallest of the
    batches' last keys: no later batch of any run can hold a key at or below it."""
    cursors = [_Cursor(path) for path in paths]
    try:
        active = [c for c in cursors if c.batch is not None]
        while active:
            bound = min(c.last_key() for c in active)
            pieces = [c.take_through(bound) for c in active]
            active = [c for c in active if c.batch is not None]
            table = pa.Table.from_batches([p for p in pieces if p.num_rows], schema=RUN_SCHEMA)
            if len(pieces) > 1:
                table = table.take(pc.sort_indices(table.column(KEY)))
            summed = sum_sorted(table)
            if summed.num_rows:
                yield summed
    finally:
        for cursor in cursors:
            cursor.close()
