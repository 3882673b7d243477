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
# cannot make two keys alike. Lane one is MurmurHash64A's step, lane two another multiply,
# rotate and multiply; each ends in splitmix64's finaliser.
#
# Why not a library: Arrow's compute functions expose no hash of a string column, and hashing
# row by row in Python (hashlib, xxhash) costs about 20 times this for short ids.

_U = np.uint64
_M = _U(0xC6A4A7935BD1E995)  # MurmurHash64A's multiplier
_G = _U(0x9E3779B97F4A7C15)
_S1, _S2 = _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)  # splitmix64's finaliser
_SEED_A, _SEED_B = _U(0x243F6A8885A308D3), _U(0x13198A2E03707344)
# Ids up to this many bytes go through the word matrix; longer ones (rare: an id of kilobytes)
# through blake2b, one at a time, so no matrix grows with one runaway field.
_WIDEST = 256
# Rows hashed at once: each temporary then stays in the core's cache (a third of the time of
# one pass over 100k rows).
_CHUNK = 16_384
_LITTLE = np.dtype("<u8")
_GATHER_BYTES = 4 * 2**20


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
        start = int(offsets[0])
        matrix = data[start:start + width * n].reshape(n, width)
        _hash_rows(matrix, lengths, times, high, low, np.arange(n))
        return high, low
    short = lengths <= _WIDEST
    words = (lengths + 7) // 8
    for count in np.unique(words[short]).tolist():
        rows = np.flatnonzero(short & (words == count))
        # The gather's index matrix takes 64 bytes per id byte: a few MiB at a time.
        step = max(1, _GATHER_BYTES // max(8 * count * 8, 1))
        for begin in range(0, len(rows), step):
            some = rows[begin:begin + step]
            _hash_rows(_gathered(data, offsets, lengths, some, count), lengths[some], times,
                       high, low, some)
    for row in np.flatnonzero(~short).tolist():
        high[row], low[row] = _long_fingerprint(
            data[int(offsets[row]):int(offsets[row + 1])].tobytes(), int(times[row]))
    return high, low


def _hash_rows(matrix: np.ndarray, lengths: np.ndarray, times: np.ndarray, high: np.ndarray,
               low: np.ndarray, rows: np.ndarray) -> None:
    """Hash ``matrix`` (the id bytes of ``rows``, one row each, zero-padded past each length)
    into ``high[rows]`` and ``low[rows]``."""
    width = matrix.shape[1]
    padded_width = (width + 7) // 8 * 8
    for begin in range(0, matrix.shape[0], _CHUNK):
        part = matrix[begin:begin + _CHUNK]
        if padded_width != width or not part.flags.c_contiguous:
            padded = np.zeros((len(part), padded_width), np.uint8)
            padded[:, :width] = part
            part = padded
        words = part.view(_LITTLE).astype(_U, copy=False)
        where = rows[begin:begin + _CHUNK]
        high[where], low[where] = _lanes(words, lengths[begin:begin + _CHUNK].astype(_U),
                                         times[where])


def _lanes(words: np.ndarray, lengths: np.ndarray, times: np.ndarray) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    with np.errstate(over="ignore"):
        a = _mix(times ^ _SEED_A) ^ (lengths * _M)
        b = _mix(times ^ _SEED_B) ^ (lengths * _G)
        for column in range(words.shape[1]):
            word = words[:, column]
            k = word * _M
            k ^= k >> _U(47)
            k *= _M
            a ^= k
            a *= _M
            j = word * _G
            j ^= j >> _U(29)
            j *= _S1
            b += j
            b = (b << _U(27)) | (b >> _U(37))
            b *= _S2
        return _mix(a), _mix(b)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit flips about half the output bits."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> _U(30))) * _S1
        x = (x ^ (x >> _U(27))) * _S2
        mixed: np.ndarray = x ^ (x >> _U(31))
        return mixed


def _gathered(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, rows: np.ndarray,
              words: int) -> np.ndarray:
    """The ids of ``rows`` (each at most ``words`` words long) as a zero-padded byte matrix."""
    width = words * 8
    if not width:
        return np.zeros((len(rows), 0), np.uint8)
    spots = offsets[rows][:, None] + np.arange(width)
    inside = np.arange(width) < lengths[rows][:, None]
    return np.where(inside, data[np.minimum(spots, max(len(data) - 1, 0))], 0).astype(np.uint8)


def _long_fingerprint(key: bytes, instant: int) -> tuple[int, int]:
    digest = hashlib.blake2b(key + instant.to_bytes(8, "little", signed=False),
                             digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")
