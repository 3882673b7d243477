"""The Spark engine: streamagg's own reader on the executors, de-duplication and counts in Spark."""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import logging
import os
import re
import shutil
import sys
import traceback
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .. import errors
from ..aggregate import BUCKET, COUNT, HourlyCounts
from ..columns import GROUP, INSTANT, KEY, BadRow, FileStats
from ..config import Config
from ..errors import StreamaggError, UsageError
from ..sources import InputFile, Storage, storage_for
from . import Books, DayCounts, FileResult, RunContext
from .local import read_file

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger("streamagg")

INSTALL_HINT = "install the spark extra (in streamagg's clone: pip install -e '.[spark]')"
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
_NOTE_ORDER = {FAILED: 0, BAD: 1, FILE_DONE: 2}
# Rows per Arrow batch handed to the JVM (spark.sql.execution.arrow.maxRecordsPerBatch's default).
ARROW_BATCH_ROWS = 10_000

# Spark's own logging: warnings and errors only, and not the two start-up warnings every local
# run prints (no native Hadoop library; the host name resolving to a loopback address).
_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
logger.utils.name = org.apache.spark.util.Utils
logger.utils.level = error
"""
# Errors the JVM logged, kept in the work folder: when the JVM dies (an OutOfMemoryError), py4j
# only sees a closed connection, and this file says why.
JVM_ERRORS = "spark-errors.log"
MEMORY_HINT = ("raise spark.driver.memory (local mode; e.g. SPARK_DRIVER_MEMORY=8g) or "
               "spark.executor.memory (a cluster), or run fewer tasks at once")


def count_day(run: RunContext, books: Books) -> DayCounts:
    """Read, de-duplicate and count the day on Spark; the driver keeps only notes and counts.

    ``source`` is listed on the driver; executors open the same inputs through their own
    `storage_for(config.source)`, so they need read access (e.g. an instance role) themselves.
    """
    config, inputs, work = run.config, run.inputs, run.work
    require_spark()
    result = DayCounts(HourlyCounts(config.schema.grain_seconds))
    if not inputs:  # only empty files: the header-only output needs no cluster
        return result
    from pyspark import StorageLevel

    jvm_log = os.path.join(work, JVM_ERRORS)
    with spark_session(config.spark_master, work) as spark, spark_errors(jvm_log):
        # On disk, not MEMORY_AND_DISK: in local mode the cache shares the driver's heap (1g by
        # default) with the tasks, and a day of cached partitions there ran it out of memory.
        rows = read_inputs(spark, config, inputs).persist(StorageLevel.DISK_ONLY)
        try:
            # The first action fills the cache; the de-duplication then reads it, not the files.
            take_notes(rows, inputs, books)
            books.all_read()
            fold_first_occurrences(rows, config, result)
        finally:
            with contextlib.suppress(Exception):  # a dead session must not hide the real error
                rows.unpersist(blocking=True)
    return result


# --- what runs on the executors ------------------------------------------------------------------


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


# --- what runs on the driver ---------------------------------------------------------------------


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
    collected.sort(key=lambda n: (n[FILE_INDEX], _NOTE_ORDER[n[NOTE]], n[ROW_INDEX]))
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


# --- the session ---------------------------------------------------------------------------------


def require_spark() -> None:
    """Fail with one clear line, before anything is read, when pyspark or Java is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError as err:
        raise UsageError(f"--engine spark needs pyspark, which is not installed: {INSTALL_HINT}"
                         ) from err
    let_pandas_in()
    try:
        # pyspark's Arrow functions (mapInArrow) check pandas' version on the driver.
        importlib.import_module("pandas")
    except ImportError as err:
        raise UsageError(f"--engine spark needs pandas on the driver, which is not installed: "
                         f"{INSTALL_HINT}") from err
    if running_session() is None and not java_found():
        raise UsageError("--engine spark needs Java 17 or later: no java on PATH or in JAVA_HOME")


def let_pandas_in() -> None:
    """The command keeps pandas out of local runs with an import hook (cli._keep_pandas_out);
    an earlier local run in this process (tests, a notebook) may have left it in place."""
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_NoPandas"]


def java_found() -> bool:
    """Whether pyspark can launch a JVM: it runs ``$JAVA_HOME/bin/java``, else ``java``."""
    home = os.environ.get("JAVA_HOME")
    if home:
        return os.access(os.path.join(home, "bin", "java"), os.X_OK)
    return shutil.which("java") is not None


def running_session() -> SparkSession | None:
    """A session already running in this process: spark-submit's, a notebook's, the caller's."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    # The active session is per thread; pyspark's own record of a context is not.
    if session is None and SparkContext._active_spark_context is not None:
        session = SparkSession.builder.getOrCreate()
    return session


@contextlib.contextmanager
def spark_session(master: str, work: str) -> Iterator[SparkSession]:
    """The running session when there is one, left as it is; otherwise a new one on ``master``,
    quiet, stopped afterwards."""
    from pyspark.sql import SparkSession

    running = running_session()
    if running is not None:
        log.info("using the running Spark session; --spark-master does not apply")
        yield running
        return
    if not master.strip():
        raise UsageError("--spark-master is empty: expected e.g. local[*] or yarn")
    log_config = os.path.join(work, "log4j2.properties")
    with open(log_config, "w", encoding="utf-8") as out:
        out.write(log4j_config(os.path.join(work, JVM_ERRORS)))
    builder = (SparkSession.builder.master(master).appName("streamagg")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.extraJavaOptions",
                       f"-Dlog4j2.configurationFile=file:{log_config}"))
    memory = default_driver_memory(master, driver_memory_set(os.environ, spark_defaults()),
                                   physical_memory())
    if memory is not None:
        log.debug("spark.driver.memory=%s (local mode: the tasks share the driver's heap)", memory)
        builder = builder.config("spark.driver.memory", memory)
    try:
        with quiet_pyspark_warnings(), local_python(master):
            session = builder.getOrCreate()
    except Exception as err:  # noqa: BLE001 - any failure to start is one line, exit 1
        raise StreamaggError(f"cannot start Spark on {master}: {failure_summary(err)}") from err
    session.sparkContext.setLogLevel("WARN")
    with quiet_dead_jvm(session):
        try:
            yield session
        except BaseException:
            with contextlib.suppress(Exception):  # a dead JVM cannot stop: report the first error
                session.stop()
            raise
        session.stop()


def log4j_config(errors_path: str) -> str:
    """Spark's log settings: warnings on stderr, and errors also in ``errors_path``."""
    return _LOG4J2 + f"""\
rootLogger.appenderRef.errors.ref = errors
rootLogger.appenderRef.errors.level = error
appender.errors.type = File
appender.errors.name = errors
appender.errors.fileName = {errors_path}
appender.errors.layout.type = PatternLayout
appender.errors.layout.pattern = %p %c{{1}}: %m%n%ex{{3}}
"""


_LOCAL_MASTER = re.compile(r"local(\[[^\]]*\])?")


def default_driver_memory(master: str, already_set: bool, physical_bytes: int | None
                          ) -> str | None:
    """``spark.driver.memory`` for a session this engine starts, or None to leave Spark's.

    In local mode the tasks run in the driver's JVM, so Spark's 1g default heap is shared by
    every core's task; give it what the JVM itself would take (a quarter of the memory). Only
    for plain local masters (a cluster sizes its own driver) and only when nobody chose.
    """
    if already_set or not _LOCAL_MASTER.fullmatch(master.strip()):
        return None
    gib = (physical_bytes or 0) // 4 // 2**30
    return f"{gib}g" if gib > 1 else None


def driver_memory_set(environ: Mapping[str, str], defaults: str) -> bool:
    """Whether the driver's memory is chosen already: spark-submit's arguments for pyspark,
    SPARK_DRIVER_MEMORY, or spark-defaults.conf (whose text is ``defaults``)."""
    submit_args = environ.get("PYSPARK_SUBMIT_ARGS", "")
    return (bool(environ.get("SPARK_DRIVER_MEMORY"))
            or re.search(r"--driver-memory\b|spark\.driver\.memory[\s=]", submit_args) is not None
            or re.search(r"^\s*spark\.driver\.memory[\s=:]", defaults, re.MULTILINE) is not None)


def spark_defaults() -> str:
    """The spark-defaults.conf spark-submit will read: $SPARK_CONF_DIR, else $SPARK_HOME/conf
    (pyspark's own folder when SPARK_HOME is unset); empty when there is none."""
    folder = os.environ.get("SPARK_CONF_DIR")
    if not folder:
        import pyspark

        home = os.environ.get("SPARK_HOME") or os.path.dirname(os.path.abspath(pyspark.__file__))
        folder = os.path.join(home, "conf")
    try:
        with open(os.path.join(folder, "spark-defaults.conf"), encoding="utf-8") as conf:
            return conf.read()
    except OSError:
        return ""


def physical_memory() -> int | None:
    """This machine's memory, or its container's limit when lower (cgroup v2, then v1)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError), open(limit, encoding="ascii") as f:
            total = min(total, int(f.read().strip()))  # "max" (no limit) is a ValueError
    return total


class _Py4JNoise(logging.Filter):
    """py4j logs each failed call to a dead JVM through the root logger, with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"{os.sep}py4j{os.sep}" not in record.pathname


@contextlib.contextmanager
def quiet_dead_jvm(session: SparkSession) -> Iterator[None]:
    """When the JVM dies (out of memory), the error says so in one line: keep the tracebacks
    of py4j's logging and of pyspark's accumulator server (a socket server) off stderr."""
    noise = _Py4JNoise()
    root = logging.getLogger()
    root.addFilter(noise)
    server = getattr(session.sparkContext, "_accumulatorServer", None)
    if server is not None:
        # streamagg uses no accumulators; the server only fails when the JVM hangs up.
        server.handle_error = lambda request, address: log.debug(
            "Spark's accumulator connection failed", exc_info=True)
    try:
        yield
    finally:
        root.removeFilter(noise)


@contextlib.contextmanager
def local_python(master: str) -> Iterator[None]:
    """Local executors run this interpreter (which has streamagg), not whatever python3 is on
    PATH; pyspark reads the choice from PYSPARK_PYTHON when the context starts."""
    if not master.startswith("local") or "PYSPARK_PYTHON" in os.environ:
        yield
        return
    os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        yield
    finally:
        os.environ.pop("PYSPARK_PYTHON", None)


@contextlib.contextmanager
def quiet_pyspark_warnings() -> Iterator[None]:
    """pyspark warns about pandas versions it has not certified; its Arrow path never uses them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyspark\b")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pyspark\b")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pyspark\b")
        yield


@contextlib.contextmanager
def spark_errors(jvm_log: str | None = None) -> Iterator[None]:
    """A failed Spark job (a task that kept failing, a lost executor, a JVM out of memory) is
    one line, exit 1; ``jvm_log`` is where the JVM logs its errors, when known."""
    try:
        yield
    except StreamaggError:
        raise
    except Exception as err:
        if not raised_by_spark(err):
            raise
        raise StreamaggError(f"Spark job failed: {failure_summary(err, jvm_log)}") from err


def raised_by_spark(err: BaseException) -> bool:
    """A pyspark or py4j exception, or one raised in their code (a socket error once the JVM is
    gone is a plain ConnectionError)."""
    if type(err).__module__.startswith(("pyspark", "py4j")):
        return True
    frames = traceback.extract_tb(err.__traceback__)
    return any(f"{os.sep}{name}{os.sep}" in frame.filename
               for frame in frames for name in ("pyspark", "py4j"))


def failure_summary(err: BaseException, jvm_log: str | None = None) -> str:
    """The line that says what went wrong: the JVM running out of memory, a Python worker's
    exception, else the first line."""
    unsaid = False
    try:
        text = str(err)
    except Exception:  # noqa: BLE001 - a Py4JJavaError asks the JVM, which may be gone
        text, unsaid = "", True
    found = _OUT_OF_MEMORY.search(text)
    if found is None and (unsaid or jvm_gone(err)):
        found = _OUT_OF_MEMORY.search(read_head(jvm_log)) if jvm_log else None
        if found is None:
            return "the Spark JVM exited unexpectedly (see Spark's log above)"
    if found is not None:
        return f"the JVM ran out of memory ({found.group(0).strip()}); {MEMORY_HINT}"
    text = text.split("JVM stacktrace:")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        return lines[-1]
    return lines[0]


_OUT_OF_MEMORY = re.compile(r"java\.lang\.OutOfMemoryError[^\n]*")


def jvm_gone(err: BaseException) -> bool:
    """Whether the error is the connection to the JVM failing, not an error the JVM reported."""
    seen: BaseException | None = err
    for _ in range(50):  # a chain may loop
        if seen is None:
            break
        if (isinstance(seen, ConnectionError | EOFError)
                or type(seen).__name__ == "Py4JNetworkError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def read_head(path: str, limit: int = 1 << 20) -> str:
    """The start of a text file, or nothing when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(limit)
    except OSError:
        return ""
