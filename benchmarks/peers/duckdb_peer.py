"""Benchmark peer: the day's aggregate in DuckDB SQL, with DuckDB's default settings."""

from __future__ import annotations

import duckdb
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

# Rows with the wrong number of fields are bad rows, so skipping them (ignore_errors) is right.
# Insertion order is kept, so a table's rowid is file order then row order: what decides the
# first occurrence of a duplicate.
LOAD = f"""
CREATE TABLE impressions AS
SELECT trim({ID}, ' \t') AS id, trim({TIME}, ' \t') AS ts, trim({CAMPAIGN}, ' \t') AS campaign
FROM read_csv($files, header = true, all_varchar = true, delim = ',', quote = '"',
              escape = '"', union_by_name = true, ignore_errors = true)
"""
AGGREGATE = f"""
WITH parsed AS (
    SELECT rowid AS seq, id, campaign,
           CASE WHEN regexp_full_match(ts, '{DATETIME_PATTERN}')
                THEN epoch_us(TRY_CAST(ts AS TIMESTAMPTZ)) END AS instant
    FROM impressions
    WHERE id <> '' AND campaign <> ''
), firsts AS (
    SELECT arg_min(campaign, seq) AS campaign, instant
    FROM parsed
    WHERE instant IS NOT NULL
    GROUP BY id, instant
)
SELECT campaign, CAST(floor(instant / {HOUR_US}) AS BIGINT) AS hour, count(*) AS impressions
FROM firsts
GROUP BY ALL
"""


def main() -> None:
    args = parse_args(__doc__ or "")
    files = [str(p) for p in list_inputs(args.source, args.date)]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # times without an offset are UTC
    con.execute("SET preserve_insertion_order = true")
    con.execute(LOAD, {"files": files})
    write_output(args.out, con.execute(AGGREGATE).fetchall())


if __name__ == "__main__":
    main()
