"""The de-duplication contract (`streamagg.dedup.Deduper`), held by every registered backend:
exact, first occurrence wins, errors named, temp files removed, a kept state handed on."""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg import registry
from streamagg.aggregate import HourlyCounts, HourlyRow, count_pairs
from streamagg.columns import CLEAN_SCHEMA
from streamagg.dedup import Deduper, KeySetState, Later, Prepared, make_deduper
from streamagg.errors import StorageError

BACKENDS = list(registry.DEDUPE_BACKENDS.names)
LIMIT = 256 * 2**20
SECOND = 10**9

Row = tuple[str, int, str]  # (key, instant, group)


def batch(rows: list[Row]) -> pa.RecordBatch:
    keys, instants, groups = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.RecordBatch.from_arrays(
        [pa.array(keys, pa.string()), pa.array(instants, pa.int64()),
         pa.array(groups, pa.string())], schema=CLEAN_SCHEMA)


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


def counted(dedup: Deduper, batches: list[pa.RecordBatch], grain_seconds: int) -> HourlyCounts:
    """What the engine does: every row counted as it arrives, the later occurrences that
    de-duplication yields taken out again."""
    counts = HourlyCounts(grain_seconds)
    for rows in batches:
        dedup.add(dedup.prepare(rows))
        counts.fold_counts(count_pairs(rows, grain_seconds))
    for later in dedup.later_occurrences():
        counts.take_out(later.groups, later.buckets)
    return counts


def run(kind: str, batches: list[list[Row]], tmp: Path, memory_limit: int = LIMIT,
        state: KeySetState | None = None) -> tuple[Counter, int, int]:
    """Survivors as counted: instants go in as seconds and come back as one-second buckets,
    so (group, bucket) is (group, instant)."""
    with make_deduper(kind, tmp_dir=str(tmp), memory_limit=memory_limit, grain_seconds=1,
                      state=state) as dedup:
        counts = counted(dedup, [batch([(k, t * SECOND, g) for k, t, g in rows])
                                 for rows in batches], 1)
        survivors: Counter = Counter({(row.group, row.bucket_start): row.count
                                      for row in counts.rows()})
        stats = dedup.stats
    assert stats.arrived == sum(len(rows) for rows in batches)
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
            assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(dedup.folder)]
            assert (os.stat(dedup.folder).st_mode & 0o777) == 0o700
            raise RuntimeError("boom")
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


@settings(max_examples=30, deadline=None)
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
def test_later_occurrences_carry_their_own_bucket(
    rows: list[Row], size: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A one-second grain around zero: negative instants must land in the bucket below, as
    # floor division puts them, in sqlite's SQL as in Arrow.
    batches = [batch(rows[i : i + size]) for i in range(0, len(rows), size)]
    survivors, duplicates, conflicts = expected(rows)
    reference = HourlyCounts(1)
    for (group, instant), n in survivors.items():
        reference.fold_counts(count_pairs(batch([("k", instant, group)] * n), 1))
    for kind in BACKENDS:
        with make_deduper(kind, tmp_dir=str(tmp_path_factory.mktemp(kind)), memory_limit=LIMIT,
                          grain_seconds=1) as dedup:
            got = counted(dedup, batches, 1).rows()
            assert (got, dedup.stats.duplicates, dedup.stats.conflicting_duplicates) == (
                reference.rows(), duplicates, conflicts), kind


@pytest.mark.parametrize("kind", BACKENDS)
def test_groups_seen_only_in_duplicates_are_not_output(kind: str, tmp_path: Path) -> None:
    # "2" only ever appears as a later occurrence of "1"'s key: it must not be output, not
    # even with a count of zero.
    rows = [("a", 0, "1"), ("a", 0, "2"), ("b", 0, "1"), ("a", 0, "2")]
    with make_deduper(kind, tmp_dir=str(tmp_path), memory_limit=LIMIT) as dedup:
        got = counted(dedup, [batch(rows[:2]), batch(rows[2:])], 3600).rows()
    assert got == [HourlyRow("1", 0, 2)]


def kept(folder: Path, name: str, store: Path | None = None,
         earlier: KeySetState | None = None) -> KeySetState:
    """A kept state as `streamagg.state` hands it over: the earlier generation's files copied
    out of ``store`` (where each run's new files went), or nothing."""
    import shutil

    from streamagg.dedup import StoredFile

    (folder / name).mkdir()
    if earlier is None or store is None:
        return KeySetState(folder=str(folder / name), generation=name)
    stored = {}
    for file in earlier.files:
        local = folder / name / f"stored-{file}"
        shutil.copyfile(store / file, local)
        stored[file] = StoredFile(str(local), local.stat().st_size, "")
    return KeySetState(folder=str(folder / name), generation=name, resume=True,
                       record=dict(earlier.record), stored=stored)


@settings(max_examples=20, deadline=None)
@given(runs=st.lists(rows_strategy, min_size=1, max_size=4))
def test_a_kept_key_set_resumes_exactly(runs: list[list[Row]],
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each run starts from the keys the one before kept, and keeps its own: together they
    de-duplicate the day as one run would (new rows come after every stored one)."""
    import shutil

    for kind in BACKENDS:
        root = tmp_path_factory.mktemp(kind)
        store = root / "store"
        store.mkdir()
        state = None
        seen: list[Row] = []
        for number, rows in enumerate(runs):
            state = kept(root, f"g{number}", store, state)
            got = run(kind, [rows], root, state=state)
            before, before_dup, before_conf = expected(seen)
            seen += rows
            survivors, duplicates, conflicts = expected(seen)
            assert got == (survivors - before, duplicates - before_dup,
                           conflicts - before_conf), kind
            assert state.kept and set(state.files) <= set(state.written) | set(state.stored)
            for file in state.written:
                shutil.copyfile(os.path.join(state.folder, file), store / file)


def test_a_backend_writes_two_things_and_inherits_the_rest(tmp_path: Path) -> None:
    """The smallest backend: a set of keys. It names its files; the base class creates and
    removes its folder, counts what arrives and what it yields, and wraps its errors."""

    class SetDeduper(Deduper):
        files = "the key set"

        def _open(self) -> None:
            self.seen: set[tuple[int, int]] = set()
            self.later: list[tuple[str, int]] = []

        def _add(self, prepared: Prepared) -> None:
            if prepared.rows.num_rows and prepared.rows.column(2)[0].as_py() == 666:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            for high, low, instant, group in zip(*prepared.rows.to_pydict().values(),
                                                  strict=True):
                if (high, low) in self.seen:
                    self.later.append((group, instant // SECOND))
                self.seen.add((high, low))

        def _later(self) -> Iterator[Later]:
            groups, buckets = zip(*self.later, strict=True) if self.later else ((), ())
            yield Later(pa.array(groups, pa.string()), np.array(buckets, np.int64))

    with SetDeduper(tmp_dir=str(tmp_path), memory_limit=LIMIT, grain_seconds=1) as dedup:
        assert os.path.basename(dedup.folder).startswith("streamagg-set-")
        counts = counted(dedup, [batch([("a", SECOND, "g"), ("a", SECOND, "g")])], 1)
        assert [r.count for r in counts.rows()] == [1]
        assert (dedup.stats.arrived, dedup.stats.duplicates) == (2, 1)
        with pytest.raises(StorageError, match=r"cannot write the key set: No space left on "
                                               r"device \(.*streamagg-set-"):
            dedup.add(dedup.prepare(batch([("b", 666, "g")])))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StorageError, match="kept no state"):
        with SetDeduper(tmp_dir=str(tmp_path), memory_limit=LIMIT,
                        state=kept(tmp_path, "g0")) as dedup:
            list(dedup.later_occurrences())
    with pytest.raises(StorageError, match="neither wrote nor read: elsewhere.arrow"):
        kept(tmp_path, "g1").keep({}, ["elsewhere.arrow"])
