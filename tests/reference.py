"""A small, obvious, pure-Python implementation of docs/CONTRACT.md that every engine must match."""

from __future__ import annotations

import csv
import gzip
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ID_COLUMN = "IMPRESSION_ID"
TIME_COLUMN = "IMPRESSION_DATETIME"
GROUP_COLUMN = "CAMPAIGN_ID"
REQUIRED = (ID_COLUMN, TIME_COLUMN, GROUP_COLUMN)
HEADER = b"CAMPAIGN_ID,HOUR,IMPRESSIONS\n"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NS_PER_SECOND = 10**9
NS_PER_HOUR = 3600 * NS_PER_SECOND

DATETIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
INTEGER_RE = re.compile(r"[+-]?[0-9]+")
FIELD_PADDING = " \t"


class MissingColumn(Exception):
    """A file's header lacks a required column, or has it twice (exit 4 in the real tool)."""

    def __init__(self, path: str, column: str, problem: str = "missing") -> None:
        super().__init__(f"{path}: {problem} column {column}")
        self.path = path
        self.column = column


@dataclass(frozen=True)
class Reject:
    """One bad row: where it is, why, and its raw text (line ends included)."""

    path: str
    line: int
    reason: str
    raw: str


@dataclass
class Expected:
    """What a correct run over a partition produces."""

    output: bytes
    totals: dict[str, int]
    rejects: list[Reject] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    rows_per_input: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (rows, bad)


def is_input(path: str) -> bool:
    """True for `.csv`/`.csv.gz` files (in any ASCII letter case) whose path below the
    partition has no `_`/`.` part."""
    parts = path.split("/")
    name = parts[-1]
    return not any(p.startswith(("_", ".")) for p in parts) and any(
        len(name) > len(ext) and name[-len(ext):].isascii()
        and name[-len(ext):].lower() == ext for ext in (".csv", ".csv.gz")
    )


def parse_instant(text: str) -> int | None:
    """Nanoseconds since the epoch in UTC, or None when the text is not an accepted datetime."""
    match = DATETIME_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        local = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    offset_seconds = 0
    zone = match.group(8)
    if zone and zone not in ("Z", "z"):  # +HH, +HHMM or +HH:MM
        off_h, off_m = int(zone[1:3]), int(zone[-2:]) if len(zone) > 3 else 0
        if off_h > 23 or off_m > 59:
            return None
        offset_seconds = (off_h * 3600 + off_m * 60) * (1 if zone[0] == "+" else -1)
    seconds = (local - EPOCH) // timedelta(seconds=1) - offset_seconds
    fraction = ((match.group(7) or "") + "0" * 9)[:9]
    instant = seconds * NS_PER_SECOND + int(fraction)
    # Instants are int64 nanoseconds (years 1677 to 2262); anything beyond is not a usable time.
    return instant if -(2**63) <= instant < 2**63 else None


def hour_label(hour_index: int) -> str:
    """`YYYY-MM-DD HH:00:00` for an hour counted from the epoch."""
    moment = EPOCH + timedelta(hours=hour_index)
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} {moment.hour:02d}:00:00"


def hour_date(hour_index: int) -> date:
    return (EPOCH + timedelta(hours=hour_index)).date()


def quote(value: str) -> str:
    """Quote a CSV field only where RFC 4180 needs it."""
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def has_invalid_utf8(value: str) -> bool:
    """Text decoded with surrogateescape carries invalid bytes as lone surrogates."""
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def is_blank(raw: str) -> bool:
    """Whether a record's text holds nothing but spaces, tabs, byte-order marks, line ends."""
    return not raw.replace("\ufeff", "").strip(" \t\r\n")


def physical_lines(text: str) -> list[str]:
    """Split on LF only, keeping the line ends (str.splitlines splits on far more)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def records(text: str) -> Iterator[tuple[int, list[str], str]]:
    """Yield (first physical line number, fields, raw text) for every CSV record, blank ones too."""
    consumed: list[str] = []

    def feed() -> Iterator[str]:
        for line in physical_lines(text):
            consumed.append(line)
            yield line

    lines_before = 0
    # Fields of any size, whatever limit other code in this process set before.
    csv.field_size_limit(sys.maxsize)
    for fields in csv.reader(feed()):
        raw = "".join(consumed)
        yield lines_before + 1, fields, raw
        lines_before += len(consumed)
        consumed.clear()


def ends_inside_quotes(raw: str) -> bool:
    """Whether a record's text ends inside a quoted field, walked character by character."""
    quoted = False
    field_start = True
    i = 0
    while i < len(raw):
        c = raw[i]
        if quoted:
            if c == '"':
                if raw[i + 1:i + 2] == '"':
                    i += 1
                else:
                    quoted = False
        elif c == '"' and field_start:
            quoted = True
        field_start = not quoted and c in ",\r\n"
        i += 1
    return quoted


@dataclass
class _Row:
    path: str
    impression_id: str
    instant: int
    campaign: str


def read_file(path: str, data: bytes, rejects: list[Reject]) -> tuple[list[_Row], int, int]:
    """Good rows of one file, and its counts (rows read, bad rows); bad rows go to `rejects`."""
    if data.startswith(b"\x1f\x8b"):  # gzip by content, whatever the name
        data = gzip.decompress(data)
    text = data.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    good: list[_Row] = []
    rows_read = bad = 0
    positions: dict[str, int] | None = None
    width = 0
    all_records = list(records(text))
    for number, (line, fields, raw) in enumerate(all_records, 1):
        if positions is None:
            if len(fields) <= 1 and not "".join(fields).removeprefix("\ufeff").strip(" \t"):
                continue  # blank lines before the header: nothing, or a BOM, spaces and tabs
            names = [name.strip(" \t").upper() for name in fields]
            positions = {}
            for column in REQUIRED:
                if column not in names:
                    raise MissingColumn(path, column)
                if names.count(column) > 1:
                    raise MissingColumn(path, column, "duplicate")
                positions[column] = names.index(column)
            width = len(fields)
            continue
        if not fields or is_blank(raw):
            continue  # a blank line: nothing, or only spaces, tabs and byte-order marks
        rows_read += 1
        reason = None
        if len(fields) != width:
            reason = f"expected {width} fields, got {len(fields)}"
        elif number == len(all_records) and ends_inside_quotes(raw):
            reason = "unterminated quote"
        else:
            values = {c: fields[positions[c]].strip(FIELD_PADDING) for c in REQUIRED}
            empty = [c for c in REQUIRED if not values[c]]
            invalid = [c for c in REQUIRED if has_invalid_utf8(values[c])]
            if empty:
                reason = f"empty {empty[0]}"
            elif invalid:
                reason = f"{invalid[0]} is not valid UTF-8"
            else:
                instant = parse_instant(values[TIME_COLUMN])
                if instant is None:
                    reason = f"bad {TIME_COLUMN}"
                else:
                    good.append(_Row(path, values[ID_COLUMN], instant, values[GROUP_COLUMN]))
        if reason is not None:
            bad += 1
            rejects.append(Reject(path, line, reason, raw))
    if positions is None:
        raise MissingColumn(path, ID_COLUMN)
    return good, rows_read, bad


def sort_key_for(campaigns: Iterable[str]):  # noqa: ANN201 - a key function
    """Numeric campaign order when every campaign is an integer (ties as text), else code points."""
    if all(INTEGER_RE.fullmatch(c) for c in campaigns):
        return lambda item: (item[1], int(item[0]), item[0])
    return lambda item: (item[1], item[0])


def expected_day(files: Iterable[tuple[str, bytes]], day: date) -> Expected:
    """Run the whole contract over one partition's files, given as (relative path, stored bytes)."""
    inputs = sorted((path, data) for path, data in files if is_input(path))
    rejects: list[Reject] = []
    first_campaign: dict[tuple[str, int], str] = {}
    counts: dict[tuple[str, int], int] = {}
    totals = dict.fromkeys(
        (
            "rows_read",
            "bad_rows",
            "duplicates",
            "conflicting_duplicates",
            "outside_day",
            "empty_files",
            "output_rows",
            "impressions",
        ),
        0,
    )
    rows_per_input: dict[str, tuple[int, int]] = {}
    for path, data in inputs:
        if not data:
            totals["empty_files"] += 1
            rows_per_input[path] = (0, 0)
            continue
        good, rows_read, bad = read_file(path, data, rejects)
        rows_per_input[path] = (rows_read, bad)
        totals["rows_read"] += rows_read
        totals["bad_rows"] += bad
        for row in good:
            key = (row.impression_id, row.instant)
            if key in first_campaign:
                totals["duplicates"] += 1
                if first_campaign[key] != row.campaign:
                    totals["conflicting_duplicates"] += 1
                continue
            first_campaign[key] = row.campaign
            cell = (row.campaign, row.instant // NS_PER_HOUR)
            counts[cell] = counts.get(cell, 0) + 1
    key = sort_key_for({campaign for campaign, _ in counts})
    lines = [HEADER]
    for (campaign, hour), n in sorted(counts.items(), key=lambda kv: key(kv[0])):
        lines.append(f"{quote(campaign)},{hour_label(hour)},{n}\n".encode())
        if hour_date(hour) != day:
            totals["outside_day"] += n
    totals["output_rows"] = len(counts)
    totals["impressions"] = sum(counts.values())
    return Expected(b"".join(lines), totals, rejects, [p for p, _ in inputs], rows_per_input)


def partition_dir(root: Path, day: date) -> Path:
    return root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"


def load_partition(root: Path, day: date) -> list[tuple[str, bytes]]:
    """Every file below root/YYYY/MM/DD as (path relative to the partition, bytes)."""
    folder = partition_dir(root, day)
    return sorted(
        (p.relative_to(folder).as_posix(), p.read_bytes()) for p in folder.rglob("*") if p.is_file()
    )


def expected_for(root: Path, day: date) -> Expected:
    """The reference result for a local partition."""
    return expected_day(load_partition(root, day), day)
