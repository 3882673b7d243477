"""Where the counting runs: each engine turns a day's inputs into the same hourly counts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, cast

from ..aggregate import HourlyCounts
from ..columns import BadRow
from ..config import Config
from ..dedup import KeySetState
from ..registry import ENGINES
from ..sources import InputFile, Storage


@dataclass(frozen=True)
class RunContext:
    """What an engine reads and where it may write: the run's settings, inputs and work folder."""

    config: Config
    source: Storage
    inputs: list[InputFile]
    work: str  # a private local folder, removed after the run
    # The day's kept key set (--incremental): start from it and keep it. Only the local
    # engine keeps one; the pipeline passes it to no other.
    keys: KeySetState | None = None


@dataclass(frozen=True)
class FileResult:
    """What reading one input found, besides its clean rows and its bad rows."""

    rows_read: int
    bad_rows: int
    empty: bool = False  # a non-empty object holding no header (an empty .gz, a lone BOM)


class Books(Protocol):
    """The day's books, kept by the pipeline for every engine: an engine only reports to them.

    Bad rows stream in as they are found (a row or a batch at a time, never a whole day), so a
    count limit can stop the reading early; ``file_done`` comes once per input, in file order.
    """

    def bad_rows(self, rows: Iterable[BadRow], *, read_so_far: int = 0) -> None:
        """Set bad rows aside; ``read_so_far``: rows of the current file not yet in a
        `file_done` (they count for a percentage limit and the message)."""

    def file_done(self, item: InputFile, result: FileResult) -> None:
        """One input is read: record it, tell the observer."""

    def all_read(self) -> None:
        """Every input is read: the final bad-row check, before the costly de-duplication."""


@dataclass
class DayCounts:
    """An engine's result: the folded counts and what de-duplication found."""

    counts: HourlyCounts
    duplicates: int = 0
    conflicting_duplicates: int = 0
    # Rows that passed validation, per time bucket (instant // grain): with the counts this
    # gives duplicates per bucket for the manifest's hourly section.
    clean_per_bucket: dict[int, int] = field(default_factory=dict)
    # The peak resident memory of a JVM the engine drove (Spark's driver), when it has one.
    jvm_peak_memory_bytes: int | None = None


class Engine(Protocol):
    """Reads every input in order, reports each file and its bad rows to ``books``,
    de-duplicates and counts."""

    def __call__(self, run: RunContext, books: Books) -> DayCounts: ...


def engine_for(name: str) -> Engine:
    """The engine named by ``--engine``, imported on first use (pyspark only for Spark)."""
    return cast(Engine, ENGINES.load(name))
