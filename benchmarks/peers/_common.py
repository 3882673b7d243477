"""What every benchmark peer shares: arguments, input listing and the exact output bytes."""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import re
from collections.abc import Iterable
from pathlib import Path

ID, TIME, CAMPAIGN = "IMPRESSION_ID", "IMPRESSION_DATETIME", "CAMPAIGN_ID"
# The SPEC's datetime grammar; groups: date, time, fraction digits, zone (Z or +HH:MM).
# ASCII digits only: regex engines differ on what \d matches.
DATETIME_PATTERN = (
    r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[ T]([0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})?$"
)
_INTEGER = re.compile(r"[+-]?[0-9]+")
HOUR_US = 3_600_000_000


def parse_args(description: str, *, keep: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--source", required=True, type=Path, help="root of the date partitions")
    parser.add_argument("--date", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--out", required=True, type=Path, help="the output CSV file")
    if keep:
        parser.add_argument("--keep", choices=("any", "first"), default="first",
                            help="which row of a duplicate key survives: any (enough where "
                                 "duplicates are exact copies) or the first, in file order")
    return parser.parse_args()


def read_header(path: str) -> list[str]:
    """The column names of a CSV file's first line, as an expert peer's schema needs."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8-sig") as handle:  # type: ignore[operator]
        return [name.strip().upper() for name in handle.readline().rstrip("\r\n").split(",")]


def list_inputs(source: Path, day: dt.date) -> list[Path]:
    """The day's input files in the contract's order: by full path, empties skipped."""
    partition = source / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
    found: list[Path] = []
    for folder, dirs, names in os.walk(partition):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        for name in names:
            if name.startswith(("_", ".")) or not name.endswith((".csv", ".csv.gz")):
                continue
            path = Path(folder) / name
            if path.stat().st_size > 0:
                found.append(path)
    return sorted(found, key=lambda p: str(p))


def hour_label(hour_index: int) -> str:
    start = dt.datetime(1970, 1, 1) + dt.timedelta(hours=hour_index)
    return start.strftime("%Y-%m-%d %H:00:00")


def write_output(out: Path, counts: Iterable[tuple[str, int, int]]) -> None:
    """Write (campaign, hour index since the epoch, impressions) exactly as streamagg does."""
    rows = list(counts)
    if all(_INTEGER.fullmatch(campaign) for campaign, _, _ in rows):
        rows.sort(key=lambda r: (r[1], int(r[0]), r[0]))
    else:
        rows.sort(key=lambda r: (r[1], r[0]))
    lines = [f"{CAMPAIGN},HOUR,IMPRESSIONS\n"]
    lines += [f"{_field(c)},{hour_label(h)},{n}\n" for c, h, n in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes("".join(lines).encode("utf-8"))
    os.replace(tmp, out)


def _field(value: str) -> str:
    # RFC 4180 quoting, including a lone CR, which Python's csv module would leave bare.
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value
