"""Every share of --memory-limit comes from one table; the numbers are those measured before."""

from __future__ import annotations

import pytest

from streamagg import budget
from streamagg.budget import Budget

MB = 2**20

# memory limit MB: reader threads, gather rows, queue depth, block bytes, spill threads,
# spill partition bytes, sqlite cache KiB, heap trim threshold (on four cores)
TABLE = {
    128: (1, 32768, 2, 262144, 1, 18454937, 4096, 2097152),
    192: (1, 49152, 2, 262144, 2, 24326963, 6144, 2097152),
    256: (2, 65536, 6, 524288, 2, 39426457, 8192, 8388608),
    512: (4, 131072, 3, 524288, 2, 99824435, 16384, 8388608),
    1024: (4, 262144, 3, 1048576, 2, 220620390, 32768, 8388608),
    4096: (4, 1048576, 3, 4194304, 2, 945396121, 131072, 8388608),
}


@pytest.mark.parametrize("megabytes", sorted(TABLE))
def test_the_shares_of_a_limit(megabytes: int) -> None:
    table = budget._budget(megabytes * MB, 4)
    assert (table.reader_threads, table.gather_rows, table.queue_depth, table.reader_block_size,
            table.spill_threads, table.spill_partition_bytes, table.sqlite_cache_kib,
            table.heap_trim_threshold) == TABLE[megabytes]


def test_one_core_reads_and_spills_on_one_thread() -> None:
    table = budget._budget(1024 * MB, 1)
    assert (table.reader_threads, table.spill_threads) == (1, 1)


def test_the_backends_take_their_share(tmp_path: object) -> None:
    from streamagg.dedup.spill import SpillDeduper

    with SpillDeduper(tmp_dir=str(tmp_path), memory_limit=512 * MB) as dedup:
        assert dedup.partition_budget == Budget.of(512 * MB).spill_partition_bytes


@pytest.mark.parametrize("megabytes", sorted(TABLE))
def test_the_prefetch_queues_share_at_most_an_eighth_in_bytes(megabytes: int) -> None:
    table = budget._budget(megabytes * MB, 4)
    # What the queue depth was sized for: a typical day's batches (28 bytes a row measured)
    # are held back by the depth, long rows by the bytes.
    assert table.queue_bytes == (table.reader_threads * table.queue_depth * table.gather_rows
                                 * budget.PREPARED_ROW_BYTES)
    assert table.queue_bytes <= megabytes * MB // 8
