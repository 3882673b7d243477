"""Expert peer: DuckDB as its users write the job, typed read_csv, DISTINCT ON, one COPY query."""

from __future__ import annotations

import duckdb
from _common import list_inputs, parse_args, read_header

# The schema a DuckDB user would declare for the logs: every column typed, nothing sniffed.
TYPES = {
    "IMPRESSION_ID": "VARCHAR", "IMPRESSION_DATETIME": "TIMESTAMP", "CAMPAIGN_ID": "BIGINT",
    "AD_ID": "BIGINT", "SITE_ID": "BIGINT", "COUNTRY": "VARCHAR", "COST": "DOUBLE",
    "SITE_DOMAIN": "VARCHAR", "USER_AGENT": "VARCHAR", "REFERRER": "VARCHAR",
    "CREATIVE_ID": "BIGINT", "PLACEMENT_ID": "BIGINT", "DEVICE": "VARCHAR", "BID_PRICE": "DOUBLE",
}
# DISTINCT ON without ORDER BY keeps any one row of each key: the same bytes as streamagg only
# where duplicates are exact copies (the adlog, narrow and wide shapes). It neither trims
# fields nor converts +HH:MM offsets (TIMESTAMP drops them), so on mixed it cannot match.
QUERY = """
COPY (
    SELECT CAMPAIGN_ID,
           strftime(date_trunc('hour', IMPRESSION_DATETIME), '%Y-%m-%d %H:00:00') AS HOUR,
           count(*) AS IMPRESSIONS
    FROM (
        SELECT DISTINCT ON (IMPRESSION_ID, IMPRESSION_DATETIME)
               IMPRESSION_ID, IMPRESSION_DATETIME, CAMPAIGN_ID
        FROM read_csv($files, header = true, columns = $columns)
    )
    GROUP BY ALL
    ORDER BY HOUR, CAMPAIGN_ID
) TO '{out}' (FORMAT csv, HEADER true)
"""


def main() -> None:
    args = parse_args(__doc__ or "")
    files = [str(p) for p in list_inputs(args.source, args.date)]
    # The user knows the export's column order; here it is read from the first file's header.
    columns = {name: TYPES[name] for name in read_header(files[0])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = str(args.out).replace("'", "''")
    duckdb.connect().execute(QUERY.format(out=out), {"files": files, "columns": columns})


if __name__ == "__main__":
    main()
