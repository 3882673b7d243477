"""A sqlite key table on disk: the first occurrence of a key is inserted, later ones recorded."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from ..budget import Budget
from ..columns import GROUP, INSTANT
from .base import Deduper, Later, Prepared
from .rows import HIGH, LOW

_FETCH = 20_000
_SLICE = 8_192


class SqliteDeduper(Deduper):
    """Keys live in a WITHOUT ROWID table whose primary key is the instant and the key's
    fingerprint, two 64-bit integers (see `fingerprint`), beside the group.

    A later occurrence of a key leaves the first row as it is and, through a trigger, lands in
    a small table of dropped rows with its own group: those are the later occurrences, read
    back at the end (no pass over the whole key table: a GROUP BY over it took a fifth of the
    run).
    """

    files = "the sqlite key table"
    _db: sqlite3.Connection | None = None

    def _open(self) -> None:
        # sqlite grows as it needs: no size hint
        self.path = os.path.join(self.folder, "keys.sqlite")
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))  # sqlite keeps the mode
        state = self.state
        if state is not None and state.resume:
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
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # The page cache is the only large allocation (its share: `Budget.sqlite_cache_kib`).
        # The database is scratch: no journal, no fsync.
        cache_kib = Budget.of(self.memory_limit).sqlite_cache_kib
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE",
                       "locking_mode=EXCLUSIVE", f"cache_size=-{cache_kib}"):
            self._db.execute(f"PRAGMA {pragma}")
        if self.resuming:
            self._db.execute("DELETE FROM dropped")  # the earlier runs' are counted already
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

    def _arrange(self, rows: pa.RecordBatch) -> Prepared:
        # In key order, each insert lands beside the one before it in the B-tree. Stable: rows
        # with one key keep their order, so the first occurrence is still inserted first.
        order = np.lexsort((rows.column(HIGH).to_numpy(), rows.column(INSTANT).to_numpy()))
        return Prepared(rows.take(pa.array(order)))

    def _add(self, prepared: Prepared) -> None:
        batch, db = prepared.rows, self._db
        if batch.num_rows == 0 or db is None:
            return
        # sqlite's integers are signed: the lanes go in as the same 64 bits, signed.
        high = batch.column(HIGH).to_numpy().view(np.int64)
        low = batch.column(LOW).to_numpy().view(np.int64)
        instants = batch.column(INSTANT).to_numpy()
        db.execute("BEGIN")
        # executemany runs in order, so the first occurrence is the row that stays. Slices
        # bound the Python objects alive at once.
        for start in range(0, batch.num_rows, _SLICE):
            end = start + _SLICE
            db.executemany(self._insert, zip(
                instants[start:end].tolist(), high[start:end].tolist(),
                low[start:end].tolist(),
                batch.column(GROUP).slice(start, _SLICE).to_pylist(), strict=True))
        db.execute("COMMIT")

    def _later(self) -> Iterator[Later]:
        assert self._db is not None
        grain_ns = self.grain_seconds * 10**9
        cursor = self._db.execute("SELECT t, grp, conflict FROM dropped")
        while rows := cursor.fetchmany(_FETCH):
            instants, groups, conflicts = zip(*rows, strict=True)
            yield Later(pa.array(groups, pa.string()),
                        np.floor_divide(np.array(instants, np.int64), grain_ns), sum(conflicts))
        if self.state is not None:
            # The key table is the next generation's: its dropped rows are counted.
            self._db.execute("DELETE FROM dropped")
            self._db.close()
            self._db = None
            os.replace(self.path, self.state.new_file("-keys.sqlite"))
            self.state.keep({"file": f"{self.state.generation}-keys.sqlite"},
                            [f"{self.state.generation}-keys.sqlite"])

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
