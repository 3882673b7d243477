"""Record numbers kept as runs: the same answers as a plain sorted list, in bounded space."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg.read.numbering import Runs, record_number


def numbers_not_in(taken: set[int], index: int) -> int:
    """The ``index``-th (0-based) positive number not in ``taken``, the slow obvious way."""
    number = 0
    while True:
        number += 1
        if number not in taken:
            index -= 1
            if index < 0:
                return number


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.integers(1, 4), max_size=40), cut=st.integers(0, 200),
       floor=st.integers(0, 200))
def test_runs_answer_as_a_sorted_list(gaps: list[int], cut: int, floor: int) -> None:
    runs, taken, number = Runs(), set(), 0
    for gap in gaps:
        number += gap
        runs.add(number)
        taken.add(number)
    runs.truncate_after(cut)
    taken = {n for n in taken if n <= cut}
    assert len(runs) == len(taken)
    assert runs.last() == (max(taken) if taken else None)
    if taken and cut % 2:
        runs.pop()
        taken.remove(max(taken))
    for probe in range(0, 80):
        end = probe
        while end + 1 in taken:
            end += 1
        assert runs.run_end(probe) == (end if probe in taken else probe - 1)
        assert runs.count_upto(probe) == sum(1 for n in taken if n <= probe)
        assert (probe in runs) == (probe in taken)
    for index in range(60):
        assert record_number(index, runs) == numbers_not_in(taken, index)
    # Forgetting the runs below a row already returned changes no answer about later rows.
    row = record_number(floor // 4, runs)
    runs.forget_upto(row)
    assert len(runs) == len(taken)
    for index in range(floor // 4, 60):
        assert record_number(index, runs) == numbers_not_in(taken, index)
