"""Vectorised field values: stateless hashing, UUIDs, datetime renderings, padding and bad rows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from .vocabulary import DAY_SECONDS, OFFSETS, STYLES, UNPARSEABLE_TIMES

U64 = np.uint64
_MASK64 = (1 << 64) - 1


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def keyed_hash(seed: int, keys: npt.NDArray[np.uint64], salt: int) -> npt.NDArray[np.uint64]:
    """SplitMix64 of the keys, keyed by seed and salt: a stateless, vectorised random stream."""
    z = keys ^ U64(_splitmix(_splitmix(seed) ^ salt))
    z = z + U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    result: npt.NDArray[np.uint64] = z ^ (z >> U64(31))
    return result


def uniform(seed: int, keys: npt.NDArray[np.uint64], salt: int) -> npt.NDArray[np.float64]:
    bits = (keyed_hash(seed, keys, salt) >> U64(11)).astype(np.float64)
    return bits * (1.0 / (1 << 53))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def uuid_strings(hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> pa.Array:
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


def render_datetimes(
    day: dt.date,
    instant: npt.NDArray[np.int64],
    messy: npt.NDArray[np.bool_],
    with_offset: npt.NDArray[np.bool_],
    style: npt.NDArray[np.intp],
    offset_index: npt.NDArray[np.int64],
) -> pa.Array:
    """Render seconds since the day's UTC midnight as text, in the row's chosen format."""
    offset_seconds = np.array([s for _, s in OFFSETS], dtype=np.int64)[offset_index]
    local = instant + np.where(with_offset, offset_seconds, 0)
    day_shift = np.floor_divide(local, DAY_SECONDS)
    second_of_day = local - day_shift * DAY_SECONDS

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
    separators = np.array([ord(sep) for sep, _ in STYLES], dtype=np.uint8)
    text[:, 10] = np.where(messy, separators[style], ord(" "))

    # Suffix table: "" (canonical), each style's own suffix, then style suffix + offset for
    # every style and offset (only the plain styles are ever combined with an offset).
    suffixes = [""] + [suffix for _, suffix in STYLES]
    suffixes += [suffix + off for _, suffix in STYLES for off, _ in OFFSETS]
    suffix_index = np.where(messy, 1 + style, 0)
    suffix_index = np.where(with_offset, 1 + len(STYLES) + style * len(OFFSETS) + offset_index,
                            suffix_index)
    suffix = pa.array(suffixes, pa.string()).take(pa.array(suffix_index))
    return pc.binary_join_element_wise(_fixed_width_strings(text), suffix, "")


def pad(values: pa.Array, mask: npt.NDArray[np.bool_], rng: np.random.Generator) -> pa.Array:
    """Surround some values with spaces or tabs, which readers must trim."""
    if not mask.any():
        return values
    pads = pa.array(["", " ", "  ", "\t"], pa.string())
    left = pads.take(pa.array(np.where(mask, rng.integers(0, 4, size=len(mask)), 0)))
    right = pads.take(pa.array(np.where(mask, rng.integers(1, 3, size=len(mask)), 0)))
    return pc.binary_join_element_wise(left, values, right, "")


def corrupt(
    cols: dict[str, pa.Array],
    is_bad: npt.NDArray[np.bool_],
    bad_kind: npt.NDArray[np.int64],
    day: dt.date,
    rng: np.random.Generator,
) -> npt.NDArray[np.int8]:
    """Turn the bad rows into one contract kind of bad row each; field counts are broken later."""
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
    choices = pa.array([t.format(y=y, m=m, d=d) for t in UNPARSEABLE_TIMES], pa.string())
    unparseable = is_bad & (bad_kind == 3)
    picked = choices.take(pa.array(rng.integers(0, len(choices), size=len(is_bad))))
    cols["IMPRESSION_DATETIME"] = pc.if_else(pa.array(unparseable), picked,
                                             cols["IMPRESSION_DATETIME"])
    # Field-count damage is applied when lines are joined: remember which rows need it.
    damage[is_bad & (bad_kind == 4)] = -1
    damage[is_bad & (bad_kind == 5)] = 1
    return damage
