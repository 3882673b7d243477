"""Record numbers that are no rows (a wrong field count, a blank record), kept as runs."""

from __future__ import annotations

import bisect
from array import array


class Runs:
    """An increasing set of record numbers, stored as runs of consecutive numbers.

    A run of a billion blank or malformed records costs one run, and runs that end before a
    floor the reader has passed are forgotten (only counted): what is held follows what
    pyarrow parsed ahead of the rows returned, not the size of the file.
    """

    def __init__(self) -> None:
        self._starts = array("q")
        self._ends = array("q")  # inclusive
        self._totals = array("q")  # numbers up to each run's end, the forgotten ones included
        self._others = array("q")  # numbers not in the set before each run's start
        self._forgotten = 0  # numbers in the runs forgotten, all below every run held

    def add(self, number: int) -> None:
        """Add ``number``, larger than every number added before."""
        if self._ends and self._ends[-1] == number - 1:
            self._ends[-1] = number
            self._totals[-1] += 1
        else:
            self._others.append(number - 1 - len(self))
            self._totals.append(len(self) + 1)
            self._starts.append(number)
            self._ends.append(number)

    def __len__(self) -> int:
        return self._totals[-1] if self._totals else self._forgotten

    def __contains__(self, number: int) -> bool:
        at = bisect.bisect_left(self._ends, number)
        return at < len(self._ends) and self._starts[at] <= number

    def last(self) -> int | None:
        return self._ends[-1] if self._ends else None

    def pop(self) -> None:
        """Remove the largest number held."""
        if self._ends[-1] == self._starts[-1]:
            for runs in (self._starts, self._ends, self._totals, self._others):
                runs.pop()
        else:
            self._ends[-1] -= 1
            self._totals[-1] -= 1

    def count_upto(self, number: int) -> int:
        """How many numbers are at most ``number`` (the forgotten ones all are)."""
        at = bisect.bisect_right(self._starts, number)
        if not at:
            return self._forgotten
        return int(self._totals[at - 1]) - max(0, int(self._ends[at - 1]) - number)

    def run_end(self, number: int) -> int:
        """The last number of the run holding ``number``, or ``number - 1`` if none does."""
        at = bisect.bisect_left(self._ends, number)
        if at < len(self._ends) and self._starts[at] <= number:
            return int(self._ends[at])
        return number - 1

    def truncate_after(self, number: int) -> None:
        """Forget the numbers above ``number`` (parsed ahead of where reading stopped)."""
        while self._ends and self._ends[-1] > number:
            if self._starts[-1] > number:
                for runs in (self._starts, self._ends, self._totals, self._others):
                    runs.pop()
            else:
                self._totals[-1] -= self._ends[-1] - number
                self._ends[-1] = number

    def forget_upto(self, number: int) -> None:
        """Keep only a count of the runs that end at or before ``number``."""
        at = bisect.bisect_right(self._ends, number)
        if at:
            self._forgotten = int(self._totals[at - 1])
            for runs in (self._starts, self._ends, self._totals, self._others):
                del runs[:at]


    def number_of(self, index: int) -> int:
        """The ``index``-th (0-based) number not in the set: the runs that start with at most
        ``index`` such numbers before them all lie below it. Forgotten runs lie below every
        number still asked about."""
        at = bisect.bisect_right(self._others, index)
        return index + 1 + (int(self._totals[at - 1]) if at else self._forgotten)


def record_number(valid_index: int, invalid: Runs) -> int:
    """The record number of the ``valid_index``-th (0-based) well-formed row."""
    return invalid.number_of(valid_index)
