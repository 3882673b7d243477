"""What one reader may hold, from the memory budget: block, gathered batch, columns, row."""

from __future__ import annotations

from dataclasses import dataclass

from ..budget import DEFAULT_LIMIT, Budget


@dataclass(frozen=True)
class ReadLimits:
    """The reader's bounds; see `streamagg.budget.Budget` for how each is derived."""

    block_size: int
    gather_rows: int
    gather_bytes: int
    max_columns: int
    max_row_bytes: int

    @classmethod
    def of(cls, budget: Budget) -> ReadLimits:
        return cls(block_size=budget.reader_block_size, gather_rows=budget.gather_rows,
                   gather_bytes=budget.reader_gather_bytes,
                   max_columns=budget.reader_max_columns,
                   max_row_bytes=budget.reader_max_row_bytes)

    @classmethod
    def default(cls) -> ReadLimits:
        """The bounds under the default ``--memory-limit``."""
        return cls.of(Budget.of(DEFAULT_LIMIT))
