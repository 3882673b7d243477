"""Exact first-occurrence de-duplication with keys on disk, behind one small interface."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import pyarrow as pa
import pyarrow.compute as pc

from ..registry import DEDUPE_BACKENDS

if TYPE_CHECKING:
    from ..aggregate import HourlyCounts


@dataclass
class DedupStats:
    """What de-duplication dropped: every later occurrence, and those that disagree on the group."""

    duplicates: int = 0
    conflicting_duplicates: int = 0


class Deduper(Protocol):
    """Feed clean batches (key, instant, group) in the day's order; fold the first occurrences.

    Implementations own their temporary files and remove them in `close`, also on failure.
    """

    stats: DedupStats

    def add(self, batch: pa.RecordBatch) -> None:
        """Take the next rows of the day, in file order then row order."""

    def fold_into(self, counts: HourlyCounts) -> None:
        """Add the first occurrence of every key to ``counts``, the way this backend does it
        fastest, and fill in `stats`."""

    def close(self) -> None:
        """Remove every temporary file."""

    def __enter__(self) -> Deduper: ...

    def __exit__(self, *exc: object) -> None: ...


def exact_keys(keys: pa.ChunkedArray | pa.Array,
               instants: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One binary string per row: the instant as 8 big-endian bytes, then the key's bytes.

    Exact: the fixed-width prefix makes the encoding unambiguous, so two rows share a string
    only when they share the key. Big-endian makes byte order time order, which keeps a
    B-tree's inserts local for a mostly chronological day.
    """
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if isinstance(instants, pa.ChunkedArray):
        instants = instants.combine_chunks()
    prefix = instants.to_numpy(zero_copy_only=False).astype(">i8")
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(8), len(prefix),
                                                 [None, pa.py_buffer(prefix)])
    return pc.binary_join_element_wise(pc.cast(fixed, pa.binary()), pc.cast(keys, pa.binary()),
                                       _empty_binary())


@functools.cache
def _empty_binary() -> pa.Scalar:
    """Made on first use: a scalar made from a Python value makes pyarrow check for pandas."""
    return pa.scalar(b"", pa.binary())


def make_deduper(kind: str, *, tmp_dir: str | None, memory_limit: int,
                 expected_bytes: int = 0, grain_seconds: int = 3600) -> Deduper:
    """The backend named ``kind`` (see `streamagg.registry.DEDUPE_BACKENDS`), working inside
    ``tmp_dir``; `Deduper.fold_into` takes counts of ``grain_seconds``."""
    backend = DEDUPE_BACKENDS.load(kind)
    return cast(Deduper, backend(tmp_dir=tmp_dir, memory_limit=memory_limit,
                                 expected_bytes=expected_bytes, grain_seconds=grain_seconds))
