"""A sqlite key table on disk: the first occurrence of a key is inserted, later ones recorded."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from ..aggregate import HourlyCounts, sum_per_pair
from ..budget import Budget
from ..columns import GROUP, INSTANT
from ..errors import StorageError
from . import HIGH, LOW, DedupStats, KeySetState, Prepared, keyed

_FETCH = 20_000
_SLICE = 8_192


class SqliteDeduper:
    """Keys live in a WITHOUT ROWID table whose primary key is the instant and the key's
    fingerprint, two 64-bit integers (see `fingerprint`), beside the group.

    A later occurrence of a key leaves the first row as it is and, through a trigger, lands in
    a small table of dropped rows with its own group. Every row is also counted in Arrow as it
    arrives (on the reader threads, in `prepare`), so the survivors per (group, bucket) are
    those counts less the dropped rows': no pass over the whole key table at the end (a GROUP
    BY over it took a fifth of the run).
    """

    def __init__(self, *, tmp_dir: str | None, memory_limit: int,
                 expected_rows: Callable[[], int] | None = None, grain_seconds: int = 3600,
                 state: KeySetState | None = None) -> None:
        # sqlite grows as it needs: no size hint
        self.stats = DedupStats()
        self._state = state
        self.folder = tempfile.mkdtemp(prefix="streamagg-sqlite-", dir=tmp_dir)
        self.path = os.path.join(self.folder, "keys.sqlite")
        resume = state is not None and state.resume
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))  # sqlite keeps the mode
        if state is not None and resume:
            # The kept key table's checked copy becomes this run's own (a link to the store's
            # file is copied): the stored generation stays as it was until this run's is
            # published.
            stored = state.stored[str(state.record["file"])]
            if stored.shared:
                with open(stored.path, "rb") as src, open(self.path, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                state.release(stored.path)
            else:
                os.replace(stored.path, self.path)
        self._arrived = HourlyCounts(grain_seconds, spill_dir=self.folder,
                                     memory_bytes=Budget.of(memory_limit).counts_bytes)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # The page cache is the only large allocation (its share: `Budget.sqlite_cache_kib`).
        # The database is scratch: no journal, no fsync.
        cache_kib = Budget.of(memory_limit).sqlite_cache_kib
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE",
                       "locking_mode=EXCLUSIVE", f"cache_size=-{cache_kib}"):
            self._db.execute(f"PRAGMA {pragma}")
        if resume:
            try:
                self._db.execute("DELETE FROM dropped")  # the earlier runs' are counted already
            except sqlite3.Error as err:
                raise StorageError(f"kept sqlite key table unusable: {err}",
                                   uri=self.path) from err
        else:
            # The instant leads the key though the fingerprint covers it: a day arrives mostly in
            # time order, so inserts stay within a few B-tree pages. Keyed on the fingerprint
            # alone, each insert hit a random page: 109 s instead of 20 on a 10M-row day.
            self._db.execute("CREATE TABLE keys (t INTEGER NOT NULL, high INTEGER NOT NULL,"
                             " low INTEGER NOT NULL, grp TEXT NOT NULL, later TEXT,"
                             " PRIMARY KEY (t, high, low)) WITHOUT ROWID")
            self._db.execute("CREATE TABLE dropped (t INTEGER NOT NULL, grp TEXT NOT NULL,"
                             " conflict INTEGER NOT NULL)")
            self._db.execute(
                "CREATE TRIGGER drop_later AFTER UPDATE OF later ON keys BEGIN"
                " INSERT INTO dropped VALUES (NEW.t, NEW.later, NEW.later <> NEW.grp); END")
        self._insert = ("INSERT INTO keys (t, high, low, grp) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (t, high, low) DO UPDATE SET later = excluded.grp")

    def __enter__(self) -> SqliteDeduper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare(self, batch: pa.RecordBatch) -> Prepared:
        rows, arrived = keyed(batch, self._arrived.grain_seconds)
        # In key order, each insert lands beside the one before it in the B-tree. Stable: rows
        # with one key keep their order, so the first occurrence is still inserted first.
        order = np.lexsort((rows.column(HIGH).to_numpy(), rows.column(INSTANT).to_numpy()))
        return Prepared(rows.take(pa.array(order)), arrived)

    def add(self, prepared: Prepared) -> None:
        batch = prepared.rows
        if batch.num_rows == 0:
            return
        self._arrived.fold_counts(prepared.arrived)
        # sqlite's integers are signed: the lanes go in as the same 64 bits, signed.
        high = batch.column(HIGH).to_numpy().view(np.int64)
        low = batch.column(LOW).to_numpy().view(np.int64)
        instants = batch.column(INSTANT).to_numpy()
        try:
            self._db.execute("BEGIN")
            # executemany runs in order, so the first occurrence is the row that stays. Slices
            # bound the Python objects alive at once.
            for start in range(0, batch.num_rows, _SLICE):
                end = start + _SLICE
                self._db.executemany(self._insert, zip(
                    instants[start:end].tolist(), high[start:end].tolist(),
                    low[start:end].tolist(),
                    batch.column(GROUP).slice(start, _SLICE).to_pylist(), strict=True))
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            raise StorageError(f"sqlite key table failed: {err}", uri=self.path) from err

    def fold_into(self, counts: HourlyCounts) -> None:
        if counts.grain_ns != self._arrived.grain_ns:
            raise ValueError("fold_into: counts of another grain than this key table's")
        counts.fold_from(self._arrived)
        try:
            self._read_dropped(counts)
            if self._state is not None:
                self._save_state(self._state)
        except sqlite3.Error as err:
            raise StorageError(f"sqlite key table failed: {err}", uri=self.path) from err

    def _save_state(self, state: KeySetState) -> None:
        """Hand the key table over as the next generation's: its dropped rows are counted."""
        self._db.execute("DELETE FROM dropped")
        self._db.close()
        name = f"{state.generation}-keys.sqlite"
        os.replace(self.path, os.path.join(state.folder, name))
        state.written.append(name)
        state.record = {"file": name}
        state.files = [name]

    def _read_dropped(self, counts: HourlyCounts | None) -> None:
        """Fill in `stats` from the dropped rows and, given counts, take them out of them."""
        self.stats = DedupStats()
        cursor = self._db.execute("SELECT t, grp, conflict FROM dropped")
        while rows := cursor.fetchmany(_FETCH):
            instants, groups, conflicts = zip(*rows, strict=True)
            self.stats.duplicates += len(rows)
            self.stats.conflicting_duplicates += sum(conflicts)
            if counts is not None:
                buckets = np.floor_divide(np.array(instants, np.int64), counts.grain_ns)
                counts.fold_counts(sum_per_pair(pa.array(groups, pa.string()), buckets,
                                                np.full(len(rows), -1, np.int64)))

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
