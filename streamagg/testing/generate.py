"""Generate realistic sample days of ad-impression CSV logs, fast and deterministically."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import click

from ..units import human_bytes
from .csv_text import csv_bytes, layout_for
from .rows import build_chunk, plan_chunks
from .vocabulary import (
    ADLOG_COLUMNS,
    ALL_COLUMNS,
    BAD_KIND_NAMES,
    NARROW_COLUMNS,
    REQUIRED_COLUMNS,
    SHAPE_CAMPAIGNS,
    SHAPE_COLUMNS,
    SHAPES,
    WIDE_COLUMNS,
    build_vocabulary,
)

__all__ = [
    "GeneratedDay", "generate_day", "main", "REQUIRED_COLUMNS", "ALL_COLUMNS", "ADLOG_COLUMNS",
    "NARROW_COLUMNS", "WIDE_COLUMNS", "SHAPES",
]

_PART_NAME = re.compile(r"part-\d{5}\.csv(\.gz)?")


@dataclass(frozen=True)
class GeneratedDay:
    """What was written, with the totals a correct run of streamagg must report for it."""

    root: Path
    day: dt.date
    paths: list[Path]
    rows: int  # data rows written, bad rows and duplicates included
    bad_rows: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0
    outside_day: int = 0
    impressions: int = 0  # distinct valid impressions = rows - bad_rows - duplicates
    bytes: int = 0
    bad_row_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def partition(self) -> Path:
        return _partition(self.root, self.day)


def generate_day(
    root: str | os.PathLike[str],
    day: dt.date,
    *,
    rows: int = 100_000,
    files: int = 4,
    duplicate_rate: float = 0.05,
    conflict_rate: float | None = None,
    bad_row_rate: float | None = None,
    late_rate: float | None = None,
    offset_rate: float | None = None,
    gzip_files: int = 0,
    seed: int = 0,
    extra_columns: bool = True,
    vary_layout: bool = False,
    shape: str = "mixed",
) -> GeneratedDay:
    """Write one day of impression logs to ``root/YYYY/MM/DD/part-NNNNN.csv[.gz]``.

    - ``duplicate_rate``: share of rows repeating an earlier impression's id and instant, in
      the same file or an earlier one, often rendered in another datetime format;
      ``conflict_rate`` of those carry a different CAMPAIGN_ID.
    - ``bad_row_rate``: share of rows that are bad under the contract (empty id, campaign or
      datetime, unparseable datetime, wrong number of fields).
    - ``late_rate``: share of impressions whose instant falls just outside the day; half of
      them are written with an offset that makes their local time look inside it.
    - ``offset_rate``: share of rows written with ``T``, ``Z``, fractional seconds or an
      offset (same instant); a tenth of those also get spaces or tabs around id or campaign.
    - ``gzip_files``: how many of the files (the last ones) are gzip-compressed.
    - ``extra_columns``: seven columns, else only the three required ones (same relative order).
    - ``vary_layout``: files differ in column order, header case, BOM, CRLF and blank lines,
      as the contract allows.
    - ``shape``: ``"mixed"`` (the columns of ALL_COLUMNS, long quoted user agents, every rule
      of the contract exercised), or one of three shapes of common ad logs, with one timestamp
      form and duplicates that are exact copies of an earlier row: ``"adlog"``
      (ADLOG_COLUMNS, about 82 bytes a row), ``"narrow"`` (NARROW_COLUMNS, the time first,
      2,000 campaigns, about 94 bytes a row), ``"wide"`` (WIDE_COLUMNS: a quoted page URL and
      a user agent, about 300 bytes a row). A rate left at None takes the shape's default from
      SHAPES.

    Impressions arrive roughly in time order through the files, with a daily traffic curve.
    The same arguments always write byte-identical files. Earlier ``part-NNNNN.csv[.gz]``
    files in the partition are removed first so the day holds exactly what was generated.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    defaults = SHAPES[shape]
    conflict_rate = defaults["conflict_rate"] if conflict_rate is None else conflict_rate
    bad_row_rate = defaults["bad_row_rate"] if bad_row_rate is None else bad_row_rate
    late_rate = defaults["late_rate"] if late_rate is None else late_rate
    offset_rate = defaults["offset_rate"] if offset_rate is None else offset_rate
    _validate(rows, files, duplicate_rate, conflict_rate, bad_row_rate, late_rate, offset_rate,
              gzip_files, seed)
    partition = _partition(Path(root), day)
    partition.mkdir(parents=True, exist_ok=True)
    for stale in partition.iterdir():
        if _PART_NAME.fullmatch(stale.name):
            stale.unlink()

    plan = plan_chunks(rows, files, duplicate_rate, bad_row_rate, seed)
    total_unique = sum(c.rows - c.duplicates - c.bad for c in plan)
    vocab = build_vocabulary(seed, SHAPE_CAMPAIGNS[shape])
    columns = SHAPE_COLUMNS[shape]
    if not extra_columns:
        columns = tuple(c for c in columns if c in REQUIRED_COLUMNS)
    totals = {"bad": 0, "dup": 0, "conflict": 0, "outside": 0}
    bad_kinds = dict.fromkeys(BAD_KIND_NAMES, 0)
    paths: list[Path] = []
    written = 0
    for file_index in range(files):
        compressed = file_index >= files - gzip_files
        path = partition / f"part-{file_index:05d}.csv{'.gz' if compressed else ''}"
        layout = layout_for(columns, file_index, seed, vary_layout)
        tmp = path.with_name(f".{path.name}.tmp")  # a leading dot hides it from readers
        with open(tmp, "wb") as raw:
            out: BinaryIO = raw
            if compressed:
                # mtime=0 and no file name keep compressed output byte-identical across runs;
                # level 6 is what gzip(1) and most log shippers write (Python's default, 9,
                # took 1.3 times as long on a wide file for 3% fewer bytes).
                out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                    compresslevel=6)  # type: ignore[assignment]
            try:
                out.write(layout.header)
                for chunk in (c for c in plan if c.file_index == file_index):
                    if layout.blank_line_after_header and chunk.chunk_index == 0:
                        out.write(layout.newline.encode())
                    cols, damage, stats = build_chunk(
                        chunk, seed, vocab, total_unique, day, conflict_rate, late_rate,
                        offset_rate, columns)
                    for key in totals:
                        totals[key] += stats[key]
                    for kind, count in zip(BAD_KIND_NAMES, stats["kinds"], strict=True):
                        bad_kinds[kind] += int(count)
                    out.write(csv_bytes(cols, damage, layout.order, layout.newline))
                    del cols, damage  # let the next chunk reuse the memory
            finally:
                if compressed:
                    out.close()
        os.replace(tmp, path)
        paths.append(path)
        written += path.stat().st_size

    return GeneratedDay(
        root=Path(root),
        day=day,
        paths=paths,
        rows=rows,
        bad_rows=totals["bad"],
        duplicates=totals["dup"],
        conflicting_duplicates=totals["conflict"],
        outside_day=totals["outside"],
        impressions=total_unique,
        bytes=written,
        bad_row_kinds=bad_kinds,
    )


def _partition(root: Path, day: dt.date) -> Path:
    return root / f"{day.year:04d}" / f"{day.month:02d}" / f"{day.day:02d}"


def _validate(rows: int, files: int, duplicate_rate: float, conflict_rate: float,
              bad_row_rate: float, late_rate: float, offset_rate: float, gzip_files: int,
              seed: int) -> None:
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if files < 1:
        raise ValueError(f"files must be >= 1, got {files}")
    if not 0 <= gzip_files <= files:
        raise ValueError(f"gzip_files must be between 0 and files ({files}), got {gzip_files}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rates = {
        "duplicate_rate": duplicate_rate,
        "conflict_rate": conflict_rate,
        "bad_row_rate": bad_row_rate,
        "late_rate": late_rate,
        "offset_rate": offset_rate,
    }
    for name, value in rates.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")
    if duplicate_rate + bad_row_rate >= 1.0:
        raise ValueError("duplicate_rate + bad_row_rate must be below 1")



def _iter_sizes(paths: Sequence[Path]) -> Iterator[tuple[Path, int]]:
    for path in paths:
        yield path, path.stat().st_size



@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Root of the date partitions; files go to OUT/YYYY/MM/DD/.")
@click.option("--date", "day", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="The day to generate, YYYY-MM-DD.")
@click.option("--rows", default=100_000, show_default=True, type=click.IntRange(min=0),
              help="Data rows in all files, bad rows and duplicates included.")
@click.option("--files", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--duplicate-rate", default=0.05, show_default=True,
              type=click.FloatRange(0, 1, max_open=True))
@click.option("--shape", type=click.Choice(list(SHAPES)), default="mixed", show_default=True,
              help="mixed: every rule of the contract exercised (datetime forms, padding, "
                   "conflicting duplicates, bad and late rows); adlog, narrow, wide: like common "
                   "ad logs, one timestamp form, duplicates that are exact copies; adlog and "
                   "narrow (the time first, 2,000 campaigns) with seven short fields, wide with "
                   "a long user agent and a quoted page URL.")
@click.option("--conflict-rate", type=click.FloatRange(0, 1),
              help="Share of duplicates carrying a different CAMPAIGN_ID "
                   "[default: 0.2 mixed, 0 the others].")
@click.option("--bad-row-rate", type=click.FloatRange(0, 1, max_open=True),
              help="[default: 0.0005 mixed, 0 the others]")
@click.option("--late-rate", type=click.FloatRange(0, 1),
              help="Share of impressions just outside the day "
                   "[default: 0.001 mixed, 0 the others].")
@click.option("--offset-rate", type=click.FloatRange(0, 1),
              help="Share of rows written with T, Z, fractions or +HH:MM offsets "
                   "[default: 0.05 mixed, 0 the others].")
@click.option("--gzip-files", default=0, show_default=True, type=click.IntRange(min=0),
              help="How many of the files (the last ones) are .csv.gz.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--extra-columns/--no-extra-columns", default=True, show_default=True,
              help="Seven columns, or only the three required ones.")
@click.option("--vary-layout", is_flag=True,
              help="Vary column order, header case, BOM and line ends between files.")
def main(out: Path, day: dt.datetime, rows: int, files: int, duplicate_rate: float,
         shape: str, conflict_rate: float | None, bad_row_rate: float | None,
         late_rate: float | None, offset_rate: float | None, gzip_files: int, seed: int,
         extra_columns: bool, vary_layout: bool) -> None:
    """Write a realistic sample day of impression logs for streamagg."""
    try:
        result = generate_day(
            out, day.date(), rows=rows, files=files, duplicate_rate=duplicate_rate,
            conflict_rate=conflict_rate, bad_row_rate=bad_row_rate, late_rate=late_rate,
            offset_rate=offset_rate, gzip_files=gzip_files, seed=seed,
            extra_columns=extra_columns, vary_layout=vary_layout, shape=shape,
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    for path, size in _iter_sizes(result.paths):
        click.echo(f"{path}\t{human_bytes(size)}")
    click.echo(
        f"wrote {result.rows:,} rows in {len(result.paths)} files, "
        f"{human_bytes(result.bytes)} total, to {result.partition}: "
        f"{result.impressions:,} impressions, {result.duplicates:,} duplicates "
        f"({result.conflicting_duplicates:,} conflicting), {result.bad_rows:,} bad rows, "
        f"{result.outside_day:,} outside the day"
    )


if __name__ == "__main__":
    main()
