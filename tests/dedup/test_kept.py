"""The spill backend's kept state (streamagg/dedup/kept.py): stored keys found exactly, segments
recorded and merged, files handed to the state as the only ones the generation uses."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg.dedup import KeySetState, StoredFile
from streamagg.dedup.kept import MAX_SEGMENTS, KeptSegments, matches
from streamagg.dedup.rows import STATE_SCHEMA, spill_schema, state_rows


def test_stored_keys_are_matched_on_both_lanes() -> None:
    sorted_high = np.array([1, 3, 3, 3, 9], np.uint64)
    sorted_low = np.array([0, 4, 5, 6, 0], np.uint64)
    high = np.array([3, 3, 3, 1, 9, 2], np.uint64)
    low = np.array([6, 7, 4, 1, 0, 0], np.uint64)
    assert matches(sorted_high, sorted_low, high, low).tolist() == [3, -1, 1, -1, 4, -1]


@settings(max_examples=200, deadline=None)
@given(stored=st.sets(st.tuples(st.integers(0, 4), st.integers(0, 3)), max_size=15),
       new=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), max_size=15))
def test_stored_keys_are_matched_like_a_dictionary(stored: set[tuple[int, int]],
                                                   new: list[tuple[int, int]]) -> None:
    keys = sorted(stored)  # sorted on the high lane, as the kept state's batches are
    place = {key: i for i, key in enumerate(keys)}
    sorted_high = np.array([h for h, _ in keys], np.uint64)
    sorted_low = np.array([lo for _, lo in keys], np.uint64)
    high = np.array([h for h, _ in new], np.uint64)
    low = np.array([lo for _, lo in new], np.uint64)
    spots = matches(sorted_high, sorted_low, high, low)
    assert spots.tolist() == [place.get(key, -1) for key in new]


Key = tuple[int, int, str]  # (high, low, group)


def new_rows(rows: list[Key]) -> pa.Table:
    high, low, group = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table([pa.array(high, pa.uint64()), pa.array(low, pa.uint64()),
                     pa.array([0] * len(rows), pa.int32()), pa.array(group, pa.string())],
                    schema=spill_schema(3600))


def generation(root: Path, number: int, earlier: KeySetState | None) -> KeySetState:
    """The state of run ``number``: the files the earlier ones kept, copied in as checked."""
    folder = root / f"g{number}"
    folder.mkdir()
    if earlier is None:
        return KeySetState(folder=str(folder), generation=f"g{number}")
    stored = {}
    for name in earlier.files:
        local = folder / f"in-{name}"
        shutil.copyfile(root / "store" / name, local)
        stored[name] = StoredFile(str(local), local.stat().st_size, "")
    return KeySetState(folder=str(folder), generation=f"g{number}", resume=True,
                       record=earlier.record, stored=stored)


@settings(max_examples=12, deadline=None)
@given(runs=st.lists(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2),
                                        st.sampled_from("ab")), max_size=12),
                     min_size=1, max_size=MAX_SEGMENTS + 3))
def test_a_partition_refreshed_run_after_run_matches_a_dictionary(
        runs: list[list[Key]], tmp_path_factory: pytest.TempPathFactory) -> None:
    """New rows held against every stored segment: duplicates, conflicts and the kept keys as
    a dictionary has them; past `MAX_SEGMENTS` runs a partition's segments are merged, and a
    generation names exactly the files its record uses."""
    root = tmp_path_factory.mktemp("kept")
    (root / "store").mkdir()
    first: dict[tuple[int, int], str] = {}
    state = None
    for number, rows in enumerate(runs):
        state = generation(root, number, state)
        segments = KeptSegments(state)
        ranges = [list(r) for r in state.record.get("segments", {}).get("0", [])]
        done = segments.against_stored(0, new_rows(rows), ranges,
                                       copy=len(ranges) + 1 > MAX_SEGMENTS)
        if len(ranges) + 1 > MAX_SEGMENTS:
            segments.merged.add(0)
        if done.kept is not None and done.kept.num_rows:
            segments.write(0, done.kept)
        segments.finish(1, {0: ranges} if ranges else {})
        later, conflicts = [], 0
        for high, low, group in rows:
            if (high, low) in first:
                later.append(group)
                conflicts += first[(high, low)] != group
            first.setdefault((high, low), group)
        assert sorted(done.later.groups.to_pylist()) == sorted(later)
        assert done.later.conflicts == conflicts
        assert state.kept and len(state.record["segments"].get("0", [])) <= MAX_SEGMENTS
        assert set(state.files) == {run[0] for run in state.record["segments"].get("0", [])}
        for name in state.written:
            shutil.copyfile(os.path.join(state.folder, name), root / "store" / name)
    assert state is not None
    stored = {}
    reader = KeptSegments(generation(root, len(runs), state))
    for batch in reader.stored_batches(state.record["segments"].get("0", [])):
        assert batch.schema == STATE_SCHEMA
        stored.update(zip(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(),
                              strict=True), batch.column(2).to_pylist(), strict=True))
    reader.close()
    assert stored == first


def test_kept_rows_are_sorted_on_the_high_lane() -> None:
    rows = new_rows([(5, 0, "a"), (1, 9, "b"), (3, 3, "c")])
    assert state_rows(rows).column(0).to_pylist() == [1, 3, 5]
    assert state_rows(rows).column(2).to_pylist() == ["b", "c", "a"]
