"""Exact first-occurrence de-duplication with keys on disk, behind one small interface."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

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


@dataclass
class KeySetState:
    """A day's key set kept between runs, in the backend's own on-disk form.

    ``record`` is the backend's own description of its files (for spill: the partition count
    and each partition's segment files; for sqlite: the database file). Given one from an
    earlier run (``resume``), the backend starts from those keys and de-duplicates the new rows
    against them; either way, by the end of `Deduper.fold_into` it has written this run's new
    files into ``folder`` (named ``written``) and left the next generation's description in
    ``record``.
    """

    folder: str
    generation: str
    # A stored file's local path (downloaded into the work folder when the state is remote),
    # and the call that says the backend is done with it.
    stored_path: Callable[[str], str]
    release: Callable[[str], None]
    resume: bool = False
    record: dict[str, Any] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)


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
                 expected_bytes: int = 0, grain_seconds: int = 3600,
                 state: KeySetState | None = None) -> Deduper:
    """The backend named ``kind`` (see `streamagg.registry.DEDUPE_BACKENDS`), working inside
    ``tmp_dir``; `Deduper.fold_into` takes counts of ``grain_seconds``. With ``state`` it starts
    from the keys kept by an earlier run (when ``state.resume``) and keeps the day's keys for
    the next."""
    backend = DEDUPE_BACKENDS.load(kind)
    return cast(Deduper, backend(tmp_dir=tmp_dir, memory_limit=memory_limit,
                                 expected_bytes=expected_bytes, grain_seconds=grain_seconds,
                                 state=state))
