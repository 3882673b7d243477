"""The generator's vocabulary: columns, shapes, datetime forms, sites, agents, per-seed tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

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
# The "narrow" shape: seven short fields as an exchange exports them, the time first, and the
# many campaigns of such a day (2,000): a row of about 94 bytes.
NARROW_COLUMNS = (
    "IMPRESSION_DATETIME",
    "IMPRESSION_ID",
    "CAMPAIGN_ID",
    "CREATIVE_ID",
    "PLACEMENT_ID",
    "DEVICE",
    "BID_PRICE",
)
# The "wide" shape: ad logs as they land in S3, with long text: the page's URL (REFERRER, quoted
# as exports quote text, some holding a comma) and the user agent; a row of about 300 bytes.
WIDE_COLUMNS = (
    "IMPRESSION_ID",
    "IMPRESSION_DATETIME",
    "CAMPAIGN_ID",
    "AD_ID",
    "SITE_DOMAIN",
    "REFERRER",
    "USER_AGENT",
    "COST",
)
# Data shapes and the rates they default to (None in generate_day means "the shape's default"):
# "mixed" exercises every rule of the contract (datetime forms, padding, conflicting duplicates,
# bad and late rows); the others are what common ad logs look like: one timestamp form, no bad
# rows, and duplicates that are exact copies of an earlier row (same bytes, same campaign).
_EXACT_COPIES = {"conflict_rate": 0.0, "bad_row_rate": 0.0, "late_rate": 0.0, "offset_rate": 0.0}
SHAPES: dict[str, dict[str, float]] = {
    "mixed": {"conflict_rate": 0.2, "bad_row_rate": 0.0005, "late_rate": 0.001,
              "offset_rate": 0.05},
    "adlog": dict(_EXACT_COPIES),
    "narrow": dict(_EXACT_COPIES),
    "wide": dict(_EXACT_COPIES),
}
SHAPE_COLUMNS: dict[str, tuple[str, ...]] = {
    "mixed": ALL_COLUMNS, "adlog": ADLOG_COLUMNS, "narrow": NARROW_COLUMNS, "wide": WIDE_COLUMNS,
}
# Distinct campaigns in a day, by shape.
SHAPE_CAMPAIGNS = {"mixed": 300, "adlog": 300, "narrow": 2_000, "wide": 300}
COUNTRIES = ("US", "GB", "DE", "FR", "JP", "BR", "IN", "CA", "AU", "ES", "IT", "MX", "NL",
             "SE", "PL", "KR")
DEVICES = ("mobile", "desktop", "tablet", "ctv")
_DEVICE_WEIGHTS = (60, 30, 7, 3)
PAGE_SECTIONS = ("news/world", "sport/football", "weather/today", "recipes/dinner", "video/watch",
                 "shop/deals", "travel/guides", "finance/markets")
TRAFFIC_SOURCES = ("google", "facebook", "newsletter", "direct", "twitter")

DAY_SECONDS = 86_400

OFFSETS = (  # (suffix, seconds east of UTC)
    ("+01:00", 3_600),
    ("+05:30", 19_800),
    ("+09:00", 32_400),
    ("+05:45", 20_700),
    ("+00:00", 0),
    ("-05:00", -18_000),
    ("-08:00", -28_800),
    ("-03:30", -12_600),
)
POSITIVE_OFFSETS = np.array([i for i, (_, s) in enumerate(OFFSETS) if s >= 3_600])
NEGATIVE_OFFSETS = np.array([i for i, (_, s) in enumerate(OFFSETS) if s <= -3_600])
# Alternative renderings of the same instant: (separator, suffix) before any offset.
STYLES = (
    ("T", ""),
    ("T", "Z"),
    (" ", ".000"),
    ("T", ".000Z"),
    (" ", ".0"),
    ("T", ".000000"),
)
STYLE_WEIGHTS = np.array([0.2, 0.25, 0.2, 0.15, 0.1, 0.1])
# An instant carries a Z or an offset, never both: offsets go after the styles without Z.
PLAIN_STYLES = np.array([i for i, (_, suffix) in enumerate(STYLES) if not suffix.endswith("Z")])
OFFSET_SHARE = 0.4  # of non-canonical renderings, the part carrying a +HH:MM/-HH:MM offset

DOMAINS = (
    "news.example.com", "weather.example.net", "sports.example.org", "recipes.example.com",
    "video.example.tv", "forum.example.io", "shop.example.com", "travel.example.net",
    "finance.example.com", "games.example.gg", "music.example.fm", "blog.example.dev",
    "maps.example.com", "kids.example.org", "auto.example.com", "health.example.net",
    "tech.example.io", "movies.example.tv", "jobs.example.com", "local.example.news",
)
AGENTS = (  # (weight, text): real agents contain commas and quotes, which forces quoting
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
UNPARSEABLE_TIMES = (
    "{y}-{m}-{d} 25:00:00",
    "{d}/{m}/{y} 10:15:00",
    "{y}-{m}-32 10:00:00",
    "{y}-{m}-{d} 10:61:00",
    "not-a-date",
    "{y}{m}{d}",
)
# Bad-row kinds, in the order of BAD_KIND_NAMES; each is bad under every rule of the contract.
BAD_KIND_NAMES = (
    "empty_id",
    "empty_campaign",
    "empty_datetime",
    "unparseable_datetime",
    "too_few_fields",
    "too_many_fields",
)


@dataclass
class Vocabulary:
    """Per-seed lookup tables shared by every chunk of a day."""

    campaign_ids: pa.Array
    campaign_cdf: npt.NDArray[np.float64]
    ad_base: npt.NDArray[np.int64]
    cost_base: npt.NDArray[np.int64]
    domain_cdf: npt.NDArray[np.float64]
    agent_cdf: npt.NDArray[np.float64]
    agents: pa.Array
    device_cdf: npt.NDArray[np.float64]
    time_cdf: npt.NDArray[np.float64]
    time_grid: npt.NDArray[np.float64]


def build_vocabulary(seed: int, campaigns: int = 300) -> Vocabulary:
    rng = np.random.default_rng([seed, 1])
    # Campaign ids of mixed widths make numeric and text ordering disagree, as in real data.
    digits = rng.integers(3, 8, size=campaigns * 2)
    candidates = rng.integers(10 ** (digits - 1), 10**digits)
    ids = np.unique(candidates)[:campaigns]
    ids = rng.permutation(ids)
    popularity = 1.0 / np.arange(1, len(ids) + 1) ** 1.1  # a few campaigns dominate
    domain_weights = 1.0 / np.arange(1, len(DOMAINS) + 1) ** 0.8
    agent_weights = np.array([w for w, _ in AGENTS], dtype=np.float64)

    # Traffic per minute of the UTC day: a trough before dawn in Europe, a peak in the evening.
    grid = np.arange(0, DAY_SECONDS + 1, 60, dtype=np.float64)
    hours = (grid[:-1] + 30) / 3600
    density = 1.0 + 0.75 * np.sin(2 * np.pi * (hours - 13) / 24)
    time_cdf = np.concatenate([[0.0], np.cumsum(density)])
    time_cdf /= time_cdf[-1]

    return Vocabulary(
        campaign_ids=pa.array([str(i) for i in ids], pa.string()),
        campaign_cdf=cdf(popularity),
        ad_base=rng.integers(1_000, 90_000, size=len(ids)) * 10,
        cost_base=rng.integers(300, 6_000, size=len(ids)),  # micro-dollars, i.e. a CPM of $0.3-6
        domain_cdf=cdf(domain_weights),
        agent_cdf=cdf(agent_weights),
        agents=pa.array([_csv_field(text) for _, text in AGENTS], pa.string()),
        device_cdf=cdf(np.array(_DEVICE_WEIGHTS, dtype=np.float64)),
        time_cdf=time_cdf,
        time_grid=grid,
    )


def cdf(weights: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = np.cumsum(weights, dtype=np.float64)
    result /= result[-1]
    return result


def _csv_field(text: str) -> str:
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text
