"""What one reader may hold, from the memory budget: block, gathered batch, columns, row."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..budget import DEFAULT_LIMIT, Budget
from ..errors import BadDataError
from ..units import human_bytes
from .numbering import Runs, record_number

# A gathered batch's group values are copied on past the reader, where its other columns are not
# (counted per pair, dictionary-encoded and taken, keyed and sorted when the counts spill), so
# they count this many times more towards ``gather_bytes``: 40 rows of 760 KiB campaigns peaked
# at 214 MiB under 192MB counted once, 166 MiB so. A typical log's batches still end at
# ``gather_rows``.
GROUP_EXTRA_COPIES = 3


def gathered_size(batch: pa.RecordBatch, group: int) -> int:
    """The bytes a gathered batch counts towards ``gather_bytes``: its buffers (a slice counts
    them whole; ``nbytes`` took 18 to 32 us a batch to count a slice's part), the group column's
    ``GROUP_EXTRA_COPIES`` times more."""
    return int(batch.get_total_buffer_size()) + GROUP_EXTRA_COPIES * int(
        batch.column(group).get_total_buffer_size())


@dataclass(frozen=True)
class ReadLimits:
    """The reader's bounds; see `streamagg.budget.Budget` for how each is derived."""

    block_size: int
    gather_rows: int
    gather_bytes: int
    max_columns: int
    max_row_bytes: int
    max_group_bytes: int = 2**20
    # Blank lines of spaces, tabs or BOMs reach pyarrow's invalid-row handler, a Python call
    # each (4 us). Searching every file for them up front (a line end, then one of those bytes)
    # took 0.7 ms of a 470 KB file's 2.7 ms, for lines most files never hold. So a file is
    # parsed without that search, and one that shows this many is read again from its start,
    # with them emptied ahead of the parser and the rows already returned skipped: at most 4 ms
    # of calls, and one more parse of what was read, for a file full of them. A time bound.
    blank_lines_before_rescan: int = 1000

    @classmethod
    def of(cls, budget: Budget) -> ReadLimits:
        return cls(block_size=budget.reader_block_size, gather_rows=budget.gather_rows,
                   gather_bytes=budget.reader_gather_bytes,
                   max_columns=budget.reader_max_columns,
                   max_row_bytes=budget.reader_max_row_bytes,
                   max_group_bytes=budget.reader_max_group_bytes)

    @classmethod
    def default(cls) -> ReadLimits:
        """The bounds under the default ``--memory-limit``."""
        return cls.of(Budget.of(DEFAULT_LIMIT))


def refuse_long_group(size: int, limits: ReadLimits, uri: str, column: str, *,
                      line: int | None = None, record: int | None = None) -> None:
    """A group value longer than ``limits.max_group_bytes`` fails the file (exit 4) before it
    goes on, copied several times, to the counts and the output."""
    if size > limits.max_group_bytes:
        where = "" if record is None else f" in data record {record}"
        raise BadDataError(
            f"{column} value{where} is {human_bytes(size)} long, longer than the "
            f"{human_bytes(limits.max_group_bytes)} --memory-limit allows (a 256th of it, at "
            f"most 1 MiB); nothing written", uri=uri, line=line, column=column)


def refuse_long_groups(groups: pa.Array, parsed: int, invalid: Runs, limits: ReadLimits,
                       uri: str, column: str) -> None:
    """`refuse_long_group` for a block pyarrow parsed (its rows after ``parsed``): only blocks
    larger than the bound (limits past 1 GiB) may hold a longer value."""
    if limits.block_size <= limits.max_group_bytes or not len(groups):
        return
    lengths = pc.binary_length(groups).to_numpy(zero_copy_only=False)
    longest = int(lengths.argmax())
    refuse_long_group(int(lengths[longest]), limits, uri, column,
                      record=record_number(parsed + longest, invalid))
