"""Floor peer: pyarrow parsing only the three required columns of the day on every core."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.csv as pacsv
from _common import CAMPAIGN, ID, TIME, list_inputs, parse_args

# No cleaning, no key, no aggregation and no output: only getting the three columns out of
# the CSV as text, which any design built on Arrow's streaming CSV reader pays first. One
# streaming reader per file, as many files at once as there are cores.
# (pyarrow.dataset would be the obvious tool, but in pyarrow 26 its CSV scan with
# include_columns fails with "Multiple matches for FieldRef".)
COLUMNS = [ID, TIME, CAMPAIGN]
CONVERT = pacsv.ConvertOptions(include_columns=COLUMNS,
                               column_types=dict.fromkeys(COLUMNS, pa.string()))


def parse(path: str) -> int:
    rows = 0
    with pacsv.open_csv(path, convert_options=CONVERT) as reader:
        for batch in reader:
            rows += batch.num_rows
    return rows


def main() -> None:
    args = parse_args(__doc__ or "")
    files = [str(p) for p in list_inputs(args.source, args.date)]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        rows = sum(pool.map(parse, files))
    print(f"parsed {rows} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
