"""The spill backend (streamagg/dedup/spill.py): partitions sized from the day, split when they
do not fit, exact however they are cut."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from streamagg.aggregate import HourlyCounts
from streamagg.columns import BUCKET, CLEAN_SCHEMA
from streamagg.dedup import keyed, make_deduper, spill_schema
from streamagg.dedup import pieces as pieces_module
from streamagg.dedup.spill import SpillDeduper
from tests.dedup.test_backends import LIMIT, SECOND, batch, counted, expected, run


def test_spill_splits_partitions_that_do_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend every spilled byte needs a megabyte of work: each partition is split again and
    # again, and first occurrences must still win.
    monkeypatch.setattr(pieces_module, "WORK_PER_SPILLED_BYTE", 2**20)
    rows = [(f"k{i % 150}", i % 3, f"g{i % 7}") for i in range(2000)]
    batches = [rows[i : i + 97] for i in range(0, len(rows), 97)]
    assert run("spill", batches, tmp_path) == expected(rows)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("keys", [700, 1])
def test_spill_splits_in_memory_what_fits_as_rows(tmp_path: Path, keys: int) -> None:
    # With a budget of twice the largest partition, each partition's rows fit but its
    # de-duplication (2.5 times its size) does not, so it is cut by the next bits in memory.
    # With one key only, that piece is the whole partition and goes on to disk, where it is
    # streamed. Either way first occurrences must win and nothing may stay on disk.
    rows = [(f"k{i % keys}", i % 3, f"g{i % 7}") for i in range(6000)]
    with make_deduper("spill", tmp_dir=str(tmp_path), memory_limit=LIMIT,
                      grain_seconds=1) as dedup:
        assert isinstance(dedup, SpillDeduper)
        counts = HourlyCounts(grain_seconds=1)
        arrived = [batch([(k, t * SECOND, g) for k, t, g in rows[start : start + 500]])
                   for start in range(0, len(rows), 500)]
        for part in arrived:
            dedup.add(dedup.prepare(part))
            counts.fold(part)
        writers = dedup._writers
        assert writers is not None
        paths = writers.paths
        writers.close()
        pieces = dedup._pieces
        pieces.partition_budget = 2 * max(os.path.getsize(p) for p in paths if os.path.exists(p))
        calls: list[bool] = []
        real = pieces._split_in_memory

        def spy(path: str, size: int, shift: int) -> object:
            done = real(path, size, shift)
            calls.append(done is not None)
            return done

        pieces._split_in_memory = spy  # type: ignore[method-assign]
        for later in dedup.later_occurrences():
            counts.take_out(later.groups, later.buckets)
        survivors = Counter({(r.group, r.bucket_start): r.count for r in counts.rows()})
        got = (survivors, dedup.stats.duplicates, dedup.stats.conflicting_duplicates)
    assert calls and all(calls)
    assert got == expected(rows)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("rows", "partitions"), [(0, 4), (10_000_000, 32), (10**9, 256)])
def test_spill_partitions_follow_the_rows_estimated_at_the_first_batch(
        tmp_path: Path, rows: int, partitions: int) -> None:
    asked: list[int] = []

    def expected_rows() -> int:
        asked.append(rows)
        return rows

    with SpillDeduper(tmp_dir=str(tmp_path), memory_limit=LIMIT,
                      expected_rows=expected_rows) as dedup:
        assert asked == []  # not before the day's first batch: the row size is known then
        counts = counted(dedup, [batch([("k", SECOND, "g")])] * 2, 3600)
        assert asked == [rows] and dedup.partitions == partitions
        assert [r.count for r in counts.rows()] == [1]


@pytest.mark.parametrize("grain", [1, 4, 5, 60, 3600, 86400])
def test_spilled_buckets_are_exact_at_the_ends_of_the_instants_range(grain: int) -> None:
    """The spill keeps a row's bucket, not its instant: 32 bits from a 5-second grain up,
    which must hold the bucket of every instant an int64 of nanoseconds can hold."""
    instants = [-(2**63), -1, 0, 1, 2**63 - 1]
    rows = keyed(pa.record_batch([pa.array(["k"] * 5), pa.array(instants, pa.int64()),
                                  pa.array(["g"] * 5)], schema=CLEAN_SCHEMA),
                 grain, spill_schema(grain))
    assert rows.schema.field(BUCKET).type == (pa.int32() if grain >= 5 else pa.int64())
    assert rows.column(BUCKET).to_pylist() == [t // (grain * 10**9) for t in instants]


def test_a_full_disk_while_spilling_names_the_spill_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from streamagg.dedup import partition
    from streamagg.errors import StorageError

    def full(path: str) -> pa.OSFile:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(partition, "private_file", full)
    with make_deduper("spill", tmp_dir=str(tmp_path), memory_limit=LIMIT) as dedup:
        dedup.add(dedup.prepare(batch([("k", SECOND, "g")])))  # held, not yet written
        with pytest.raises(StorageError, match=r"cannot write spill files: No space left on "
                                               r"device \(.*streamagg-spill-") as failed:
            list(dedup.later_occurrences())
        assert dedup.folder in str(failed.value)
    assert list(tmp_path.iterdir()) == []
