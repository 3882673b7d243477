"""Cleaning a parsed block: UTF-8 checks, trimming, empty fields, datetime parsing."""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..columns import CLEAN_SCHEMA, string_buffers
from ..config import Schema

DATETIME_PATTERN = (
    r"^(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[ T]([01]\d|2[0-3]):([0-5]\d):([0-5]\d)"
    r"(?:\.(\d+))?([Zz]|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?$"
)
# ASCII digits, as RE2 reads \d in the vectorised path; fullmatch, as $ there is the very end.
_DATETIME_RE = re.compile(DATETIME_PATTERN, re.ASCII)
_TRIM = " \t"
_SPACE, _TAB = np.uint8(ord(" ")), np.uint8(ord("\t"))
# "YYYY-MM-DDTHH:MM:SS.nnnnnnnnn": only a longer string can hold extra fraction digits.
_LONGEST_NANOSECOND_TEXT = 29
# The canonical "YYYY-MM-DD HH:MM:SS": each column's lowest byte and its range of bytes.
_CANONICAL_WIDTH = 19
_CANONICAL_LOW = np.frombuffer(b"0000-00-00 00:00:00", dtype=np.uint8)
_CANONICAL_RANGE = np.frombuffer(b"9999-99-99T99:99:99", dtype=np.uint8) - _CANONICAL_LOW
_T = np.uint8(ord("T"))
_Z, _LOWER_Z, _PLUS, _MINUS = (np.uint8(ord(c)) for c in "Zz+-")
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class _Scalars(NamedTuple):
    epoch_text: pa.Scalar
    utc: pa.Scalar
    empty_text: pa.Scalar
    empty_binary: pa.Scalar


@functools.cache
def _scalars() -> _Scalars:
    """Typed scalars, made on first use: a bare Python literal in a compute call, or a scalar
    made at import, makes pyarrow import pandas (40 MB) to check whether it is a pandas value."""
    return _Scalars(pa.scalar("1970-01-01 00:00:00", pa.string()), pa.scalar("Z", pa.string()),
                    pa.scalar("", pa.string()), pa.scalar(b"", pa.binary()))



def clean_columns(
    columns: list[pa.Array], schema: Schema
) -> tuple[pa.RecordBatch, list[tuple[int, str]]]:
    """Validate, trim and parse one parsed block: the clean batch and (row, reason) of bad rows.

    Every step is one vectorised Arrow call over the block; Python only looks at rows that
    turned out bad, which are rare.
    """
    n = len(columns[0])
    texts: list[pa.Array] = []
    reasons: dict[int, str] = {}
    # A block of canonical datetimes is proven ASCII, unpadded and filled by its byte check:
    # that column skips the UTF-8, trimming and empty checks.
    canonical = _fixed_width_instants(columns[1]) if n else None
    for index, (name, column) in enumerate(zip(schema.required, columns, strict=True)):
        if index == 1 and canonical is not None:
            texts.append(column.view(pa.string()))
            continue
        text, broken = _to_utf8(column)
        for i in broken:
            reasons.setdefault(i, f"invalid UTF-8 in {name}")
        text, lengths = _trimmed(text)
        texts.append(text)
        if n and lengths.min() == 0:
            for i in np.flatnonzero(lengths == 0).tolist():
                reasons.setdefault(i, f"empty {name}")
    instants, unparsed = (canonical, []) if canonical is not None else parse_instants(texts[1])
    for i in unparsed:
        reasons.setdefault(i, f"invalid {schema.time_column}")
    if reasons:
        keep = np.ones(n, dtype=bool)
        keep[list(reasons)] = False
        mask = pa.array(keep)
        texts = [pc.filter(t, mask) for t in texts]
        instants = pc.filter(instants, mask)
    batch = pa.RecordBatch.from_arrays([texts[0], instants, texts[2]], schema=CLEAN_SCHEMA)
    return batch, sorted(reasons.items())


def _true_indices(mask: pa.Array) -> list[int]:
    indices: list[int] = pc.indices_nonzero(mask).to_pylist()
    return indices


def _trimmed(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The text without leading and trailing spaces and tabs (itself when no value has any),
    and the length of each value after trimming.

    Looking at each value's first and last byte is much cheaper than trimming, which copies
    the column, and most logs hold no padding at all: when no edge byte is at or below a space
    (one gather and one minimum per edge), none is a space or a tab. A dozen numpy calls a
    column had held the GIL for 10% of the samples of a day of 2,000 small files.
    """
    offsets, data = string_buffers(text)
    lengths = np.diff(offsets)
    if len(text) and not text.null_count and len(data):
        if lengths.min() > 0:
            edges = (data[offsets[:-1]], data[offsets[1:] - 1])
        else:
            filled = lengths > 0
            edges = (data[offsets[:-1][filled]], data[offsets[1:][filled] - 1])
        # No edge at all: every value is empty, though the data buffer holds bytes.
        if all(not len(edge) or edge.min() > _SPACE
               or not np.any((edge == _SPACE) | (edge == _TAB)) for edge in edges):
            return text, lengths
    # ascii_trim is safe on UTF-8: space and tab never occur inside a multi-byte sequence.
    trimmed = pc.ascii_trim(text, _TRIM)
    return trimmed, np.diff(string_buffers(trimmed)[0])


def _to_utf8(column: pa.Array) -> tuple[pa.Array, list[int]]:
    """The column as UTF-8 text, with invalid values emptied and their rows listed."""
    try:
        return pc.cast(column, pa.string()), []
    except pa.ArrowInvalid:
        pass
    broken = []
    for i, value in enumerate(column.to_pylist()):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            broken.append(i)
    mask = np.zeros(len(column), dtype=bool)
    mask[broken] = True
    fixed = pc.if_else(pa.array(mask), _scalars().empty_binary, column)
    return pc.cast(fixed, pa.string()), broken


def parse_instants(text: pa.Array) -> tuple[pa.Array, list[int]]:
    """Nanoseconds since the epoch, UTC, for each datetime; rows that do not parse are listed.

    A block of canonical ``YYYY-MM-DD HH:MM:SS`` values is checked on its bytes and cast at
    once; in a block of mixed forms the canonical values are cast apart and only the rest take
    the general path (on the mixed benchmark day, 95% of values: 0.2x the time of the general
    path alone).
    """
    n = len(text)
    if n == 0:
        return pa.array(np.zeros(0, dtype=np.int64)), []
    fixed = _fixed_width_instants(text)
    if fixed is not None:
        return fixed, []
    split = _canonical_part(text)
    if split is None:
        return _general_instants(text)
    canonical, instants = split
    values = np.empty(n, dtype=np.int64)
    values[canonical] = instants
    rest = np.flatnonzero(~canonical)
    if not len(rest):
        return pa.array(values), []
    others, unparsed = _general_instants(text.take(pa.array(rest)))
    values[rest] = others.to_numpy(zero_copy_only=False)
    return pa.array(values), rest[unparsed].tolist()


def _canonical_part(text: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """Which values are canonical datetimes (a mask) and their instants, when most of a block's
    values have the canonical width; None when few do, or when one of them is no date."""
    if text.null_count:
        return None
    offsets, _ = string_buffers(text)
    candidate = np.diff(offsets) == _CANONICAL_WIDTH
    count = int(np.count_nonzero(candidate))
    if count < len(text) // 2:
        return None
    chosen = text.filter(pa.array(candidate))
    chosen_offsets, data = string_buffers(chosen)
    start = int(chosen_offsets[0])
    wrong, separated = _canonical_bytes(data[start:start + _CANONICAL_WIDTH * count], count)
    good = separated
    if wrong.any():  # as a rule none is: the per-row flags cost a fifth of this function
        # Per row: an or over its 19 flags (reduceat: 2.5x faster than any() over rows of 19).
        rows_wrong = np.bitwise_or.reduceat(wrong.view(np.uint8),
                                            np.arange(0, len(wrong), _CANONICAL_WIDTH))
        good = (rows_wrong == 0) & separated
    if not good.all():
        chosen = chosen.filter(pa.array(good))
    try:
        instants = pc.cast(pc.cast(chosen, pa.timestamp("ns")), pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # an impossible date: the general path finds which
    mask = np.zeros(len(text), dtype=bool)
    mask[np.flatnonzero(candidate)[good]] = True
    return mask, instants.to_numpy(zero_copy_only=False)


def _general_instants(text: pa.Array) -> tuple[pa.Array, list[int]]:
    """Any accepted form: one RE2 check of the shape and one vectorised cast. Only a block
    holding an impossible date (Feb 30, a year out of range) falls back to the exact per-row
    parser, and both paths accept exactly the same strings."""
    n = len(text)
    scalars = _scalars()
    shaped = pc.match_substring_regex(text, DATETIME_PATTERN)
    good_shape = bool(pc.all(shaped).as_py())
    unparsed = [] if good_shape else _true_indices(pc.invert(shaped))
    candidates = text if good_shape else pc.if_else(shaped, text, scalars.epoch_text)
    if pc.max(pc.binary_length(candidates)).as_py() > _LONGEST_NANOSECOND_TEXT:
        # More than nine fraction digits: keep nanoseconds, drop the rest, as Arrow cannot.
        candidates = pc.replace_substring_regex(candidates, r"(\.\d{9})\d+", r"\1")
    zoned, lower = _zoned(candidates)
    if lower:  # Arrow reads an upper-case Z only; a z can only be the zone here
        candidates = pc.replace_substring(candidates, "z", "Z")
    try:
        if not zoned.any():
            stamps = pc.cast(candidates, pa.timestamp("ns"))
        else:
            with_zone = pc.binary_join_element_wise(candidates, scalars.utc, scalars.empty_text)
            stamps = pc.cast(pc.if_else(pa.array(zoned), candidates, with_zone),
                             pa.timestamp("ns", tz="UTC"))
        return pc.cast(stamps, pa.int64()), unparsed
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = np.zeros(n, dtype=np.int64)
    bad_shape = set(unparsed)
    for i, value in enumerate(text.to_pylist()):
        if i in bad_shape:
            continue
        ns = parse_instant(value)
        if ns is None:
            unparsed.append(i)
        else:
            values[i] = ns
    return pa.array(values), sorted(unparsed)


def _zoned(shaped: pa.Array) -> tuple[np.ndarray, bool]:
    """Which of these well-shaped datetimes (no nulls) carry a zone, and whether one is a
    lower-case z: a Z last, or a sign three, five or six bytes from the end (``+HH``,
    ``+HHMM``, ``+HH:MM``), where a time or a fraction has a digit, a colon or a dot. Four bytes
    per value, not substring searches over every byte (a third of the general path's time)."""
    offsets, data = string_buffers(shaped)
    ends = offsets[1:].astype(np.int64)
    last = data[ends - 1]
    lower = last == _LOWER_Z
    zoned: np.ndarray = (last == _Z) | lower
    for back in (3, 5, 6):
        sign = data[ends - back]
        zoned |= (sign == _PLUS) | (sign == _MINUS)
    return zoned, bool(lower.any())


def _fixed_width_instants(text: pa.Array) -> pa.Array | None:
    """The instants when every value (text or bytes) is ``YYYY-MM-DD[ T]HH:MM:SS`` and a valid
    time, else None.

    Most logs write one canonical form: then a numpy check of the bytes at fixed positions
    replaces the regex, and Arrow's cast, which rejects impossible dates, hours, minutes and
    seconds, does the rest. Anything else is left to the general path, so both accept exactly
    the strings the regex and the exact parser accept.
    """
    n = len(text)
    if text.null_count:
        return None
    offsets, data = string_buffers(text)
    start = int(offsets[0])
    if int(offsets[-1]) - start != _CANONICAL_WIDTH * n or not np.all(
            np.diff(offsets) == _CANONICAL_WIDTH):
        return None
    wrong, separated = _canonical_bytes(data[start:start + _CANONICAL_WIDTH * n], n)
    if wrong.any() or not separated.all():
        return None
    try:
        # The bytes are proven ASCII above: reading them as text needs no UTF-8 check.
        # A view, not a cast, to int64: the same buffers, without a compute call (11 against
        # 2 us a block).
        return pc.cast(text.view(pa.string()), pa.timestamp("ns")).view(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _canonical_bytes(flat: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """For ``rows`` values of 19 bytes laid end to end: which bytes are out of place (a flag
    per byte), and which rows have a space or a T between date and time.

    Each byte minus its column's lowest allowed value (wrapping below it) must be within the
    column's range: 0..9 for digits, 0 for '-' and ':'. On the flat bytes against repeated
    rows: six times faster than broadcasting over rows of 19 bytes.
    """
    low, top = _canonical_tiles(rows)
    separator = flat.reshape(rows, _CANONICAL_WIDTH)[:, 10]
    return np.subtract(flat, low) > top, (separator == _SPACE) | (separator == _T)


_tiles: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.uint8), np.zeros(0, np.uint8))


def _canonical_tiles(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """`_CANONICAL_LOW` and `_CANONICAL_RANGE` repeated for ``rows`` rows, flat."""
    global _tiles
    low, top = _tiles
    if len(low) < rows * _CANONICAL_WIDTH:
        # Grown, never shrunk: one block's worth (a few MiB at most); replaced whole, so
        # reader threads never see a half-built pair.
        _tiles = low, top = np.tile(_CANONICAL_LOW, rows), np.tile(_CANONICAL_RANGE, rows)
    size = rows * _CANONICAL_WIDTH
    return low[:size], top[:size]


def parse_instant(value: str) -> int | None:
    """One datetime as nanoseconds since the epoch in UTC, or None: the exact, slow reference."""
    match = _DATETIME_RE.fullmatch(value)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                             tzinfo=dt.UTC)
    except ValueError:
        return None
    delta = moment - _EPOCH
    ns = (delta.days * 86400 + delta.seconds) * 10**9
    if fraction:
        ns += int(fraction[:9].ljust(9, "0"))
    if offset and offset not in ("Z", "z"):  # +HH, +HHMM or +HH:MM
        sign = 1 if offset[0] == "+" else -1
        minutes = int(offset[-2:]) if len(offset) > 3 else 0
        ns -= sign * (int(offset[1:3]) * 3600 + minutes * 60) * 10**9
    return ns if _NS_MIN <= ns <= _NS_MAX else None
