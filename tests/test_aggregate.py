"""Folding first occurrences into counts per (group, time bucket), and the output order."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg import aggregate
from streamagg.aggregate import HourlyCounts, HourlyRow

HOUR_NS = 3600 * 10**9
DAY_START = int(dt.datetime(2021, 1, 30, tzinfo=dt.UTC).timestamp())


def survivors(rows: list[tuple[str, int]]) -> pa.RecordBatch:
    groups, instants = zip(*rows, strict=True) if rows else ((), ())
    return pa.RecordBatch.from_arrays(
        [pa.array(groups, pa.string()), pa.array(instants, pa.int64())], names=["group", "instant"]
    )


def fold(batches: list[list[tuple[str, int]]], grain: int = 3600) -> HourlyCounts:
    counts = HourlyCounts(grain)
    for rows in batches:
        counts.fold(survivors(rows))
    return counts


def test_counts_per_group_and_hour_across_batches() -> None:
    t = DAY_START * 10**9
    counts = fold(
        [[("a", t), ("a", t + 1), ("b", t)], [], [("a", t + HOUR_NS - 1), ("a", t + HOUR_NS)]]
    )
    assert counts.rows() == [
        HourlyRow("a", DAY_START, 3),
        HourlyRow("b", DAY_START, 1),
        HourlyRow("a", DAY_START + 3600, 1),
    ]


def test_instants_before_1970_floor_to_their_own_hour() -> None:
    counts = fold([[("a", -1), ("a", -HOUR_NS), ("a", -HOUR_NS - 1), ("a", 0)]])
    assert counts.rows() == [
        HourlyRow("a", -7200, 1),
        HourlyRow("a", -3600, 2),
        HourlyRow("a", 0, 1),
    ]


def test_grain_is_a_parameter() -> None:
    t = DAY_START * 10**9
    counts = fold([[("a", t), ("a", t + 899 * 10**9), ("a", t + 900 * 10**9)]], grain=900)
    assert counts.rows() == [HourlyRow("a", DAY_START, 2), HourlyRow("a", DAY_START + 900, 1)]


def test_sort_numeric_only_when_every_group_is_an_integer() -> None:
    t = DAY_START * 10**9
    numeric = fold([[(g, t) for g in ["10", "9", "-1", "+9", "09", "100"]] + [("5", t - HOUR_NS)]])
    assert [r.group for r in numeric.rows()] == ["5", "-1", "+9", "09", "9", "10", "100"]
    text = fold([[(g, t) for g in ["10", "9", "-1", "b", "B"]]])
    assert [r.group for r in text.rows()] == ["-1", "10", "9", "B", "b"]


def test_outside_day() -> None:
    t = DAY_START * 10**9
    counts = fold(
        [[("a", t - 1), ("a", t), ("b", t + 24 * HOUR_NS - 1), ("b", t + 24 * HOUR_NS), ("c", 0)]]
    )
    assert counts.outside(dt.date(2021, 1, 30)) == 3
    assert fold([]).outside(dt.date(2021, 1, 30)) == 0
    assert fold([]).rows() == []


def test_refolding_keeps_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregate, "_MIN_REFOLD_ROWS", 3)
    t = DAY_START * 10**9
    batches = [[(f"g{i % 5}", t + (i % 3) * HOUR_NS)] for i in range(100)]
    rows = fold(batches).rows()
    assert sum(r.count for r in rows) == 100
    assert len(rows) == 15


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["1", "2", "10", "x", "\u00e9"]), st.integers(-3 * HOUR_NS, 3 * HOUR_NS)
        ),
        max_size=50,
    ),
    size=st.integers(1, 10),
)
def test_matches_a_counter(rows: list[tuple[str, int]], size: int) -> None:
    batches = [rows[i : i + size] for i in range(0, len(rows), size)]
    got = fold(batches).rows()
    want = Counter((g, (i // HOUR_NS) * 3600) for g, i in rows)
    assert {(r.group, r.bucket_start): r.count for r in got} == dict(want)
    numeric = all(g.lstrip("+-").isdigit() for g, _ in want)
    order = sorted(
        want, key=(lambda k: (k[1], int(k[0]), k[0])) if numeric else (lambda k: (k[1], k[0]))
    )
    assert [(r.group, r.bucket_start) for r in got] == order


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(["a", "b", "10", "\u00e9"]),
                  st.sampled_from([-(2**62), -1, 0, 1, 2**62]), st.integers(0, 5)),
        min_size=1, max_size=40,
    ),
)
def test_sum_per_pair_matches_a_counter_also_for_far_apart_buckets(
    pairs: list[tuple[str, int, int]]
) -> None:
    # Buckets 2**63 apart cannot be packed with the group into one integer: the lexsort path.
    groups, buckets, counts = zip(*pairs, strict=True)
    table = aggregate.sum_per_pair(pa.array(groups), np.array(buckets, np.int64),
                                   np.array(counts, np.int64))
    want: Counter[tuple[str, int]] = Counter()
    for group, bucket, count in pairs:
        want[(group, bucket)] += count
    got = zip(table.column("group").to_pylist(), table.column("bucket").to_pylist(),
              table.column("count").to_pylist(), strict=True)
    assert {(g, b): c for g, b, c in got} == dict(want)
    assert table.num_rows == len(want)


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(["a", "b", "10", "\u00e9", ""]),
                  st.sampled_from([-3, 0, 1, 23, 70_000, 10**7])),
        min_size=1, max_size=60,
    ),
)
def test_sum_per_pair_of_single_rows_matches_a_counter(pairs: list[tuple[str, int]]) -> None:
    # Close buckets take the dense grid; buckets 10**7 apart the hash of packed pairs.
    groups, buckets = zip(*pairs, strict=True)
    table = aggregate.sum_per_pair(pa.array(groups), np.array(buckets, np.int64))
    got = zip(table.column("group").to_pylist(), table.column("bucket").to_pylist(),
              table.column("count").to_pylist(), strict=True)
    assert {(g, b): c for g, b, c in got} == dict(Counter(pairs))
    assert table.num_rows == len(set(pairs))


def test_a_day_of_hours_is_counted_with_one_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups are hashed once; the (group, hour) pairs of a day go to a dense grid."""
    calls = []
    encode = aggregate.pc.dictionary_encode

    def counted(*args: object, **kwargs: object) -> pa.Array:
        calls.append(1)
        return encode(*args, **kwargs)

    monkeypatch.setattr(aggregate.pc, "dictionary_encode", counted)
    groups = pa.array([str(i % 50) for i in range(10_000)])
    buckets = np.arange(10_000, dtype=np.int64) % 24 + 480_000
    table = aggregate.sum_per_pair(groups, buckets)
    assert len(calls) == 1
    assert table.num_rows == 600 and sum(table.column("count").to_pylist()) == 10_000


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["1", "2", "x"]), st.integers(-3, 3)), max_size=40),
       later=st.lists(st.integers(0, 39), max_size=20))
def test_arrivals_less_what_is_taken_out_match_a_counter(rows: list[tuple[str, int]],
                                                         later: list[int]) -> None:
    """The engine's counting: every arrival counted on a reader thread (`count_pairs`), then
    the later occurrences de-duplication yields taken out (`take_out`)."""
    out = sorted({i for i in later if i < len(rows)})
    counts = HourlyCounts(1)
    counts.fold_counts(aggregate.count_pairs(survivors([(g, t * 10**9) for g, t in rows]), 1))
    counts.take_out(pa.array([rows[i][0] for i in out], pa.string()),
                    np.array([rows[i][1] for i in out], np.int64))
    kept = Counter(r for i, r in enumerate(rows) if i not in out)
    assert {(r.group, r.bucket_start): r.count for r in counts.rows()} == dict(kept)
    tally: dict[int, int] = {}
    aggregate.tally_counts(tally, aggregate.count_pairs(survivors([(g, t * 10**9)
                                                                   for g, t in rows]), 1))
    assert tally == dict(Counter(t for _, t in rows))
