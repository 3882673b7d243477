"""One frozen, validated run configuration: the day, where to read and write, limits, columns."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field

from .budget import MIN_MEMORY_LIMIT
from .errors import UsageError
from .registry import DEDUPE_BACKENDS, ENGINES
from .units import human_bytes

DEFAULT_SOURCE = "./data"
DEFAULT_INITIALS = "SA"
DEFAULT_MEMORY_LIMIT = "256MB"
LOG_FORMATS = ("text", "json")
# --spark-env: ship the driver's environment to cluster executors (auto), never (none), or a
# prepared archive; Spark unpacks these archive kinds (spark.archives).
SPARK_ENV_CHOICES = ("auto", "none")
SPARK_ENV_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")

# Instants are nanoseconds since 1970 in 64 bits (as in pyarrow and the output's sort): a day
# outside these can hold no impression, so it is refused rather than read as all bad rows.
FIRST_DAY = dt.date(1677, 9, 22)
LAST_DAY = dt.date(2262, 4, 10)

_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INITIALS_RE = re.compile(r"[A-Za-z]{1,8}")
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_day(text: str) -> dt.date:
    """``YYYY-MM-DD`` as a real calendar date; anything else is a usage error."""
    if not isinstance(text, str) or not _DAY_RE.fullmatch(text):
        raise UsageError(f"invalid date {text!r}: expected YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(text)
    except ValueError as err:
        raise UsageError(f"invalid date {text!r}: {err}") from err
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


def check_spark_env(value: object) -> None:
    """``auto``, ``none`` or the path of an existing archive Spark can unpack (usage error else)."""
    if value in SPARK_ENV_CHOICES:
        return
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"invalid spark-env {value!r}: expected auto, none or an archive's path")
    if "\n" in value or "\r" in value or "\x00" in value:
        raise UsageError("invalid spark-env: control characters in the value")
    if not value.endswith(SPARK_ENV_SUFFIXES):
        raise UsageError(f"invalid spark-env {value!r}: expected auto, none or an archive ending "
                         f"in {', '.join(SPARK_ENV_SUFFIXES)}")
    if not os.path.isfile(value):
        raise UsageError(f"invalid spark-env {value!r}: no such file")


def parse_size(text: str | int) -> int:
    """``256MB``, ``1GB``, ``512MiB`` or a byte count; binary units (1 MB = 2**20 bytes)."""
    if isinstance(text, int):
        return text
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise UsageError(f"invalid size {text!r}: expected e.g. 256MB or 1GB")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper().rstrip("B").rstrip("I")])


@dataclass(frozen=True)
class BadRowLimit:
    """How many bad rows a run tolerates: an absolute count or a fraction of rows read."""

    count: int | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, text: str | int) -> BadRowLimit:
        if isinstance(text, int):
            text = str(text)
        value = text.strip()
        try:
            if value.endswith("%"):
                fraction = float(value[:-1]) / 100
                if not 0 <= fraction <= 1:
                    raise ValueError
                return cls(fraction=fraction)
            count = int(value)
            if count < 0:
                raise ValueError
            return cls(count=count)
        except ValueError as err:
            raise UsageError(
                f"invalid --max-bad-rows {text!r}: expected a count (e.g. 100) or a percentage "
                "(e.g. 1%)"
            ) from err

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
        names = [n.strip().upper() for n in self.required]
        if len(set(names)) != 3 or not all(names):
            raise UsageError(f"schema columns must be three distinct names, got {self.required}")
        if self.grain_seconds <= 0 or 86400 % self.grain_seconds:
            raise UsageError("grain_seconds must divide a day evenly")


@dataclass(frozen=True)
class Config:
    """Everything one run needs; validated on construction so a bad option fails before any I/O."""

    day: dt.date
    source: str = DEFAULT_SOURCE
    dest: str | None = None
    initials: str = DEFAULT_INITIALS
    chunk_size: int = 100_000
    memory_limit: int = field(default=parse_size(DEFAULT_MEMORY_LIMIT))
    dedupe: str = "spill"
    tmp_dir: str | None = None
    engine: str = "local"
    endpoint_url: str | None = None
    max_bad_rows: BadRowLimit = field(default_factory=lambda: BadRowLimit(fraction=0.01))
    dry_run: bool = False
    log_format: str = "text"
    schema: Schema = field(default_factory=Schema)
    workers: int | None = None
    spark_master: str = "local[*]"  # ignored when a Spark session is already running
    spark_env: str = "auto"  # what the executors run: auto, none or an archive's path
    plot: bool = False  # also write a PNG picture of the day beside the output
    incremental: bool = False  # fold only new files into the day's kept state
    state: str | None = None  # root of the kept states; default: beside the results

    def __post_init__(self) -> None:
        if isinstance(self.day, str):
            object.__setattr__(self, "day", parse_day(self.day))
        if isinstance(self.memory_limit, str):
            object.__setattr__(self, "memory_limit", parse_size(self.memory_limit))
        if isinstance(self.max_bad_rows, (str, int)):
            object.__setattr__(self, "max_bad_rows", BadRowLimit.parse(self.max_bad_rows))
        if not isinstance(self.day, dt.date):
            raise UsageError(f"invalid date {self.day!r}")
        check_day(self.day)
        if not isinstance(self.initials, str) or not _INITIALS_RE.fullmatch(self.initials):
            raise UsageError(f"invalid initials {self.initials!r}: expected 1 to 8 ASCII letters")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise UsageError(f"invalid chunk size {self.chunk_size!r}: expected an integer >= 1")
        if self.memory_limit < MIN_MEMORY_LIMIT:
            raise UsageError(
                f"memory limit {human_bytes(self.memory_limit)} is below the minimum of "
                f"{human_bytes(MIN_MEMORY_LIMIT)} (--memory-limit {MIN_MEMORY_LIMIT // 2**20}MB)"
            )
        if self.dedupe not in DEDUPE_BACKENDS:
            raise UsageError(f"invalid dedupe backend {self.dedupe!r}: expected "
                             f"{DEDUPE_BACKENDS.expected()}")
        if self.engine not in ENGINES:
            raise UsageError(
                f"engine {self.engine!r} is not available: expected {ENGINES.expected()}")
        if self.log_format not in LOG_FORMATS:
            raise UsageError(f"invalid log format {self.log_format!r}: expected text or json")
        if self.workers is not None and self.workers < 1:
            raise UsageError("workers must be >= 1")
        check_spark_env(self.spark_env)
        for name in ("source", "dest", "tmp_dir", "endpoint_url", "state"):
            value = getattr(self, name)
            if value is not None and ("\n" in value or "\r" in value or "\x00" in value):
                raise UsageError(
                    f"invalid {name.replace('_', '-')}: control characters in the value")

    @property
    def resolved_dest(self) -> str:
        return self.dest if self.dest else self.source.rstrip("/") + "/results"

    @property
    def day_path(self) -> str:
        """The partition's relative folder, ``YYYY/MM/DD``."""
        return day_stamp(self.day, "/")

    @property
    def output_name(self) -> str:
        return f"daily_agg_{day_stamp(self.day)}_{self.initials}.csv"

    @property
    def manifest_name(self) -> str:
        return f"_daily_agg_{day_stamp(self.day)}_{self.initials}.manifest.json"

    @property
    def rejects_name(self) -> str:
        return f"_daily_agg_{day_stamp(self.day)}_{self.initials}.rejects.csv"

    @property
    def state_name(self) -> str:
        return f"_daily_agg_{day_stamp(self.day)}_{self.initials}.state"

    @property
    def plot_name(self) -> str:
        return f"_daily_agg_{day_stamp(self.day)}_{self.initials}.png"
