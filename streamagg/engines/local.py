"""The local engine: reader threads, an on-disk key set, folding on this machine."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa

from ..aggregate import HourlyCounts, count_pairs, tally_counts
from ..budget import Budget
from ..columns import BadRows, FileStats
from ..config import Config
from ..dedup import Prepared, make_deduper
from ..errors import StorageError
from ..read import ReadLimits, reader_for
from ..sources import InputFile, Storage
from . import Books, DayCounts, FileResult, RunContext
from .prefetch import ordered_prefetch

# Bytes per row when no file's first bytes held a whole row (82 and 190 in the benchmarks).
DEFAULT_ROW_BYTES = 110


class _RowSize:
    """The size of a row, as the first file to show one sampled it (`FileStats.row_bytes`)."""

    def __init__(self) -> None:
        self.row_bytes: float | None = None

    def observe(self, stats: FileStats) -> None:
        if self.row_bytes is None and stats.row_bytes:
            self.row_bytes = stats.row_bytes


@dataclass(frozen=True)
class Arrival:
    """A clean batch made ready on a reader thread: the backend's rows and the batch's counts."""

    prepared: Prepared
    counts: pa.Table  # (group, bucket, count) of every row, as `count_pairs` gives them


def count_day(run: RunContext, books: Books) -> DayCounts:
    """Read, de-duplicate and count the day on this machine, within ``config.memory_limit``.

    Every clean row is counted as it arrives; de-duplication then yields the later occurrences,
    which are taken out again. With ``run.keys`` the key set starts from (and is kept as) the
    day's state: ``run.inputs`` are then the new files only, and the result counts them alone."""
    config, source, inputs, work = run.config, run.source, run.inputs, run.work
    grain = config.schema.grain_seconds
    # The spill backend sizes its partitions from this (compressed inputs: `Compression.expansion`).
    expected = sum(reader_for(i).expected_bytes for i in inputs)
    result = DayCounts(HourlyCounts(grain, spill_dir=work,
                                    memory_bytes=Budget.of(config.memory_limit).counts_bytes))
    row_size = _RowSize()

    def batches_then_stats(item: InputFile) -> Iterator[Arrival | FileStats]:
        stats = FileStats(bad_rows=BadRows(work))  # many bad rows wait on disk, in ``work``
        for batch in read_file(config, source, item, stats):
            row_size.observe(stats)  # before the day's first batch is prepared
            # On the reader thread: hashing, the backend's ordering and counting use every core.
            yield Arrival(dedup.prepare(batch), count_pairs(batch, grain))
        yield stats

    def expected_rows() -> int:
        return int(expected / (row_size.row_bytes or DEFAULT_ROW_BYTES))

    with make_deduper(config.dedupe, tmp_dir=work, memory_limit=config.memory_limit,
                      expected_rows=expected_rows, grain_seconds=grain,
                      state=run.keys) as dedup:
        # Files are parsed on reader threads (Arrow releases the GIL) but reach the
        # de-duplication strictly in file order, so the first occurrence stays first.
        budget = Budget.of(config.memory_limit)
        for item, got in ordered_prefetch(
                batches_then_stats, inputs, workers=config.workers or budget.reader_threads,
                depth=budget.queue_depth):
            if isinstance(got, Arrival):
                dedup.add(got.prepared)
                result.counts.fold_counts(got.counts)
                # Clean rows per bucket, less the survivors, are the duplicates per bucket.
                tally_counts(result.clean_per_bucket, got.counts)
            elif isinstance(got, FileStats):
                books.bad_rows(got.bad_rows, read_so_far=got.rows_read)
                books.file_done(item, FileResult(got.rows_read, len(got.bad_rows), got.empty))
                got.bad_rows.close()
        books.all_read()
        for later in dedup.later_occurrences():
            result.counts.take_out(later.groups, later.buckets)
        result.duplicates = dedup.stats.duplicates
        result.conflicting_duplicates = dedup.stats.conflicting_duplicates
    return result


def read_file(config: Config, source: Storage, item: InputFile,
              stats: FileStats) -> Iterator[pa.RecordBatch]:
    """One input's clean batches, in order; its bad rows, located, end up in ``stats``."""
    limits = ReadLimits.of(Budget.of(config.memory_limit))
    kind = reader_for(item).format
    with open_input(source, item) as stream:
        yield from kind.read_batches(stream, item.uri, schema=config.schema,
                                     chunk_size=config.chunk_size, stats=stats,
                                     reopen=functools.partial(open_input, source, item),
                                     stop_after_bad=config.max_bad_rows.count, limits=limits)
    if stats.bad_rows:
        kind.locate_bad_rows(functools.partial(open_input, source, item), stats, limits)


@contextlib.contextmanager
def open_input(source: Storage, item: InputFile) -> Iterator[BinaryIO]:
    """The input's content, decompressed if its bytes say so; both layers closed afterwards."""
    raw = source.open_input(item)
    try:
        stream = reader_for(item).open(raw)
        try:
            yield stream
        finally:
            stream.close()
    except OSError as err:  # damaged compressed data is a StorageError already (`formats`)
        raise StorageError(f"read failed: {err}", uri=item.uri) from err
    finally:
        raw.close()
