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
from ..columns import CLEAN_SCHEMA, GROUP, BadRows, FileStats
from ..config import Config
from ..dedup import Prepared, make_deduper
from ..errors import StorageError
from ..read import Member, ReadLimits, reader_for
from ..read.formats import InputFormat
from ..read.limits import gathered_size
from ..sources import InputFile, Storage
from . import Books, DayCounts, FileResult, RunContext
from .prefetch import ordered_prefetch

# Bytes per row when no file's first bytes held a whole row (82 and 190 in the benchmarks).
DEFAULT_ROW_BYTES = 110
# Consecutive inputs smaller than this many gathered batches are read by one reader thread in
# turn, their clean rows joined into batches of the usual size (see `Gathering`).
RUN_BATCHES = 4
GROUP_INDEX = CLEAN_SCHEMA.get_field_index(GROUP)


class _RowSize:
    """The size of a row, as the first file to show one sampled it (`FileStats.row_bytes`)."""

    def __init__(self) -> None:
        self.row_bytes: float | None = None

    def observe(self, row_bytes: float | None) -> None:
        if self.row_bytes is None and row_bytes:
            self.row_bytes = row_bytes


@dataclass(frozen=True)
class FileRead:
    """One input read to its end: what the books record of it."""

    item: InputFile
    stats: FileStats


@dataclass(frozen=True)
class Arrival:
    """Made ready on a reader thread: a clean batch in the backend's form and its counts (none
    when the files read since the last batch held no clean row), then the inputs whose rows
    are all in it or in earlier batches."""

    prepared: Prepared | None
    counts: pa.Table | None  # (group, bucket, count) of every row, as `count_pairs` gives them
    files: tuple[FileRead, ...] = ()

    def held_bytes(self) -> int:
        """The Arrow buffers it holds, which its place in a prefetch queue keeps alive."""
        if self.prepared is None or self.counts is None:
            return 0
        partitions = self.prepared.partition_rows
        return int(self.prepared.rows.get_total_buffer_size()
                   + self.counts.get_total_buffer_size()
                   + (0 if partitions is None else partitions.nbytes))


class Gathering:
    """Clean batches of consecutive files joined up to ``rows`` rows or ``nbytes`` bytes.

    A day of many small files (one a minute per server) makes a batch per file: the work paid
    per batch (the backend's prepare, the counts, a spill message, the tallies) was paid per
    file, 2.2 ms of a 5,000-row file's 5 ms. Rows stay in file then row order, so the first
    occurrence stays first; the files' books follow the batch that holds their last rows.
    """

    def __init__(self, rows: int, nbytes: int) -> None:
        self.rows, self.nbytes = rows, nbytes
        self.batches: list[pa.RecordBatch] = []
        self.files: list[FileRead] = []
        self.held_rows = self.held_bytes = 0

    def fits(self, batch: pa.RecordBatch, size: int) -> bool:
        """Whether ``batch`` of ``size`` gathered bytes may join what is held (a full batch is
        taken out first)."""
        return not self.batches or (self.held_rows + batch.num_rows <= self.rows
                                    and self.held_bytes + size <= self.nbytes)

    def add(self, batch: pa.RecordBatch, size: int) -> None:
        self.batches.append(batch)
        self.held_rows += batch.num_rows
        self.held_bytes += size

    def file_read(self, done: FileRead) -> None:
        """``done``'s books go out with the batch that holds its last rows."""
        self.files.append(done)

    @property
    def empty(self) -> bool:
        return not self.batches and not self.files

    @property
    def full(self) -> bool:
        return self.held_rows >= self.rows or self.held_bytes >= self.nbytes

    def take(self) -> tuple[pa.RecordBatch | None, tuple[FileRead, ...]]:
        """The rows held as one batch, and the files done with them; none held afterwards."""
        batches, files = self.batches, tuple(self.files)
        self.batches, self.files, self.held_rows, self.held_bytes = [], [], 0, 0
        if not batches:
            return None, files
        return (batches[0] if len(batches) == 1 else pa.concat_batches(batches)), files



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

    limits = ReadLimits.of(Budget.of(config.memory_limit))
    gather_rows = min(config.chunk_size, limits.gather_rows)

    def arrivals(run_of_files: list[InputFile]) -> Iterator[Arrival]:
        gathering = Gathering(gather_rows, limits.gather_bytes)

        def ready() -> Arrival:
            batch, files = gathering.take()
            if batch is None:
                return Arrival(None, None, files)
            # On the reader thread: hashing, the backend's ordering and counting use every core.
            return Arrival(dedup.prepare(batch), count_pairs(batch, grain), files)

        for read in read_files(config, source, run_of_files, limits, work):
            if isinstance(read, FileRead):
                gathering.file_read(read)
                if read.stats.bad_rows:  # their rows are not held for long
                    yield ready()
                continue
            row_size.observe(read.row_bytes)  # before the day's first batch is prepared
            size = gathered_size(read.batch, GROUP_INDEX)
            if not gathering.fits(read.batch, size):
                yield ready()
            gathering.add(read.batch, size)
            if gathering.full:
                yield ready()
        if not gathering.empty:
            yield ready()

    def expected_rows() -> int:
        return int(expected / (row_size.row_bytes or DEFAULT_ROW_BYTES))

    with make_deduper(config.dedupe, tmp_dir=work, memory_limit=config.memory_limit,
                      expected_rows=expected_rows, grain_seconds=grain,
                      state=run.keys) as dedup:
        # Files are parsed on reader threads (Arrow releases the GIL) but reach the
        # de-duplication strictly in file order, so the first occurrence stays first.
        budget = Budget.of(config.memory_limit)
        runs = runs_of_files(inputs, RUN_BATCHES * gather_rows * DEFAULT_ROW_BYTES)
        for _, got in ordered_prefetch(
                arrivals, runs, workers=config.workers or budget.reader_threads,
                depth=budget.queue_depth, size=Arrival.held_bytes, share=budget.queue_bytes):
            if got is None:
                continue
            if got.prepared is not None and got.counts is not None:
                dedup.add(got.prepared)
                result.counts.fold_counts(got.counts)
                # Clean rows per bucket, less the survivors, are the duplicates per bucket.
                tally_counts(result.clean_per_bucket, got.counts)
            for done in got.files:
                stats = done.stats
                books.bad_rows(stats.bad_rows, read_so_far=stats.rows_read)
                books.file_done(done.item,
                                FileResult(stats.rows_read, len(stats.bad_rows), stats.empty))
                stats.bad_rows.close()
        books.all_read()
        for later in dedup.later_occurrences():
            result.counts.take_out(later.groups, later.buckets)
        result.duplicates = dedup.stats.duplicates
        result.conflicting_duplicates = dedup.stats.conflicting_duplicates
    return result


def runs_of_files(inputs: list[InputFile], run_bytes: int) -> list[list[InputFile]]:
    """The inputs in order, consecutive ones together up to ``run_bytes`` of expected content
    (a larger file alone): one reader thread reads a run, one file after another."""
    runs: list[list[InputFile]] = []
    held = 0
    for item in inputs:
        expected = reader_for(item).expected_bytes
        if not runs or held + expected > run_bytes:
            runs.append([])
            held = 0
        runs[-1].append(item)
        held += expected
    return runs


@dataclass(frozen=True)
class BatchRead:
    """Clean rows of the inputs being read, and the row size a file of them sampled."""

    batch: pa.RecordBatch
    row_bytes: float | None


def read_files(config: Config, source: Storage, items: list[InputFile], limits: ReadLimits,
               work: str | None = None) -> Iterator[BatchRead | FileRead]:
    """The inputs' clean batches in order, each input's `FileRead` after the batches holding
    its last rows, its bad rows located; ``work``: where many bad rows wait on disk.
    Consecutive small inputs of a format that can are read joined (`InputFormat.read_stitched`).
    """
    for kind, joined, part in _joinable(items, limits):
        if not joined:
            for item in part:
                stats = FileStats(bad_rows=BadRows(work))
                for batch in read_file(config, source, item, stats, limits):
                    yield BatchRead(batch, stats.row_bytes)
                yield FileRead(item, stats)
            continue
        assert kind.read_stitched is not None
        members = [Member(item.uri, functools.partial(open_input, source, item),
                          FileStats(bad_rows=BadRows(work))) for item in part]
        of_member = {id(member): item for member, item in zip(members, part, strict=True)}
        row_bytes = None
        for read in kind.read_stitched(members, schema=config.schema,
                                       chunk_size=config.chunk_size, limits=limits,
                                       stop_after_bad=config.max_bad_rows.count):
            if isinstance(read, Member):
                item, stats = of_member[id(read)], read.stats
                if stats.bad_rows:
                    kind.locate_bad_rows(read.reopen, stats, limits)
                yield FileRead(item, stats)
                continue
            # A file's sample is taken as its header is read, before its rows come.
            row_bytes = row_bytes or next(
                (m.stats.row_bytes for m in members if m.stats.row_bytes), None)
            yield BatchRead(read, row_bytes)


def _joinable(items: list[InputFile], limits: ReadLimits,
              ) -> Iterator[tuple[InputFormat, bool, list[InputFile]]]:
    """The inputs in consecutive parts of one format: whether a part is read joined, and its
    inputs. Joined: two or more whose expected content is at most an eighth of
    ``limits.gather_bytes`` each, so that four fit in a joined group (half of it): a file
    larger than half a group would be a group of its own, loaded, then read again alone."""
    small = limits.gather_bytes // 8
    part: list[InputFile] = []
    key: tuple[InputFormat, bool] | None = None
    for item in items:
        reader = reader_for(item)
        joins = reader.format.read_stitched is not None and reader.expected_bytes <= small
        if key is not None and key != (reader.format, joins):
            yield key[0], key[1] and len(part) > 1, part
            part = []
        key = (reader.format, joins)
        part.append(item)
    if key is not None:
        yield key[0], key[1] and len(part) > 1, part


def read_file(config: Config, source: Storage, item: InputFile, stats: FileStats,
              limits: ReadLimits | None = None) -> Iterator[pa.RecordBatch]:
    """One input's clean batches, in order; its bad rows, located, end up in ``stats``.
    ``limits``: the reader's bounds, the run's ``--memory-limit``'s unless given."""
    limits = limits or ReadLimits.of(Budget.of(config.memory_limit))
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
