"""A sqlite key table on disk: the first occurrence of a key is inserted, later ones counted."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator

import pyarrow as pa

from ..aggregate import BUCKET, COUNT, HourlyCounts
from ..errors import StorageError
from ..reader import GROUP, INSTANT, KEY
from . import DedupStats, exact_keys

_OUT = pa.schema([(GROUP, pa.string()), (INSTANT, pa.int64())])
_FETCH = 20_000
_SLICE = 8_192


class SqliteDeduper:
    """Keys live in a WITHOUT ROWID table whose primary key is the exact key as one blob.

    The blob is the instant as 8 big-endian bytes followed by the id: exact (the fixed-width
    prefix makes it unambiguous) and ordered by time, so the mostly chronological rows of a day
    land near the right edge of the B-tree and its working pages stay in the cache.
    """

    def __init__(self, *, tmp_dir: str | None, memory_limit: int) -> None:
        self.stats = DedupStats()
        self.folder = tempfile.mkdtemp(prefix="streamagg-sqlite-", dir=tmp_dir)
        self.path = os.path.join(self.folder, "keys.sqlite")
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))  # sqlite keeps the mode
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # The page cache is the only large allocation; an eighth of the budget leaves room for
        # the interpreter, Arrow and the readers. The database is scratch: no journal, no fsync.
        cache_kib = max(memory_limit // 32 // 1024, 2048)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE",
                       "locking_mode=EXCLUSIVE", f"cache_size=-{cache_kib}"):
            self._db.execute(f"PRAGMA {pragma}")
        # A later occurrence only bumps the counters of the row that came first.
        self._db.execute(
            "CREATE TABLE keys (k BLOB PRIMARY KEY, instant INTEGER NOT NULL, grp TEXT NOT NULL,"
            " dups INTEGER NOT NULL DEFAULT 0, conflicts INTEGER NOT NULL DEFAULT 0)"
            " WITHOUT ROWID")
        self._insert = (
            "INSERT INTO keys (k, instant, grp) VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET"
            " dups = dups + 1, conflicts = conflicts + (excluded.grp <> keys.grp)")

    def __enter__(self) -> SqliteDeduper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        try:
            self._db.execute("BEGIN")
            # executemany runs in order, so the first occurrence is the row that stays. Slices
            # bound the Python objects (and key strings) alive at once.
            for start in range(0, batch.num_rows, _SLICE):
                part = batch.slice(start, _SLICE)
                instants = part.column(INSTANT)
                self._db.executemany(self._insert, zip(
                    exact_keys(part.column(KEY), instants).to_pylist(), instants.to_pylist(),
                    part.column(GROUP).to_pylist(), strict=True))
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            raise StorageError(f"sqlite key table failed: {err}", uri=self.path) from err

    def survivors(self) -> Iterator[pa.RecordBatch]:
        try:
            self._read_stats()
            cursor = self._db.execute("SELECT grp, instant FROM keys")
            while rows := cursor.fetchmany(_FETCH):
                groups, instants = zip(*rows, strict=True)
                yield pa.RecordBatch.from_arrays(
                    [pa.array(groups, pa.string()), pa.array(instants, pa.int64())], schema=_OUT)
        except sqlite3.Error as err:
            raise StorageError(f"sqlite key table failed: {err}", uri=self.path) from err

    def fold_into(self, counts: HourlyCounts) -> None:
        # Counted by sqlite itself: bringing 10M survivors into Python as tuples took twice as
        # long as the GROUP BY. Integer division truncates, so negative remainders step down.
        grain = counts.grain_ns
        try:
            cursor = self._db.execute(
                f"SELECT grp, instant / {grain} - (instant % {grain} < 0) AS bucket, count(*),"
                " sum(dups), sum(conflicts) FROM keys GROUP BY grp, bucket")
            while rows := cursor.fetchmany(_FETCH):
                groups, buckets, tallies, dups, conflicts = zip(*rows, strict=True)
                counts.fold_counts(pa.table({GROUP: pa.array(groups, pa.string()),
                                             BUCKET: pa.array(buckets, pa.int64()),
                                             COUNT: pa.array(tallies, pa.int64())}))
                self.stats.duplicates += sum(dups)
                self.stats.conflicting_duplicates += sum(conflicts)
        except sqlite3.Error as err:
            raise StorageError(f"sqlite key table failed: {err}", uri=self.path) from err

    def _read_stats(self) -> None:
        self.stats.duplicates, self.stats.conflicting_duplicates = self._db.execute(
            "SELECT coalesce(sum(dups), 0), coalesce(sum(conflicts), 0) FROM keys").fetchone()

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
