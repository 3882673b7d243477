"""Where the counting runs: each engine turns a day's inputs into the same hourly counts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..aggregate import HourlyCounts
from ..config import Config
from ..outputs.manifest import InputRecord
from ..outputs.rejects import RejectsFile
from ..sources import InputFile, Storage

ProgressCallback = Callable[[InputFile], None]


@dataclass
class DayCounts:
    """An engine's result: the folded counts and what reading and de-duplication found."""

    counts: HourlyCounts
    files: list[InputRecord] = field(default_factory=list)
    rows_read: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0
    empty_files: int = 0  # non-empty objects holding no header (an empty .gz, a lone BOM)
    # Rows that passed validation, per time bucket (instant // grain): with the counts this
    # gives duplicates per bucket for the manifest's hourly section. Empty if not tracked.
    clean_per_bucket: dict[int, int] = field(default_factory=dict)


class Engine(Protocol):
    """Reads every input in order, sets bad rows aside in ``rejects``, de-duplicates, counts."""

    def __call__(self, config: Config, source: Storage, inputs: list[InputFile], work: str,
                 rejects: RejectsFile, on_file_done: ProgressCallback | None) -> DayCounts: ...


def engine_for(name: str) -> Engine:
    """The engine named by ``--engine``."""
    if name == "local":
        from .local import count_day

        return count_day
    if name == "spark":
        from .spark import count_day as count_day_on_spark

        return count_day_on_spark
    raise ValueError(f"unknown engine {name!r}")
