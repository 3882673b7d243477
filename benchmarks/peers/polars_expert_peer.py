"""Expert peer: Polars as its users write the job, typed scan_csv, unique, group_by, streaming."""

from __future__ import annotations

import polars as pl
from _common import CAMPAIGN, ID, TIME, list_inputs, parse_args, read_header

# The schema a Polars user would declare for the logs: every column typed, nothing inferred.
TYPES: dict[str, pl.DataType] = {
    "IMPRESSION_ID": pl.String(), "IMPRESSION_DATETIME": pl.Datetime("us"),
    "CAMPAIGN_ID": pl.Int64(), "AD_ID": pl.Int64(), "SITE_ID": pl.Int64(),
    "COUNTRY": pl.String(), "COST": pl.Float64(), "SITE_DOMAIN": pl.String(),
    "USER_AGENT": pl.String(), "REFERRER": pl.String(), "CREATIVE_ID": pl.Int64(),
    "PLACEMENT_ID": pl.Int64(), "DEVICE": pl.String(), "BID_PRICE": pl.Float64(),
}


def build(files: list[str], keep: str) -> pl.LazyFrame:
    schema = {name: TYPES[name] for name in read_header(files[0])}
    rows = pl.scan_csv(files, schema=schema).select(ID, TIME, CAMPAIGN)
    # keep="any" is right only where duplicates are exact copies (not mixed); "first" with
    # maintain_order follows file then row order, as the contract's first occurrence does.
    if keep == "first":
        firsts = rows.unique(subset=[ID, TIME], keep="first", maintain_order=True)
    else:
        firsts = rows.unique(subset=[ID, TIME], keep="any")
    return (
        firsts.group_by(pl.col(TIME).dt.truncate("1h").alias("HOUR"), CAMPAIGN)
        .agg(pl.len().alias("IMPRESSIONS"))
        .sort("HOUR", CAMPAIGN)
        .select(CAMPAIGN, pl.col("HOUR").dt.strftime("%Y-%m-%d %H:00:00"), "IMPRESSIONS")
    )


def main() -> None:
    args = parse_args(__doc__ or "", keep=True)
    files = [str(p) for p in list_inputs(args.source, args.date)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build(files, args.keep).collect(engine="streaming").write_csv(args.out)


if __name__ == "__main__":
    main()
