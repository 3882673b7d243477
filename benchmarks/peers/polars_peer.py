"""Benchmark peer: the day's aggregate as one lazy Polars query on the streaming engine."""

from __future__ import annotations

import polars as pl
from _common import (
    CAMPAIGN,
    DATETIME_PATTERN,
    HOUR_US,
    ID,
    TIME,
    list_inputs,
    parse_args,
    write_output,
)

BLANKS = " \t"


def _normalise(names: list[str]) -> list[str]:
    # Header names match case-insensitively, after trimming spaces and a byte-order mark.
    return [name.strip().lstrip("\ufeff").strip().upper() for name in names]


def _scan(path: str) -> pl.LazyFrame:
    if path.endswith(".gz"):
        # scan_csv cannot stream gzip; such a file is decompressed in memory instead.
        frame = pl.read_csv(path, infer_schema=False, with_column_names=_normalise)
        return frame.lazy().select(ID, TIME, CAMPAIGN)
    return pl.scan_csv(path, infer_schema=False, with_column_names=_normalise).select(
        ID, TIME, CAMPAIGN)


def build(files: list[str]) -> pl.LazyFrame:
    text = pl.col(TIME).str.strip_chars(BLANKS)
    parts = text.str.extract_groups(DATETIME_PATTERN)
    base = pl.concat_str(parts.struct.field("1"), pl.lit(" "), parts.struct.field("2"))
    base_us = base.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False).dt.epoch("us")
    fraction_us = (parts.struct.field("3").str.pad_end(6, "0").str.slice(0, 6)
                   .cast(pl.Int64).fill_null(0))
    zone = parts.struct.field("4")
    sign = pl.when(zone.str.starts_with("-")).then(-1).otherwise(1)
    offset_s = pl.when(zone.str.len_chars() == 6).then(
        sign * (zone.str.slice(1, 2).cast(pl.Int64) * 3600
                + zone.str.slice(4, 2).cast(pl.Int64) * 60)
    ).otherwise(0)
    instant = base_us + fraction_us - offset_s * 1_000_000

    # The concatenation is in file order, so the row index orders first occurrences.
    rows = pl.concat([_scan(f) for f in files], how="vertical").with_row_index("seq")
    valid = rows.select(
        "seq",
        pl.col(ID).str.strip_chars(BLANKS).alias("id"),
        pl.col(CAMPAIGN).str.strip_chars(BLANKS).alias("campaign"),
        instant.alias("instant"),
    ).filter(
        (pl.col("id") != "") & (pl.col("campaign") != "") & pl.col("instant").is_not_null()
    )
    firsts = valid.group_by("id", "instant").agg(pl.col("campaign").min_by("seq"))
    return firsts.group_by(
        "campaign", (pl.col("instant") // HOUR_US).alias("hour")
    ).agg(pl.len().alias("impressions"))


def main() -> None:
    args = parse_args(__doc__ or "")
    files = [str(p) for p in list_inputs(args.source, args.date)]
    result = build(files).collect(engine="streaming")
    write_output(args.out, result.select("campaign", "hour", "impressions").iter_rows())


if __name__ == "__main__":
    main()
