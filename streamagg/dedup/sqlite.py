"""A sqlite key table on disk: the first occurrence of a key is inserted, later ones are ignored."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator

import pyarrow as pa

from ..errors import StorageError
from ..reader import GROUP, INSTANT, KEY
from . import DedupStats

_OUT = pa.schema([(GROUP, pa.string()), (INSTANT, pa.int64())])
_FETCH = 50_000


class SqliteDeduper:
    """Keys live in a WITHOUT ROWID table whose primary key is (key, instant)."""

    def __init__(self, *, tmp_dir: str | None, memory_limit: int) -> None:
        self.stats = DedupStats()
        self.folder = tempfile.mkdtemp(prefix="streamagg-sqlite-", dir=tmp_dir)
        self.path = os.path.join(self.folder, "keys.sqlite")
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # The page cache is the only large allocation; a quarter of the budget leaves room for
        # the reader. The database is scratch: no journal, no fsync.
        cache_kib = max(memory_limit // 4 // 1024, 2048)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE",
                       "locking_mode=EXCLUSIVE", f"cache_size=-{cache_kib}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(
            "CREATE TABLE keys (key TEXT NOT NULL, instant INTEGER NOT NULL, grp TEXT NOT NULL,"
            " seq INTEGER NOT NULL, PRIMARY KEY (key, instant)) WITHOUT ROWID")
        self._db.execute(
            "CREATE TEMP TABLE stage (seq INTEGER PRIMARY KEY, key TEXT, instant INTEGER,"
            " grp TEXT)")
        self._seq = 0

    def __enter__(self) -> SqliteDeduper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, batch: pa.RecordBatch) -> None:
        try:
            self._add(batch)
        except sqlite3.Error as err:
            raise StorageError(f"sqlite key table failed: {err}", uri=self.path) from err

    def _add(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        if n == 0:
            return
        seqs = range(self._seq, self._seq + n)
        self._seq += n
        rows = zip(seqs, batch.column(KEY).to_pylist(), batch.column(INSTANT).to_pylist(),
                   batch.column(GROUP).to_pylist(), strict=False)
        db = self._db
        db.execute("BEGIN")
        db.executemany("INSERT INTO stage VALUES (?, ?, ?, ?)", rows)
        # In seq order, so within the batch too the first occurrence is the one inserted.
        db.execute("INSERT INTO keys SELECT key, instant, grp, seq FROM stage WHERE true"
                   " ORDER BY seq ON CONFLICT DO NOTHING")
        duplicates, conflicts = db.execute(
            "SELECT count(*), coalesce(sum(k.grp <> s.grp), 0) FROM stage s JOIN keys k"
            " ON k.key = s.key AND k.instant = s.instant WHERE k.seq <> s.seq").fetchone()
        db.execute("DELETE FROM stage")
        db.execute("COMMIT")
        self.stats.duplicates += duplicates
        self.stats.conflicting_duplicates += conflicts

    def survivors(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._survivors()
        except sqlite3.Error as err:
            raise StorageError(f"sqlite key table failed: {err}", uri=self.path) from err

    def _survivors(self) -> Iterator[pa.RecordBatch]:
        cursor = self._db.execute("SELECT grp, instant FROM keys")
        while rows := cursor.fetchmany(_FETCH):
            groups, instants = zip(*rows, strict=False)
            yield pa.RecordBatch.from_arrays(
                [pa.array(groups, pa.string()), pa.array(instants, pa.int64())], schema=_OUT)

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
