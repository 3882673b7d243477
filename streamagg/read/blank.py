"""Blank lines: nothing but spaces, tabs and byte-order marks; skipped wherever they stand."""

from __future__ import annotations

import codecs
import re

import numpy as np

BOM = codecs.BOM_UTF8
# Blank lines and blank bytes: runs of spaces, tabs and line ends (one tight loop of the regex
# engine) between byte-order marks. 100 MiB of blank lines before a header take half a second,
# not a Python step per line (65 s), nor an alternation per byte (8 s).
_BLANK_RUN = re.compile(rb"[ \t\r\n]*+(?:\xef\xbb\xbf[ \t\r\n]*+)*+")
_LF, _CR = np.uint8(ord("\n")), np.uint8(ord("\r"))
# The bytes that make a line start padded: a space, a tab, a byte-order mark's first byte.
_PADDING = np.zeros(256, dtype=bool)
_PADDING[[ord(" "), ord("\t"), BOM[0]]] = True


def padded_line_start(data: bytes | np.ndarray) -> bool:
    """Whether a line end in ``data`` is followed by a space, a tab or a BOM's first byte.

    In numpy: six substring searches for those pairs (a line end is in every row) took 3.2 ms
    of CPU a 470 KB chunk; a mask of the line ends, its bytes after taken by it, 0.3 to 0.9 ms;
    the line ends' positions and a table lookup of the bytes after them, 0.2 ms."""
    view = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    head = view[:-1]
    ends = head == _LF
    if b"\r" in data if isinstance(data, bytes) else (view == _CR).any():
        ends |= head == _CR
    return bool(_PADDING[view[np.flatnonzero(ends) + 1]].any())


def blank_run_end(buf: bytes | bytearray) -> int:
    """The offset of the first byte of ``buf`` that is not blank (a space, a tab, a line end
    or part of a byte-order mark): ``len(buf)`` when there is none."""
    return _BLANK_RUN.match(buf).end()  # type: ignore[union-attr]  # always matches


def is_blank_text(text: str) -> bool:
    """Whether a record's text (as pyarrow decodes it) holds only spaces, tabs and BOMs."""
    return not text.replace("\ufeff", "").strip(" \t\r\n")


def is_blank_bytes(raw: bytes) -> bool:
    """Whether a record's bytes hold only spaces, tabs, byte-order marks and line ends."""
    return not raw.replace(BOM, b"").strip(b" \t\r\n")


def blank_spans(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For spans ``[start, end)`` of the bytes ``data``: which hold only blank bytes (spaces,
    tabs, CRs and whole byte-order marks)."""
    content = (data != 0x20) & (data != 0x09) & (data != 0x0D)
    if len(data) >= 3:
        boms = np.flatnonzero((data[:-2] == 0xEF) & (data[1:-1] == 0xBB) & (data[2:] == 0xBF))
        for shift in range(3):
            content[boms + shift] = False
    before = np.concatenate(([0], np.cumsum(content)))
    spans: np.ndarray = before[ends] == before[starts]
    return spans


def empty_blank_lines(data: bytes) -> bytes:
    """``data`` with the content of its blank lines removed (their line ends stay, so each is
    an empty line), or ``data`` itself when it has none. Only lines with a line end on both
    sides in ``data`` are looked at: the first and the last may go on outside it."""
    codes = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero((codes == 0x0A) | (codes == 0x0D))
    starts, stops = ends[:-1] + 1, ends[1:]
    filled = stops > starts
    starts, stops = starts[filled], stops[filled]
    blank = blank_spans(codes, starts, stops)
    if not blank.any():
        return data
    # The lines are apart and in order: -1 where one starts, +1 where it stops, summed.
    inside = np.zeros(len(codes) + 1, dtype=np.int8)
    inside[starts[blank]] = -1
    inside[stops[blank]] = 1
    keep = np.cumsum(inside[:-1], dtype=np.int8) == 0
    emptied: bytes = codes[keep].tobytes()
    return emptied
