"""A 128-bit fingerprint of each impression key (id bytes and instant), computed in numpy."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from ..columns import string_buffers

# The fingerprint stands for the key (docs/CONTRACT.md allows a hash whose collision odds are
# documented below 1 in 10^15 for a day of 10^9 rows). Two different keys get the same 128 bits
# with odds of about 2^-128 for any pair, so a day of n keys has any collision at all with odds
# of about n^2 / 2^129: 1.5 in 10^21 for n = 10^9. The ids are hashed as their UTF-8 bytes,
# zero-padded to whole 64-bit words, with their length and the instant mixed in, so padding
# cannot make two keys alike. Each lane is a chain of xor-multiply-xorshift steps with its own
# constants, one step per word, ending in splitmix64's finaliser. Each step is a bijection of the
# lane for a given word, so two keys that differ in one word only, or only in their instant,
# never share a lane.
#
# Why not a library: Arrow's compute functions expose no hash of a string column, and hashing
# row by row in Python (hashlib, xxhash) costs about 20 times this for short ids.

_U = np.uint64
_M = _U(0xC6A4A7935BD1E995)  # MurmurHash64A's multiplier
_S1, _S2 = _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)  # splitmix64's finaliser
_SEED_A, _SEED_B = _U(0x243F6A8885A308D3), _U(0x13198A2E03707344)
# Ids up to this many bytes are read a 64-bit word at a time; longer ones (rare: an id of
# kilobytes) go through blake2b, one at a time, so no array of words grows with one runaway
# field.
_WIDEST = 256
# Rows hashed at once: each temporary then stays in the core's cache (0.4x the time of one pass
# over 400k rows).
_CHUNK = 8_192
_LITTLE = np.dtype("<u8")


def fingerprints(keys: pa.Array | pa.ChunkedArray,
                 instants: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Two uint64 lanes per row, (high, low), from the key's bytes and its instant (ns).

    Equal keys give equal fingerprints; the high lane is a well-mixed hash on its own, so its
    bits also choose the spill partition.
    """
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if isinstance(instants, pa.ChunkedArray):
        instants = instants.combine_chunks()
    n = len(keys)
    times = instants.to_numpy(zero_copy_only=False).astype(np.int64, copy=False).view(_U)
    high, low = np.empty(n, _U), np.empty(n, _U)
    if n == 0:
        return high, low
    offsets, data = string_buffers(keys)
    offsets = offsets.astype(np.int64)
    lengths = np.diff(offsets)
    width = int(lengths[0])
    if width <= _WIDEST and np.all(lengths == width):
        # The common case: ids of one length (UUIDs, fixed-width numbers), read in place.
        _same_width(data, int(offsets[0]), width, times, high, low)
        return high, low
    short = lengths <= _WIDEST
    words = (lengths + 7) // 8
    counts = np.unique(words[short]).tolist()
    if counts:  # not for long ids alone: the padded copy is of the whole data, theirs included
        # Every 8 bytes of the data, read at any byte offset: word k of a row is one gather.
        padded = np.concatenate([data, np.zeros(8, np.uint8)])
        anywhere = np.ndarray((len(padded) - 7,), dtype=_LITTLE, buffer=padded, strides=(1,))
    for count in counts:
        rows = np.flatnonzero(short & (words == count))
        starts, kept = offsets[rows], lengths[rows] - 8 * (count - 1)  # bytes of the last word
        last_mask = np.where(kept >= 8, _U(2**64 - 1),
                             (_U(1) << (8 * np.minimum(kept, 7)).astype(_U)) - _U(1))
        columns = [anywhere[starts + 8 * k] for k in range(count)]
        if count:
            columns[-1] &= last_mask
        high[rows], low[rows] = _lanes(columns, lengths[rows].astype(_U), times[rows])
    for row in np.flatnonzero(~short).tolist():
        high[row], low[row] = _long_fingerprint(
            data[int(offsets[row]):int(offsets[row + 1])], int(times[row]))
    return high, low


def _same_width(data: np.ndarray, start: int, width: int, times: np.ndarray, high: np.ndarray,
                low: np.ndarray) -> None:
    """Fingerprints of ids that all have ``width`` bytes, laid out from ``data[start]``.

    Each 64-bit word is read in place, as a strided view over the rows (no copy). A last
    partial word is read whole, its bytes past the id masked off; the last rows, whose whole
    words would reach past the data, go through a padded copy.
    """
    n, words, tail = len(times), (width + 7) // 8, width % 8
    mask = _U((1 << (8 * tail)) - 1) if tail else None
    # Rows whose last whole word ends within the data.
    body = n if not width else max(0, min(n, (len(data) - start - 8 * words) // width + 1))
    length = _U(width)
    for begin in range(0, body, _CHUNK):
        count = min(_CHUNK, body - begin)
        columns = [np.ndarray((count,), dtype=_LITTLE, buffer=data,
                              offset=start + begin * width + 8 * k, strides=(width,))
                   for k in range(words)]
        if mask is not None:
            columns[-1] = columns[-1] & mask
        end = begin + count
        high[begin:end], low[begin:end] = _lanes(columns, length, times[begin:end])
    if body < n:
        rest = np.zeros((n - body, words * 8), np.uint8)
        rest[:, :width] = data[start + body * width:start + n * width].reshape(n - body, width)
        matrix = rest.view(_LITTLE)
        high[body:], low[body:] = _lanes([matrix[:, k] for k in range(words)], length,
                                         times[body:])


def _lanes(words: list[np.ndarray], lengths: np.ndarray | np.uint64,
           times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two lanes from the ids' 64-bit words (one array per word position), their lengths
    and their instants: each step xors in a word, multiplies by an odd constant and folds the
    high bits down (a bijection of the lane for a given word); the length goes in last."""
    with np.errstate(over="ignore"):
        a = (times ^ _SEED_A) * _M
        b = (times ^ _SEED_B) * _S1
        for word in words:
            a ^= word
            a *= _M
            a ^= a >> _U(47)
            b ^= word
            b *= _S1
            b ^= b >> _U(31)
        a ^= lengths
        b ^= lengths
        return _mix(a), _mix(b)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit flips about half the output bits."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> _U(30))) * _S1
        x = (x ^ (x >> _U(27))) * _S2
        mixed: np.ndarray = x ^ (x >> _U(31))
        return mixed


def _long_fingerprint(key: np.ndarray, instant: int) -> tuple[int, int]:
    # Fed in place, in two parts (the same digest as of their concatenation): a long id is
    # hashed without a copy of it (two copies of a 10 MiB id were at the peak of its day).
    hasher = hashlib.blake2b(key.data, digest_size=16)
    hasher.update(instant.to_bytes(8, "little", signed=False))
    digest = hasher.digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")
