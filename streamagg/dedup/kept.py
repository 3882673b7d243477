"""The spill backend's kept state for --incremental: each partition's first keys, in segments."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..columns import GROUP, INSTANT, KEY
from . import KeySetState, exact_keys
from .partition import _private_file
from .pieces import _GROUP_OUT, _Done

# A kept partition's segment files: the exact key (see `exact_keys`) and its first group.
STATE_SCHEMA = pa.schema([("k", pa.binary()), (GROUP, pa.string())])
# A partition's runs of kept batches are merged into one when a refresh would add one more
# than this: each refresh reads them all anyway, so the merge costs only the write.
MAX_SEGMENTS = 8


class KeptSegments:
    """The kept state: each partition's first occurrences as (exact key, group) batches. A run
    writes one Arrow file (one upload, one fsync); the record lists, per partition, its runs of
    batches in such files: [file, first batch, batch count]."""

    def __init__(self, state: KeySetState) -> None:
        self._state = state
        self._generation: tuple[pa.NativeFile, pa.ipc.RecordBatchFileWriter] | None = None
        self._batches = 0  # written to this run's state file so far
        self._ranges: dict[int, list[list[Any]]] = {}  # this run's batches of each partition
        self._readers: dict[str, tuple[pa.NativeFile, pa.ipc.RecordBatchFileReader]] = {}
        self.merged: set[int] = set()  # partitions whose new batches hold the stored rows

    def write(self, index: int, batch: pa.RecordBatch) -> None:
        """Add rows of partition ``index``, in the state's form, to this run's file."""
        state = self._state
        name = f"{state.generation}.arrow"
        if self._generation is None:
            sink = _private_file(os.path.join(state.folder, name))
            self._generation = (sink, pa.ipc.new_file(sink, STATE_SCHEMA))
            state.written.append(name)
        ranges = self._ranges.setdefault(index, [])
        if not ranges or ranges[-1][0] != name or ranges[-1][1] + ranges[-1][2] != self._batches:
            ranges.append([name, self._batches, 0])
        self._generation[1].write_batch(batch)
        ranges[-1][2] += 1
        self._batches += 1

    def keep(self, index: int, batch: pa.RecordBatch) -> None:
        """Add first occurrences of partition ``index`` to the kept state."""
        self.write(index, _state_batch(batch))

    def finish(self, partitions: int, stored: dict[int, list[list[Any]]]) -> None:
        """Close this run's file; record every partition's batches (of ``partitions``) for the
        next run."""
        self.close()
        segments = dict(stored)
        for index, ranges in self._ranges.items():
            # A merged partition's batches hold its stored rows too; else they add to them.
            segments[index] = (ranges if index in self.merged
                               else [*segments.get(index, []), *ranges])
        self._ranges = {}
        self._state.record = {"partitions": partitions, "seed": 0,
                        "segments": {str(i): segments[i] for i in sorted(segments)}}

    def close(self) -> None:
        """Close this run's file and every stored file read."""
        if self._generation is not None:
            sink, writer = self._generation
            self._generation = None
            writer.close()
            sink.close()
        for path, (source, _) in self._readers.items():
            source.close()
            self._state.release(path)
        self._readers = {}

    def stored_batches(self, ranges: list[list[Any]]) -> Iterator[pa.RecordBatch]:
        """A partition's stored batches, read (not mapped) one at a time."""
        for name, first, count in ranges:
            local = self._state.stored_path(name)
            entry = self._readers.get(local)
            if entry is None:
                source = pa.OSFile(local)
                entry = self._readers[local] = (source, pa.ipc.open_file(source))
            for number in range(first, first + count):
                yield entry[1].get_batch(number)


    def against_stored(self, index: int, table: pa.Table, ranges: list[list[Any]], *,
                       copy: bool = False) -> _Done:
        """De-duplicate one partition's new rows against themselves and its stored keys
        (copying the stored batches into this run's file when ``copy``: a merge).

        The hash table is over the new rows only; stored batches are streamed past it, so
        memory follows the new rows, however large the day's key set has grown. A stored key
        came first (new files sort after every recorded one), so a new row holding it is a
        duplicate, conflicting when its group differs from the stored group.
        """
        if not table.num_rows:
            if copy:
                for kept in self.stored_batches(ranges):
                    self.write(index, kept)
            return pa.RecordBatch.from_pylist([], schema=_GROUP_OUT), 0, 0
        encoded = pc.dictionary_encode(exact_keys(table.column(KEY), table.column(INSTANT)))
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        unique = encoded.dictionary
        _, first_row = np.unique(codes, return_index=True)
        matched_codes: list[np.ndarray] = []
        matched_groups: list[pa.Array] = []
        for stored in self.stored_batches(ranges):
            if copy:
                self.write(index, stored)
            found = pc.index_in(stored.column(0), value_set=unique)
            hit = found.is_valid()
            if pc.any(hit).as_py():
                matched_codes.append(
                    found.filter(hit).to_numpy(zero_copy_only=False).astype(np.int64))
                matched_groups.append(stored.column(1).filter(hit))
        groups = table.column(GROUP).combine_chunks()
        first_group = groups.take(pa.array(first_row))
        matched = np.zeros(len(unique), dtype=bool)
        if matched_codes:
            hits = np.concatenate(matched_codes)
            matched[hits] = True
            # The group a key first had: the stored one where the key was stored.
            where = np.arange(len(unique), dtype=np.int64)
            where[hits] = len(unique) + np.arange(len(hits), dtype=np.int64)
            first_group = pa.concat_arrays([first_group, *matched_groups]).take(pa.array(where))
        keep = np.zeros(len(codes), dtype=bool)
        keep[first_row] = True
        keep &= ~matched[codes]
        dropped = ~keep
        duplicates = int(dropped.sum())
        conflicts = 0
        if duplicates:
            mask = pa.array(dropped)
            conflicts = int(pc.sum(pc.not_equal(
                groups.filter(mask), first_group.take(pa.array(codes[dropped])))).as_py() or 0)
        kept = table.select([GROUP, INSTANT, KEY]).filter(pa.array(keep)).combine_chunks()
        batch = (kept.to_batches()[0] if kept.num_rows
                 else pa.RecordBatch.from_pylist([], schema=_GROUP_OUT))
        return batch, duplicates, conflicts


def _state_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """First occurrences as a kept segment's rows: exact key and group."""
    return pa.RecordBatch.from_arrays(
        [exact_keys(batch.column(KEY), batch.column(INSTANT)), batch.column(GROUP)],
        schema=STATE_SCHEMA)
