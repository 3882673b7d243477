"""One frozen, validated run configuration: the day, where to read and write, limits, columns."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction

from . import container
from .budget import MIN_MEMORY_LIMIT
from .errors import UsageError
from .registry import DEDUPE_BACKENDS, ENGINES
from .units import human_bytes

DEFAULT_SOURCE = "./data"
DEFAULT_INITIALS = "SA"
DEFAULT_CHUNK_SIZE = 100_000
# What --help says of `default_memory_limit`.
DEFAULT_MEMORY_LIMIT_HELP = "256MB, or 3/4 of the container's memory limit if smaller"
DEFAULT_SPARK_MASTER = "local[*]"  # when --spark-master is not given and no session runs
LOG_FORMATS = ("text", "json")
# --spark-env: ship the driver's environment to cluster executors (auto), never (none), or a
# prepared archive; Spark unpacks these archive kinds (spark.archives).
SPARK_ENV_CHOICES = ("auto", "none")
SPARK_ENV_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")

# Instants are nanoseconds since 1970 in 64 bits (as in pyarrow and the output's sort): a day
# outside these can hold no impression, so it is refused rather than read as all bad rows.
FIRST_DAY = dt.date(1677, 9, 22)
LAST_DAY = dt.date(2262, 4, 10)
# Sizes, row counts and bad-row counts end up in signed 64-bit integers (Arrow lengths and
# offsets, numpy arrays, sqlite's pragmas): a larger value is refused as a usage error here,
# not met as an OverflowError once reading has started.
LARGEST = 2**63 - 1

_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_INITIALS_RE = re.compile(r"[A-Za-z]{1,8}", re.ASCII)
_COUNT_RE = re.compile(r"\s*(\d+)\s*", re.ASCII)
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(i?B?)\s*", re.ASCII | re.IGNORECASE)
_PERCENT_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*", re.ASCII)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
# More digits than this cannot be within LARGEST, whatever the unit (19 digits reach 2**63).
_MAX_DIGITS = 20


def parse_day(text: object) -> dt.date:
    """The day as ``YYYY-MM-DD`` text, a date, or a datetime (an Airflow ``logical_date``: its
    date, in UTC when it carries a zone); anything else is a usage error."""
    if isinstance(text, dt.datetime):
        moment = text.astimezone(dt.UTC) if text.utcoffset() is not None else text
        day = dt.date(moment.year, moment.month, moment.day)
    elif isinstance(text, dt.date):
        day = dt.date(text.year, text.month, text.day)  # a subclass's extras do not travel
    elif isinstance(text, str) and _DAY_RE.fullmatch(text):
        try:
            day = dt.date.fromisoformat(text)
        except ValueError as err:
            raise UsageError(f"invalid date {text!r}: {err}") from err
    else:
        raise UsageError(f"invalid date {shown(text)}: expected YYYY-MM-DD")
    check_day(day)
    return day


def check_day(day: dt.date) -> None:
    """Refuse a day no impression can fall on (see `FIRST_DAY`): exit 2, nothing read."""
    if not FIRST_DAY <= day <= LAST_DAY:
        raise UsageError(f"invalid date {day.isoformat()}: streamagg handles the days from "
                         f"{FIRST_DAY} to {LAST_DAY} (64-bit nanosecond timestamps)")


def day_stamp(day: dt.date, separator: str = "") -> str:
    """``YYYY<sep>MM<sep>DD`` with a four-digit year whatever the platform's ``strftime``."""
    return f"{day.year:04d}{separator}{day.month:02d}{separator}{day.day:02d}"


def shown(value: object, limit: int = 40) -> str:
    """A value as an error line quotes it: its repr, cut short (an option may be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def check_spark_env(value: object) -> None:
    """``auto``, ``none`` or the path of an existing archive Spark can unpack (usage error else)."""
    if value in SPARK_ENV_CHOICES:
        return
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"invalid --spark-env {shown(value)}: expected auto, none or an "
                         "archive's path")
    if "\n" in value or "\r" in value or "\x00" in value:
        raise UsageError("invalid --spark-env: control characters in the value")
    if not value.endswith(SPARK_ENV_SUFFIXES):
        raise UsageError(f"invalid --spark-env {shown(value)}: expected auto, none or an archive "
                         f"ending in {', '.join(SPARK_ENV_SUFFIXES)}")
    if not os.path.isfile(value):
        raise UsageError(f"invalid --spark-env {shown(value)}: no such file")


def parse_size(text: object, what: str = "size") -> int:
    """``256MB``, ``1GB``, ``1.5GiB``, ``512k`` or a byte count, at most `LARGEST` bytes; binary
    units (1 MB = 2**20 bytes), computed exactly (no float rounds a large count)."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = _SIZE_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise UsageError(f"invalid {what} {shown(text)}: expected e.g. 256MB or 1GB")
        number, unit, _ = match.groups()
        if len(number.split(".")[0]) > _MAX_DIGITS:
            raise UsageError(f"invalid {what} {shown(text)}: at most {format_size(LARGEST)}")
        size = int(Fraction(number if not number.endswith(".") else number[:-1])
                   * _UNITS[unit.upper()])
    if not 0 <= size <= LARGEST:
        raise UsageError(f"invalid {what} {shown(text)}: expected 0 to {format_size(LARGEST)}")
    return size


def format_size(size: int) -> str:
    """A byte count as the largest whole binary unit that writes it exactly: ``256MB``."""
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]:,}{unit}B"
    return f"{size:,} bytes"


def parse_count(text: object, what: str, *, least: int = 0) -> int:
    """A whole number from ``least`` to `LARGEST`: an int, or its ASCII digits as text."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _COUNT_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None or len(match.group(1)) > _MAX_DIGITS:
            value = -1
        else:
            value = int(match.group(1))
    if not least <= value <= LARGEST:
        raise UsageError(f"invalid {what} {shown(text)}: expected a whole number from "
                         f"{least:,} to {LARGEST:,}")
    return value


@dataclass(frozen=True)
class BadRowLimit:
    """How many bad rows a run tolerates: an absolute count or a fraction of rows read."""

    count: int | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, text: object) -> BadRowLimit:
        """``100`` (a count), ``1%`` (a share of rows read), or a `BadRowLimit` checked as it is."""
        if isinstance(text, BadRowLimit):
            count, fraction = text.count, text.fraction
            if fraction is None and count is not None:
                return cls(count=parse_count(count, "--max-bad-rows"))
            if (count is None and isinstance(fraction, int | float)
                    and not isinstance(fraction, bool) and 0 <= fraction <= 1):
                return cls(fraction=float(fraction))
        else:
            match = _PERCENT_RE.fullmatch(text) if isinstance(text, str) else None
            if match is not None and len(match.group(1).split(".")[0]) <= 3:
                fraction = float(match.group(1)) / 100
                if fraction <= 1:
                    return cls(fraction=fraction)
            elif match is None:
                with contextlib.suppress(UsageError):
                    return cls(count=parse_count(text, "--max-bad-rows"))
        raise UsageError(f"invalid --max-bad-rows {shown(text)}: expected a count (e.g. 100) "
                         "or a percentage up to 100% (e.g. 1%)")

    def allowed(self, rows_read: int) -> int:
        if self.count is not None:
            return self.count
        return int(rows_read * (self.fraction or 0.0))

    def __str__(self) -> str:
        if self.count is not None:
            return str(self.count)
        return f"{(self.fraction or 0.0) * 100:g}%"


@dataclass(frozen=True)
class Schema:
    """Which columns hold the key, the time and the group, and the time grain of the counts."""

    id_column: str = "IMPRESSION_ID"
    time_column: str = "IMPRESSION_DATETIME"
    group_column: str = "CAMPAIGN_ID"
    count_column: str = "IMPRESSIONS"
    bucket_column: str = "HOUR"
    grain_seconds: int = 3600

    @property
    def required(self) -> tuple[str, str, str]:
        return (self.id_column, self.time_column, self.group_column)

    def __post_init__(self) -> None:
        columns = (*self.required, self.count_column, self.bucket_column)
        if not all(isinstance(name, str) for name in columns):
            raise UsageError(f"schema columns must be text, got {shown(columns, 120)}")
        names = [n.strip().upper() for n in self.required]
        if len(set(names)) != 3 or not all(names):
            raise UsageError(f"schema columns must be three distinct names, "
                             f"got {shown(self.required, 120)}")
        grain = self.grain_seconds
        if (not isinstance(grain, int) or isinstance(grain, bool) or grain <= 0
                or 86400 % grain):
            raise UsageError(f"invalid grain_seconds {shown(grain)}: it must divide a day evenly")


def default_memory_limit() -> int:
    """``--memory-limit`` when none is given: the one place that decides it (256MB, or three
    quarters of the container's memory limit when that is smaller: `streamagg.container`)."""
    return container.default_memory_limit(container.container_memory_limit())


_TEXT_FIELDS = ("source", "dest", "tmp_dir", "endpoint_url", "state", "spark_master")
_PATH_FIELDS = ("source", "dest", "tmp_dir", "state")
# What a local file system holds (Linux's NAME_MAX and PATH_MAX, in bytes): a longer name can
# never be read or written, so it is bad usage, not an OSError met once the day is read. The
# day's folders and file names take up to 80 more bytes below a root.
NAME_MAX = 255
PATH_MAX = 4096 - 80
_EMPTY_IS_DEFAULT = ("dest", "endpoint_url", "state")


def check_local_path(option: str, value: str) -> None:
    """A local path (not an s3:// URI) whose names the file system can hold."""
    scheme, sep, rest = value.partition("://")
    if sep and scheme != "file":
        return
    try:
        path = os.fsencode(rest if sep else value)
    except UnicodeEncodeError:  # a lone surrogate: no file name holds it
        raise UsageError(f"invalid {option} {shown(value)}: not a name a file system "
                         "holds") from None
    if len(path) > PATH_MAX:
        raise UsageError(f"invalid {option}: the path is {len(path):,} bytes long, more than "
                         f"a file system holds ({PATH_MAX:,} with the day's names)")
    if any(len(part) > NAME_MAX for part in path.split(b"/")):
        raise UsageError(f"invalid {option}: a name in the path is longer than {NAME_MAX} "
                         "bytes, more than a file system holds")


@dataclass(frozen=True)
class Config:
    """Everything one run needs, validated on construction so a bad option fails before any I/O.

    Its field defaults are the command's defaults, and each value is parsed here, once: the
    command passes the text it was given (``day="2021-01-30"``, ``memory_limit="1GB"``,
    ``max_bad_rows="1%"``, ``chunk_size="5000"``), a library caller may pass the text or the
    value (a date or datetime, a byte count, a `BadRowLimit`). A value of the wrong kind is a
    `UsageError`, never a TypeError.
    """

    day: dt.date
    source: str = DEFAULT_SOURCE
    dest: str | None = None  # default: <source>/results
    initials: str = DEFAULT_INITIALS
    chunk_size: int = DEFAULT_CHUNK_SIZE
    memory_limit: int = field(default_factory=default_memory_limit)
    dedupe: str = "spill"
    tmp_dir: str | None = None  # default: the system's temporary folder
    engine: str = "local"
    endpoint_url: str | None = None
    max_bad_rows: BadRowLimit = field(default_factory=lambda: BadRowLimit(fraction=0.01))
    dry_run: bool = False
    log_format: str = "text"
    schema: Schema = field(default_factory=Schema)
    workers: int | None = None
    # None: DEFAULT_SPARK_MASTER, unless a session already runs (spark-submit's), used as it is.
    spark_master: str | None = None
    spark_env: str = "auto"  # what the executors run: auto, none or an archive's path
    plot: bool = False  # also write a PNG picture of the day beside the output
    incremental: bool = False  # fold only new files into the day's kept state
    state: str | None = None  # root of the kept states; default: beside the results

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("day", parse_day(self.day))
        put("chunk_size", parse_count(self.chunk_size, "--chunk-size", least=1))
        put("memory_limit", parse_size(self.memory_limit, "--memory-limit"))
        put("max_bad_rows", BadRowLimit.parse(self.max_bad_rows))
        if not isinstance(self.initials, str) or not _INITIALS_RE.fullmatch(self.initials):
            raise UsageError(f"invalid --initials {shown(self.initials)}: expected 1 to 8 ASCII "
                             "letters")
        if self.memory_limit < MIN_MEMORY_LIMIT:
            raise UsageError(
                f"--memory-limit {human_bytes(self.memory_limit)} is below the minimum of "
                f"{human_bytes(MIN_MEMORY_LIMIT)} (--memory-limit {format_size(MIN_MEMORY_LIMIT)})"
            )
        if not isinstance(self.dedupe, str) or self.dedupe not in DEDUPE_BACKENDS:
            raise UsageError(f"invalid --dedupe {shown(self.dedupe)}: expected "
                             f"{DEDUPE_BACKENDS.expected()}")
        if not isinstance(self.engine, str) or self.engine not in ENGINES:
            raise UsageError(f"--engine {shown(self.engine)} is not available: expected "
                             f"{ENGINES.expected()}")
        if self.log_format not in LOG_FORMATS:
            raise UsageError(f"invalid --log-format {shown(self.log_format)}: expected text or "
                             "json")
        if self.workers is not None:
            put("workers", parse_count(self.workers, "workers", least=1))
        if not isinstance(self.schema, Schema):
            raise UsageError(f"invalid schema {shown(self.schema)}: expected a Schema")
        for flag in ("dry_run", "plot", "incremental"):
            if not isinstance(getattr(self, flag), bool):
                raise UsageError(f"invalid {flag} {shown(getattr(self, flag))}: expected True "
                                 "or False")
        check_spark_env(self.spark_env)
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            option = "--" + name.replace("_", "-")
            if value == "" and name in _EMPTY_IS_DEFAULT:
                put(name, None)  # as an empty STREAMAGG_DEST=, say: the default
                continue
            if value is None and name != "source":
                continue
            if not isinstance(value, str):
                raise UsageError(f"invalid {option} {shown(value)}: expected text")
            if "\n" in value or "\r" in value or "\x00" in value:
                raise UsageError(f"invalid {option}: control characters in the value")
            if not value.strip():
                raise UsageError(f"invalid {option}: the value is empty")
            if name in _PATH_FIELDS:
                check_local_path(option, value)

    @property
    def resolved_dest(self) -> str:
        return self.dest if self.dest else self.source.rstrip("/") + "/results"
