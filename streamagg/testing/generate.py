"""Generate realistic sample days of ad-impression CSV logs, fast and deterministically."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import click
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ..units import human_bytes

__all__ = [
    "GeneratedDay", "generate_day", "main", "REQUIRED_COLUMNS", "ALL_COLUMNS", "ADLOG_COLUMNS",
    "SHAPES",
]

REQUIRED_COLUMNS = ("IMPRESSION_ID", "IMPRESSION_DATETIME", "CAMPAIGN_ID")
# The order an ad server export would plausibly use: the key columns are deliberately not first.
ALL_COLUMNS = (
    "IMPRESSION_DATETIME",
    "SITE_DOMAIN",
    "CAMPAIGN_ID",
    "AD_ID",
    "IMPRESSION_ID",
    "USER_AGENT",
    "COST",
)
# The "adlog" shape: short fields in the order most ad-server exports use, key columns first.
ADLOG_COLUMNS = (
    "IMPRESSION_ID",
    "IMPRESSION_DATETIME",
    "CAMPAIGN_ID",
    "AD_ID",
    "SITE_ID",
    "COUNTRY",
    "COST",
)
# Data shapes and the rates they default to (None in generate_day means "the shape's default"):
# "mixed" exercises every rule of the SPEC (datetime forms, padding, conflicting duplicates,
# bad and late rows); "adlog" is what common ad logs look like: one timestamp form, no bad
# rows, and duplicates that are exact copies of an earlier row (same bytes, same campaign).
SHAPES: dict[str, dict[str, float]] = {
    "mixed": {"conflict_rate": 0.2, "bad_row_rate": 0.0005, "late_rate": 0.001,
              "offset_rate": 0.05},
    "adlog": {"conflict_rate": 0.0, "bad_row_rate": 0.0, "late_rate": 0.0, "offset_rate": 0.0},
}
_COUNTRIES = ("US", "GB", "DE", "FR", "JP", "BR", "IN", "CA", "AU", "ES", "IT", "MX", "NL",
              "SE", "PL", "KR")

# Rows are built in slices of this size so memory stays flat whatever the size of the day.
_CHUNK_ROWS = 65_536
_N_CAMPAIGNS = 300
_DAY_SECONDS = 86_400
_U64 = np.uint64
_MASK64 = (1 << 64) - 1

# Salts give every derived attribute of an impression its own independent hash stream.
_SALT_ID_HI, _SALT_ID_LO, _SALT_ORDER, _SALT_SPREAD, _SALT_LATE, _SALT_LATE_BY = 1, 2, 3, 4, 5, 6
_SALT_CAMPAIGN, _SALT_AD, _SALT_DOMAIN, _SALT_AGENT, _SALT_COST = 7, 8, 9, 10, 11
# Bad rows get keys with the top bit set so they never collide with a real impression.
_BAD_KEY_BIT = np.uint64(1 << 63)

_OFFSETS = (  # (suffix, seconds east of UTC)
    ("+01:00", 3_600),
    ("+05:30", 19_800),
    ("+09:00", 32_400),
    ("+05:45", 20_700),
    ("+00:00", 0),
    ("-05:00", -18_000),
    ("-08:00", -28_800),
    ("-03:30", -12_600),
)
_POSITIVE_OFFSETS = np.array([i for i, (_, s) in enumerate(_OFFSETS) if s >= 3_600])
_NEGATIVE_OFFSETS = np.array([i for i, (_, s) in enumerate(_OFFSETS) if s <= -3_600])
# Alternative renderings of the same instant: (separator, suffix) before any offset.
_STYLES = (
    ("T", ""),
    ("T", "Z"),
    (" ", ".000"),
    ("T", ".000Z"),
    (" ", ".0"),
    ("T", ".000000"),
)
_STYLE_WEIGHTS = np.array([0.2, 0.25, 0.2, 0.15, 0.1, 0.1])
# An instant carries a Z or an offset, never both: offsets go after the styles without Z.
_PLAIN_STYLES = np.array([i for i, (_, suffix) in enumerate(_STYLES) if not suffix.endswith("Z")])
_OFFSET_SHARE = 0.4  # of non-canonical renderings, the part carrying a +HH:MM/-HH:MM offset

_DOMAINS = (
    "news.example.com", "weather.example.net", "sports.example.org", "recipes.example.com",
    "video.example.tv", "forum.example.io", "shop.example.com", "travel.example.net",
    "finance.example.com", "games.example.gg", "music.example.fm", "blog.example.dev",
    "maps.example.com", "kids.example.org", "auto.example.com", "health.example.net",
    "tech.example.io", "movies.example.tv", "jobs.example.com", "local.example.news",
)
_AGENTS = (  # (weight, text): real agents contain commas and quotes, which forces quoting
    (30, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.0.0 Safari/537.36"),
    (20, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
         "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"),
    (15, "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.6099.43 Mobile Safari/537.36"),
    (10, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
         "(KHTML, like Gecko) Version/17.1 Safari/605.1.15"),
    (8, "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"),
    (5, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"),
    (4, "Roku/DVP-12.5 (12.5.0.4178)"),
    (3, 'Mozilla/5.0 (compatible; "AdsBot"/1.0; +http://bot.example.com/ads)'),
    (3, "Dalvik/2.1.0 (Linux; U; Android 13; SM-S911B Build/TP1A.220624.014)"),
    (2, ""),
)
_UNPARSEABLE_TIMES = (
    "{y}-{m}-{d} 25:00:00",
    "{d}/{m}/{y} 10:15:00",
    "{y}-{m}-32 10:00:00",
    "{y}-{m}-{d} 10:61:00",
    "not-a-date",
    "{y}{m}{d}",
)
# Bad-row kinds, in the order of _BAD_KIND_NAMES; each is bad under every rule of the SPEC.
_BAD_KIND_NAMES = (
    "empty_id",
    "empty_campaign",
    "empty_datetime",
    "unparseable_datetime",
    "too_few_fields",
    "too_many_fields",
)
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


@dataclass(frozen=True)
class _Chunk:
    file_index: int
    chunk_index: int
    rows: int
    duplicates: int
    bad: int
    first_global_row: int
    first_unique: int  # impressions created before this chunk


@dataclass
class _Vocabulary:
    """Per-seed lookup tables shared by every chunk of a day."""

    campaign_ids: pa.Array
    campaign_cdf: npt.NDArray[np.float64]
    ad_base: npt.NDArray[np.int64]
    cost_base: npt.NDArray[np.int64]
    domain_cdf: npt.NDArray[np.float64]
    agent_cdf: npt.NDArray[np.float64]
    agents: pa.Array
    time_cdf: npt.NDArray[np.float64]
    time_grid: npt.NDArray[np.float64]


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
    - ``bad_row_rate``: share of rows that are bad under the SPEC (empty id, campaign or
      datetime, unparseable datetime, wrong number of fields).
    - ``late_rate``: share of impressions whose instant falls just outside the day; half of
      them are written with an offset that makes their local time look inside it.
    - ``offset_rate``: share of rows written with ``T``, ``Z``, fractional seconds or an
      offset (same instant); a tenth of those also get spaces or tabs around id or campaign.
    - ``gzip_files``: how many of the files (the last ones) are gzip-compressed.
    - ``extra_columns``: seven columns, else only the three required ones (same relative order).
    - ``vary_layout``: files differ in column order, header case, BOM, CRLF and blank lines,
      as the SPEC allows.
    - ``shape``: ``"mixed"`` (the columns of ALL_COLUMNS, long quoted user agents, every rule
      of the SPEC exercised) or ``"adlog"`` (ADLOG_COLUMNS, about 80 bytes a row, one
      timestamp form, duplicates that are exact copies of an earlier row). A rate left at
      None takes the shape's default from SHAPES.

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

    plan = _plan(rows, files, duplicate_rate, bad_row_rate, seed)
    total_unique = sum(c.rows - c.duplicates - c.bad for c in plan)
    vocab = _vocabulary(seed)
    columns: tuple[str, ...] = ADLOG_COLUMNS if shape == "adlog" else ALL_COLUMNS
    if not extra_columns:
        columns = tuple(c for c in columns if c in REQUIRED_COLUMNS)
    totals = {"bad": 0, "dup": 0, "conflict": 0, "outside": 0}
    bad_kinds = dict.fromkeys(_BAD_KIND_NAMES, 0)
    paths: list[Path] = []
    written = 0
    for file_index in range(files):
        compressed = file_index >= files - gzip_files
        path = partition / f"part-{file_index:05d}.csv{'.gz' if compressed else ''}"
        layout = _layout(columns, file_index, seed, vary_layout)
        tmp = path.with_name(f".{path.name}.tmp")  # a leading dot hides it from readers
        with open(tmp, "wb") as raw:
            out: BinaryIO = raw
            if compressed:
                # mtime=0 and no file name keep compressed output byte-identical across runs.
                out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)  # type: ignore[assignment]
            try:
                out.write(layout.header)
                for chunk in (c for c in plan if c.file_index == file_index):
                    if layout.blank_line_after_header and chunk.chunk_index == 0:
                        out.write(layout.newline.encode())
                    cols, damage, stats = _build_chunk(
                        chunk, seed, vocab, total_unique, day, conflict_rate, late_rate,
                        offset_rate, columns)
                    for key in totals:
                        totals[key] += stats[key]
                    for kind, count in zip(_BAD_KIND_NAMES, stats["kinds"], strict=True):
                        bad_kinds[kind] += int(count)
                    out.write(_csv_bytes(cols, damage, layout.order, layout.newline))
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


def _plan(rows: int, files: int, duplicate_rate: float, bad_row_rate: float,
          seed: int) -> list[_Chunk]:
    """Fix every chunk's size and its exact number of duplicates and bad rows up front.

    Knowing the number of distinct impressions before writing lets each impression's time be
    a pure function of its index, so a duplicate can recompute it without any stored state.
    """
    rng = np.random.default_rng([seed, 2])
    per_file = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    plan: list[_Chunk] = []
    global_row = unique = 0
    for file_index, file_rows in enumerate(per_file):
        for chunk_index, start in enumerate(range(0, file_rows, _CHUNK_ROWS)):
            n = min(_CHUNK_ROWS, file_rows - start)
            # The day's first row must be an impression so every duplicate has one to copy.
            room = n - 1 if global_row == 0 else n
            bad = min(room, _stochastic_round(n * bad_row_rate, rng))
            dup = min(room - bad, _stochastic_round(n * duplicate_rate, rng))
            plan.append(_Chunk(file_index, chunk_index, n, dup, bad, global_row, unique))
            global_row += n
            unique += n - dup - bad
    return plan


def _stochastic_round(x: float, rng: np.random.Generator) -> int:
    whole = int(x)
    return whole + int(rng.random() < x - whole)


def _vocabulary(seed: int) -> _Vocabulary:
    rng = np.random.default_rng([seed, 1])
    # Campaign ids of mixed widths make numeric and text ordering disagree, as in real data.
    digits = rng.integers(3, 8, size=_N_CAMPAIGNS * 2)
    candidates = rng.integers(10 ** (digits - 1), 10**digits)
    ids = np.unique(candidates)[: _N_CAMPAIGNS]
    ids = rng.permutation(ids)
    popularity = 1.0 / np.arange(1, len(ids) + 1) ** 1.1  # a few campaigns dominate
    domain_weights = 1.0 / np.arange(1, len(_DOMAINS) + 1) ** 0.8
    agent_weights = np.array([w for w, _ in _AGENTS], dtype=np.float64)

    # Traffic per minute of the UTC day: a trough before dawn in Europe, a peak in the evening.
    grid = np.arange(0, _DAY_SECONDS + 1, 60, dtype=np.float64)
    hours = (grid[:-1] + 30) / 3600
    density = 1.0 + 0.75 * np.sin(2 * np.pi * (hours - 13) / 24)
    time_cdf = np.concatenate([[0.0], np.cumsum(density)])
    time_cdf /= time_cdf[-1]

    return _Vocabulary(
        campaign_ids=pa.array([str(i) for i in ids], pa.string()),
        campaign_cdf=_cdf(popularity),
        ad_base=rng.integers(1_000, 90_000, size=len(ids)) * 10,
        cost_base=rng.integers(300, 6_000, size=len(ids)),  # micro-dollars, i.e. a CPM of $0.3-6
        domain_cdf=_cdf(domain_weights),
        agent_cdf=_cdf(agent_weights),
        agents=pa.array([_csv_field(text) for _, text in _AGENTS], pa.string()),
        time_cdf=time_cdf,
        time_grid=grid,
    )


def _cdf(weights: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    cdf: npt.NDArray[np.float64] = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    return cdf


def _csv_field(text: str) -> str:
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


@dataclass(frozen=True)
class _Layout:
    header: bytes
    order: tuple[str, ...]
    newline: str
    blank_line_after_header: bool


def _layout(columns: Sequence[str], file_index: int, seed: int, vary: bool) -> _Layout:
    order = tuple(columns)
    names = list(order)
    newline, bom, blank = "\n", "", False
    if vary and file_index > 0:
        rng = np.random.default_rng([seed, 4, file_index])
        order = tuple(order[i] for i in rng.permutation(len(order)))
        variant = file_index % 3
        if variant == 1:
            names = [n.lower() for n in order]
            bom = "\ufeff"
        elif variant == 2:
            names = [f" {n.title()} " for n in order]
            newline, blank = "\r\n", True
        else:
            names = list(order)
    header = (bom + ",".join(names) + newline).encode("utf-8")
    return _Layout(header, order, newline, blank)


def _build_chunk(
    chunk: _Chunk,
    seed: int,
    vocab: _Vocabulary,
    total_unique: int,
    day: dt.date,
    conflict_rate: float,
    late_rate: float,
    offset_rate: float,
    columns: Sequence[str],
) -> tuple[dict[str, pa.Array], npt.NDArray[np.int8], dict[str, Any]]:
    """Build one chunk's columns as Arrow strings, with no Python loop over rows.

    Also returns, per row, the field-count damage to apply when joining (-1, 0 or +1).
    """
    n = chunk.rows
    rng = np.random.default_rng([seed, 3, chunk.file_index, chunk.chunk_index])

    # 0 = a new impression, 1 = a duplicate of an earlier one, 2 = a bad row. The day's first
    # row stays an impression (the plan left room for it) so every duplicate has one to copy.
    fixed = 1 if chunk.first_global_row == 0 else 0
    kinds = np.zeros(n - fixed, dtype=np.int8)
    kinds[: chunk.duplicates] = 1
    kinds[chunk.duplicates : chunk.duplicates + chunk.bad] = 2
    kind = np.concatenate([np.zeros(fixed, dtype=np.int8), rng.permutation(kinds)])
    is_new, is_dup, is_bad = kind == 0, kind == 1, kind == 2
    uniques_before = chunk.first_unique + np.cumsum(is_new) - is_new

    # Half the duplicates are retries of a recent impression (mostly the same file); half
    # repeat any earlier one (mostly another file), like a replayed upload.
    dup_count = int(is_dup.sum())
    before = uniques_before[is_dup]
    recent = before - 1 - np.minimum(rng.geometric(1 / 400, dup_count) - 1, before - 1)
    anywhere = np.floor(rng.random(dup_count) * before).astype(np.int64)
    refs = np.where(rng.random(dup_count) < 0.5, recent, anywhere)
    impression = uniques_before.copy()
    impression[is_dup] = refs

    global_rows = np.arange(chunk.first_global_row, chunk.first_global_row + n, dtype=np.uint64)
    key = np.where(is_bad, global_rows | _BAD_KEY_BIT, impression.astype(np.uint64))
    k = key.astype(np.uint64)

    # The instant is a function of the impression index alone, so duplicates agree on it;
    # bad rows take the time of their neighbours.
    position = np.where(is_bad, uniques_before, impression).astype(np.float64)
    fraction = np.clip((position + _uniform(seed, k, _SALT_ORDER)) / max(total_unique, 1),
                       0.0, 1.0)
    seconds = np.interp(fraction, vocab.time_cdf, vocab.time_grid)
    seconds = seconds + (_uniform(seed, k, _SALT_SPREAD) - 0.5) * 90  # logs are near-sorted
    # Reflect the spread at midnight rather than clip it, so no second gets a pile-up.
    seconds = np.abs(seconds)
    seconds = np.where(seconds >= _DAY_SECONDS, 2 * _DAY_SECONDS - 1 - seconds, seconds)
    instant = np.clip(np.floor(seconds), 0, _DAY_SECONDS - 1).astype(np.int64)
    late = (_uniform(seed, k, _SALT_LATE) < late_rate) & ~is_bad
    late_by = np.floor(_uniform(seed, k, _SALT_LATE_BY) * 300).astype(np.int64)
    early_side = fraction < 0.5
    instant = np.where(late & early_side, -1 - late_by, instant)
    instant = np.where(late & ~early_side, _DAY_SECONDS + late_by, instant)

    campaign = np.searchsorted(vocab.campaign_cdf, _uniform(seed, k, _SALT_CAMPAIGN))
    campaign = np.minimum(campaign, len(vocab.campaign_cdf) - 1)
    conflict = is_dup & (rng.random(n) < conflict_rate)
    shift = rng.integers(1, len(vocab.campaign_cdf), size=n)
    campaign = np.where(conflict, (campaign + shift) % len(vocab.campaign_cdf), campaign)

    # Rendering: most rows canonical; duplicates more often differ from what they repeat.
    messy_rate = np.where(is_dup, max(offset_rate, 0.25) if offset_rate > 0 else 0.0,
                          offset_rate)
    messy = (rng.random(n) < messy_rate) & ~is_bad
    with_offset = messy & (rng.random(n) < _OFFSET_SHARE)
    offset_index = rng.integers(0, len(_OFFSETS), size=n)
    # Late impressions often carry an offset that puts their local date inside the day.
    disguise = late & (rng.random(n) < 0.5)
    offset_index = np.where(disguise & (instant < 0),
                            rng.choice(_POSITIVE_OFFSETS, size=n), offset_index)
    offset_index = np.where(disguise & (instant >= _DAY_SECONDS),
                            rng.choice(_NEGATIVE_OFFSETS, size=n), offset_index)
    with_offset |= disguise
    messy |= disguise
    style = np.minimum(np.searchsorted(_cdf(_STYLE_WEIGHTS), rng.random(n)), len(_STYLES) - 1)
    style = np.where(with_offset, _PLAIN_STYLES[rng.integers(0, len(_PLAIN_STYLES), size=n)],
                     style)
    datetimes = _render_datetimes(day, instant, messy, with_offset, style, offset_index)

    ids = _uuid_strings(_hash(seed, k, _SALT_ID_HI), _hash(seed, k, _SALT_ID_LO))
    campaigns = vocab.campaign_ids.take(pa.array(campaign))
    padded = messy & (rng.random(n) < 0.1)
    pad_id = padded & (rng.random(n) < 0.5)
    ids = _pad(ids, pad_id, rng)
    campaigns = _pad(campaigns, padded & ~pad_id, rng)

    cols: dict[str, pa.Array] = {
        "IMPRESSION_ID": ids,
        "IMPRESSION_DATETIME": datetimes,
        "CAMPAIGN_ID": campaigns,
    }
    # Every extra field is a function of the impression and its campaign, so a duplicate that
    # keeps both (no conflict, no other rendering) is an exact copy of the row it repeats.
    if "AD_ID" in columns:
        ad = vocab.ad_base[campaign] + (_hash(seed, k, _SALT_AD) % _U64(12)).astype(np.int64)
        cost = (vocab.cost_base[campaign] * (0.5 + _uniform(seed, k, _SALT_COST))).astype(np.int64)
        cols["AD_ID"] = pc.cast(pa.array(ad), pa.string())
        cols["COST"] = pc.binary_join_element_wise(
            "0.", pc.utf8_lpad(pc.cast(pa.array(cost), pa.string()), width=6, padding="0"), "")
    if "SITE_DOMAIN" in columns:
        domain = np.searchsorted(vocab.domain_cdf, _uniform(seed, k, _SALT_DOMAIN))
        agent = np.searchsorted(vocab.agent_cdf, _uniform(seed, k, _SALT_AGENT))
        cols["SITE_DOMAIN"] = pa.array(_DOMAINS, pa.string()).take(
            pa.array(np.minimum(domain, len(_DOMAINS) - 1)))
        cols["USER_AGENT"] = vocab.agents.take(pa.array(np.minimum(agent, len(_AGENTS) - 1)))
    if "SITE_ID" in columns:
        # A long tail of sites: the square of a uniform puts most traffic on low ids.
        site = 100 + (_uniform(seed, k, _SALT_DOMAIN) ** 2 * 5_000).astype(np.int64)
        country = np.floor(_uniform(seed, k, _SALT_AGENT) ** 1.5 * len(_COUNTRIES))
        cols["SITE_ID"] = pc.cast(pa.array(site), pa.string())
        cols["COUNTRY"] = pa.array(_COUNTRIES, pa.string()).take(
            pa.array(country.astype(np.int64)))

    bad_kind = rng.integers(0, len(_BAD_KIND_NAMES), size=n)
    kind_counts = np.bincount(bad_kind[is_bad], minlength=len(_BAD_KIND_NAMES))
    damage = _corrupt(cols, is_bad, bad_kind, day, rng)
    stats = {
        "bad": int(is_bad.sum()),
        "dup": dup_count,
        "conflict": int(conflict.sum()),
        "outside": int((late & is_new).sum()),
        "kinds": kind_counts,
    }
    return cols, damage, stats


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _hash(seed: int, keys: npt.NDArray[np.uint64], salt: int) -> npt.NDArray[np.uint64]:
    """SplitMix64 of the keys, keyed by seed and salt: a stateless, vectorised random stream."""
    z = keys ^ _U64(_splitmix(_splitmix(seed) ^ salt))
    z = z + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    result: npt.NDArray[np.uint64] = z ^ (z >> _U64(31))
    return result


def _uniform(seed: int, keys: npt.NDArray[np.uint64], salt: int) -> npt.NDArray[np.float64]:
    bits = (_hash(seed, keys, salt) >> _U64(11)).astype(np.float64)
    return bits * (1.0 / (1 << 53))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _uuid_strings(hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> pa.Array:
    """Random (version 4) UUIDs as text, built as a byte matrix rather than row by row."""
    raw = np.empty((len(hi), 16), dtype=np.uint8)
    raw[:, :8] = hi.astype(">u8").view(np.uint8).reshape(-1, 8)
    raw[:, 8:] = lo.astype(">u8").view(np.uint8).reshape(-1, 8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = np.empty((len(hi), 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[raw >> 4]
    hexed[:, 1::2] = _HEX[raw & 0x0F]
    text = np.full((len(hi), 36), ord("-"), dtype=np.uint8)
    text[:, 0:8] = hexed[:, 0:8]
    text[:, 9:13] = hexed[:, 8:12]
    text[:, 14:18] = hexed[:, 12:16]
    text[:, 19:23] = hexed[:, 16:20]
    text[:, 24:36] = hexed[:, 20:32]
    return _fixed_width_strings(text)


def _fixed_width_strings(matrix: npt.NDArray[np.uint8]) -> pa.Array:
    rows, width = matrix.shape
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(
        rows, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(matrix)))


def _render_datetimes(
    day: dt.date,
    instant: npt.NDArray[np.int64],
    messy: npt.NDArray[np.bool_],
    with_offset: npt.NDArray[np.bool_],
    style: npt.NDArray[np.intp],
    offset_index: npt.NDArray[np.int64],
) -> pa.Array:
    """Render seconds since the day's UTC midnight as text, in the row's chosen format."""
    offset_seconds = np.array([s for _, s in _OFFSETS], dtype=np.int64)[offset_index]
    local = instant + np.where(with_offset, offset_seconds, 0)
    day_shift = np.floor_divide(local, _DAY_SECONDS)
    second_of_day = local - day_shift * _DAY_SECONDS

    text = np.empty((len(instant), 19), dtype=np.uint8)
    shifts, inverse = np.unique(day_shift, return_inverse=True)
    dates = np.array(
        [list((day + dt.timedelta(days=int(s))).isoformat().encode()) for s in shifts],
        dtype=np.uint8,
    ).reshape(len(shifts), 10)
    text[:, :10] = dates[inverse.reshape(-1)]
    hours, rest = np.divmod(second_of_day, 3600)
    minutes, secs = np.divmod(rest, 60)
    zero = ord("0")
    for column, value in ((11, hours), (14, minutes), (17, secs)):
        text[:, column] = zero + value // 10
        text[:, column + 1] = zero + value % 10
    text[:, 13] = text[:, 16] = ord(":")
    separators = np.array([ord(sep) for sep, _ in _STYLES], dtype=np.uint8)
    text[:, 10] = np.where(messy, separators[style], ord(" "))

    # Suffix table: "" (canonical), each style's own suffix, then style suffix + offset for
    # every style and offset (only the plain styles are ever combined with an offset).
    suffixes = [""] + [suffix for _, suffix in _STYLES]
    suffixes += [suffix + off for _, suffix in _STYLES for off, _ in _OFFSETS]
    suffix_index = np.where(messy, 1 + style, 0)
    suffix_index = np.where(with_offset, 1 + len(_STYLES) + style * len(_OFFSETS) + offset_index,
                            suffix_index)
    suffix = pa.array(suffixes, pa.string()).take(pa.array(suffix_index))
    return pc.binary_join_element_wise(_fixed_width_strings(text), suffix, "")


def _pad(values: pa.Array, mask: npt.NDArray[np.bool_], rng: np.random.Generator) -> pa.Array:
    """Surround some values with spaces or tabs, which readers must trim."""
    if not mask.any():
        return values
    pads = pa.array(["", " ", "  ", "\t"], pa.string())
    left = pads.take(pa.array(np.where(mask, rng.integers(0, 4, size=len(mask)), 0)))
    right = pads.take(pa.array(np.where(mask, rng.integers(1, 3, size=len(mask)), 0)))
    return pc.binary_join_element_wise(left, values, right, "")


def _corrupt(
    cols: dict[str, pa.Array],
    is_bad: npt.NDArray[np.bool_],
    bad_kind: npt.NDArray[np.int64],
    day: dt.date,
    rng: np.random.Generator,
) -> npt.NDArray[np.int8]:
    """Turn the bad rows into one SPEC kind of bad row each; field counts are broken later."""
    damage = np.zeros(len(is_bad), dtype=np.int8)
    if not is_bad.any():
        return damage
    # Blank means empty after trimming, so some are spaces.
    blank = pa.array(np.where(rng.random(len(is_bad)) < 0.7, "", "  "), pa.string())
    emptied = {0: "IMPRESSION_ID", 1: "CAMPAIGN_ID", 2: "IMPRESSION_DATETIME"}
    for kind, column in emptied.items():
        mask = pa.array(is_bad & (bad_kind == kind))
        cols[column] = pc.if_else(mask, blank, cols[column])
    y, m, d = f"{day.year:04d}", f"{day.month:02d}", f"{day.day:02d}"
    choices = pa.array([t.format(y=y, m=m, d=d) for t in _UNPARSEABLE_TIMES], pa.string())
    unparseable = is_bad & (bad_kind == 3)
    picked = choices.take(pa.array(rng.integers(0, len(choices), size=len(is_bad))))
    cols["IMPRESSION_DATETIME"] = pc.if_else(pa.array(unparseable), picked,
                                             cols["IMPRESSION_DATETIME"])
    # Field-count damage is applied when lines are joined: remember which rows need it.
    damage[is_bad & (bad_kind == 4)] = -1
    damage[is_bad & (bad_kind == 5)] = 1
    return damage


def _csv_bytes(cols: dict[str, pa.Array], damage: npt.NDArray[np.int8], order: Sequence[str],
               newline: str) -> pa.Buffer:
    """Join the columns into CSV lines and return their bytes without copying row by row."""
    lines = _join_lines([cols[name] for name in order], newline)
    damaged = np.flatnonzero(damage)
    if len(damaged):
        # Rebuild only the damaged lines: full-length alternatives would double peak memory.
        picked = pa.array(damaged)
        sub = {name: cols[name].take(picked) for name in order}
        fewer = _join_lines([sub[name] for name in order[:-1]], newline)
        if "USER_AGENT" in order:
            # The classic export bug: a user agent with commas written without quotes.
            unquoted = pa.array(["Mozilla/5.0 (X11, Linux, x86_64) Gecko/20100101"] * len(damaged))
            more = _join_lines([unquoted if name == "USER_AGENT" else sub[name] for name in order],
                               newline)
        else:
            more = _join_lines([sub[name] for name in order] + [pa.array(["oops"] * len(damaged))],
                               newline)
        replacement = pc.if_else(pa.array(damage[damaged] < 0), fewer, more)
        lines = pc.replace_with_mask(lines, pa.array(damage != 0), replacement)
    if len(lines) == 0:
        return pa.py_buffer(b"")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return lines.buffers()[2][start:end]


def _join_lines(columns: Sequence[pa.Array], newline: str) -> pa.Array:
    # The line end rides on the last field, so the lines are built in a single pass.
    *head, last = columns
    return pc.binary_join_element_wise(*head, pc.binary_join_element_wise(last, "", newline), ",")


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
              help="mixed: every rule of the SPEC exercised (datetime forms, padding, "
                   "conflicting duplicates, bad and late rows); adlog: like common ad logs, "
                   "short fields, one timestamp form, duplicates that are exact copies.")
@click.option("--conflict-rate", type=click.FloatRange(0, 1),
              help="Share of duplicates carrying a different CAMPAIGN_ID "
                   "[default: 0.2 mixed, 0 adlog].")
@click.option("--bad-row-rate", type=click.FloatRange(0, 1, max_open=True),
              help="[default: 0.0005 mixed, 0 adlog]")
@click.option("--late-rate", type=click.FloatRange(0, 1),
              help="Share of impressions just outside the day [default: 0.001 mixed, 0 adlog].")
@click.option("--offset-rate", type=click.FloatRange(0, 1),
              help="Share of rows written with T, Z, fractions or +HH:MM offsets "
                   "[default: 0.05 mixed, 0 adlog].")
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
