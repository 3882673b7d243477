"""Benchmark peer: the naive pandas job, reading every file whole into one DataFrame."""

from __future__ import annotations

import pandas as pd
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


def main() -> None:
    args = parse_args(__doc__ or "")
    # As the original assignment would: each file read whole, then one big concat.
    frames = []
    for path in list_inputs(args.source, args.date):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        frame.columns = [name.strip().upper() for name in frame.columns]
        frames.append(frame)
    day = pd.concat(frames, ignore_index=True)

    day[ID] = day[ID].str.strip(BLANKS)
    day[CAMPAIGN] = day[CAMPAIGN].str.strip(BLANKS)
    times = day[TIME].str.strip(BLANKS)
    well_formed = times.str.fullmatch(DATETIME_PATTERN.strip("^$"))
    day["instant"] = pd.to_datetime(
        times.where(well_formed), format="ISO8601", utc=True, errors="coerce")
    day = day[(day[ID] != "") & (day[CAMPAIGN] != "") & day["instant"].notna()]

    # keep="first" follows the concat order: files in order, rows in file order.
    day = day.drop_duplicates(subset=[ID, "instant"], keep="first")
    epoch_us = day["instant"].dt.tz_convert(None).astype("datetime64[us]").astype("int64")
    counts = day.groupby([day[CAMPAIGN], epoch_us // HOUR_US]).size()
    write_output(args.out, ((c, int(h), int(n)) for (c, h), n in counts.items()))


if __name__ == "__main__":
    main()
