"""What runs on the executors: streamagg's reader over each input, as Arrow rows for Spark."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from ... import errors
from ...columns import GROUP, INSTANT, KEY, FileStats
from ...config import Config
from ...errors import StreamaggError
from ...sources import InputFile, Storage, storage_for
from ..local import read_file

FILE_INDEX, ROW_INDEX = "file_index", "row_index"
# Rows the read stage emits that are not impressions: what the driver needs to know about a file.
NOTE, LINE, DETAIL, RAW, FIELDS = "note", "line", "detail", "raw", "fields"
BAD, FILE_DONE, FAILED = "bad", "file", "error"

# One schema for everything the read stage emits, so a single pass over the inputs serves both
# the driver (notes: bad rows, rows read, errors) and the de-duplication (impressions).
#   impression: file_index, row_index (its position among the file's clean rows), key, instant,
#               group; note is null
#   "bad":      row_index is the record number; line, detail (the reason) and raw as in rejects;
#               fields: the required fields as parsed (the manifest's hourly section uses the time)
#   "file":     detail holds what else reading found (rows read, no header), as JSON
#   "error":    detail holds the StreamaggError that stopped the file, as JSON
READ_SCHEMA = pa.schema([
    (FILE_INDEX, pa.int32()), (ROW_INDEX, pa.int64()),
    (KEY, pa.string()), (INSTANT, pa.int64()), (GROUP, pa.string()),
    (NOTE, pa.string()), (LINE, pa.int64()), (DETAIL, pa.string()), (RAW, pa.string()),
    (FIELDS, pa.list_(pa.binary())),
])
_SPARK_TYPES = {pa.int32(): "int", pa.int64(): "long", pa.string(): "string",
                pa.list_(pa.binary()): "array<binary>"}
SPARK_SCHEMA = ", ".join(f"`{f.name}` {_SPARK_TYPES[f.type]}" for f in READ_SCHEMA)
NOTE_ORDER = {FAILED: 0, BAD: 1, FILE_DONE: 2}
# Rows per Arrow batch handed to the JVM (spark.sql.execution.arrow.maxRecordsPerBatch's default).
ARROW_BATCH_ROWS = 10_000


class FileReader:
    """Reads the files whose indexes arrive, with the local engine's reader, as Arrow batches."""

    def __init__(self, config: Config, inputs: list[InputFile]) -> None:
        self.config = config
        self.inputs = inputs

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        source = storage_for(self.config.source, endpoint_url=self.config.endpoint_url)
        for batch in batches:
            for index in batch.column(0).to_pylist():
                yield from self.read_file(source, int(index))

    def read_file(self, source: Storage, index: int) -> Iterator[pa.RecordBatch]:
        """One file, read exactly as the local engine's reader threads read it."""
        item = self.inputs[index]
        config = self.config
        stats = FileStats()
        position = 0
        try:
            for clean in read_file(config, source, item, stats):
                batch = impressions(index, position, clean)
                # Spark's own Arrow batch size: the JVM loads a batch whole before it yields
                # rows; zero-copy slices bound its memory per task whatever the chunk size.
                for start in range(0, batch.num_rows, ARROW_BATCH_ROWS):
                    yield batch.slice(start, ARROW_BATCH_ROWS)
                position += clean.num_rows
        except StreamaggError as err:
            # Handed to the driver as data: Spark would retry it, then bury it in a traceback.
            yield notes(index, [(FAILED, -1, None, encode_error(err), None, None)])
            return
        found: list[NoteRow] = [(BAD, b.record, b.line, b.reason, b.raw, b.fields)
                                for b in stats.bad_rows]
        found.append((FILE_DONE, 0, None, encode_stats(stats), None, None))
        yield notes(index, found)


def impressions(index: int, first_row: int, clean: pa.RecordBatch) -> pa.RecordBatch:
    """A clean batch with its place in the day: (file, row) decides which occurrence is first."""
    n = clean.num_rows
    return pa.RecordBatch.from_arrays([
        pa.array(np.full(n, index, dtype=np.int32)),
        pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
        clean.column(KEY), clean.column(INSTANT), clean.column(GROUP),
        pa.nulls(n, pa.string()), pa.nulls(n, pa.int64()), pa.nulls(n, pa.string()),
        pa.nulls(n, pa.string()), pa.nulls(n, pa.list_(pa.binary())),
    ], schema=READ_SCHEMA)


NoteRow = tuple[str, int, int | None, str | None, str | None, tuple[bytes, ...] | None]


def notes(index: int, rows: Sequence[NoteRow]) -> pa.RecordBatch:
    """Rows of (note, row_index, line, detail, raw, fields) about one file."""
    n = len(rows)
    kinds, numbers, lines, details, raws, fields = (list(c) for c in zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays([
        pa.array([index] * n, pa.int32()), pa.array(numbers, pa.int64()),
        pa.nulls(n, pa.string()), pa.nulls(n, pa.int64()), pa.nulls(n, pa.string()),
        pa.array(kinds, pa.string()), pa.array(lines, pa.int64()),
        pa.array(details, pa.string()), pa.array(raws, pa.string()),
        pa.array(fields, pa.list_(pa.binary())),
    ], schema=READ_SCHEMA)


def encode_stats(stats: FileStats) -> str:
    return json.dumps({"rows_read": stats.rows_read, "empty": stats.empty})


def encode_error(err: StreamaggError) -> str:
    return json.dumps({"type": type(err).__name__, "message": err.message, "uri": err.uri,
                       "line": err.line, "column": err.column})


def decode_error(text: str) -> StreamaggError:
    """The executor's error, rebuilt on the driver with its class, so the exit code is the same."""
    fields = json.loads(text)
    cls = getattr(errors, fields["type"], StreamaggError)
    if not (isinstance(cls, type) and issubclass(cls, StreamaggError)):
        cls = StreamaggError
    return cls(fields["message"], uri=fields["uri"], line=fields["line"],
               column=fields["column"])
