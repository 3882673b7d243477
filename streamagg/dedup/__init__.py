"""Exact first-occurrence de-duplication with keys on disk, behind one base class (`Deduper`)."""

from __future__ import annotations

from collections.abc import Callable

from ..registry import DEDUPE_BACKENDS
from .base import Deduper, DedupStats, KeySetState, Later, Prepared, StoredFile
from .rows import HIGH, KEYED_SCHEMA, LOW, STATE_SCHEMA, keyed, spill_schema

__all__ = ["HIGH", "KEYED_SCHEMA", "LOW", "STATE_SCHEMA", "DedupStats", "Deduper",
           "KeySetState", "Later", "Prepared", "StoredFile", "keyed", "make_deduper",
           "spill_schema"]


def make_deduper(kind: str, *, tmp_dir: str | None, memory_limit: int,
                 expected_rows: Callable[[], int] | None = None, grain_seconds: int = 3600,
                 state: KeySetState | None = None) -> Deduper:
    """The backend named ``kind`` (see `streamagg.registry.DEDUPE_BACKENDS`), working inside
    ``tmp_dir``; its later occurrences carry buckets of ``grain_seconds``. ``expected_rows`` is
    the day's rows as estimated when the first batch is prepared (a backend may size itself
    then). With ``state`` it starts from the keys kept by an earlier run (when
    ``state.resume``) and keeps the day's keys for the next."""
    backend = DEDUPE_BACKENDS.load(kind)
    if not (isinstance(backend, type) and issubclass(backend, Deduper)):
        raise TypeError(f"dedupe backend {kind!r} is not a streamagg.dedup.Deduper")
    return backend(tmp_dir=tmp_dir, memory_limit=memory_limit, expected_rows=expected_rows,
                   grain_seconds=grain_seconds, state=state)
