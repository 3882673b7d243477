"""Where a spilled row goes (streamagg/dedup/partition.py): hash partitions and their files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg.dedup.partition import (
    PartitionWriters,
    bits_of,
    by_partition,
    ordered_by_partition,
    regrouped,
    write_table,
)


def test_a_spill_file_holds_only_its_own_rows_private(tmp_path: Path) -> None:
    # Spill files are opened to append (ext4 flushes a file truncated to nothing on close):
    # a path that already held bytes must still end up holding exactly the new stream.
    path = tmp_path / "p0000.arrow"
    path.write_bytes(b"left over from an earlier run" * 100)
    os.chmod(path, 0o644)
    table = pa.table({"n": pa.array(range(1000), pa.int64())})
    write_table(str(path), table)
    with pa.ipc.open_stream(pa.OSFile(str(path))) as stream:
        assert stream.read_all().equals(table)
    write_table(str(tmp_path / "new.arrow"), table)
    assert (tmp_path / "new.arrow").stat().st_mode & 0o777 == 0o600


def test_spill_writers_hold_small_slices_and_write_them_in_order(tmp_path: Path) -> None:
    schema = pa.schema([("n", pa.int64())])
    writers = PartitionWriters(str(tmp_path), "p", 2, schema, min_rows=10,
                               max_pending_bytes=1 << 20)
    expected: dict[int, list[int]] = {0: [], 1: []}
    for start in range(0, 60, 6):  # batches of 6 rows: 3 per partition, under 10
        rows = list(range(start, start + 6))
        writers.write_ordered(pa.record_batch([pa.array(rows)], schema=schema),
                              np.array([3, 3]))
        expected[0] += rows[:3]
        expected[1] += rows[3:]
    messages: dict[int, int] = {}
    for index, path in enumerate(writers.close()):
        with pa.ipc.open_stream(pa.OSFile(path)) as stream:
            batches = list(stream)
        messages[index] = len(batches)
        assert [v for b in batches for v in b.column(0).to_pylist()] == expected[index]
    assert messages == {0: 3, 1: 3}  # flushed at 24, 48 rows held, and the rest at close


@settings(max_examples=25, deadline=None)
@given(parts=st.lists(st.integers(0, 7), max_size=50), shift=st.integers(0, 61))
def test_rows_keep_their_order_within_each_partition(parts: list[int], shift: int) -> None:
    """Grouped by partition, stably: the first occurrence of a key stays first in its file."""
    rows = pa.record_batch([pa.array(range(len(parts)), pa.int64())], names=["n"])
    where = np.array(parts, np.uint16)
    ordered, counts = ordered_by_partition(rows, where, 8)
    assert counts.tolist() == [parts.count(i) for i in range(8)]
    assert sum(len(r) for _, r in by_partition(rows, where, 8)) == len(parts)
    for index, part in by_partition(rows, where, 8):
        assert part.column(0).to_pylist() == [n for n, p in enumerate(parts) if p == index]
    assert ordered.num_rows == len(parts)
    # The partition is bits of the high lane from ``shift``; the bits around it do not count.
    high = np.array([((p << shift) | ((1 << shift) - 1) | (5 << (shift + 3))) % 2**64
                     for p in parts], np.uint64)
    assert bits_of(high, shift, 3).tolist() == parts


def test_batches_regrouped_keep_rows_and_order() -> None:
    batches = [pa.record_batch([pa.array([i] * size, pa.int64())], names=["n"])
               for i, size in enumerate([1, 5, 2, 0, 9])]
    out = list(regrouped(iter(batches), 6))
    assert [b.num_rows for b in out] == [6, 11]
    assert [v for b in out for v in b.column(0).to_pylist()] == [
        v for b in batches for v in b.column(0).to_pylist()]
