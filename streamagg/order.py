"""The output's order as one binary sort key per (group, bucket), numeric or as text."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# ASCII digits only: int() would also take "٣", which no other engine or reader calls a number.
INTEGER_PATTERN = r"^[+-]?[0-9]+$"
# A key starts with the bucket (8 bytes, big-endian, sign bit flipped so that bytes compare as
# the numbers do); a numeric key then holds a class byte and the magnitude's length (4 bytes).
_BUCKET_BYTES, _HEAD_BYTES = 8, 13
_NEGATIVE, _ZERO, _POSITIVE, _TEXT = 0, 1, 2, 3
# '0' + '9': a digit d becomes '0' + '9' - d, so magnitudes compare in reverse (negatives).
_DIGIT_MIRROR = ord("0") + ord("9")


def integer_groups(groups: pa.Array) -> np.ndarray:
    """Which groups are integers (an optional sign, then ASCII digits): a numpy bool array."""
    found = pc.match_substring_regex(groups, INTEGER_PATTERN)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def sort_keys(groups: pa.Array, buckets: np.ndarray, *, numeric: bool) -> pa.Array:
    """One binary key per row: comparing the keys byte by byte orders the rows by bucket, then
    group: as text by code point (UTF-8's byte order), or, when ``numeric``, by the groups'
    integer values with ties broken as text (``+9``, ``09``, ``9``).

    Python's ``int()`` would do the numeric part, but refuses more than 4,300 digits and makes
    one object per row: the key holds the magnitude's length, then its digits (mirrored, and
    the length too, for negatives), so any number of digits sorts right. Groups that are not
    integers sort after the integers of their bucket, as text (they only occur here when a
    day's counts of them all came to zero).
    """
    rows = len(groups)
    # Made here, not at import: pyarrow's first conversion of a Python value imports pandas
    # where it is installed (40 MB), before the CLI has kept it out (pandas_guard).
    nothing = pa.scalar(b"", pa.binary())
    head = np.zeros((rows, _HEAD_BYTES if numeric else _BUCKET_BYTES), np.uint8)
    flipped = np.asarray(buckets, np.int64).view(np.uint64) ^ np.uint64(1 << 63)
    head[:, :_BUCKET_BYTES] = flipped.astype(">u8").view(np.uint8).reshape(rows, 8)
    text = pc.cast(groups, pa.binary())
    if not numeric:
        return pc.binary_join_element_wise(_fixed(head), text, nothing)
    integer = integer_groups(groups)
    magnitude = pc.utf8_ltrim(pc.utf8_ltrim(groups, characters="+-"), characters="0")
    length = np.asarray(pc.binary_length(magnitude).to_numpy(zero_copy_only=False), np.int64)
    negative = integer & (length > 0) & np.asarray(
        pc.starts_with(groups, "-").to_numpy(zero_copy_only=False), dtype=bool)
    kind = np.where(~integer, _TEXT,
                    np.where(negative, _NEGATIVE, np.where(length == 0, _ZERO, _POSITIVE)))
    head[:, _BUCKET_BYTES] = kind
    length = np.where(negative, 0xFFFFFFFF - length, np.where(integer, length, 0))
    head[:, _BUCKET_BYTES + 1:] = length.astype(">u4").view(np.uint8).reshape(rows, 4)
    digits = pc.cast(magnitude, pa.binary())
    if negative.any():
        digits = pc.if_else(pa.array(negative), _mirrored(digits), digits)
    if not integer.all():
        digits = pc.if_else(pa.array(integer), digits, nothing)
    return pc.binary_join_element_wise(_fixed(head), digits, text, nothing)


def _fixed(head: np.ndarray) -> pa.Array:
    """Rows of a 2-D byte matrix as a binary array."""
    rows, width = head.shape
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), rows,
                                                 [None, pa.py_buffer(np.ascontiguousarray(head))])
    return pc.cast(fixed, pa.binary())


def _mirrored(digits: pa.Array) -> pa.Array:
    """Every byte ``b`` of the values as ``'0' + '9' - b``: digit strings in reverse order."""
    offsets = np.frombuffer(digits.buffers()[1], np.int32)[digits.offset:digits.offset
                                                            + len(digits) + 1]
    data = np.frombuffer(digits.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    mirrored = (np.uint8(_DIGIT_MIRROR) - data).astype(np.uint8)
    return pa.Array.from_buffers(pa.binary(), len(digits),
                                 [None, pa.py_buffer(offsets - offsets[0]),
                                  pa.py_buffer(mirrored)])
