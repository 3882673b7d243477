"""Exact first-occurrence de-duplication with keys on disk, behind one small interface."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa


@dataclass
class DedupStats:
    """What de-duplication dropped: every later occurrence, and those that disagree on the group."""

    duplicates: int = 0
    conflicting_duplicates: int = 0


class Deduper(Protocol):
    """Feed clean batches (key, instant, group) in the day's order; read back the first occurrences.

    Implementations own their temporary files and remove them in `close`, also on failure.
    """

    stats: DedupStats

    def add(self, batch: pa.RecordBatch) -> None:
        """Take the next rows of the day, in file order then row order."""

    def survivors(self) -> Iterator[pa.RecordBatch]:
        """The first occurrence of every key, as batches of (group, instant), in no set order."""

    def close(self) -> None:
        """Remove every temporary file."""

    def __enter__(self) -> Deduper: ...

    def __exit__(self, *exc: object) -> None: ...


def make_deduper(kind: str, *, tmp_dir: str | None, memory_limit: int,
                 expected_bytes: int = 0) -> Deduper:
    """The backend named ``kind`` (``spill`` or ``sqlite``), working inside ``tmp_dir``."""
    if kind == "spill":
        from .spill import SpillDeduper

        return SpillDeduper(tmp_dir=tmp_dir, memory_limit=memory_limit,
                            expected_bytes=expected_bytes)
    if kind == "sqlite":
        from .sqlite import SqliteDeduper

        return SqliteDeduper(tmp_dir=tmp_dir, memory_limit=memory_limit)
    raise ValueError(f"unknown dedupe backend {kind!r}")
