"""What runs on the driver: one task per input, the notes in file order, de-duplication in SQL."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ...aggregate import BUCKET, COUNT, HourlyCounts
from ...budget import Budget
from ...columns import GROUP, INSTANT, KEY, BadRow
from ...config import Config
from ...errors import StreamaggError
from ...sources import InputFile
from .. import Books, DayCounts, FileResult, RunContext
from .executor import (
    BAD,
    DETAIL,
    FAILED,
    FIELDS,
    FILE_INDEX,
    LINE,
    NOTE,
    NOTE_ORDER,
    RAW,
    ROW_INDEX,
    SPARK_SCHEMA,
    FileReader,
    decode_error,
)
from .session import (
    JVM_ERRORS,
    jvm_peak_memory,
    quiet_pyspark_warnings,
    require_spark,
    spark_errors,
    spark_session,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


def count_day(run: RunContext, books: Books) -> DayCounts:
    """Read, de-duplicate and count the day on Spark; the driver keeps only notes and counts.

    ``source`` is listed on the driver; executors open the same inputs through their own
    `storage_for(config.source)`, so they need read access (e.g. an instance role) themselves.
    """
    config, inputs, work = run.config, run.inputs, run.work
    require_spark()
    result = DayCounts(HourlyCounts(config.schema.grain_seconds, spill_dir=work,
                                    memory_bytes=Budget.of(config.memory_limit).counts_bytes))
    if not inputs:  # only empty files: the header-only output needs no cluster
        return result
    from pyspark import StorageLevel

    jvm_log = os.path.join(work, JVM_ERRORS)
    session = spark_session(config.spark_master, work, config.spark_env)
    with session as spark, spark_errors(jvm_log):
        # On disk, not MEMORY_AND_DISK: in local mode the cache shares the driver's heap (1g by
        # default) with the tasks, and a day of cached partitions there ran it out of memory.
        rows = read_inputs(spark, config, inputs).persist(StorageLevel.DISK_ONLY)
        try:
            # The first action fills the cache; the de-duplication then reads it, not the files.
            take_notes(rows, inputs, books)
            books.all_read()
            fold_first_occurrences(rows, config, result)
            result.jvm_peak_memory_bytes = jvm_peak_memory(spark)
        finally:
            with contextlib.suppress(Exception):  # a dead session must not hide the real error
                rows.unpersist(blocking=True)
    return result



def read_inputs(spark: SparkSession, config: Config, inputs: list[InputFile]) -> DataFrame:
    """One task per input file, each streaming its file through streamagg's reader."""
    n = len(inputs)
    with quiet_pyspark_warnings():
        # range(n) in n slices puts exactly one file index in each partition.
        return spark.range(0, n, 1, n).mapInArrow(FileReader(config, inputs), SPARK_SCHEMA)


def take_notes(rows: DataFrame, inputs: list[InputFile], books: Books) -> None:
    """Rows read and bad rows per file, in file order, reported as the local engine does.

    Notes are collected whole: bad rows are few (``--max-bad-rows``), and one collect reads
    every file in parallel where an ordered, streamed fetch would run a job per file.
    """
    from pyspark.sql import functions as F

    collected = (rows.where(F.col(NOTE).isNotNull())
                 .select(FILE_INDEX, NOTE, ROW_INDEX, LINE, DETAIL, RAW, FIELDS).collect())
    collected.sort(key=lambda n: (n[FILE_INDEX], NOTE_ORDER[n[NOTE]], n[ROW_INDEX]))
    files = 0
    for index, file_notes in itertools.groupby(collected, key=lambda n: n[FILE_INDEX]):
        item = inputs[index]
        bad_rows: list[BadRow] = []
        found: dict[str, Any] = {}
        for note in file_notes:
            if note[NOTE] == FAILED:
                raise decode_error(note[DETAIL])
            if note[NOTE] == BAD:
                fields = None if note[FIELDS] is None else tuple(bytes(f) for f in note[FIELDS])
                bad_rows.append(BadRow(item.uri, note[ROW_INDEX], note[DETAIL], note[RAW],
                                       note[LINE], fields))
            else:
                found = json.loads(note[DETAIL])
        rows_read = int(found.get("rows_read", 0))
        books.bad_rows(bad_rows, read_so_far=rows_read)
        books.file_done(item, FileResult(rows_read, len(bad_rows),
                                         bool(found.get("empty", False))))
        files += 1
    if files != len(inputs):
        raise StreamaggError(f"internal check failed: Spark read {files} of "
                             f"{len(inputs)} files; nothing written")


def fold_first_occurrences(rows: DataFrame, config: Config, result: DayCounts) -> None:
    """Keep the first occurrence of each key in (file, row) order; count them per group and bucket.

    Every row of a key shares its instant, hence its bucket, and is counted under the group of
    the key's first row: as a survivor when it is that row, else as a duplicate, conflicting
    when its own group differs.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_key = Window.partitionBy(KEY, INSTANT).orderBy(FILE_INDEX, ROW_INDEX)
    ranked = rows.where(F.col(NOTE).isNull()).select(
        (F.row_number().over(by_key) == 1).alias("first"),
        F.first(GROUP).over(by_key).alias("kept"),
        F.col(GROUP),
        floor_div(INSTANT, config.schema.grain_seconds * 10**9).alias(BUCKET),
    )
    dropped = ~F.col("first")
    per_bucket = ranked.groupBy("kept", BUCKET).agg(
        F.sum(F.col("first").cast("long")).alias(COUNT),
        F.sum(dropped.cast("long")).alias("duplicates"),
        F.sum((dropped & (F.col(GROUP) != F.col("kept"))).cast("long")).alias("conflicts"),
    )
    groups: list[str] = []
    buckets: list[int] = []
    counts: list[int] = []
    for row in per_bucket.collect():  # one row per (group, bucket): the output's size
        groups.append(row["kept"])
        buckets.append(row[BUCKET])
        counts.append(row[COUNT])
        result.duplicates += row["duplicates"]
        result.conflicting_duplicates += row["conflicts"]
        # The key's first row and its duplicates all passed validation in this bucket.
        clean = result.clean_per_bucket
        clean[row[BUCKET]] = clean.get(row[BUCKET], 0) + row[COUNT] + row["duplicates"]
    result.counts.fold_counts(pa.table({
        GROUP: pa.array(groups, pa.string()), BUCKET: pa.array(buckets, pa.int64()),
        COUNT: pa.array(counts, pa.int64())}))


def floor_div(column: str, divisor: int) -> Column:
    """Exact floor division of a long column: Spark's ``div`` truncates toward zero, which would
    put instants before 1970 in the next bucket, and ``/`` goes through a double."""
    from pyspark.sql import functions as F

    c = f"`{column}`"
    return F.expr(f"CASE WHEN {c} >= 0 THEN {c} div {divisor}L "
                  f"ELSE -((-({c} + 1)) div {divisor}L) - 1 END")

