"""Both de-duplication backends on their own: exact, first occurrence wins, temp files removed."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg.aggregate import BUCKET, HourlyCounts, HourlyRow
from streamagg.columns import CLEAN_SCHEMA
from streamagg.dedup import keyed, make_deduper, spill_schema
from streamagg.dedup import pieces as pieces_module

BACKENDS = ["spill", "sqlite"]
LIMIT = 256 * 2**20
SECOND = 10**9

Row = tuple[str, int, str]  # (key, instant, group)


def batch(rows: list[Row]) -> pa.RecordBatch:
    keys, instants, groups = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.RecordBatch.from_arrays(
        [
            pa.array(keys, pa.string()),
            pa.array(instants, pa.int64()),
            pa.array(groups, pa.string()),
        ],
        schema=CLEAN_SCHEMA,
    )


def expected(rows: list[Row]) -> tuple[Counter, int, int]:
    """Survivors as a multiset of (group, instant), duplicates and conflicting duplicates."""
    first: dict[tuple[str, int], str] = {}
    duplicates = conflicts = 0
    for key, instant, group in rows:
        if (key, instant) in first:
            duplicates += 1
            conflicts += first[(key, instant)] != group
        else:
            first[(key, instant)] = group
    return Counter((g, i) for (_, i), g in first.items()), duplicates, conflicts


def run(
    kind: str, batches: list[list[Row]], tmp: Path, memory_limit: int = LIMIT
) -> tuple[Counter, int, int]:
    """Survivors as folded by the backend itself: instants go in as seconds and come back as
    one-second buckets, so (group, bucket) is (group, instant)."""
    with make_deduper(kind, tmp_dir=str(tmp), memory_limit=memory_limit,
                      grain_seconds=1) as dedup:
        for rows in batches:
            dedup.add(dedup.prepare(batch([(key, instant * SECOND, group)
                                           for key, instant, group in rows])))
        counts = HourlyCounts(grain_seconds=1)
        dedup.fold_into(counts)
        survivors: Counter = Counter({(row.group, row.bucket_start): row.count
                                      for row in counts.rows()})
        stats = dedup.stats
    return survivors, stats.duplicates, stats.conflicting_duplicates


@pytest.mark.parametrize("kind", BACKENDS)
def test_first_occurrence_wins_across_batches(kind: str, tmp_path: Path) -> None:
    batches = [
        [("a", 1, "g1"), ("a", 1, "g2"), ("b", 1, "g1")],
        [],
        [("a", 1, "g3"), ("a", 2, "g2"), ("b", 1, "g1")],
        [("a", 2, "g9")],
    ]
    survivors, duplicates, conflicts = run(kind, batches, tmp_path)
    assert survivors == Counter({("g1", 1): 2, ("g2", 2): 1})
    assert (duplicates, conflicts) == (4, 3)


@pytest.mark.parametrize("kind", BACKENDS)
def test_keys_are_compared_exactly(kind: str, tmp_path: Path) -> None:
    # Same length, same first and last eight bytes: one spill partition, still different keys.
    similar = [f"abcdefgh{c}12345678" for c in "xyz"]
    odd = ["a\x00b", "a\x00c", "a", "a ", "A", "\u00e9", "e\u0301", "", "-1", "1"]
    rows = [(k, 7, "g") for k in similar + odd] + [(k, -7, "h") for k in similar + odd]
    survivors, duplicates, _ = run(kind, [rows, rows[::-1]], tmp_path)
    assert duplicates == len(rows)
    assert survivors == Counter({("g", 7): len(similar + odd), ("h", -7): len(similar + odd)})


@pytest.mark.parametrize("kind", BACKENDS)
def test_temp_files_removed_also_on_failure(kind: str, tmp_path: Path) -> None:
    run(kind, [[("a", 1, "g")] * 10], tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with make_deduper(kind, tmp_dir=str(tmp_path), memory_limit=LIMIT) as dedup:
            dedup.add(dedup.prepare(batch([("a", 1, "g")])))
            assert list(tmp_path.iterdir()) != []
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


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


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "ab", "a\x00", "\u00fc"]),
        st.integers(-2, 2),
        st.sampled_from(["1", "2", "x"]),
    ),
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(rows=rows_strategy, cuts=st.lists(st.integers(0, 60), max_size=5))
def test_backends_match_a_dict(
    rows: list[Row], cuts: list[int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    bounds = sorted({0, len(rows), *[c for c in cuts if c <= len(rows)]})
    batches = [rows[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    want = expected(rows)
    for kind in BACKENDS:
        assert run(kind, batches, tmp_path_factory.mktemp(kind)) == want, kind


def folded(kind: str, batches: list[list[Row]], tmp: Path, grain_seconds: int) -> tuple[
        list[HourlyRow], int, int]:
    """What `fold_into` gives: the backend's own way of counting its first occurrences."""
    counts = HourlyCounts(grain_seconds)
    with make_deduper(kind, tmp_dir=str(tmp), memory_limit=LIMIT,
                      grain_seconds=grain_seconds) as dedup:
        for rows in batches:
            dedup.add(dedup.prepare(batch(rows)))
        dedup.fold_into(counts)
        stats = dedup.stats
    return counts.rows(), stats.duplicates, stats.conflicting_duplicates


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "ab", "\u00fc"]),
            st.integers(-3 * SECOND, 3 * SECOND) | st.sampled_from([-SECOND, -1, 0, SECOND - 1]),
            st.sampled_from(["1", "2", "10", "x"]),
        ),
        max_size=60,
    ),
    size=st.integers(1, 20),
)
def test_fold_into_counts_the_first_occurrences(
    rows: list[Row], size: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A one-second grain around zero: negative instants must land in the bucket below, as
    # floor division puts them, in sqlite's SQL as in Arrow.
    batches = [rows[i : i + size] for i in range(0, len(rows), size)]
    survivors, duplicates, conflicts = expected(rows)
    reference = HourlyCounts(1)
    for (group, instant), n in survivors.items():
        for _ in range(n):
            reference.fold(pa.table({"group": [group], "instant": pa.array([instant], pa.int64())}))
    for kind in BACKENDS:
        got = folded(kind, batches, tmp_path_factory.mktemp(kind), grain_seconds=1)
        assert got == (reference.rows(), duplicates, conflicts), kind


@pytest.mark.parametrize("kind", BACKENDS)
def test_fold_into_leaves_out_groups_seen_only_in_duplicates(kind: str, tmp_path: Path) -> None:
    # "2" only ever appears as a later occurrence of "1"'s key: it must not be output, not
    # even with a count of zero.
    rows = [("a", 0, "1"), ("a", 0, "2"), ("b", 0, "1"), ("a", 0, "2")]
    got = folded(kind, [rows[:2], rows[2:]], tmp_path, grain_seconds=3600)
    assert got == ([HourlyRow("1", 0, 2)], 2, 2)


@pytest.mark.parametrize("keys", [700, 1])
def test_spill_splits_in_memory_what_fits_as_rows(tmp_path: Path, keys: int) -> None:
    # With a budget of twice the largest partition, each partition's rows fit but its
    # de-duplication (2.5 times its size) does not, so it is cut by the next bits in memory.
    # With one key only, that piece is the whole partition and goes on to disk, where it is
    # streamed. Either way first occurrences must win and nothing may stay on disk.
    rows = [(f"k{i % keys}", i % 3, f"g{i % 7}") for i in range(6000)]
    with make_deduper("spill", tmp_dir=str(tmp_path), memory_limit=LIMIT,
                      grain_seconds=1) as dedup:
        for start in range(0, len(rows), 500):
            dedup.add(dedup.prepare(batch([(k, t * SECOND, g)
                                           for k, t, g in rows[start : start + 500]])))
        paths = dedup._writers.paths  # type: ignore[attr-defined]
        dedup._writers.close()  # type: ignore[attr-defined]
        pieces = dedup._pieces  # type: ignore[attr-defined]
        pieces.partition_budget = 2 * max(os.path.getsize(p) for p in paths if os.path.exists(p))
        calls: list[bool] = []
        real = pieces._split_in_memory

        def spy(path: str, size: int, shift: int) -> object:
            done = real(path, size, shift)
            calls.append(done is not None)
            return done

        pieces._split_in_memory = spy
        counts = HourlyCounts(grain_seconds=1)
        dedup.fold_into(counts)
        survivors = Counter({(r.group, r.bucket_start): r.count for r in counts.rows()})
        got = (survivors, dedup.stats.duplicates, dedup.stats.conflicting_duplicates)
    assert calls and all(calls)
    assert got == expected(rows)
    assert list(tmp_path.iterdir()) == []


def test_a_spill_file_holds_only_its_own_rows_private(tmp_path: Path) -> None:
    # Spill files are opened to append (ext4 flushes a file truncated to nothing on close):
    # a path that already held bytes must still end up holding exactly the new stream.
    from streamagg.dedup.partition import _write_table

    path = tmp_path / "p0000.arrow"
    path.write_bytes(b"left over from an earlier run" * 100)
    os.chmod(path, 0o644)
    table = pa.table({"n": pa.array(range(1000), pa.int64())})
    _write_table(str(path), table)
    with pa.ipc.open_stream(pa.OSFile(str(path))) as stream:
        assert stream.read_all().equals(table)
    _write_table(str(tmp_path / "new.arrow"), table)
    assert (tmp_path / "new.arrow").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("rows", "partitions"), [(0, 4), (10_000_000, 32), (10**9, 256)])
def test_spill_partitions_follow_the_rows_estimated_at_the_first_batch(
        tmp_path: Path, rows: int, partitions: int) -> None:
    from streamagg.dedup.spill import SpillDeduper

    asked: list[int] = []

    def expected_rows() -> int:
        asked.append(rows)
        return rows

    with SpillDeduper(tmp_dir=str(tmp_path), memory_limit=LIMIT,
                      expected_rows=expected_rows) as dedup:
        assert asked == []  # not before the day's first batch: the row size is known then
        for _ in range(2):
            dedup.add(dedup.prepare(batch([("k", SECOND, "g")])))
        counts = HourlyCounts()
        dedup.fold_into(counts)
        assert asked == [rows] and dedup.partitions == partitions
        assert [r.count for r in counts.rows()] == [1]


def test_spill_writers_hold_small_slices_and_write_them_in_order(tmp_path: Path) -> None:
    import numpy as np

    from streamagg.dedup.partition import _PartitionWriters

    schema = pa.schema([("n", pa.int64())])
    writers = _PartitionWriters(str(tmp_path), "p", 2, schema, min_rows=10,
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


@pytest.mark.parametrize("grain", [1, 4, 5, 60, 3600, 86400])
def test_spilled_buckets_are_exact_at_the_ends_of_the_instants_range(grain: int) -> None:
    """The spill keeps a row's bucket, not its instant: 32 bits from a 5-second grain up,
    which must hold the bucket of every instant an int64 of nanoseconds can hold."""
    instants = [-(2**63), -1, 0, 1, 2**63 - 1]
    rows, _ = keyed(pa.record_batch([pa.array(["k"] * 5), pa.array(instants, pa.int64()),
                                     pa.array(["g"] * 5)], schema=CLEAN_SCHEMA),
                    grain, spill_schema(grain))
    assert rows.schema.field(BUCKET).type == (pa.int32() if grain >= 5 else pa.int64())
    assert rows.column(BUCKET).to_pylist() == [t // (grain * 10**9) for t in instants]
