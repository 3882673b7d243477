"""First occurrences of a spill partition (streamagg/dedup/pieces.py): exact on any fingerprint
lanes, however a partition is cut into pieces."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg.columns import BUCKET, GROUP
from streamagg.dedup import pieces
from streamagg.dedup.partition import write_table
from streamagg.dedup.pieces import (
    Done,
    HotPiece,
    PieceSplitter,
    first_occurrences,
    first_rows,
    later_occurrences,
)
from streamagg.dedup.rows import HIGH, LOW, spill_schema


def test_first_rows_are_exact_when_only_the_high_lane_collides() -> None:
    high = np.array([1, 1, 1, 2, 1, 2], np.uint64)
    low = np.array([5, 6, 5, 7, 6, 8], np.uint64)
    assert first_rows(high, low).tolist() == [0, 1, 0, 3, 1, 5]
    keep, duplicates, conflicts = first_occurrences(
        high, low, pa.array(["g", "g", "h", "g", "g", "g"]))
    assert keep.tolist() == [True, True, False, True, False, True]
    assert (duplicates, conflicts) == (2, 1)


lane_values = st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1),
                        st.sampled_from([2**63, 2**64 - 1, 2**40, 2**40 + 1]))


@settings(max_examples=300, deadline=None)
@given(lanes=st.lists(st.tuples(lane_values, lane_values), max_size=60))
def test_later_occurrences_match_a_dictionary_of_first_rows(
        lanes: list[tuple[int, int]]) -> None:
    """Exact on any lanes: ones that differ only in their low bits (which hold the row
    number while sorting), that share one lane, or whose high lane alone tells them apart."""
    high = np.array([h for h, _ in lanes], np.uint64)
    low = np.array([lo for _, lo in lanes], np.uint64)
    first: dict[tuple[int, int], int] = {}
    expected_later = [(row, first.setdefault(key, row)) for row, key in enumerate(lanes)
                      if first.setdefault(key, row) != row]
    later, first_of_later = later_occurrences(high, low)
    assert list(zip(later.tolist(), first_of_later.tolist(), strict=True)) == expected_later


Spilled = tuple[int, int, int, str]  # (high, low, bucket, group)


def spilled(rows: list[Spilled]) -> pa.Table:
    high, low, bucket, group = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pa.table([pa.array(high, pa.uint64()), pa.array(low, pa.uint64()),
                     pa.array(bucket, pa.int32()), pa.array(group, pa.string())],
                    schema=spill_schema(3600))


def every_done(found: list[Done | HotPiece]) -> list[Done]:
    """What the pieces found, a hot piece run as its consumer runs it (once)."""
    return [done for item in found for done in (item if isinstance(item, HotPiece) else [item])]


def later_of(dones: list[Done]) -> list[tuple[str, int]]:
    """Every later occurrence, as (group, bucket), whatever their order."""
    return sorted((group, bucket) for done in dones for group, bucket in zip(
        done.later.groups.to_pylist(), done.later.buckets.tolist(), strict=True))


def reference(rows: list[Spilled]) -> tuple[list[tuple[str, int]], int]:
    first: dict[tuple[int, int], str] = {}
    later, conflicts = [], 0
    for high, low, bucket, group in rows:
        if (high, low) in first:
            later.append((group, bucket))
            conflicts += first[(high, low)] != group
        first.setdefault((high, low), group)
    return sorted(later), conflicts


spilled_rows = st.lists(st.tuples(st.sampled_from([0, 1, 2**63, 2**64 - 1]),
                                  st.integers(0, 3), st.integers(-2, 2),
                                  st.sampled_from(["1", "2", "x"])), max_size=80)


@settings(max_examples=30, deadline=None)
@given(rows=spilled_rows, budget=st.sampled_from([10**9, 4096, 64]))
def test_a_spill_file_cut_to_any_budget_gives_every_later_occurrence(
        rows: list[Spilled], budget: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    """In memory, cut by the next bits, or (rows sharing a high lane) streamed in slices:
    the same later occurrences and conflicts as a dictionary, and every file removed."""
    folder = tmp_path_factory.mktemp("pieces")
    path = folder / "p0000.arrow"
    write_table(str(path), spilled(rows))
    dones = every_done(PieceSplitter(str(folder), budget).first_of(str(path), 64 - 2 - 4,
                                                                    top=True))
    later, conflicts = reference(rows)
    assert later_of(dones) == later
    assert sum(d.later.conflicts for d in dones) == conflicts
    assert list(folder.iterdir()) == []


def test_a_hot_piece_is_streamed_where_it_is_consumed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """One key 2,000 times (and a few others behind the same high lane): the piece is handed
    back unread, and its later occurrences come a slice at a time, never all at once; the
    first occurrences, for the kept state, come last."""
    monkeypatch.setattr(pieces, "WORK_PER_SPILLED_BYTE", 2**8)
    rows = [(7, i % 5 if i % 100 == 0 else 1, i % 24, f"g{i % 3}") for i in range(2000)]
    path = tmp_path / "p0000.arrow"
    write_table(str(path), spilled(rows))
    splitter = PieceSplitter(str(tmp_path), 64 * 1024, keep=True)
    found = splitter.first_of(str(path), 64 - 2 - 4, top=True)
    assert len(found) == 1 and isinstance(found[0], HotPiece)
    assert os.path.exists(found[0].path)  # not yet read
    dones = list(found[0])
    assert len(dones) > 4 and max(len(d.later.groups) for d in dones) < 1000
    assert later_of(dones) == reference(rows)[0]
    kept = dones[-1].kept
    assert kept is not None and sorted(zip(kept.column(HIGH).to_pylist(),
                                           kept.column(LOW).to_pylist(), strict=True)) == sorted(
        {(h, lo) for h, lo, _, _ in rows})
    assert Counter(kept.column(GROUP).to_pylist()) == Counter(
        next(g for h2, lo2, _, g in rows if (h2, lo2) == key)
        for key in {(h, lo) for h, lo, _, _ in rows})
    assert list(tmp_path.iterdir()) == []
    assert BUCKET in splitter.schema.names
