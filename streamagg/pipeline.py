"""`run_day`: the only place that knows the order of the stages."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import logging
import os
import resource
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa

from .aggregate import HourlyCounts
from .config import Config
from .dedup import make_deduper
from .errors import BadDataError, NoInputError, StorageError, UsageError
from .manifest import InputRecord, Manifest
from .prefetch import ordered_prefetch
from .reader import BadRow, FileStats, locate_bad_rows, open_decompressed, read_batches
from .sink import publish, write_output
from .sources import InputFile, Storage, redact, storage_for

log = logging.getLogger("streamagg")

# gzip typically shrinks these logs about 5x; the spill backend sizes its partitions from this.
GZIP_RATIO = 5
ProgressCallback = Callable[[InputFile], None]


@dataclass
class RunReport:
    """What a run did: where the output went, the totals and the manifest as written."""

    config: Config
    inputs: list[InputFile]
    output_uri: str
    manifest_uri: str | None = None
    rejects_uri: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def totals(self) -> dict[str, int]:
        return dict(self.manifest.get("totals", {}))


def plan(config: Config) -> tuple[Storage, Storage, list[InputFile], int]:
    """List the day's inputs and check where the results go, before anything is read."""
    source = storage_for(config.source, endpoint_url=config.endpoint_url)
    dest = storage_for(config.resolved_dest, endpoint_url=config.endpoint_url)
    partition = source.uri_of(config.day_path)
    out_dir = dest.uri_of(config.day_path)
    if out_dir == partition or out_dir.startswith(partition.rstrip("/") + "/"):
        raise UsageError("destination lies inside the source partition; its output would be "
                         "read as input", uri=redact(out_dir))
    if config.tmp_dir is not None and not os.path.isdir(config.tmp_dir):
        raise UsageError("--tmp-dir is not an existing folder", uri=config.tmp_dir)
    inputs, empty = source.list_partition(config.day_path)
    if not inputs and not empty:
        raise NoInputError("no input files in the partition", uri=partition)
    return source, dest, inputs, empty


def run_day(config: Config, *, on_file_done: ProgressCallback | None = None) -> RunReport:
    """Process one day end to end: list, read, de-duplicate, aggregate, write once."""
    started = dt.datetime.now(dt.UTC)
    source, dest, inputs, empty = plan(config)
    relative = f"{config.day_path}/{config.output_name}"
    report = RunReport(config=config, inputs=inputs, output_uri=dest.uri_of(relative))
    if config.dry_run:
        report.dry_run = True
        return report

    manifest = Manifest(config=config, started=started)
    manifest.totals.empty_files = empty
    expected = sum(i.size * (GZIP_RATIO if i.gzip else 1) for i in inputs)
    log.info("reading %d files (%d bytes) from %s", len(inputs), sum(i.size for i in inputs),
             source.uri_of(config.day_path))
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="streamagg-", dir=config.tmp_dir))
        dedup = stack.enter_context(make_deduper(
            config.dedupe, tmp_dir=work, memory_limit=config.memory_limit,
            expected_bytes=expected))
        rejects = stack.enter_context(_RejectsFile(os.path.join(work, "rejects.csv")))
        totals = manifest.totals
        def read_file(item: InputFile) -> Iterator[pa.RecordBatch | FileStats]:
            stats = FileStats()
            with _open(source, item) as stream:
                yield from read_batches(stream, item.uri, schema=config.schema,
                                        chunk_size=config.chunk_size, block_size=block_size,
                                        stats=stats)
            if stats.bad_rows:
                locate_bad_rows(functools.partial(_open, source, item), stats)
            yield stats

        block_size = reader_block_size(config.memory_limit)
        workers = config.workers or default_workers()
        # Files are parsed on `workers` threads (Arrow releases the GIL) but reach the
        # de-duplication strictly in file order, so the first occurrence stays first.
        for item, result in ordered_prefetch(read_file, inputs, workers=workers):
            if isinstance(result, pa.RecordBatch):
                try:
                    dedup.add(result)
                except OSError as err:
                    raise StorageError(f"cannot write spill files: {err.strerror or err}",
                                       uri=work) from err
                continue
            if result is None:
                if on_file_done:
                    on_file_done(item)
                continue
            stats = result
            rejects.write(stats.bad_rows)
            totals.rows_read += stats.rows_read
            totals.bad_rows += len(stats.bad_rows)
            manifest.inputs.append(InputRecord(item, stats.rows_read, len(stats.bad_rows)))
            limit = config.max_bad_rows.count
            if limit is not None and totals.bad_rows > limit:
                raise _too_many_bad_rows(config, totals.bad_rows, totals.rows_read, rejects.first)
        if totals.bad_rows > config.max_bad_rows.allowed(totals.rows_read):
            raise _too_many_bad_rows(config, totals.bad_rows, totals.rows_read, rejects.first)

        counts = HourlyCounts(config.schema.grain_seconds)
        try:
            for survivors in dedup.survivors():
                counts.fold(survivors)
        except OSError as err:
            raise StorageError(f"cannot use spill files: {err.strerror or err}", uri=work) from err
        totals.duplicates = dedup.stats.duplicates
        totals.conflicting_duplicates = dedup.stats.conflicting_duplicates
        rows = counts.rows()
        totals.output_rows = len(rows)
        totals.impressions = sum(r.count for r in rows)
        totals.outside_day = counts.outside(config.day)
        if totals.impressions != totals.rows_read - totals.bad_rows - totals.duplicates:
            raise StorageError("internal check failed: impressions do not add up; nothing written")

        out_path = os.path.join(work, config.output_name)
        with open(out_path, "wb") as out:
            sha256 = write_output(rows, out, config.schema)
        report.output_uri = publish(dest, out_path, relative)
        manifest.output = {"path": report.output_uri, "bytes": os.path.getsize(out_path),
                           "sha256": sha256}
        rejects_relative = f"{config.day_path}/{config.rejects_name}"
        rejects.close()
        if totals.bad_rows:
            report.rejects_uri = publish(dest, rejects.path, rejects_relative)
            manifest.rejects = {"path": report.rejects_uri, "rows": totals.bad_rows}
        else:
            dest.remove(rejects_relative)  # a stale one from an earlier run would mislead
        manifest.finished = dt.datetime.now(dt.UTC)
        manifest.peak_memory_bytes = peak_memory_bytes()
        manifest_path = os.path.join(work, config.manifest_name)
        with open(manifest_path, "w", encoding="utf-8") as out_manifest:
            out_manifest.write(manifest.to_json())
        report.manifest_uri = publish(dest, manifest_path,
                                      f"{config.day_path}/{config.manifest_name}")
        report.manifest = manifest.as_dict()
    return report


def default_workers() -> int:
    """Reader threads: one per core, at most four (beyond that the single consumer limits)."""
    return max(1, min(4, os.cpu_count() or 1))


def reader_block_size(memory_limit: int) -> int:
    """CSV bytes parsed at once: larger blocks cost less per row, but each worker holds a few."""
    return max(1 << 20, min(4 << 20, memory_limit // 64))


def peak_memory_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def _open(source: Storage, item: InputFile) -> Iterator[BinaryIO]:
    """The input's CSV bytes, decompressed; both layers closed afterwards."""
    raw = source.open_input(item)
    try:
        stream = open_decompressed(raw, item.gzip)
        try:
            yield stream
        finally:
            if stream is not raw:
                stream.close()
    except (OSError, EOFError) as err:
        if isinstance(err, StorageError):
            raise
        raise StorageError(f"read failed: {err}", uri=item.uri) from err
    finally:
        raw.close()


def _too_many_bad_rows(config: Config, bad: int, read: int, first: BadRow | None) -> BadDataError:
    where = ""
    if first is not None:
        where = f"; first: {first.reason}"
    message = (f"too many bad rows: {bad} of {read} rows read exceed --max-bad-rows "
               f"{config.max_bad_rows}{where}; nothing written")
    if first is None:
        return BadDataError(message)
    return BadDataError(message, uri=first.uri, line=first.line)


class _RejectsFile:
    """Bad rows with file, line, reason and raw text, collected in the work folder."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._out = open(path, "w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._out, lineterminator="\n")
        self._writer.writerow(["file", "line", "reason", "raw"])
        self.first: BadRow | None = None

    def write(self, rows: list[BadRow]) -> None:
        if self.first is None and rows:
            self.first = rows[0]
        for row in rows:
            self._writer.writerow([row.uri, row.line if row.line is not None else "",
                                   row.reason, row.raw if row.raw is not None else ""])

    def close(self) -> None:
        if not self._out.closed:
            self._out.close()

    def __enter__(self) -> _RejectsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
