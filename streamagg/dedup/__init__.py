"""Exact first-occurrence de-duplication with keys on disk, behind one small interface."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import pyarrow as pa

from ..aggregate import BUCKET, HourlyCounts, sum_per_pair
from ..columns import GROUP, INSTANT, KEY
from ..registry import DEDUPE_BACKENDS
from .fingerprint import fingerprints


@dataclass
class DedupStats:
    """What de-duplication dropped: every later occurrence, and those that disagree on the group."""

    duplicates: int = 0
    conflicting_duplicates: int = 0


@dataclass(frozen=True)
class StoredFile:
    """A file of the earlier generation, copied into the work folder and checked against the
    sha256 recorded with it: the only form in which a backend sees kept bytes."""

    path: str  # a local copy, or with ``shared`` a link to the store's own file
    size: int
    sha256: str
    shared: bool = False  # read it only; else the copy is the backend's to change or move


@dataclass
class KeySetState:
    """A day's key set kept between runs, in the backend's own on-disk form.

    ``record`` is the backend's own description of its files (for spill: the partition count
    and each partition's segments; for sqlite: the database file). Given one from an earlier
    run (``resume``), the backend starts from those keys, reading the earlier generation's
    files from ``stored``, and de-duplicates the new rows against them; either way, by the end
    of `Deduper.fold_into` it has written this run's new files into ``folder`` (named
    ``written``), left the next generation's description in ``record`` and named in ``files``
    every file that generation uses (new ones and stored ones it keeps).
    """

    folder: str
    generation: str
    resume: bool = False
    record: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, StoredFile] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def stored_path(self, name: str) -> str:
        """The checked local copy of the earlier generation's file ``name``."""
        return self.stored[name].path

    def release(self, path: str) -> None:
        """The backend is done with a stored file's copy: its disk space is freed."""
        if os.path.exists(path):
            os.unlink(path)


class Deduper(Protocol):
    """Feed clean batches (key, instant, group) in the day's order; fold the first occurrences.

    Implementations own their temporary files and remove them in `close`, also on failure.
    """

    stats: DedupStats

    def prepare(self, batch: pa.RecordBatch) -> Prepared:
        """A clean batch in this backend's form. Safe to call from several threads at once:
        the engine calls it on its reader threads, so hashing and counting use every core."""

    def add(self, prepared: Prepared) -> None:
        """Take the next rows of the day, in file order then row order."""

    def fold_into(self, counts: HourlyCounts) -> None:
        """Add the first occurrence of every key to ``counts``, the way this backend does it
        fastest, and fill in `stats`."""

    def close(self) -> None:
        """Remove every temporary file."""

    def __enter__(self) -> Deduper: ...

    def __exit__(self, *exc: object) -> None: ...


# What the backends keep of a clean batch: the key's fingerprint (see `fingerprint`), whose
# high lane also chooses the spill partition, the instant (for the bucket) and the group.
HIGH, LOW = "high", "low"
KEYED_SCHEMA = pa.schema([(HIGH, pa.uint64()), (LOW, pa.uint64()), (INSTANT, pa.int64()),
                          (GROUP, pa.string())])


@dataclass(frozen=True)
class Prepared:
    """A clean batch in a backend's own form, made by `Deduper.prepare` on a reader thread."""

    rows: pa.RecordBatch  # `KEYED_SCHEMA` (or `spill_schema`), in the backend's order
    arrived: pa.Table  # every row counted per (group, bucket), as `sum_per_pair` gives them
    # Rows per spill partition, in order, when the backend partitions (else None).
    partition_rows: np.ndarray | None = None


def spill_schema(grain_seconds: int) -> pa.Schema:
    """What the spill backend writes of a row: `KEYED_SCHEMA` with the instant's bucket in
    place of the instant (only the later occurrences' buckets are needed, to take them out of
    the counts). From a 5-second grain up every instant's bucket fits 32 bits: 29 bytes a row,
    not 33, so a 100M-row day spills 0.4 GB less."""
    width = pa.int32() if 2**63 // (grain_seconds * 10**9) < 2**31 else pa.int64()
    return pa.schema([(HIGH, pa.uint64()), (LOW, pa.uint64()), (BUCKET, width),
                      (GROUP, pa.string())])


def keyed(batch: pa.RecordBatch, grain_seconds: int,
          schema: pa.Schema = KEYED_SCHEMA) -> tuple[pa.RecordBatch, pa.Table]:
    """A clean batch (key, instant, group) as ``schema`` rows (`KEYED_SCHEMA`, or
    `spill_schema`'s with buckets), and its counts."""
    instants, groups = batch.column(INSTANT), batch.column(GROUP)
    high, low = fingerprints(batch.column(KEY), instants)
    buckets = np.floor_divide(instants.to_numpy(zero_copy_only=False), grain_seconds * 10**9)
    if schema.names[2] == INSTANT:
        third = instants
    else:  # the bucket, as wide as the schema says
        width = np.int32 if schema.field(2).type == pa.int32() else np.int64
        third = pa.array(buckets.astype(width, copy=False))
    rows = pa.RecordBatch.from_arrays([pa.array(high), pa.array(low), third, groups],
                                      schema=schema)
    if not batch.num_rows:
        return rows, HourlyCounts(grain_seconds).table()
    return rows, sum_per_pair(groups, buckets)


def make_deduper(kind: str, *, tmp_dir: str | None, memory_limit: int,
                 expected_rows: Callable[[], int] | None = None, grain_seconds: int = 3600,
                 state: KeySetState | None = None) -> Deduper:
    """The backend named ``kind`` (see `streamagg.registry.DEDUPE_BACKENDS`), working inside
    ``tmp_dir``; `Deduper.fold_into` takes counts of ``grain_seconds``. ``expected_rows`` is
    the day's rows as estimated when the first batch is prepared (a backend may size itself
    then). With ``state`` it starts from the keys kept by an earlier run (when
    ``state.resume``) and keeps the day's keys for the next."""
    backend = DEDUPE_BACKENDS.load(kind)
    return cast(Deduper, backend(tmp_dir=tmp_dir, memory_limit=memory_limit,
                                 expected_rows=expected_rows, grain_seconds=grain_seconds,
                                 state=state))
