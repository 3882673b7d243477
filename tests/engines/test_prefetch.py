"""The prefetch queues: results in item order, every one, bounded in bytes across all items, the
item being consumed always let through one result however large."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg.engines.prefetch import ordered_prefetch

Sized = tuple[str, int, int]  # (item, index, bytes)
QUIET = 0.15  # seconds for the workers to fill every queue they may


class Produced:
    """Results each item's producer has handed over, the queue having taken them: a producer's
    generator resumes after its ``yield`` only once the result is queued."""

    def __init__(self, sizes: dict[str, list[int]]) -> None:
        self.sizes, self.lock, self.queued = sizes, threading.Lock(), 0

    def produce(self, item: str) -> Iterator[Sized]:
        for index, size in enumerate(self.sizes[item]):
            yield item, index, size
            with self.lock:
                self.queued += size

    def consumed(self, result: Sized) -> None:
        with self.lock:
            self.queued -= result[2]


def size(result: Sized) -> int:
    return result[2]


def within(seconds: float, run: Callable[[], object]) -> object:
    """``run()``'s value, failing the test if it has not returned in ``seconds`` (a deadlock)."""
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(run()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"no result in {seconds} s: the queues deadlocked"
    return got[0]


def bytes_waiting_after_each_take(sizes: dict[str, list[int]], share: int | None,
                                  workers: int = 3, depth: int = 10) -> list[int]:
    """The bytes queued and not yet consumed once the workers have filled what they may, after
    each result the consumer takes."""
    produced = Produced(sizes)
    waiting = []
    for _, result in ordered_prefetch(produced.produce, list(sizes), workers=workers,
                                      depth=depth, size=size, share=share):
        if result is not None:
            produced.consumed(result)
        time.sleep(QUIET / 10 if result is None else QUIET)
        waiting.append(produced.queued)
    return waiting


def test_the_results_waiting_stay_within_the_share_across_all_items() -> None:
    sizes = {name: [10] * 3 for name in "abc"}
    # Without a share the queues take every result (depth 10): the measure sees the difference.
    assert max(bytes_waiting_after_each_take(sizes, None)) >= 80
    waiting = bytes_waiting_after_each_take(sizes, 25)
    # At most the share, and one result of the item being read past it.
    assert max(waiting) <= 25 + 10
    assert max(waiting) >= 20  # the workers still read ahead, as far as the share goes


def test_a_result_larger_than_the_share_still_gets_through_one_at_a_time() -> None:
    sizes = {"a": [100, 100, 100], "b": [100, 100], "c": [1, 100]}
    waiting = within(30, lambda: bytes_waiting_after_each_take(sizes, 10, workers=2))
    # The item being read queues one result, never two; the others only what fits the share.
    assert max(waiting) <= 100 + 10  # type: ignore[call-overload]


def flatten(sizes: list[list[int]]) -> list[tuple[int, Sized | None]]:
    return [pair for item, results in enumerate(sizes)
            for pair in [(item, (str(item), i, s)) for i, s in enumerate(results)]
            + [(item, None)]]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.lists(st.integers(0, 64), max_size=6), max_size=6),
       workers=st.integers(1, 4), depth=st.integers(1, 3),
       share=st.one_of(st.none(), st.integers(0, 128)))
def test_every_result_comes_once_in_item_order_whatever_the_sizes(
    sizes: list[list[int]], workers: int, depth: int, share: int | None
) -> None:
    def produce(item: int) -> Iterator[Sized]:
        for index, result_size in enumerate(sizes[item]):
            yield str(item), index, result_size

    got = within(30, lambda: list(ordered_prefetch(produce, list(range(len(sizes))),
                                                   workers=workers, depth=depth, size=size,
                                                   share=share)))
    assert got == flatten(sizes)


def test_an_error_is_raised_at_its_place_in_the_order() -> None:
    def produce(item: int) -> Iterator[Sized]:
        if item == 1:
            raise ValueError("item 1")
        yield str(item), 0, 50

    seen = []
    with pytest.raises(ValueError, match="item 1"):
        for item, result in ordered_prefetch(produce, [0, 1, 2], workers=3, size=size, share=10):
            seen.append((item, result))
    assert seen == [(0, ("0", 0, 50)), (0, None)]


def test_leaving_early_stops_the_workers_blocked_on_the_share() -> None:
    before = threading.active_count()

    def produce(item: int) -> Iterator[Sized]:
        for index in range(1000):
            yield str(item), index, 40

    results = ordered_prefetch(produce, [0, 1, 2, 3], workers=3, depth=5, size=size, share=50)
    assert next(results) == (0, ("0", 0, 40))
    time.sleep(QUIET / 3)  # the other workers are now waiting for room in the share
    within(10, results.close)
    assert threading.active_count() == before
