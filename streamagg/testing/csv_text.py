"""Lay generated columns out as CSV: per-file header variants and lines joined in one pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Layout:
    header: bytes
    order: tuple[str, ...]
    newline: str
    blank_line_after_header: bool


def layout_for(columns: Sequence[str], file_index: int, seed: int, vary: bool) -> Layout:
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
    return Layout(header, order, newline, blank)

def csv_bytes(cols: dict[str, pa.Array], damage: npt.NDArray[np.int8], order: Sequence[str],
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
