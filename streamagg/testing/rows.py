"""Plan a day's chunks and build each chunk's columns as Arrow strings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from .extras import extra_columns
from .fields import corrupt, keyed_hash, pad, render_datetimes, uniform, uuid_strings
from .vocabulary import (
    BAD_KIND_NAMES,
    DAY_SECONDS,
    NEGATIVE_OFFSETS,
    OFFSET_SHARE,
    OFFSETS,
    PLAIN_STYLES,
    POSITIVE_OFFSETS,
    STYLE_WEIGHTS,
    STYLES,
    Vocabulary,
    cdf,
)

# Rows are built in slices of this size so memory stays flat whatever the size of the day.
_CHUNK_ROWS = 65_536

# Salts give every derived attribute of an impression its own independent hash stream.
_SALT_ID_HI, _SALT_ID_LO, _SALT_ORDER, _SALT_SPREAD, _SALT_LATE, _SALT_LATE_BY = 1, 2, 3, 4, 5, 6
_SALT_CAMPAIGN = 7  # 8 and up: extras.py
# Bad rows get keys with the top bit set so they never collide with a real impression.
_BAD_KEY_BIT = np.uint64(1 << 63)


@dataclass(frozen=True)
class Chunk:
    file_index: int
    chunk_index: int
    rows: int
    duplicates: int
    bad: int
    first_global_row: int
    first_unique: int  # impressions created before this chunk


def plan_chunks(rows: int, files: int, duplicate_rate: float, bad_row_rate: float,
          seed: int) -> list[Chunk]:
    """Fix every chunk's size and its exact number of duplicates and bad rows up front.

    Knowing the number of distinct impressions before writing lets each impression's time be
    a pure function of its index, so a duplicate can recompute it without any stored state.
    """
    rng = np.random.default_rng([seed, 2])
    per_file = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    plan: list[Chunk] = []
    global_row = unique = 0
    for file_index, file_rows in enumerate(per_file):
        for chunk_index, start in enumerate(range(0, file_rows, _CHUNK_ROWS)):
            n = min(_CHUNK_ROWS, file_rows - start)
            # The day's first row must be an impression so every duplicate has one to copy.
            room = n - 1 if global_row == 0 else n
            bad = min(room, _stochastic_round(n * bad_row_rate, rng))
            dup = min(room - bad, _stochastic_round(n * duplicate_rate, rng))
            plan.append(Chunk(file_index, chunk_index, n, dup, bad, global_row, unique))
            global_row += n
            unique += n - dup - bad
    return plan


def _stochastic_round(x: float, rng: np.random.Generator) -> int:
    whole = int(x)
    return whole + int(rng.random() < x - whole)


def build_chunk(
    chunk: Chunk,
    seed: int,
    vocab: Vocabulary,
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
    fraction = np.clip((position + uniform(seed, k, _SALT_ORDER)) / max(total_unique, 1),
                       0.0, 1.0)
    seconds = np.interp(fraction, vocab.time_cdf, vocab.time_grid)
    seconds = seconds + (uniform(seed, k, _SALT_SPREAD) - 0.5) * 90  # logs are near-sorted
    # Reflect the spread at midnight rather than clip it, so no second gets a pile-up.
    seconds = np.abs(seconds)
    seconds = np.where(seconds >= DAY_SECONDS, 2 * DAY_SECONDS - 1 - seconds, seconds)
    instant = np.clip(np.floor(seconds), 0, DAY_SECONDS - 1).astype(np.int64)
    late = (uniform(seed, k, _SALT_LATE) < late_rate) & ~is_bad
    late_by = np.floor(uniform(seed, k, _SALT_LATE_BY) * 300).astype(np.int64)
    early_side = fraction < 0.5
    instant = np.where(late & early_side, -1 - late_by, instant)
    instant = np.where(late & ~early_side, DAY_SECONDS + late_by, instant)

    campaign = np.searchsorted(vocab.campaign_cdf, uniform(seed, k, _SALT_CAMPAIGN))
    campaign = np.minimum(campaign, len(vocab.campaign_cdf) - 1)
    conflict = is_dup & (rng.random(n) < conflict_rate)
    shift = rng.integers(1, len(vocab.campaign_cdf), size=n)
    campaign = np.where(conflict, (campaign + shift) % len(vocab.campaign_cdf), campaign)

    # Rendering: most rows canonical; duplicates more often differ from what they repeat.
    messy_rate = np.where(is_dup, max(offset_rate, 0.25) if offset_rate > 0 else 0.0,
                          offset_rate)
    messy = (rng.random(n) < messy_rate) & ~is_bad
    with_offset = messy & (rng.random(n) < OFFSET_SHARE)
    offset_index = rng.integers(0, len(OFFSETS), size=n)
    # Late impressions often carry an offset that puts their local date inside the day.
    disguise = late & (rng.random(n) < 0.5)
    offset_index = np.where(disguise & (instant < 0),
                            rng.choice(POSITIVE_OFFSETS, size=n), offset_index)
    offset_index = np.where(disguise & (instant >= DAY_SECONDS),
                            rng.choice(NEGATIVE_OFFSETS, size=n), offset_index)
    with_offset |= disguise
    messy |= disguise
    style = np.minimum(np.searchsorted(cdf(STYLE_WEIGHTS), rng.random(n)), len(STYLES) - 1)
    style = np.where(with_offset, PLAIN_STYLES[rng.integers(0, len(PLAIN_STYLES), size=n)],
                     style)
    datetimes = render_datetimes(day, instant, messy, with_offset, style, offset_index)

    ids = uuid_strings(keyed_hash(seed, k, _SALT_ID_HI), keyed_hash(seed, k, _SALT_ID_LO))
    campaigns = vocab.campaign_ids.take(pa.array(campaign))
    padded = messy & (rng.random(n) < 0.1)
    pad_id = padded & (rng.random(n) < 0.5)
    ids = pad(ids, pad_id, rng)
    campaigns = pad(campaigns, padded & ~pad_id, rng)

    cols: dict[str, pa.Array] = {
        "IMPRESSION_ID": ids,
        "IMPRESSION_DATETIME": datetimes,
        "CAMPAIGN_ID": campaigns,
    }
    cols.update(extra_columns(columns, seed, k, campaign, vocab))

    bad_kind = rng.integers(0, len(BAD_KIND_NAMES), size=n)
    kind_counts = np.bincount(bad_kind[is_bad], minlength=len(BAD_KIND_NAMES))
    damage = corrupt(cols, is_bad, bad_kind, day, rng)
    stats = {
        "bad": int(is_bad.sum()),
        "dup": dup_count,
        "conflict": int(conflict.sum()),
        "outside": int((late & is_new).sum()),
        "kinds": kind_counts,
    }
    return cols, damage, stats
